"""Parsed documents are kept by their text within a memory bound (gateway.graphql.limits):
large or many distinct documents cannot make the process hold them."""

from __future__ import annotations

import gc

import aiohttp
from graphql import DocumentNode, parse

from gateway.graphql.limits import BYTES_PER_CHARACTER, ParsedDocuments
from gateway.simulator import RunningSimulator

from gateway_harness import run_gateway


def test_documents_are_kept_within_the_bound_oldest_dropped_first() -> None:
    documents = ParsedDocuments(max_bytes=16 * 100 * BYTES_PER_CHARACTER)
    texts = [f"{{ a{i}: __typename }}".ljust(100) for i in range(20)]
    for text in texts:
        documents.put(text, parse(text))
    assert documents.weight <= documents.max_bytes
    assert len(documents) == 16
    assert documents.get(texts[0]) is None
    assert isinstance(documents.get(texts[-1]), DocumentNode)


def test_a_document_heavier_than_a_sixteenth_of_the_bound_is_never_kept() -> None:
    documents = ParsedDocuments(max_bytes=16 * 100 * BYTES_PER_CHARACTER)
    small, large = "{ __typename }".ljust(100), "{ __typename }".ljust(101)
    documents.put(small, parse(small))
    documents.put(large, parse(large))
    assert documents.get(small) is not None
    assert documents.get(large) is None
    nothing = ParsedDocuments(max_bytes=0)
    nothing.put(small, parse(small))
    assert len(nothing) == 0


def _large_documents_alive(min_chars: int) -> int:
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, DocumentNode)
        and obj.loc is not None
        and len(obj.loc.source.body) >= min_chars
    )


async def test_large_distinct_documents_are_not_held_after_their_requests(
    simulator: RunningSimulator,
) -> None:
    """Over HTTP and WebSocket: the parse cache, the compiled plans and the per-document
    memos used to keep 1,024 documents of any size (60 distinct 8 MB documents over
    WebSocket took RSS from 133 MB to 1.14 GB, kept after the clients left)."""
    size = 300_000
    async with run_gateway(simulator) as gateway:
        before = _large_documents_alive(size)
        for i in range(4):
            body = await gateway.query(f"query Big{i} {{ __typename }}\n#" + "x" * size)
            assert body == {"data": {"__typename": "Query"}}, body
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{gateway.url}/graphql", protocols=("graphql-transport-ws",)) as ws,
        ):
            await ws.send_json({"type": "connection_init", "payload": {}})
            assert (await ws.receive_json())["type"] == "connection_ack"
            for i in range(4):
                query = f"query Ws{i} {{ __typename }}\n#" + "y" * size
                await ws.send_json({"id": str(i), "type": "subscribe", "payload": {"query": query}})
                answer = await ws.receive_json()
                assert answer["type"] == "next", answer
                assert (await ws.receive_json())["type"] == "complete"
        assert _large_documents_alive(size) == before == 0
        # Small ones are kept for reuse.
        await gateway.query("query Small { __typename }")
        assert any(
            isinstance(obj, DocumentNode)
            and obj.loc is not None
            and obj.loc.source.body == "query Small { __typename }"
            for obj in gc.get_objects()
        )
