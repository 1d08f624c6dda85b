"""The HTTP edge reads a request's body before admission, bounded in size and time, and
bounds a whole `/graphql` execution by one deadline (gateway.http.limits, gateway.http.deadline).

Real sockets on loopback: a stalled client is a socket that announces a body and sends a
byte of it. The timeouts are settings, set small here; nothing waits on the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.simulator import RunningSimulator
from gateway.simulator.faults import Fault

from gateway_harness import RunningGateway, run_gateway

LATEST = "query($id: ID!) { listing(ref: {classifiedId: $id}) { classified { latestStatus { status } } } }"
STALLED_HEAD = (
    b"POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n{"
)


@asynccontextmanager
async def stalled_posts(
    gateway: RunningGateway, count: int
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    """`count` connections that each announce a 100 kB body and send one byte of it."""
    host, port = gateway.url.removeprefix("http://").split(":")
    sockets = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(STALLED_HEAD)
            await writer.drain()
            sockets.append((reader, writer))
        yield sockets
    finally:
        for _, writer in sockets:
            writer.close()
        for _, writer in sockets:
            with contextlib.suppress(ConnectionError):  # the server may have closed it first
                await writer.wait_closed()


async def test_stalled_bodies_hold_no_admission_turn_and_get_408(
    simulator: RunningSimulator,
) -> None:
    """Eight clients dripping a body used to take all eight turns (and the queue): every
    other caller got 503 OVERLOADED, gRPC RESOURCE_EXHAUSTED, for as long as they liked."""
    classified_id = simulator.sim.data.listings[0].classified_id
    async with (
        run_gateway(
            simulator,
            grpc=True,
            max_concurrent_requests=8,
            min_concurrent_requests=8,
            max_queued_requests=0,
            body_timeout_s=0.3,
        ) as gateway,
        stalled_posts(gateway, 8) as stalled,
    ):
        # The stalled requests' headers are in: they are waiting for their bodies.
        response = await gateway.client.post(
            "/graphql", json={"query": LATEST, "variables": {"id": classified_id}}
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"]["listing"]["classified"]["latestStatus"] is not None
        async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
            stub = pb_grpc.ListingStatusServiceStub(channel)
            reply = await stub.GetListing(
                pb.GetListingRequest(ref=pb.ListingRef(classified_id=classified_id))
            )
            assert reply.ref.classified_id == classified_id

        for reader, _ in stalled:
            answer = await reader.read()  # to the end: the server closes the connection
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"connection: close" in answer.lower()
        assert gateway.app.state.admission.running == 0


async def test_a_body_larger_than_the_limit_is_refused_while_it_is_sent(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(simulator, max_body_bytes=4096) as gateway:
        host, port = gateway.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(3):
            writer.write(b"800\r\n" + b" " * 0x800 + b"\r\n")
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 413 "), status_line


async def test_an_execution_past_the_request_deadline_is_answered_504(
    simulator: RunningSimulator,
) -> None:
    """Held inside the service (past the upstream client's reach), the request is cut at
    the deadline, its admission turn given back."""
    classified_id = simulator.sim.data.listings[0].classified_id
    async with run_gateway(simulator, request_timeout_s=0.3) as gateway:
        service = gateway.app.state.runtime.service
        never = asyncio.Event()

        class Held:
            def __init__(self, real: Any) -> None:
                self.real = real

            def __getattr__(self, name: str) -> Any:
                return getattr(self.real, name)

            async def classified_statuses(self, *args: Any, **kwargs: Any) -> Any:
                await never.wait()

        service.v3 = Held(service.v3)
        try:
            for accept in ("application/json", "application/graphql-response+json"):
                response = await gateway.client.post(
                    "/graphql",
                    json={"query": LATEST, "variables": {"id": classified_id}},
                    headers={"accept": accept},
                )
                assert response.status_code == 504, response.text
                assert response.headers["content-type"].startswith(accept)
                [error] = response.json()["errors"]
                assert error["extensions"]["code"] == "DEADLINE_EXCEEDED"
            assert gateway.app.state.admission.running == 0
        finally:
            never.set()  # whatever is still held (without the deadline) ends with the test


async def test_a_hanging_upstream_ends_in_deadline_exceeded_not_a_hang(
    simulator: RunningSimulator,
) -> None:
    """V3 hangs for 40 s and the upstream timeout is a minute: the caller hears DEADLINE_EXCEEDED at
    its request deadline (a 504, or the fields that needed V3 failing with that code)."""
    listing = simulator.sim.data.listings[0]
    simulator.sim.state.add_fault_object(Fault(upstream="v3", kind="timeout", delay_s=40))
    async with run_gateway(
        simulator, request_timeout_s=0.5, upstream_timeout_s=60, upstream_retries=0
    ) as gateway:
        response = await gateway.client.post(
            "/graphql",
            json={
                "query": "query($id: ID!) { listing(ref: {classifiedId: $id}) "
                "{ classifiedId classified { latestStatus { status } } } }",
                "variables": {"id": listing.classified_id},
            },
        )
    assert response.status_code in (200, 504), response.text
    codes = {error["extensions"]["code"] for error in response.json()["errors"]}
    assert codes == {"DEADLINE_EXCEEDED"}, response.text
