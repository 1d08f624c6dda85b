"""A document's first validation runs beside the event loop (gateway.graphql.validation):
while one is validated, the gateway keeps answering other requests.

The validation of the slow document is held in its thread until a request for a known
document has been answered: on the event loop (as before) the answer would never come.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from gateway.graphql import validation
from gateway.simulator import RunningSimulator

from gateway_harness import run_gateway

SAFETY_S = 30
SLOW = "query Slow { __typename }"


async def test_a_document_being_validated_does_not_hold_the_others(
    simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    real = validation.validate_document

    def held(schema: Any, document: Any, rules: Any) -> Any:
        if document.loc is not None and document.loc.source.body == SLOW:
            entered.set()
            release.wait(SAFETY_S)
        return real(schema, document, rules)

    monkeypatch.setattr(validation, "validate_document", held)
    async with run_gateway(simulator) as gateway:
        assert await gateway.query("{ __typename }") == {"data": {"__typename": "Query"}}
        slow = asyncio.ensure_future(gateway.query(SLOW))
        try:
            await asyncio.get_running_loop().run_in_executor(None, entered.wait, SAFETY_S)
            assert entered.is_set()
            # Validation of `SLOW` is under way in its thread; the loop still answers.
            async with asyncio.timeout(SAFETY_S):
                known = await gateway.query("{ __typename }")
            assert known == {"data": {"__typename": "Query"}}
            assert not slow.done()
        finally:
            release.set()
        assert await slow == {"data": {"__typename": "Query"}}
