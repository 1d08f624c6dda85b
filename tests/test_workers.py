"""`gateway serve --workers 2`: two processes answer on one port, `/metrics` on either adds
both up, and SIGTERM stops both gracefully, letting a request in flight finish."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from asyncio.subprocess import PIPE, STDOUT
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from documents import fenced_after
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import main
from gateway.simulator import (
    RunningSimulator,
)

from gateway_harness import LOOPBACK_TLS, serve_env

GATEWAY = str(Path(sys.executable).parent / "gateway")
LATEST = """query Latest($id: ID!) {
  listing(ref: {classifiedId: $id}) { classified { latestStatus { status } } } }"""

Line = dict[str, Any]


def documented_command() -> tuple[dict[str, str], list[str]]:
    """The documented `gateway serve --workers` command (docs/operating.md): settings, argv."""
    words = shlex.split(fenced_after("run more workers behind the same ports", "sh"))
    settings = dict(word.split("=", 1) for word in words if re.match(r"[A-Z_]+=", word))
    command = [word for word in words if not re.match(r"[A-Z_]+=", word)]
    assert command[:3] == ["uv", "run", "gateway"], command
    return settings, [GATEWAY, *command[3:]]


class Output:
    """The gateway's output, read in the background as JSON lines; waits for lines."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[Line] = []
        self.text = ""
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.text += line.decode()
            async with self._changed:
                if line.startswith(b"{"):
                    self.lines.append(json.loads(line))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, want: Callable[[Line], bool], count: int = 1) -> list[Line]:
        """The first `count` lines for which `want` holds, once they have been written."""
        async with self._changed:
            while len(found := [line for line in self.lines if want(line)]) < count:
                if self._task.done():
                    raise AssertionError(f"output ended, {count} lines wanted:\n{self.text}")
                await self._changed.wait()
        return found[:count]

    async def wait_for_text(self, pattern: str) -> re.Match[str]:
        """The first match of `pattern` in the output, once it has been written."""
        async with self._changed:
            while (found := re.search(pattern, self.text)) is None:
                if self._task.done():
                    raise AssertionError(f"output ended, {pattern!r} wanted:\n{self.text}")
                await self._changed.wait()
        return found

    async def rest(self) -> str:
        await self._task
        return self.text


def message(text: str) -> Callable[[Line], bool]:
    return lambda line: str(line.get("message", "")).startswith(text)


def serving(line: Line) -> bool:
    return line.get("logger") == "gateway.process.supervisor" and "serving" in line["message"]


def requests_total(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "gateway_requests"
        for sample in family.samples
        if sample.name == "gateway_requests_total"
    )


