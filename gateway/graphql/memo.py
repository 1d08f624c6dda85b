"""What is worked out once per parsed document, kept by the document's identity.

The parser cache hands back the same `DocumentNode` object for the same text, so a plan
derived from a document (its validation errors, which fields need argument checks) can be
looked up by that object. graphql-core's nodes hash by value, recursively, over every node
and location: as a dictionary key a document costs more to hash than the check it would
save (~20 us for a one-listing query). `DocumentMemo` keys by identity instead and forgets
an entry when its document is gone; it is bounded, dropping its oldest entry when full.
"""

from __future__ import annotations

import weakref
from typing import Generic, TypeVar

from graphql import DocumentNode

V = TypeVar("V")

__all__ = ["DocumentMemo"]


class DocumentMemo(Generic[V]):
    """A value per parsed document, found by the document object itself."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: dict[int, tuple[weakref.ref[DocumentNode], V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, document: DocumentNode) -> V | None:
        entry = self._entries.get(id(document))
        if entry is None or entry[0]() is not document:
            return None
        return entry[1]

    def put(self, document: DocumentNode, value: V) -> V:
        key = id(document)
        if key not in self._entries and len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        entries = self._entries

        def forget(ref: weakref.ref[DocumentNode]) -> None:
            current = entries.get(key)
            if current is not None and current[0] is ref:
                del entries[key]

        self._entries[key] = (weakref.ref(document, forget), value)
        return value
