"""Persisted documents: automatic persisted queries (APQ) and trusted documents.

APQ, as Apollo's clients speak it (GET or POST):

- `extensions.persistedQuery = {"version": 1, "sha256Hash": h}` without `query`: the
  document registered under `h`, else `PERSISTED_QUERY_NOT_FOUND` (the client then
  sends the query with its hash once);
- with `query` as well: the hash must be the query's SHA-256 (hex), and the pair is
  registered. The store is an LRU bounded in characters (`GATEWAY_APQ_MAX_BYTES`).

Trusted documents (`GATEWAY_TRUSTED_DOCUMENTS`, a manifest file): only the documents it
lists run, named by hash (`extensions.persistedQuery.sha256Hash`, or `documentId`,
optionally prefixed `sha256:`), or sent as text whose hash it lists; nothing new is
registered. Two manifest formats are read: Apollo's persisted query manifest
(`{"format": "apollo-persisted-query-manifest", "operations": [{"id", "body"}, ...]}`)
and GraphQL Codegen's client preset (`{"<hash>": "<document>", ...}`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cachetools import LRUCache
from graphql import GraphQLError, OperationDefinitionNode, parse

from gateway.graphql.request import RequestRefused

NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
NOT_IN_LIST = "PERSISTED_QUERY_NOT_IN_LIST"
_HEX = frozenset("0123456789abcdef")


class ManifestError(Exception):
    """The trusted documents manifest cannot be read; the message is one line."""


def sha256_hex(document: str) -> str:
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def _normal_hash(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.removeprefix("sha256:").lower()
    return value if len(value) == 64 and set(value) <= _HEX else None


def load_manifest(path: str | Path) -> dict[str, str]:
    """Hash -> document, from an Apollo or a GraphQL Codegen manifest; checked hash by hash."""
    try:
        raw: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read the trusted documents manifest: {exc}") from None
    pairs: list[tuple[object, object]]
    if isinstance(raw, dict) and raw.get("format") == "apollo-persisted-query-manifest":
        operations = raw.get("operations")
        if not isinstance(operations, list):
            raise ManifestError("an Apollo manifest needs an `operations` list")
        pairs = [
            (op.get("id"), op.get("body")) if isinstance(op, dict) else (None, None)
            for op in operations
        ]
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        raise ManifestError("the manifest must be a JSON object")
    documents: dict[str, str] = {}
    for key, body in pairs:
        digest = _normal_hash(key)
        if digest is None or not isinstance(body, str):
            raise ManifestError(f"manifest entry {key!r} is not a sha256 hash and a document")
        if sha256_hex(body) != digest:
            raise ManifestError(f"manifest entry {digest} does not hash to its document")
        documents[digest] = body
    return documents


def operation_names(documents: Iterable[str]) -> frozenset[str]:
    """The names of the operations `documents` define; one that does not parse names none
    (it is refused when asked for, as any invalid document)."""
    names: set[str] = set()
    for text in documents:
        try:
            document = parse(text, no_location=True)
        except GraphQLError:
            continue
        names.update(
            definition.name.value
            for definition in document.definitions
            if isinstance(definition, OperationDefinitionNode) and definition.name is not None
        )
    return frozenset(names)


class PersistedDocuments:
    """Resolves a request's persisted-document parameters into the document to run."""

    def __init__(
        self, *, max_bytes: int = 8 * 1024 * 1024, trusted: Mapping[str, str] | None = None
    ) -> None:
        self.trusted = dict(trusted) if trusted is not None else None
        self._store: LRUCache[str, str] = LRUCache(maxsize=max_bytes, getsizeof=len)

    def __len__(self) -> int:
        return len(self._store)

    def resolve(self, params: Mapping[str, Any]) -> str | None:
        """The document the request runs (None: no document at all, strawberry says so)."""
        query = params.get("query")
        extensions = params.get("extensions") or {}
        persisted = extensions.get("persistedQuery")
        document_id = params.get("documentId")
        if persisted is None and document_id is None:
            if self.trusted is not None and query is not None:
                return self._trusted_text(query)
            return query if isinstance(query, str) else None
        digest = _normal_hash(document_id) if document_id is not None else self._apq_hash(persisted)
        if digest is None:
            raise RequestRefused(400, "the persisted document id must be a sha256 hash (hex)")
        if isinstance(query, str):
            if sha256_hex(query) != digest:
                raise RequestRefused(400, "provided sha does not match query")
            if self.trusted is not None:
                return self._trusted_text(query)
            if len(query) <= self._store.maxsize:  # a larger one is run, not kept
                self._store[digest] = query
            return query
        known = self.trusted if self.trusted is not None else self._store
        document = known.get(digest)
        if document is None:
            raise RequestRefused(200, "PersistedQueryNotFound", code=NOT_FOUND)
        return document

    def _apq_hash(self, persisted: object) -> str | None:
        if not isinstance(persisted, dict):
            raise RequestRefused(400, "`extensions.persistedQuery` must be an object")
        if persisted.get("version") != 1:
            raise RequestRefused(400, "unsupported persisted query version (only 1)")
        return _normal_hash(persisted.get("sha256Hash"))

    def _trusted_text(self, query: str) -> str:
        assert self.trusted is not None
        if sha256_hex(query) not in self.trusted:
            raise RequestRefused(
                400, "this gateway runs only its trusted documents", code=NOT_IN_LIST
            )
        return query
