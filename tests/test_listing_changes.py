"""`listingChanged` end to end: legacy changes found by polling, V3 changes from webhooks, one
log of both that a client resumes by cursor.

Real servers on loopback (the simulator, the gateway), real WebSocket clients of both
GraphQL protocols. The poller's interval is long (an hour): the tests drive its polls with
`poll_once()` and `baseline()` instead of waiting for them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from documents import fenced_after
from test_live_status import LEGACY_WS, TRANSPORT_WS, Subscriber, append, connect
from test_readme import _fits

from gateway.domain.changes import ChangeCursor, LogPosition
from gateway.live.changes import ChangeFeed
from gateway.live.poller import LegacyPoller
from gateway.simulator import RunningSimulator
from gateway.simulator.faults import Fault

from gateway_harness import LOOPBACK_TLS, RunningGateway, run_gateway

SECRET = "changes-secret-0123456789"
CHANGED = """
subscription($refs: [ListingRef!]!, $after: String) {
  listingChanged(refs: $refs, after: $after) {
    cursor provider changedPortals receivedAt
    listing { classifiedId legacyAd { userId adId } state portals { portal provider state } }
  }
}"""
HOUR = 3600.0


@pytest.fixture
async def live(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    async with run_gateway(
        simulator, public=True, webhook_subscribe=True, webhook_secret=SECRET, legacy_poll_s=HOUR
    ) as running:
        yield running


def feed_of(gateway: RunningGateway) -> ChangeFeed:
    feed: ChangeFeed = gateway.app.state.runtime.changes
    return feed


def poller_of(gateway: RunningGateway) -> LegacyPoller:
    poller: LegacyPoller = gateway.app.state.runtime.poller
    return poller


def listing_of(gateway: RunningGateway, position: int = 0) -> tuple[str, int, int]:
    """A listing of agency-1 (the gateway's agency) on both portal families."""
    mine = set(gateway.sim.data.tenants["agency-1"])
    listings = [entry for entry in gateway.sim.data.listings if entry.classified_id in mine]
    classified_id, user_id, ad_id = listings[position]
    return classified_id, user_id, ad_id


def ref(listing: tuple[str, int, int]) -> dict[str, Any]:
    classified_id, user_id, ad_id = listing
    return {"classifiedId": classified_id, "legacy": {"userId": user_id, "adId": ad_id}}


async def set_legacy(gateway: RunningGateway, user_id: int, ad_id: int) -> tuple[str, str]:
    """Move the ad's first portal to another publish state at the simulated legacy API;
    answers the portal's name and its new state."""
    ad = gateway.sim.state.legacy_ad(user_id, ad_id)
    assert ad is not None
    portal = ad["portals"][0]
    target = "error" if not portal["publish"].get("error") else "online"
    async with httpx.AsyncClient(verify=LOOPBACK_TLS) as client:
        response = await client.post(
            f"{gateway.running_sim.control_url}/legacy/{user_id}/{ad_id}",
            json={"portal": portal["portal"], "state": target},
        )
    response.raise_for_status()
    return portal["portal"].upper(), {"error": "FAILED", "online": "ONLINE"}[target]


async def subscribed(
    gateway: RunningGateway, subscriber: Subscriber, variables: dict[str, Any], count: int = 1
) -> None:
    """Start `listingChanged`; until the feed holds `count` subscriptions and the poller has
    taken the first snapshots of their ads (neither protocol acknowledges a subscription)."""
    await subscriber.start(CHANGED, variables)
    await feed_of(gateway).membership.until(lambda: len(feed_of(gateway).subscribers) >= count)
    await poller_of(gateway).baseline()


async def event(subscriber: Subscriber) -> dict[str, Any]:
    payload = await subscriber.next()
    assert "errors" not in payload, payload
    change: dict[str, Any] = payload["data"]["listingChanged"]
    return change


# --- legacy, by polling -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_legacy_change_is_pushed_by_the_next_poll_without_another_legacy_read(
    live: RunningGateway, protocol: str
) -> None:
    listing = listing_of(live)
    _, user_id, ad_id = listing
    async with connect(live, protocol) as subscriber:
        await subscribed(live, subscriber, {"refs": [ref(listing)]})
        portal, state = await set_legacy(live, user_id, ad_id)
        live.sim.state.reset_counters()

        await poller_of(live).poll_once()
        change = await event(subscriber)
        assert change["provider"] == "LEGACY"
        assert change["changedPortals"] == [portal]
        shown = {(p["portal"], p["provider"]): p["state"] for p in change["listing"]["portals"]}
        assert shown[(portal, "LEGACY")] == state
        assert change["listing"]["legacyAd"] == {"userId": user_id, "adId": ad_id}
        # One POST /status/ for the poll; the listing shown took the polled answer.
        assert live.calls("legacy") == live.calls("legacy", "status_post") == 1


