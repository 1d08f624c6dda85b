"""Circuit breakers, retry budget, concurrency cap and fault isolation, against the simulator.

Time never passes for real here: the breakers run on an injected clock, faults answer at
once (or are cut by a short deadline), and breaker behaviour is asserted by upstream call
counts, not durations.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import yarl

from gateway.app import create_app
from gateway.domain.errors import UpstreamUnavailable
from gateway.simulator import RunningSimulator, Simulator
from gateway.simulator.data import Listing
from gateway.upstreams import UpstreamGuard
from gateway.upstreams._http import Deadline, create_session, request
from gateway.upstreams.breaker import BreakerState, CircuitBreaker, CircuitOpen
from gateway.upstreams.guard import RetryBudget

from gateway_harness import LOOPBACK_TLS, serve_app, settings_for

V3, LEGACY = "classifieds-v3", "legacy"
QUERY = """
query Listing($ref: ListingRef!) {
  listing(ref: $ref) {
    classified { id latestStatus { status } }
    legacy { adId portals { portal } }
  }
}
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Gateway:
    def __init__(self, client: httpx.AsyncClient, sim: Simulator, app: Any) -> None:
        self.client = client
        self.sim = sim
        self.app = app

    async def listing(self, listing: Listing) -> dict[str, Any]:
        response = await self.client.post(
            "/graphql", json={"query": QUERY, "variables": {"ref": ref_of(listing)}}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def calls(self, upstream: str) -> int:
        return self.sim.state.calls(upstream)


@asynccontextmanager
async def gateway_with(
    simulator: RunningSimulator, clock: FakeClock, **overrides: Any
) -> AsyncIterator[Gateway]:
    app = create_app(settings_for(simulator, **overrides), clock=clock)
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client,
    ):
        yield Gateway(client, simulator.sim, app)


def ref_of(listing: Listing) -> dict[str, Any]:
    return {
        "classifiedId": listing.classified_id,
        "legacy": {"userId": listing.user_id, "adId": listing.ad_id},
    }


def listings_of(sim: Simulator) -> list[Listing]:
    return [c for c in sim.data.listings if sim.data.tenant_of(c.classified_id) == "agency-1"]


def upstream_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["extensions"] for e in body.get("errors", [])]


def assert_other_side_resolved(body: dict[str, Any], failed: str) -> None:
    """The failing upstream's field is null with its error; the other one has no error."""
    listing = body["data"]["listing"]
    assert {e["upstream"] for e in upstream_errors(body)} == {failed}
    if failed == V3:
        assert listing["legacy"] is not None and listing["legacy"]["portals"]
        assert listing["classified"]["latestStatus"] is None
    else:
        assert listing["classified"] is not None
        assert listing["legacy"] is None


SIM_NAME = {V3: "v3", LEGACY: "legacy"}


# --- the breaker on its own ------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_lets_one_trial_through() -> None:
    clock = FakeClock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(
        failure_threshold=3, reset_after_s=10, clock=clock, on_change=changes.append
    )
    for _ in range(2):
        breaker.record(ok=False, trial=breaker.acquire())
    breaker.record(ok=True, trial=breaker.acquire())  # a success resets the count
    for _ in range(3):
        breaker.record(ok=False, trial=breaker.acquire())
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as refused:
        breaker.acquire()
    assert refused.value.retry_in == 10
    clock.now += 10
    assert breaker.acquire() is True  # the one trial
    with pytest.raises(CircuitOpen):
        breaker.acquire()  # everyone else still fails fast
    breaker.record(ok=False, trial=True)
    assert breaker.state is BreakerState.OPEN  # a failed trial opens it again
    clock.now += 10
    breaker.release(trial=breaker.acquire())  # a cancelled trial lets another one through
    breaker.record(ok=True, trial=breaker.acquire())
    assert breaker.state is BreakerState.CLOSED
    assert changes == ["open", "half_open", "open", "half_open", "closed"]


def test_retry_budget_allows_a_share_of_calls_after_its_reserve() -> None:
    budget = RetryBudget(ratio=0.2, reserve=2)
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]
    for _ in range(10):
        budget.deposit()
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]  # capped at the reserve
    for _ in range(5):
        budget.deposit()
    assert budget.withdraw() and not budget.withdraw()  # 5 calls x 20 % = one retry


