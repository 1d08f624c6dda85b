"""GraphQL-over-HTTP conformance: the npm package `graphql-http`'s `serverAudits`, run by
Node against the live gateway (uvicorn on a free loopback port). Every audit — MUST and
SHOULD alike — must pass.

The package is pinned in `tests/conformance/package-lock.json`; `.ci/run` installs it
with `npm ci`. Without Node or the installed package the test is skipped with the command
that installs it (and fails in CI, which installs both: see `system_parts.py`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from system_parts import missing

from gateway_harness import RunningGateway

CONFORMANCE = Path(__file__).resolve().parent / "conformance"
NODE = shutil.which("node")
INSTALLED = (CONFORMANCE / "node_modules" / "graphql-http" / "package.json").is_file()

NPM_CI = "npm ci --prefix tests/conformance"


@pytest.fixture
def node() -> str:
    if NODE is None:
        missing("node", f"apt-get install nodejs npm, then {NPM_CI}")
    if not INSTALLED:
        missing("graphql-http (npm)", NPM_CI)
    return NODE


async def test_every_graphql_over_http_audit_passes(node: str, gateway: RunningGateway) -> None:
    process = await asyncio.create_subprocess_exec(
        node,
        str(CONFORMANCE / "audit.mjs"),
        f"{gateway.url}/graphql",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    results = json.loads(out)
    assert len(results) >= 50, "the audit list is unexpectedly short"
    failed = [
        f"{r['status']} {r['id']}: {r['name']} ({r['reason']})"
        for r in results
        if r["status"] != "ok"
    ]
    assert failed == []