async def test_two_workers_answer_together_add_up_metrics_and_stop_gracefully(
    simulator: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = serve_env(
        simulator,
        GATEWAY_SHUTDOWN_GRACE_S="30",
        GATEWAY_WARM_UP="false",
        TMPDIR=str(tmp_path),  # where the parent makes the workers' metrics directory
    )
    # As docs/operating.md shows it: ports 0 (gRPC's chosen once by the parent, for both workers).
    shown, argv = documented_command()
    assert shown == {"GATEWAY_HTTP_PORT": "0", "GATEWAY_GRPC_PORT": "0"}
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=PIPE, stderr=STDOUT, env=env | shown, cwd=tmp_path
    )
    assert process.stdout is not None
    ids = simulator.sim.data.tenants["agency-1"]

    async def ask(*positions: int) -> list[httpx.Response]:
        # A client per call: a kept-alive connection would stay with one worker.
        async with httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client:
            return [
                await client.post("/graphql", json={"query": LATEST, "variables": {"id": ids[p]}})
                for p in positions
            ]

    async def scrape() -> str:
        async with httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client:
            return (await client.get("/metrics")).text

    try:
        output = Output(process.stdout)
        # Printed once a worker listens.
        found = await output.wait_for_text(r"(http://\S+)/graphql \(2 workers, gRPC on (\S+)\)")
        url, grpc_address = found.groups()
        started = await output.wait_for(serving, 2)
        await output.wait_for_text(r"All 2 workers serving")
        first, second = (line["worker_pid"] for line in started)

        # Each worker listens with its own socket (SO_REUSEPORT): new connections spread
        # over both. A connection at a time, until both have answered.
        answers: list[httpx.Response] = []
        access: list[Line] = []
        while {line["pid"] for line in access} != {first, second}:
            assert len(answers) < 64, Counter(line["pid"] for line in access)
            answers += await ask(1 + len(answers) % 5)
            # A request's line is written just after it is counted (after its last byte).
            access = await output.wait_for(
                lambda line: line.get("logger") == "gateway.access", len(answers)
            )
        assert {a.status_code for a in answers} == {200}
        assert all("errors" not in a.json() for a in answers)
        # Whichever worker answers, /metrics counts every request, whoever answered it.
        for _ in range(6):
            assert requests_total(await scrape()) == len(answers)

        # A worker that dies is replaced; what it counted still counts.
        os.kill(first, signal.SIGKILL)
        number = started[0]["worker"]
        [died] = await output.wait_for(message(f"worker {number} (pid {first}) died"))
        assert died["level"] == "ERROR"
        replaced = (await output.wait_for(serving, 3))[2]
        assert replaced["worker"] == number
        assert replaced["worker_pid"] not in (first, second)
        assert requests_total(await scrape()) == len(answers)

        async with grpc.aio.insecure_channel(grpc_address) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        # SIGTERM while a request waits for V3: it still gets its answer.
        reading, go_on = asyncio.Event(), asyncio.Event()

        async def held(seconds: float) -> None:
            reading.set()
            await go_on.wait()

        monkeypatch.setattr(simulator.sim.state, "hang", held)
        simulator.sim.state.set_latency("v3", 1)
        # Position 0 is one no worker has read (the loop above asks 1 to 5): had a worker
        # cached it, its answer would need no V3 read and `reading` would never be set.
        slow = asyncio.create_task(ask(0))
        await reading.wait()
        process.send_signal(signal.SIGTERM)
        # The idle worker ends; the busy one has closed its listener and waits for the request.
        [idle] = await output.wait_for(message("Finished server process"))
        await output.wait_for(
            lambda line: (
                message("Waiting for connections to close")(line) and line["pid"] != idle["pid"]
            )
        )
        async with httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("/healthz")  # nothing accepts new connections any more
        go_on.set()
        [answer] = await slow
        assert answer.status_code == 200
        assert answer.json()["data"]["listing"]["classified"]["latestStatus"]["status"]
        rest = await output.rest()
        assert await process.wait() == 0, rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # The workers' metric files lived in a private directory, gone with the gateway.
    assert not [p for p in os.listdir(tmp_path) if p.startswith("gateway-metrics-")]


