"""Metrics at /metrics, trace context on every upstream call, spans, and the request log line."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from pythonjsonlogger.json import JsonFormatter

from gateway.app import create_app
from gateway.graphql.persisted import sha256_hex
from gateway.observability.logs import ACCESS_LOGGER, configure_logging
from gateway.simulator import SIM_CLIENT_SECRET, SIM_LEGACY_API_KEY, RunningSimulator, Simulator
from gateway.simulator.data import Listing
from gateway.upstreams.unknowns import note_unknown

from gateway_harness import LOOPBACK_TLS, serve_app, settings_for

QUERY = """
query Board($refs: [ListingRef!]!) {
  listings(refs: $refs) { state classified { latestStatus { status } } legacy { adId } }
}
"""
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def listings_of(sim: Simulator) -> list[Listing]:
    return [c for c in sim.data.listings if sim.data.tenant_of(c.classified_id) == "agency-1"]


def refs(listings: list[Listing]) -> list[dict[str, Any]]:
    return [
        {"classifiedId": c.classified_id, "legacy": {"userId": c.user_id, "adId": c.ad_id}}
        for c in listings
    ]


@asynccontextmanager
async def gateway(
    simulator: RunningSimulator, provider: TracerProvider | None = None, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_for(simulator, **overrides), tracer_provider=provider)
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client,
    ):
        yield client


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_every_metric_moves(simulator: RunningSimulator) -> None:
    listings = listings_of(simulator.sim)[:3]
    note_unknown("test.portal", "XX")
    async with gateway(simulator, loop_lag_interval_s=0.001) as client:
        simulator.sim.state.add_fault("v3", "error", status=503, count=1)
        response = await client.post(
            "/graphql", json={"query": QUERY, "variables": {"refs": refs(listings)}}
        )
        assert response.status_code == 200
        await client.post("/graphql", json={"query": QUERY, "variables": {"refs": refs(listings)}})
        text = (await client.get("/metrics")).text
    found = samples(text)
    assert value(found, "gateway_requests_total", operation="Board", outcome="ok") == 2
    assert value(found, "gateway_request_duration_seconds_count", operation="Board") == 2
    assert ("gateway_requests_in_flight", frozenset()) in found
    v3 = {"upstream": "classifieds-v3", "endpoint": "classified_statuses"}
    assert value(found, "gateway_upstream_requests_total", **v3, status="503") == 1
    made = simulator.sim.state.calls("v3", "classified_statuses")
    assert value(found, "gateway_upstream_requests_total", **v3, status="200") == made - 1
    assert value(found, "gateway_upstream_retries_total", **v3) == 1
    assert value(found, "gateway_upstream_request_duration_seconds_count", **v3) == made
    assert value(found, "gateway_v3_token_fetches_total") == 1
    assert value(found, "gateway_legacy_batch_size_count") >= 1
    assert value(found, "gateway_cache_events_total", event="misses") == made - 1
    assert value(found, "gateway_cache_events_total", event="hits") >= 3  # the second request
    assert value(found, "gateway_circuit_state", upstream="legacy") == 0
    assert (
        value(found, "gateway_upstream_unknown_values_total", kind="test.portal", value="XX") >= 1
    )
    assert ("gateway_admission_queue_depth", frozenset()) in found
    assert value(found, "gateway_event_loop_lag_seconds_distribution_count") > 0


async def test_operation_names_past_the_bound_count_as_other(
    simulator: RunningSimulator,
) -> None:
    async with gateway(simulator, metrics_max_operations=2) as client:
        for name in ("A", "B", "C", "D", "A"):
            answer = await client.post("/graphql", json={"query": f"query {name} {{ __typename }}"})
            assert answer.status_code == 200
        found = samples((await client.get("/metrics")).text)
    operations = {
        dict(labels)["operation"]: count
        for (metric, labels), count in found.items()
        if metric == "gateway_requests_total"
    }
    assert operations == {"A": 2, "B": 1, "other": 2}


async def test_the_trusted_documents_operations_always_have_a_label_of_their_own(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    documents = [f"query Trusted{index} {{ __typename }}" for index in range(3)]
    manifest = tmp_path / "persisted-documents.json"
    manifest.write_text(json.dumps({sha256_hex(text): text for text in documents}))
    async with gateway(
        simulator, metrics_max_operations=1, trusted_documents=str(manifest)
    ) as client:
        for text in documents:
            assert (await client.post("/graphql", json={"query": text})).status_code == 200
        found = samples((await client.get("/metrics")).text)
    for index in range(3):
        operation = f"Trusted{index}"
        assert value(found, "gateway_requests_total", operation=operation, outcome="ok") == 1


async def test_breaker_and_refusals_show_in_metrics(simulator: RunningSimulator) -> None:
    listings = listings_of(simulator.sim)
    async with gateway(simulator, breaker_failures=1) as client:
        simulator.sim.state.add_fault("legacy", "malformed")
        for listing in listings[:3]:
            await client.post(
                "/graphql", json={"query": QUERY, "variables": {"refs": refs([listing])}}
            )
        found = samples((await client.get("/metrics")).text)
    assert value(found, "gateway_circuit_state", upstream="legacy") == 2
    assert value(found, "gateway_circuit_transitions_total", upstream="legacy", state="open") == 1
    assert (
        value(found, "gateway_upstream_refused_total", upstream="legacy", reason="circuit_open")
        == 2
    )
    assert value(found, "gateway_requests_total", operation="Board", outcome="partial") == 3


async def test_upstreams_see_the_callers_trace_and_spans_are_recorded(
    simulator: RunningSimulator,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    listings = listings_of(simulator.sim)[:2]
    # Legacy read anew by the second request too, which then shows its own trace upstream.
    async with gateway(simulator, provider, legacy_cache_ttl_s=0) as client:
        response = await client.post(
            "/graphql",
            json={"query": QUERY, "variables": {"refs": refs(listings)}},
            headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc"},
        )
        assert response.status_code == 200
        seen = [r for r in simulator.sim.state.requests if r.upstream in ("v3", "legacy", "token")]
        assert {r.upstream for r in seen} == {"v3", "legacy", "token"}
        for recorded in seen:
            version, trace_id, parent_id, flags = recorded.headers["traceparent"].split("-")
            assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
            assert parent_id != "00f067aa0ba902b7"  # the gateway's own span is the parent
            assert recorded.headers["tracestate"] == "vendor=abc"

        # Without a caller's trace, a new one is started and still carried upstream.
        simulator.sim.state.reset_counters()
        await client.post(
            "/graphql", json={"query": QUERY, "variables": {"refs": refs(listings[:1])}}
        )
        fresh = {r.headers["traceparent"].split("-")[1] for r in simulator.sim.state.requests}
        assert len(fresh) == 1 and TRACE_ID not in fresh
    spans: dict[str, Any] = {}
    for span in exporter.get_finished_spans():
        if format(span.context.trace_id, "032x") == TRACE_ID:
            spans.setdefault(span.name, span)
    server = spans["POST /graphql"]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert spans["graphql Board"].parent.span_id == server.context.span_id
    call = spans["GET classifieds-v3 classified_statuses"]
    assert call.attributes["gateway.upstream"] == "classifieds-v3"
    assert call.attributes["http.response.status_code"] == 200
    assert call.attributes["gateway.retries"] == 0
    batch = spans["legacy batch"]
    assert batch.attributes["gateway.batch.ads"] >= 1
    assert spans["POST legacy status_post"].parent.span_id == batch.context.span_id


async def test_without_an_exporter_upstreams_still_see_the_callers_trace(
    simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    listings = listings_of(simulator.sim)[:2]
    app = create_app(settings_for(simulator))
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client,
    ):
        # No span is exported, so none is made per upstream call.
        assert [g.traced for g in app.state.runtime.upstreams.guards] == [False, False]
        response = await client.post(
            "/graphql",
            json={"query": QUERY, "variables": {"refs": refs(listings)}},
            headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc"},
        )
        assert response.status_code == 200
    seen = [r for r in simulator.sim.state.requests if r.upstream in ("v3", "legacy")]
    assert {r.upstream for r in seen} == {"v3", "legacy"}
    for recorded in seen:
        version, trace_id, parent_id, flags = recorded.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
        assert parent_id != "00f067aa0ba902b7"
        assert recorded.headers["tracestate"] == "vendor=abc"


async def test_without_an_exporter_a_caller_without_a_trace_gets_a_new_one_per_request(
    simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The request's span is not recorded then; its trace still reaches the upstreams and
    the log line."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    listings = listings_of(simulator.sim)[:1]
    app = create_app(settings_for(simulator, legacy_cache_ttl_s=0, cache_ttl_s=0))
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client,
    ):
        for _ in range(2):
            before = len(simulator.sim.state.requests)
            response = await client.post(
                "/graphql", json={"query": QUERY, "variables": {"refs": refs(listings)}}
            )
            assert response.status_code == 200
            seen = [
                r.headers["traceparent"].split("-")
                for r in list(simulator.sim.state.requests)[before:]
                if r.upstream in ("v3", "legacy")
            ]
            assert len(seen) >= 2
            # One trace and one parent for all the request's upstream calls, sampled.
            assert len({(trace_id, parent) for _, trace_id, parent, _ in seen}) == 1
            assert {flags for *_, flags in seen} == {"01"}
            [line] = [r for r in caplog.records if r.name == ACCESS_LOGGER][-1:]
            assert line.__dict__["trace_id"] == seen[0][1] != "0" * 32
    traces = {r.headers["traceparent"].split("-")[1] for r in simulator.sim.state.requests
              if r.upstream in ("v3", "legacy")}  # fmt: skip
    assert len(traces) == 2


async def test_one_log_line_per_request_and_no_secret_in_any_log(
    simulator: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    listings = listings_of(simulator.sim)[:2]
    async with gateway(simulator) as client:
        # Failures make the upstream layer log the most (refreshes, retries, bodies at debug).
        simulator.sim.state.add_fault("v3", "error", status=401, count=1)
        simulator.sim.state.add_fault("legacy", "error", status=400, count=1)
        for _ in range(2):
            await client.post(
                "/graphql",
                json={"query": QUERY, "variables": {"refs": refs(listings)}},
                headers={"traceparent": TRACEPARENT, "authorization": "Bearer caller-token-1"},
            )
    settings = settings_for(simulator)
    issued = {
        r.headers["Authorization"].split(" ", 1)[1]
        for r in simulator.sim.state.requests
        if "Authorization" in r.headers
    }
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(lines) == 2
    line = lines[-1].__dict__
    assert line["trace_id"] == TRACE_ID
    assert line["operation"] == "Board"
    assert line["outcome"] == "ok"
    assert line["upstream_calls"] >= 1
    assert line["duration_ms"] > 0
    assert lines[0].__dict__["outcome"] == "partial"  # the legacy 400 once

    formatter = JsonFormatter("%(levelname)s %(name)s %(message)s")
    text = "\n".join(formatter.format(r) + r.getMessage() for r in caplog.records)
    secrets = [
        SIM_CLIENT_SECRET,
        SIM_LEGACY_API_KEY,
        settings.v3_client_secret.get_secret_value(),
        settings.legacy_api_key.get_secret_value(),
        settings.webhook_secret.get_secret_value(),
        "caller-token-1",
        *issued,
    ]
    assert issued
    for secret in secrets:
        assert secret not in text, f"a secret reached the logs: {secret[:6]}…"


def test_serve_logs_are_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(json=True)
        logging.getLogger(ACCESS_LOGGER).info("done", extra={"trace_id": TRACE_ID, "outcome": "ok"})
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["trace_id"] == TRACE_ID
    assert line["logger"] == ACCESS_LOGGER
    assert line["level"] == "INFO"
    assert line["message"] == "done"


async def test_a_caller_leaving_mid_body_is_counted_not_crashed(
    simulator: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway(simulator) as client:
        host, port = str(client.base_url.host), int(client.base_url.port or 80)
        _, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        line = 'gateway_requests_total{operation="-",outcome="disconnected"} 1.0'
        for _ in range(200):  # the server notices the closed socket on its next read
            if line in (await client.get("/metrics")).text:
                break
            await asyncio.sleep(0.01)
        assert line in (await client.get("/metrics")).text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
