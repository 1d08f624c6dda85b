"""A caller's deadline (`gateway.infra.deadlines`) shortens every upstream operation under it."""

from __future__ import annotations

import pytest

from gateway.domain.errors import UpstreamUnavailable
from gateway.infra.deadlines import caller_deadline
from gateway.simulator import RunningSimulator
from gateway.upstreams import Deadline

from gateway_harness import run_gateway


async def test_the_earlier_of_both_deadlines_wins() -> None:
    assert Deadline.after(5).seconds == 5
    with caller_deadline(0.5):
        assert 0 < Deadline.after(5).seconds <= 0.5
        with caller_deadline(None):  # no caller bound: the outer one still holds
            assert Deadline.after(5).seconds <= 0.5
    with caller_deadline(30):
        assert Deadline.after(5).seconds == 5
    with caller_deadline(-1):  # already past: the operation has no time left
        assert Deadline.after(5).remaining() == 0


async def test_an_upstream_call_under_a_caller_deadline_ends_with_it(
    simulator: RunningSimulator,
) -> None:
    # The default pause between retries (0.1 s and more), which the shared fixture skips.
    async with run_gateway(simulator, upstream_backoff_s=0.1) as gateway:
        listing = gateway.sim.data.listings[0]
        gateway.sim.state.add_fault("legacy", "timeout", delay_s=20)
        legacy = gateway.app.state.runtime.upstreams.legacy
        with caller_deadline(0.2), pytest.raises(UpstreamUnavailable) as caught:
            await legacy.ad_status(listing.user_id, listing.ad_id)
        assert "timed out" in caught.value.message
        # Its own budget (GATEWAY_UPSTREAM_TIMEOUT_S, 5 s) leaves room for retries after a
        # hung attempt; under the caller's 0.2 s, the first takes half and a pause the rest.
        assert gateway.calls("legacy", "status_get") == 1
