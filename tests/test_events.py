"""The in-process event bus: filtering through an index, bounded queues, a bounded number
of subscribers, nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

import pytest

from gateway.domain.errors import Overloaded
from gateway.domain.models import ClassifiedStatusCode, ClassifiedStatusEvent, ClassifiedStatusItem
from gateway.live.bus import EventBus, LocalEventBus

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def event(classified_id: str, n: int = 0) -> ClassifiedStatusEvent:
    item = ClassifiedStatusItem(
        status=ClassifiedStatusCode.CREATED,
        raw_status="CREATED",
        message=f"event {n}",
        status_date=WHEN,
    )
    return ClassifiedStatusEvent(classified_id=classified_id, status=item, received_at=WHEN)


async def test_subscribers_get_only_the_classifieds_they_asked_for() -> None:
    bus: EventBus = LocalEventBus()
    async with bus.subscribe({"a"}) as only_a, bus.subscribe() as every:
        bus.publish(event("b", 1))
        bus.publish(event("a", 2))
        assert (await anext(aiter(only_a))).status.message == "event 2"
        assert [(await anext(aiter(every))).classified_id for _ in range(2)] == ["b", "a"]


async def test_a_waiting_subscriber_wakes_on_publish() -> None:
    bus = LocalEventBus()
    async with bus.subscribe() as events:
        waiting = asyncio.create_task(anext(aiter(events)))
        await asyncio.sleep(0)
        assert not waiting.done()
        bus.publish(event("a"))
        assert (await waiting).classified_id == "a"


async def test_a_subscriber_that_never_reads_keeps_a_bounded_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = LocalEventBus(max_queue=16)
    with caplog.at_level(logging.WARNING, logger="gateway.live.bus"):
        async with bus.subscribe() as events:
            for n in range(1000):
                bus.publish(event("a", n))
            (subscriber,) = bus.subscribers
            assert len(subscriber) == 16
            assert subscriber.dropped == 1000 - 16
            # The oldest went first: what is left is the newest 16, in order.
            assert (await anext(aiter(events))).status.message == "event 984"
    assert bus.stats.dropped == 1000 - 16
    assert len([r for r in caplog.records if "not keeping up" in r.message]) == 1


async def test_leaving_the_block_unregisters_the_subscriber() -> None:
    bus = LocalEventBus()
    async with bus.subscribe({"a"}):
        assert len(bus.subscribers) == 1
    assert bus.subscribers == frozenset()
    bus.publish(event("a"))  # nobody listens: publishing still succeeds
    assert bus.stats.delivered == 0


async def test_a_process_holds_at_most_max_subscribers_and_refuses_one_more() -> None:
    bus = LocalEventBus(max_subscribers=2)
    async with bus.subscribe({"a"}), bus.subscribe():
        with pytest.raises(Overloaded) as refused:
            async with bus.subscribe({"b"}):
                pass
        assert refused.value.code == "OVERLOADED" and refused.value.retry_after > 0
        assert bus.stats.refused == 1
        assert len(bus.subscribers) == 2
    # Leaving frees the places.
    async with bus.subscribe({"b"}) as only_b:
        bus.publish(event("b"))
        assert (await anext(aiter(only_b))).classified_id == "b"


def _calls_during(work: Callable[[], None]) -> int:
    """Python function calls made while `work` runs (its own included)."""
    calls = 0

    def count(frame: FrameType, what: str, arg: object) -> None:
        nonlocal calls
        if what == "call":
            calls += 1

    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


async def test_an_event_costs_its_own_subscribers_not_a_scan_of_all_of_them() -> None:
    """Subscribers are indexed by classified: publishing among 5,000 watched classifieds
    touches only the subscriber of the event's own."""
    bus = LocalEventBus(max_subscribers=10_000)
    async with contextlib.AsyncExitStack() as stack:
        for n in range(5_000):
            await stack.enter_async_context(bus.subscribe({f"c-{n}", "shared"}))
        mine = await stack.enter_async_context(bus.subscribe({"mine"}))
        calls = _calls_during(lambda: bus.publish(event("mine")))
        assert (await anext(aiter(mine))).classified_id == "mine"
        assert bus.stats.delivered == 1
        assert calls < 20, calls
    assert bus.subscribers == frozenset()
