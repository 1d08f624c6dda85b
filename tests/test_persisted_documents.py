"""Persisted documents: Apollo's APQ over GET and POST, a bounded store, and the
trusted-documents mode with Apollo and GraphQL Codegen manifests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import SettingsError
from gateway.graphql.persisted import ManifestError, PersistedDocuments, load_manifest
from gateway.graphql.request import RequestRefused
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

GRAPHQL_RESPONSE = "application/graphql-response+json"
QUERY = "query Typename { __typename }"
OTHER = "query Other { t: __typename }"


def sha(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def apq(document: str, *, with_query: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha(document)}}
    }
    if with_query:
        payload["query"] = document
    return payload


def as_get_params(payload: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in payload.items()}


def codes(response: httpx.Response) -> list[str]:
    return [error["extensions"]["code"] for error in response.json().get("errors", ())]


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_apq_not_found_then_registered_then_by_hash(
    gateway: RunningGateway, method: str
) -> None:
    async def send(payload: dict[str, Any], accept: str = "application/json") -> httpx.Response:
        if method == "GET":
            return await gateway.client.get(
                "/graphql", params=as_get_params(payload), headers={"accept": accept}
            )
        return await gateway.client.post("/graphql", json=payload, headers={"accept": accept})

    first = await send(apq(QUERY))
    assert first.status_code == 200
    assert codes(first) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert first.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    strict = await send(apq(QUERY), GRAPHQL_RESPONSE)
    assert strict.status_code == 400
    assert codes(strict) == ["PERSISTED_QUERY_NOT_FOUND"]

    registered = await send(apq(QUERY, with_query=True))
    assert registered.json() == {"data": {"__typename": "Query"}}
    by_hash = await send(apq(QUERY))
    assert by_hash.json() == {"data": {"__typename": "Query"}}


async def test_apq_refuses_a_hash_that_does_not_match(gateway: RunningGateway) -> None:
    payload = apq(QUERY)
    payload["query"] = OTHER
    response = await gateway.client.post("/graphql", json=payload)
    assert response.status_code == 400
    assert codes(response) == ["BAD_USER_INPUT"]
    for persisted in ({"version": 2, "sha256Hash": sha(QUERY)}, {"version": 1}, "x"):
        response = await gateway.client.post(
            "/graphql", json={"extensions": {"persistedQuery": persisted}}
        )
        assert response.status_code == 400, persisted
    # Nothing was registered under the mismatched hash.
    assert codes(await gateway.client.post("/graphql", json=apq(QUERY))) == [
        "PERSISTED_QUERY_NOT_FOUND"
    ]


def test_the_store_is_bounded_in_characters() -> None:
    documents = PersistedDocuments(max_bytes=3 * len(QUERY))
    names = [f"query Q{i} {{ __typename }}" for i in range(10)]
    for name in names:
        documents.resolve({"query": name, **apq(name)})
    assert len(documents) <= 3
    assert documents.resolve(apq(names[-1])) == names[-1]
    with pytest.raises(RequestRefused) as evicted:
        documents.resolve(apq(names[0]))
    assert evicted.value.code == "PERSISTED_QUERY_NOT_FOUND"
    tiny = PersistedDocuments(max_bytes=0)
    assert tiny.resolve({"query": QUERY, **apq(QUERY)}) == QUERY  # run, not kept
    assert len(tiny) == 0


# --- trusted documents ---------------------------------------------------------------------


def apollo_manifest(tmp_path: Path, *documents: str) -> Path:
    path = tmp_path / "persisted-query-manifest.json"
    operations = [
        {"id": sha(doc), "name": doc.split()[1], "type": "query", "body": doc} for doc in documents
    ]
    manifest = {"format": "apollo-persisted-query-manifest", "version": 1, "operations": operations}
    path.write_text(json.dumps(manifest))
    return path


def codegen_manifest(tmp_path: Path, *documents: str) -> Path:
    path = tmp_path / "persisted-documents.json"
    path.write_text(json.dumps({sha(doc): doc for doc in documents}))
    return path


@pytest.mark.parametrize("manifest", [apollo_manifest, codegen_manifest])
async def test_trusted_documents_run_only_what_the_manifest_lists(
    simulator: RunningSimulator, tmp_path: Path, manifest: Any
) -> None:
    path = manifest(tmp_path, QUERY)
    async with run_gateway(simulator, trusted_documents=str(path)) as gw:
        post = gw.client.post
        expected = {"data": {"__typename": "Query"}}
        assert (await post("/graphql", json=apq(QUERY))).json() == expected
        assert (await post("/graphql", json={"documentId": f"sha256:{sha(QUERY)}"})).json() == (
            expected
        )
        assert (await post("/graphql", json={"query": QUERY})).json() == expected
        got = await gw.client.get("/graphql", params=as_get_params(apq(QUERY)))
        assert got.json() == expected

        free_text = await post("/graphql", json={"query": OTHER})
        assert free_text.status_code == 400
        assert codes(free_text) == ["PERSISTED_QUERY_NOT_IN_LIST"]
        unknown = await post("/graphql", json=apq(OTHER))
        assert codes(unknown) == ["PERSISTED_QUERY_NOT_FOUND"]
        # APQ registration cannot add to the list.
        register = await post("/graphql", json=apq(OTHER, with_query=True))
        assert codes(register) == ["PERSISTED_QUERY_NOT_IN_LIST"]
        assert codes(await post("/graphql", json=apq(OTHER))) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_a_manifest_whose_hashes_do_not_match_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({sha(QUERY): OTHER}))
    with pytest.raises(ManifestError):
        load_manifest(path)
    path.write_text("[]")
    with pytest.raises(ManifestError):
        load_manifest(path)
    assert load_manifest(codegen_manifest(tmp_path, QUERY, OTHER)) == {
        sha(QUERY): QUERY,
        sha(OTHER): OTHER,
    }


async def test_a_missing_manifest_stops_the_start(simulator: RunningSimulator) -> None:
    with pytest.raises(SettingsError) as caught:
        async with run_gateway(simulator, trusted_documents="/nonexistent/manifest.json"):
            pass
    assert str(caught.value).startswith("GATEWAY_TRUSTED_DOCUMENTS")


async def test_a_persisted_request_needs_a_client_token_like_any_other(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(simulator, client_tokens="tok-1") as gw:
        for accept in ("*/*", "text/html"):
            response = await gw.client.get(
                "/graphql", params=as_get_params(apq(QUERY)), headers={"accept": accept}
            )
            assert response.status_code == 401


ALIASED = "query Aliased { a: __typename b: __typename c: __typename }"


@pytest.mark.parametrize("warm_up", [True, False])
async def test_warm_up_parses_and_validates_every_trusted_document(
    simulator: RunningSimulator, tmp_path: Path, warm_up: bool
) -> None:
    """Each trusted document's first request is then a known one; a document the limits
    refuse is refused the same with or without warm-up."""
    path = codegen_manifest(tmp_path, QUERY, OTHER, ALIASED)
    async with run_gateway(
        simulator, trusted_documents=str(path), warm_up=warm_up, max_aliases=2
    ) as gw:
        known = gw.app.state.graphql.schema.known
        assert (known.documents.get(OTHER) is not None) is warm_up
        first = await gw.client.post("/graphql", json=apq(QUERY))
        assert first.json() == {"data": {"__typename": "Query"}}
        assert known.queries == (1 if warm_up else 0)  # the first request was a known one
        aliased = await gw.client.post("/graphql", json=apq(ALIASED))
        assert codes(aliased) == ["QUERY_TOO_COMPLEX"]
        assert known.queries == (1 if warm_up else 0)