async def test_a_call_waiting_for_a_slot_gives_up_at_its_deadline(
    simulator: RunningSimulator,
) -> None:
    guard = UpstreamGuard(LEGACY, max_concurrency=1)
    assert await guard.take_slot(1.0)  # the only slot, held by "another call"
    async with create_session(timeout_s=1) as session:
        with pytest.raises(UpstreamUnavailable) as refused:
            await request(
                session,
                "GET",
                yarl.URL(simulator.legacy_url + "/status/1/2"),
                upstream=LEGACY,
                endpoint="status_get",
                deadline=Deadline.after(0.05),
                guard=guard,
            )
    assert refused.value.reason == "concurrency_limit"
    assert simulator.sim.state.calls("legacy") == 0
    assert guard.breaker.state is BreakerState.CLOSED  # our own limit is not the upstream's fault
    guard.give_slot()
    assert guard.in_flight == 0


# --- through the gateway ---------------------------------------------------------------------


@pytest.mark.parametrize("failing", [V3, LEGACY])
async def test_open_breaker_fails_fast_and_leaves_the_other_upstream_alone(
    simulator: RunningSimulator, failing: str
) -> None:
    clock = FakeClock()
    listings = listings_of(simulator.sim)
    async with gateway_with(simulator, clock) as gw:
        await gw.listing(listings[0])  # healthy: the token is fetched
        # A malformed body fails at once and is not retried: one call per operation.
        simulator.sim.state.add_fault(SIM_NAME[failing], "malformed")  # type: ignore[arg-type]
        for listing in listings[1:6]:
            body = await gw.listing(listing)
            assert_other_side_resolved(body, failing)
            assert upstream_errors(body) == [{"code": "UPSTREAM_UNAVAILABLE", "upstream": failing}]
        calls = gw.calls(SIM_NAME[failing])
        other_calls = gw.calls(SIM_NAME[V3 if failing == LEGACY else LEGACY])

        # Open: a burst costs the failing upstream nothing, the other one answers as usual.
        for listing in [*listings[6:10], *listings[1:6]]:
            body = await gw.listing(listing)
            assert_other_side_resolved(body, failing)
            [error] = upstream_errors(body)
            assert error["code"] == "UPSTREAM_UNAVAILABLE"
            assert error["reason"] == "circuit_open"
            assert error["upstream"] == failing
            assert error["retryAfter"] == 10
        assert gw.calls(SIM_NAME[failing]) == calls
        assert gw.calls(SIM_NAME[V3 if failing == LEGACY else LEGACY]) > other_calls

        # Half-open after 10 s: one trial call, which succeeds and closes the breaker.
        simulator.sim.state.clear_faults()
        clock.now += 10
        body = await gw.listing(listings[1])
        assert "errors" not in body, body
        assert gw.calls(SIM_NAME[failing]) == calls + 1
        body = await gw.listing(listings[2])
        assert "errors" not in body, body


async def test_half_open_breaker_sends_one_trial_for_many_concurrent_reads(
    simulator: RunningSimulator,
) -> None:
    clock = FakeClock()
    listings = listings_of(simulator.sim)[:8]
    query = "query($refs: [ListingRef!]!) { listings(refs: $refs) { classified { latestStatus { status } } } }"
    async with gateway_with(simulator, clock) as gw:
        await gw.listing(listings[0])
        simulator.sim.state.add_fault("v3", "malformed", count=5)
        for listing in listings[1:6]:
            await gw.listing(listing)
        before = gw.calls("v3")
        clock.now += 10
        response = await gw.client.post(
            "/graphql",
            json={
                "query": query,
                "variables": {"refs": [{"classifiedId": c.classified_id} for c in listings[1:8]]},
            },
        )
        body = response.json()
        assert gw.calls("v3") == before + 1
        reasons = [e["extensions"].get("reason") for e in body["errors"]]
        assert reasons == ["circuit_open"] * 6
        assert (
            sum(item["classified"]["latestStatus"] is not None for item in body["data"]["listings"])
            == 1
        )