async def test_nothing_is_sent_while_nothing_changes(live: RunningGateway) -> None:
    listing = listing_of(live)
    classified_id = listing[0]
    async with connect(live, TRANSPORT_WS) as subscriber:
        await subscribed(live, subscriber, {"refs": [ref(listing)]})
        for _ in range(3):
            await poller_of(live).poll_once()
        assert poller_of(live).stats.changes == 0
        # The first event to arrive is this V3 one: the polls before it sent nothing.
        await append(live, classified_id, "DELETING")
        change = await event(subscriber)
        assert change["provider"] == "CLASSIFIEDS_V3"
        assert change["listing"]["classifiedId"] == classified_id


async def test_four_subscribers_of_two_users_cost_one_post_per_user_and_poll(
    live: RunningGateway,
) -> None:
    listings = [listing_of(live, position) for position in range(4)]
    users = {user for _, user, _ in listings}
    assert len(users) > 1
    refs = [ref(listing) for listing in listings]
    async with (
        connect(live, TRANSPORT_WS) as one,
        connect(live, TRANSPORT_WS) as two,
        connect(live, LEGACY_WS) as three,
        connect(live, LEGACY_WS) as four,
    ):
        subscribers = [one, two, three, four]
        for count, subscriber in enumerate(subscribers, 1):
            await subscribed(live, subscriber, {"refs": refs}, count)
        live.sim.state.reset_counters()
        for _ in range(2):
            await poller_of(live).poll_once()
        assert live.calls("legacy", "status_post") == 2 * len(users)

        _, user_id, ad_id = listings[1]
        portal, _ = await set_legacy(live, user_id, ad_id)
        await poller_of(live).poll_once()
        for subscriber in subscribers:
            change = await event(subscriber)
            assert change["changedPortals"] == [portal]
            assert change["listing"]["legacyAd"]["adId"] == ad_id
        # Four subscribers shown the change: no legacy read beyond the polls.
        assert live.calls("legacy") == 3 * len(users)


async def test_an_ad_nobody_watches_is_not_polled(live: RunningGateway) -> None:
    listing = listing_of(live)
    async with connect(live, TRANSPORT_WS) as subscriber:
        await subscribed(live, subscriber, {"refs": [ref(listing)]})
    await feed_of(live).membership.until(lambda: not feed_of(live).subscribers)
    live.sim.state.reset_counters()
    await poller_of(live).poll_once()
    assert live.calls("legacy") == 0
    assert poller_of(live).watched == 0


async def test_polling_waits_as_the_legacy_api_asks(live: RunningGateway) -> None:
    listing = listing_of(live)
    poller = poller_of(live)
    async with connect(live, TRANSPORT_WS) as subscriber:
        await subscribed(live, subscriber, {"refs": [ref(listing)]})
        live.sim.state.add_fault_object(
            Fault(upstream="legacy", kind="rate_limit", retry_after=120)
        )
        live.sim.state.reset_counters()
        await poller.poll_once()
        asked = live.calls("legacy")
        assert asked >= 1 and poller.stats.failures == 1
        # Within the two minutes it asked for, the user's ads are not asked for again.
        await poller.poll_once()
        assert live.calls("legacy") == asked
        assert poller.stats.deferred == 1
        live.sim.state.clear_faults()


# --- V3, from webhooks -------------------------------------------------------------------


async def test_a_v3_event_is_a_change_only_when_a_portal_state_moves(live: RunningGateway) -> None:
    listing = listing_of(live, 1)
    classified_id = listing[0]
    async with connect(live, TRANSPORT_WS) as subscriber:
        await subscribed(live, subscriber, {"refs": [{"classifiedId": classified_id}]})
        await append(live, classified_id, "UPDATING")  # the first event is always a change
        await append(live, classified_id, "CREATING")  # PROCESSING again: not one
        await append(live, classified_id, "UPDATED")
        first, second = await event(subscriber), await event(subscriber)
        assert [first["provider"], second["provider"]] == ["CLASSIFIEDS_V3"] * 2
        assert first["changedPortals"] and first["changedPortals"] == second["changedPortals"]
        v3 = {p["portal"]: p["state"] for p in second["listing"]["portals"]
              if p["provider"] == "CLASSIFIEDS_V3"}  # fmt: skip
        assert {v3[portal] for portal in second["changedPortals"]} == {"ONLINE"}
        await feed_of(live).settled()
        assert (feed_of(live).stats.v3_events, feed_of(live).stats.v3_changes) == (3, 2)


# --- resuming ------------------------------------------------------------------------------


