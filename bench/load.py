"""The load generator: its own process, driven by one JSON command per line on stdin.

    python -m bench.load      # answers each command with one JSON line on stdout

A command names a target and how to drive it:

    {"target": {"kind": "gateway", "url": ".../graphql", "body": "<POST body>",
                "client": "aiohttp" or "raw"},
     "concurrency": 16, "requests": 500, "duration_s": 5.0, "min_requests": 16}
    {"target": {"kind": "limit", "v3_url": ..., "legacy_url": ..., "token_url": ...,
                "listings": [[classifiedId, userId, adId], ...], "max_batch": 100}, ...}

`concurrency` clients send requests back to back until `requests` are sent or `duration_s`
has passed (and at least `min_requests` are sent). The answer holds every latency in ms —
from sending a request to holding its parsed answer —, the error count, the wall time and
this process's CPU time and peak RSS, which for the limit are the limit client's own.

The limit makes the fewest upstream calls a caller could: one legacy `POST /status/` per
user per chunk of `max_batch` ads and one V3 history read per classified (following
`nextToken` if the history has more pages), all at once, and parses every answer. It uses
the same connection pool bounds as the gateway (100 connections per upstream).
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from gateway.simulator import SIM_AUDIENCE, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_LEGACY_API_KEY

from .rawhttp import ClosedLoop

POOL_LIMIT = 100  # the gateway's upstream pool bound (gateway.upstreams.DEFAULT_POOL_LIMIT)
USER_AGENT = "ListingLimit/1.0 aiohttp/3 linux/6"
TENANT = "agency-1"
JSON = {"content-type": "application/json"}

Call = Callable[[], Awaitable[bool]]


class _Failed(Exception):
    """An answer that is not the expected success."""


async def _json(response: aiohttp.ClientResponse) -> Any:
    raw = await response.read()
    if response.status != 200:
        raise _Failed(f"HTTP {response.status}: {raw[:200]!r}")
    return orjson.loads(raw)


class Loads:
    """The sessions and prepared calls of one load generator process."""

    def __init__(self) -> None:
        timeout = aiohttp.ClientTimeout(total=300)
        self._client = aiohttp.ClientSession(timeout=timeout)
        self._v3 = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=POOL_LIMIT)
        )
        self._legacy = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=POOL_LIMIT)
        )
        self._tokens: dict[str, str] = {}
        self.first_error: str | None = None

    async def close(self) -> None:
        for session in (self._client, self._v3, self._legacy):
            await session.close()

    async def call_for(self, target: dict[str, Any]) -> Call:
        if target["kind"] == "gateway":
            return self._gateway_call(target["url"], target["body"].encode())
        token = await self._token(target["token_url"])
        return self._limit_call(target, token)

    def _gateway_call(self, url: str, body: bytes) -> Call:
        async def call() -> bool:
            async with self._client.post(url, data=body, headers=JSON) as response:
                answer = await _json(response)
            if "errors" in answer:
                raise _Failed(orjson.dumps(answer["errors"][:1]).decode())
            return True

        return call

    async def _token(self, token_url: str) -> str:
        if token_url not in self._tokens:
            body = {
                "client_id": SIM_CLIENT_ID,
                "client_secret": SIM_CLIENT_SECRET,
                "grant_type": "client_credentials",
                "audience": SIM_AUDIENCE,
                "intermediary_id": TENANT,
            }
            async with self._v3.post(token_url, json=body) as response:
                self._tokens[token_url] = (await _json(response))["access_token"]
        return self._tokens[token_url]

    def _limit_call(self, target: dict[str, Any], token: str) -> Call:
        v3_headers = {"User-Agent": USER_AGENT, "Authorization": f"Bearer {token}"}
        legacy_headers = {**JSON, "Authentication": SIM_LEGACY_API_KEY}
        statuses = [
            f"{target['v3_url']}/classifieds/{cid}/statuses" for cid, _, _ in target["listings"]
        ]
        by_user: dict[int, list[int]] = {}
        for _, user, ad in target["listings"]:
            by_user.setdefault(user, []).append(ad)
        batch = int(target["max_batch"])
        chunks = [
            orjson.dumps({"userId": user, "adId": ads[i : i + batch]})
            for user, ads in by_user.items()
            for i in range(0, len(ads), batch)
        ]
        legacy_url = f"{target['legacy_url']}/status/"

        async def history(url: str) -> list[Any]:
            items: list[Any] = []
            params = {"limit": "100"}
            while True:
                async with self._v3.get(url, params=params, headers=v3_headers) as response:
                    page = await _json(response)
                items += page["items"]
                if not page.get("nextToken"):
                    return items
                params = {"limit": "100", "nextToken": page["nextToken"]}

        async def legacy(body: bytes) -> list[Any]:
            async with self._legacy.post(legacy_url, data=body, headers=legacy_headers) as response:
                answer = await _json(response)
            if answer.get("result") is not True:
                raise _Failed(f"legacy answered {answer!r:.200}")
            return list(answer["data"])

        async def call() -> bool:
            await asyncio.gather(*(history(u) for u in statuses), *(legacy(b) for b in chunks))
            return True

        return call

    async def drive(
        self, call: Call, *, concurrency: int, requests: int, duration_s: float, min_requests: int
    ) -> dict[str, Any]:
        latencies: list[float] = []
        errors = 0
        sent = 0
        started = time.perf_counter()
        deadline = started + duration_s

        async def client() -> None:
            nonlocal sent, errors
            while sent < requests and (sent < min_requests or time.perf_counter() < deadline):
                sent += 1
                begun = time.perf_counter()
                try:
                    await call()
                except (
                    aiohttp.ClientError,
                    OSError,
                    TimeoutError,
                    ValueError,
                    KeyError,
                    _Failed,
                ) as exc:
                    errors += 1
                    self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"[:300]
                latencies.append((time.perf_counter() - begun) * 1000)

        cpu_before = _cpu_s()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return {
            "latencies_ms": latencies,
            "errors": errors,
            "wall_s": time.perf_counter() - started,
            "cpu_s": _cpu_s() - cpu_before,
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "first_error": self.first_error,
        }


async def _closed_loop(target: dict[str, Any], command: dict[str, Any]) -> dict[str, Any]:
    """The lean client's run (`bench.rawhttp`): its answer has the same fields."""
    loop = ClosedLoop(
        target["url"],
        target["body"].encode(),
        connections=command["concurrency"],
        requests=command["requests"],
        duration_s=command["duration_s"],
        min_requests=command["min_requests"],
    )
    cpu_before = _cpu_s()
    result = await loop.run()
    return {
        "latencies_ms": result.latencies_ms,
        "errors": result.errors,
        "wall_s": result.wall_s,
        "cpu_s": _cpu_s() - cpu_before,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "first_error": result.first_error,
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LocalLoad:
    """Runs commands in this process (`bench.processes.Load`)."""

    def __init__(self) -> None:
        self.loads = Loads()

    async def run(self, command: dict[str, Any]) -> dict[str, Any]:
        self.loads.first_error = None
        target = command["target"]
        if target["kind"] == "gateway" and target.get("client") == "raw":
            return await _closed_loop(target, command)
        call = await self.loads.call_for(target)
        return await self.loads.drive(
            call,
            concurrency=command["concurrency"],
            requests=command["requests"],
            duration_s=command["duration_s"],
            min_requests=command["min_requests"],
        )

    async def stop(self) -> None:
        await self.loads.close()


async def serve_commands() -> None:
    load = LocalLoad()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            result = await load.run(orjson.loads(line))
            sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
            sys.stdout.flush()
    finally:
        await load.stop()


def main() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve_commands())
    else:
        uvloop.run(serve_commands())


if __name__ == "__main__":
    main()