def test_workers_refuse_a_grpc_port_held_by_another_process_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [k for k in os.environ if k.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    with socket.create_server(("127.0.0.1", 0)) as taken:  # no SO_REUSEPORT: not shareable
        port = taken.getsockname()[1]
        for name, value in {"GATEWAY_V3_URL": "http://127.0.0.1:1/v3", "GATEWAY_LEGACY_URL": "http://127.0.0.1:1/rest/v1",
                "GATEWAY_LEGACY_API_KEY": "k", "GATEWAY_V3_AUTH": "static", "GATEWAY_V3_TOKEN": "t",
                "GATEWAY_HTTP_PORT": "0", "GATEWAY_GRPC_PORT": str(port)}.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        assert main(["serve", "--workers", "2"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.strip().count("\n") == 0
    assert f"cannot listen on 127.0.0.1:{port} (gRPC)" in stderr


COPY_SCRIPT = """
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from gateway.observability.multiprocess import SharedExposition

class Stats:
    hits = 5.0
    def collect(self):
        cache = CounterMetricFamily("gateway_cache_events", "c", labels=["event"])
        cache.add_metric(["hits"], self.hits)
        yield cache
        yield GaugeMetricFamily("gateway_event_subscribers", "s", value=2)
        yield GaugeMetricFamily("gateway_other", "o", value=1)

stats = Stats()
shared = SharedExposition(PATH)
shared.copy([stats])
stats.hits = 7.0  # grew by 2 since the last copy
shared.copy([stats])
print(generate_latest(shared.registry).decode())
"""


def test_scrape_time_values_are_copied_into_the_workers_shared_files(tmp_path: Path) -> None:
    # prometheus-client picks its multiprocess values at import: a process of its own.
    script = COPY_SCRIPT.replace("PATH", repr(str(tmp_path)))
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    shown = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(shown)
        for sample in family.samples
    }
    assert samples[("gateway_cache_events_total", (("event", "hits"),))] == 7
    assert samples[("gateway_event_subscribers", ())] == 2  # summed over the live workers
    assert samples[("gateway_other", (("pid", str(_pid_of(tmp_path))),))] == 1  # per worker


RUNNING_SCRIPT = """
from gateway.observability import Metrics

metrics = Metrics()
metrics.in_flight = 3
metrics.watch_admission(lambda: (2, 1, 16))  # running, queued, limit
metrics.copy_watched()
print(metrics.exposition().decode())
"""


def test_requests_in_flight_and_admission_are_copied_into_the_shared_files(
    tmp_path: Path,
) -> None:
    """A request sets none of these gauges (each set was an mmap write in a worker): they are
    read from the counts kept anyway, and copied for the other workers like the values above."""
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    shown = subprocess.run(
        [sys.executable, "-c", RUNNING_SCRIPT], env=env, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(shown)
        for sample in family.samples
    }
    # Summed over the live workers (no `pid` label): one worker's share here.
    assert samples[("gateway_requests_in_flight", ())] == 3
    assert samples[("gateway_admission_in_flight", ())] == 2
    assert samples[("gateway_admission_queue_depth", ())] == 1
    assert samples[("gateway_admission_limit", ())] == 16


def _pid_of(directory: Path) -> int:
    """The one process that wrote into `directory` (from its files' names)."""
    [pid] = {name.rsplit("_", 1)[1].removesuffix(".db") for name in os.listdir(directory)}
    return int(pid)


def starting(line: Line) -> bool:
    """The supervisor's line for a worker it started (the worker's number and pid)."""
    return line.get("logger") == "gateway.process.supervisor" and " starting (pid " in str(
        line.get("message", "")
    )


async def test_a_worker_killed_while_it_starts_is_replaced(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    """Worker 1 serves while worker 2 still starts (its V3 token request, at warm-up, gets no
    answer); SIGKILL to worker 2 then is not an app that cannot start: it is replaced."""
    # The first token request hangs: whichever worker asks first stays in its start-up.
    simulator.sim.state.add_fault("token", "timeout", count=1, delay_s=600)
    env = serve_env(simulator, GATEWAY_UPSTREAM_TIMEOUT_S="300", TMPDIR=str(tmp_path))
    process = await asyncio.create_subprocess_exec(
        GATEWAY, "serve", "--workers", "2", stdout=PIPE, stderr=STDOUT, env=env, cwd=tmp_path
    )
    assert process.stdout is not None
    try:
        output = Output(process.stdout)
        found = await output.wait_for_text(r"(http://\S+)/graphql \(2 workers")
        [first] = await output.wait_for(serving)
        started = {line["worker_pid"] for line in await output.wait_for(starting, 2)}
        assert first["worker_pid"] in started, started
        [pid] = started - {first["worker_pid"]}
        assert simulator.sim.state.calls("token") == 2  # its request hangs, the other's did not

        os.kill(pid, signal.SIGKILL)
        [ended] = await output.wait_for(message(f"worker {3 - first['worker']} (pid {pid})"))
        assert ended["level"] == "ERROR"
        assert "SIGKILL" in ended["message"] and "starting another" in ended["message"]
        replaced = (await output.wait_for(serving, 2))[1]
        assert replaced["worker"] == 3 - first["worker"]
        assert replaced["worker_pid"] != pid
        async with httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=found[1]) as client:
            assert (await client.get("/readyz")).status_code == 200

        process.send_signal(signal.SIGTERM)
        rest = await output.rest()
        assert await process.wait() == 0, rest
        assert "stopping the gateway" not in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_worker_whose_app_cannot_start_stops_the_gateway_with_its_status(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    manifest = tmp_path / "trusted.json"
    manifest.write_text("[]")  # readable, but not a manifest: the app cannot be built
    env = serve_env(
        simulator, GATEWAY_TRUSTED_DOCUMENTS=str(manifest), GATEWAY_WARM_UP="false",
        TMPDIR=str(tmp_path),
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        GATEWAY, "serve", "--workers", "2", stdout=PIPE, stderr=STDOUT, env=env, cwd=tmp_path
    )
    assert process.stdout is not None
    try:
        output = Output(process.stdout)
        [failed] = await output.wait_for(lambda line: "failed to start" in line.get("message", ""))
        assert "status 1" in failed["message"] and "stopping the gateway" in failed["message"]
        rest = await output.rest()
        assert await process.wait() == 1, rest
        assert "starting another" not in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