async def test_a_cursor_resumes_with_exactly_the_missed_changes_in_order(
    live: RunningGateway,
) -> None:
    listing = listing_of(live, 2)
    classified_id, user_id, ad_id = listing
    variables: dict[str, Any] = {"refs": [ref(listing)]}
    async with connect(live, TRANSPORT_WS) as stayer:
        # Another viewer of the listing stays: its ad is polled while the first is away.
        await subscribed(live, stayer, variables)
        async with connect(live, TRANSPORT_WS) as subscriber:
            await subscribed(live, subscriber, variables, count=2)
            await append(live, classified_id, "DELETING")
            seen = await event(subscriber)
        await feed_of(live).membership.until(lambda: len(feed_of(live).subscribers) == 1)

        # Missed while away: a legacy change, a V3 one, and one of another listing.
        await set_legacy(live, user_id, ad_id)
        await poller_of(live).poll_once()
        await append(live, classified_id, "DELETED")
        await append(live, listing_of(live, 3)[0], "DELETING")
        await feed_of(live).settled()

        async with connect(live, LEGACY_WS) as again:
            await subscribed(live, again, variables | {"after": seen["cursor"]}, count=2)
            missed = [await event(again), await event(again)]
            assert [c["provider"] for c in missed] == ["LEGACY", "CLASSIFIEDS_V3"]
            assert feed_of(live).stats.replayed == 2
            # Then live, with nothing repeated.
            await append(live, classified_id, "UPDATING")
            live_change = await event(again)
            assert live_change["provider"] == "CLASSIFIEDS_V3"
            cursors = [seen["cursor"], *(c["cursor"] for c in missed), live_change["cursor"]]
            assert len(set(cursors)) == 4


async def test_a_legacy_change_while_nobody_watched_comes_at_the_first_poll_back(
    live: RunningGateway,
) -> None:
    listing = listing_of(live, 2)
    _, user_id, ad_id = listing
    variables: dict[str, Any] = {"refs": [ref(listing)]}
    async with connect(live, TRANSPORT_WS) as subscriber:
        await subscribed(live, subscriber, variables)
    await feed_of(live).membership.until(lambda: not feed_of(live).subscribers)
    portal, _ = await set_legacy(live, user_id, ad_id)  # nobody polls it now

    async with connect(live, TRANSPORT_WS) as subscriber:
        # The ad's last snapshot outlived its watcher: the return is compared with it.
        await subscribed(live, subscriber, variables)
        assert poller_of(live).stats.baselines == 1
        await poller_of(live).poll_once()
        change = await event(subscriber)
        assert (change["provider"], change["changedPortals"]) == ("LEGACY", [portal])


async def test_a_cursor_that_is_not_one_or_has_expired_is_refused(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(
        simulator,
        public=True,
        webhook_subscribe=True,
        webhook_secret=SECRET,
        legacy_poll_s=HOUR,
        event_log_max_entries=1,
    ) as gateway:
        classified_id = listing_of(gateway)[0]
        variables: dict[str, Any] = {"refs": [{"classifiedId": classified_id}]}
        async with connect(gateway, TRANSPORT_WS) as subscriber:
            await subscribed(gateway, subscriber, variables)
            await append(gateway, classified_id, "DELETING")
            first = await event(subscriber)
            # The log keeps one change: the one right after `first` goes with the third.
            for status in ("DELETED", "UPDATING"):
                await append(gateway, classified_id, status)
                await event(subscriber)

        other_log = ChangeCursor("0123456789", LogPosition(1)).encode()
        for after, reason in (("not-a-cursor", None), (first["cursor"], "cursor_expired"),
                              (other_log, "cursor_expired")):  # fmt: skip
            async with connect(gateway, TRANSPORT_WS) as subscriber:
                await subscriber.start(CHANGED, variables | {"after": after})
                message = await subscriber.ws.receive_json()
            (error,) = message["payload"]["errors"]
            expected = {"code": "BAD_USER_INPUT"} | ({"reason": reason} if reason else {})
            assert error["extensions"] == expected
        assert feed_of(gateway).stats.expired == 2
        metrics = (await gateway.client.get("/metrics")).text
        assert 'gateway_listing_changes_total{event="expired"} 2.0' in metrics


async def test_refs_are_checked_before_anything_is_watched(live: RunningGateway) -> None:
    for refs in ([], [{}], [{"classifiedId": "x"}] * 201):
        async with connect(live, TRANSPORT_WS) as subscriber:
            await subscriber.start(CHANGED, {"refs": refs})
            message = await subscriber.ws.receive_json()
        (error,) = message["payload"]["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert not feed_of(live).subscribers and poller_of(live).watched == 0


async def test_the_documented_subscription_streams_a_legacy_change(live: RunningGateway) -> None:
    """docs/live-status.md's subscription names the first listing of agency-1 (the demo's),
    and its event has the documented shape."""
    shown = fenced_after("<!-- listing-changed-subscription -->", "graphql")
    sample = json.loads(fenced_after("<!-- listing-changed-event -->", "json"))
    classified_id, user_id, ad_id = listing_of(live)
    assert f'"{classified_id}"' in shown and f"userId: {user_id}, adId: {ad_id}" in shown
    async with connect(live, TRANSPORT_WS) as subscriber:
        await subscriber.start(shown)
        await feed_of(live).membership.until(lambda: len(feed_of(live).subscribers) == 1)
        await poller_of(live).baseline()
        await set_legacy(live, user_id, ad_id)
        await poller_of(live).poll_once()
        payload = await subscriber.next()
    assert payload["data"]["listingChanged"]["provider"] == "LEGACY"
    assert _fits(payload, sample), payload
