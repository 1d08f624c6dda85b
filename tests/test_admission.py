"""Admission control on /graphql: a burst beyond capacity is refused at once, admitted work completes.

The admitted requests are held inside the V3 read by a gate the test opens, so "capacity is
full" is a fact the test sets up, not a race against time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from gateway.admission import Admission
from gateway.simulator import RunningSimulator
from gateway.web import create_app

from gateway_harness import LOOPBACK_TLS, serve_app, settings_for

QUERY = "query Latest($id: ID!) { listing(ref: {classifiedId: $id}) { classified { latestStatus { status } } } }"


class GatedV3:
    """The real V3 client, but every read waits for `gate` once it has arrived."""

    def __init__(self, real: Any, gate: asyncio.Event, arrivals: int) -> None:
        self.real = real
        self.gate = gate
        self.arrived = 0
        self.all_arrived = asyncio.Event()
        self.expected = arrivals

    async def classified_statuses(self, *args: Any, **kwargs: Any) -> Any:
        self.arrived += 1
        if self.arrived >= self.expected:
            self.all_arrived.set()
        await self.gate.wait()
        return await self.real.classified_statuses(*args, **kwargs)

    async def media_statuses(self, *args: Any, **kwargs: Any) -> Any:
        return await self.real.media_statuses(*args, **kwargs)


def admission_of(app: Any) -> Admission:
    layer = app.middleware_stack
    while not isinstance(layer, Admission):
        layer = layer.app
    return layer


async def test_a_burst_beyond_capacity_gets_503_and_admitted_requests_succeed(
    simulator: RunningSimulator,
) -> None:
    settings = settings_for(
        simulator, max_concurrent_requests=2, max_queued_requests=2, queue_timeout_s=30
    )
    ids = [c.classified_id for c in simulator.sim.data.listings[:4]]
    app = create_app(settings)
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client,
    ):
        gate = asyncio.Event()
        service = app.state.runtime.service
        gated = GatedV3(service.v3, gate, arrivals=2)
        service.v3 = gated

        async def ask(classified_id: str) -> httpx.Response:
            return await client.post(
                "/graphql", json={"query": QUERY, "variables": {"id": classified_id}}
            )

        running = [asyncio.create_task(ask(i)) for i in ids[:2]]
        await gated.all_arrived.wait()  # both slots are taken, inside the upstream read
        queued = [asyncio.create_task(ask(i)) for i in ids[2:]]
        admission = admission_of(app)
        # The two requests reach the queue within a few loop turns; nothing signals it.
        while admission.queued < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.005)

        burst = await asyncio.gather(*(ask(ids[0]) for _ in range(20)))
        assert [r.status_code for r in burst] == [503] * 20
        for response in burst:
            assert response.headers["retry-after"] == "30"
            [error] = response.json()["errors"]
            assert error["extensions"]["code"] == "OVERLOADED"
            assert "data" not in response.json()
        refused = await client.get("/metrics")
        assert 'gateway_admission_refused_total{reason="queue_full"} 20.0' in refused.text
        assert "gateway_admission_queue_depth 2.0" in refused.text
        assert "gateway_admission_in_flight 2.0" in refused.text
        assert "gateway_requests_in_flight 4.0" in refused.text  # running and queued

        gate.set()
        admitted = await asyncio.gather(*running, *queued)
        assert [r.status_code for r in admitted] == [200] * 4
        for response in admitted:
            body = response.json()
            assert "errors" not in body, body
            assert body["data"]["listing"]["classified"] is not None
        metrics = (await client.get("/metrics")).text
        # Refused before its body is read: the operation is not known.
        assert 'gateway_requests_total{operation="-",outcome="overloaded"} 20.0' in metrics
        assert 'gateway_requests_total{operation="Latest",outcome="ok"} 4.0' in metrics


async def test_a_queued_request_gives_up_after_the_queue_timeout(
    simulator: RunningSimulator,
) -> None:
    settings = settings_for(
        simulator, max_concurrent_requests=1, max_queued_requests=5, queue_timeout_s=0.05
    )
    app = create_app(settings)
    classified_id = simulator.sim.data.listings[0].classified_id
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client,
    ):
        gate = asyncio.Event()
        gated = GatedV3(app.state.runtime.service.v3, gate, arrivals=1)
        app.state.runtime.service.v3 = gated
        payload = {"query": QUERY, "variables": {"id": classified_id}}
        held = asyncio.create_task(client.post("/graphql", json=payload))
        await gated.all_arrived.wait()
        waited = await client.post("/graphql", json=payload)
        assert waited.status_code == 503
        assert waited.json()["errors"][0]["extensions"]["code"] == "OVERLOADED"
        gate.set()
        assert (await held).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'gateway_admission_refused_total{reason="queue_timeout"} 1.0' in metrics
