"""The start-up warm-up: the V3 token is fetched and the GraphQL path run before any caller."""

from __future__ import annotations

from gateway.simulator import RunningSimulator

from gateway_harness import run_gateway


async def test_the_token_is_fetched_and_no_listing_is_read_before_the_first_caller(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(simulator, warm_up=True) as gw:
        assert (gw.calls("token"), gw.calls("v3"), gw.calls("legacy")) == (1, 0, 0)
        body = await gw.query("{ listings(refs: []) { id } }")
        assert body == {"data": {"listings": []}}
        listing = gw.sim.data.listings[0]
        body = await gw.query(
            "query($c: ID!) { listing(ref: {classifiedId: $c}) { state } }",
            {"c": listing.classified_id},
        )
        assert body["data"]["listing"]["state"]
        assert gw.calls("token") == 1  # the first caller used the warm-up's token


async def test_a_failing_token_endpoint_does_not_stop_the_start(
    simulator: RunningSimulator,
) -> None:
    simulator.sim.state.add_fault("token", "error", status=503)
    async with run_gateway(simulator, warm_up=True, upstream_timeout_s=2) as gw:
        assert gw.calls("token") >= 1
        simulator.sim.state.clear_faults()
        listing = gw.sim.data.listings[0]
        body = await gw.query(
            "query($c: ID!) { listing(ref: {classifiedId: $c}) { state } }",
            {"c": listing.classified_id},
        )
        assert body["data"]["listing"]["state"]
