"""Plans worked out from a parsed document are found again by the document object."""

from __future__ import annotations

import gc

from graphql import parse

from gateway.graphql.memo import DocumentMemo


def test_a_document_is_found_by_identity_and_forgotten_with_it() -> None:
    memo: DocumentMemo[str] = DocumentMemo(max_entries=8)
    first, twin = parse("{ a }"), parse("{ a }")
    memo.put(first, "plan")
    assert memo.get(first) == "plan"
    assert memo.get(twin) is None  # equal text, another object: not this entry
    del first
    gc.collect()
    assert len(memo) == 0


def test_the_memo_is_bounded() -> None:
    memo: DocumentMemo[int] = DocumentMemo(max_entries=3)
    documents = [parse(f"{{ f{i} }}") for i in range(5)]
    for index, document in enumerate(documents):
        memo.put(document, index)
    assert len(memo) == 3
    assert [memo.get(d) for d in documents] == [None, None, 2, 3, 4]
