"""The in-process event bus: filtering, bounded queues, nothing left behind."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

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
