"""Subscriptions to a document the app already knows skip strawberry's pipeline
(gateway.graphql.streams) and answer exactly as it does.

On one socket the first subscription to a document takes strawberry's path (it parses and
validates the document); a second to the same document takes the lean one. Both see the
same events, the same field errors and the same refusals. Real gateway, real simulator,
real WebSocket clients of both protocols.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_listing_changes import CHANGED, HOUR, feed_of, listing_of, ref, subscribed
from test_live_status import (
    LEGACY_WS,
    SECRET,
    SUBSCRIBE,
    TRANSPORT_WS,
    WATCH,
    append,
    bus_of,
    connect,
    tenant_classifieds,
)

from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

PROTOCOLS = [TRANSPORT_WS, LEGACY_WS]


def lean_taken(gateway: RunningGateway) -> int:
    known = gateway.app.state.graphql.schema.known
    assert known is not None
    taken: int = known.subscriptions
    return taken


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_second_subscription_to_a_document_is_lean_and_sees_the_same_events(
    simulator: RunningSimulator, protocol: str
) -> None:
    async with run_gateway(simulator, public=True, webhook_secret=SECRET) as gateway:
        watched = tenant_classifieds(gateway)[1]
        assert "errors" not in await gateway.query(SUBSCRIBE)  # V3 calls back the gateway
        async with connect(gateway, protocol) as subscriber:
            await subscriber.start(WATCH, {"ids": [watched]})
            await bus_of(gateway).membership.until(lambda: len(bus_of(gateway).subscribers) == 1)
            assert lean_taken(gateway) == 0  # the first parses and validates it
            await subscriber.start(WATCH, {"ids": [watched]})
            await bus_of(gateway).membership.until(lambda: len(bus_of(gateway).subscribers) == 2)
            assert lean_taken(gateway) == 1

            await append(gateway, watched, "UPDATED")
            first, second = await subscriber.next(), await subscriber.next()
        # The socket closed: both left the bus.
        await bus_of(gateway).membership.until(lambda: not bus_of(gateway).subscribers)
        assert first == second
        event = first["data"]["classifiedStatusChanged"]
        assert event["classifiedId"] == watched
        assert event["listing"]["classified"]["latestStatus"]["status"] == "UPDATED"
        assert "errors" not in first


async def test_a_field_that_fails_on_an_event_fails_the_same_on_both_paths(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(
        simulator,
        public=True,
        webhook_subscribe=True,
        webhook_secret=SECRET,
        legacy_poll_s=HOUR,
        legacy_cache_ttl_s=0,  # each event's listing reads the legacy API
    ) as gateway:
        listing = listing_of(gateway)
        variables = {"refs": [ref(listing)]}
        async with connect(gateway, TRANSPORT_WS) as subscriber:
            await subscribed(gateway, subscriber, variables, count=1)
            await subscribed(gateway, subscriber, variables, count=2)
            # A V3 change; the listing each event carries then fails on its legacy side.
            simulator.sim.state.add_fault("legacy", "error", status=500)
            await append(gateway, listing[0], "DELETING")
            first, second = await subscriber.next(), await subscriber.next()
    assert lean_taken(gateway) == 1
    assert first == second
    assert first["data"]["listingChanged"]["provider"] == "CLASSIFIEDS_V3"
    assert {error["extensions"].get("upstream") for error in first["errors"]} == {"legacy"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_refusals_are_the_same_on_both_paths(
    simulator: RunningSimulator, protocol: str
) -> None:
    """Each refused subscription is sent once to a fresh gateway (strawberry's path, which
    then knows the document) and again (a document it knows)."""
    async with run_gateway(simulator, public=True, webhook_secret=SECRET) as gateway:
        classified_id = listing_of(gateway)[0]
        cases: list[tuple[str, dict[str, Any]]] = [
            (WATCH, {"ids": []}),  # refused by the resolver
            (WATCH, {"ids": [f"c-{n}" for n in range(201)]}),  # by the argument checks
            (WATCH, {"ids": {"not": "a list"}}),  # variables that do not coerce
            (CHANGED, {"refs": [{"classifiedId": classified_id}], "after": "not-a-cursor"}),
        ]
        for query, variables in cases:
            answers = []
            for _ in range(2):
                async with connect(gateway, protocol) as subscriber:
                    await subscriber.start(query, variables)
                    message = await subscriber.ws.receive_json()
                answers.append((message["type"], message["payload"]))
            assert answers[0] == answers[1], (variables, answers)
            codes = str(answers[0][1])
            assert "BAD_USER_INPUT" in codes, answers
        assert not bus_of(gateway).subscribers and not feed_of(gateway).subscribers
