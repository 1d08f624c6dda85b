"""A serving process tunes the garbage collector once it has started."""

from __future__ import annotations

import gc

from gateway.process.garbage import THRESHOLDS, tune_for_serving


def test_serving_freezes_what_start_allocated_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    assert before != THRESHOLDS
    try:
        tune_for_serving()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