async def test_retries_stay_within_the_budget(simulator: RunningSimulator) -> None:
    listings = listings_of(simulator.sim)[:10]
    query = "query($refs: [ListingRef!]!) { listings(refs: $refs) { classified { latestStatus { status } } } }"
    async with gateway_with(
        simulator, FakeClock(), retry_budget_ratio=0.0, breaker_failures=100
    ) as gw:
        await gw.listing(listings[0])  # the token, and one healthy call
        listings = listings[1:]
        simulator.sim.state.reset_counters()
        simulator.sim.state.add_fault("v3", "error", status=503)
        response = await gw.client.post(
            "/graphql",
            json={
                "query": query,
                "variables": {"refs": [{"classifiedId": c.classified_id} for c in listings]},
            },
        )
        assert {e["extensions"]["code"] for e in response.json()["errors"]} == {
            "UPSTREAM_UNAVAILABLE"
        }
        metrics = (await gw.client.get("/metrics")).text
    refused = 'gateway_upstream_refused_total{reason="retry_budget",upstream="classifieds-v3"} 8.0'
    assert refused in metrics  # 18 retries wanted, 10 taken
    # 9 first attempts, and of the 18 retries wanted only the reserve of 10 (the ratio adds
    # nothing here).
    assert simulator.sim.state.calls("v3") == 9 + 10


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound and held for the test, never
    listening, so no other test can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


FAULTS = ["error", "rate_limit", "timeout", "refused", "malformed", "slow"]


@pytest.mark.parametrize("failing", [V3, LEGACY])
@pytest.mark.parametrize("fault", FAULTS)
async def test_each_fault_of_one_upstream_leaves_the_other_resolving(
    simulator: RunningSimulator, refusing_port: int, failing: str, fault: str
) -> None:
    # Short, so the timeouts end quickly; "slow" must end well inside it, loaded machine or not.
    overrides: dict[str, Any] = {"upstream_timeout_s": 2.0 if fault == "slow" else 0.5}
    if fault == "refused":
        dead = f"http://127.0.0.1:{refusing_port}"
        overrides["v3_url" if failing == V3 else "legacy_url"] = dead + (
            "/v3" if failing == V3 else "/legacy"
        )
    name = SIM_NAME[failing]
    listing = listings_of(simulator.sim)[1]
    async with gateway_with(simulator, FakeClock(), **overrides) as gw:
        if fault == "error":
            simulator.sim.state.add_fault(name, "error", status=503)  # type: ignore[arg-type]
        elif fault == "rate_limit":
            # Longer than the deadline: no retry is attempted, the caller learns when to return.
            simulator.sim.state.add_fault(name, "rate_limit", retry_after=30)  # type: ignore[arg-type]
        elif fault == "timeout":
            simulator.sim.state.add_fault(name, "timeout", delay_s=5)  # type: ignore[arg-type]
        elif fault == "malformed":
            simulator.sim.state.add_fault(name, "malformed")  # type: ignore[arg-type]
        elif fault == "slow":
            simulator.sim.state.set_latency(name, 50)  # well inside the deadline
        body = await gw.listing(listing)
        if fault == "slow":
            assert "errors" not in body, body
            return
        assert_other_side_resolved(body, failing)
        [error] = upstream_errors(body)
        assert error["code"] == "UPSTREAM_UNAVAILABLE"
        assert error["upstream"] == failing
        if fault == "rate_limit":
            assert error["retryAfter"] == 30
        # The process stays healthy and ready: one failing upstream is not a reason to leave.
        ready = await gw.client.get("/readyz")
        assert ready.status_code == 200, ready.text


async def test_readyz_is_503_while_both_breakers_are_open(simulator: RunningSimulator) -> None:
    clock = FakeClock()
    listings = listings_of(simulator.sim)
    async with gateway_with(simulator, clock, breaker_failures=2) as gw:
        await gw.listing(listings[0])
        simulator.sim.state.add_fault("v3", "malformed")
        simulator.sim.state.add_fault("legacy", "malformed")
        for listing in listings[1:3]:
            await gw.listing(listing)
        response = await gw.client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reasons"] == [
            "circuit open for every upstream: classifieds-v3, legacy"
        ]
        clock.now += 10  # half-open: traffic may come back for the trial calls
        assert (await gw.client.get("/readyz")).status_code == 200
