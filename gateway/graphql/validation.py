"""Validation once per parsed document: strawberry's `ValidationCache`, keyed by identity.

strawberry's own cache wraps `validate_document` in an `lru_cache` keyed by the schema, the
document and the rules, so every request hashes its whole document (graphql-core nodes hash
by value). The schema and the rules are fixed for an app, and the parser cache hands back one
document object per text, so this extension keys by that object (`DocumentMemo`).

A document's first validation runs in one worker thread beside the event loop. Validation
cost grows with the square of a selection set's same-named fields and fragment spreads
(graphql-core's OverlappingFieldsCanBeMerged): within the token limit a 54 KB document took
1.8 s, and over WebSocket 15 such documents froze the loop for seconds. In the thread it
still takes its time, but the loop keeps serving (the interpreter switches threads every few
milliseconds), and one thread means such documents are validated one at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from gateway.graphql.memo import DocumentMemo

__all__ = ["DocumentValidation"]

_MAX_DOCUMENTS = 1024

# Shared by every app of the process: first validations wait their turn in it.
VALIDATION_THREAD: Final = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation")


class DocumentValidation(SchemaExtension):
    """Validates each parsed document once per app; later requests reuse its errors."""

    def __init__(self, memo: DocumentMemo[list[GraphQLError]]) -> None:
        super().__init__()
        self.memo = memo

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        assert document is not None
        errors = self.memo.get(document)
        if errors is None:
            found = await asyncio.get_running_loop().run_in_executor(
                VALIDATION_THREAD,
                validate_document,
                context.schema._schema,
                document,
                context.validation_rules,
            )
            errors = self.memo.put(document, found)
        context.pre_execution_errors = errors
        yield


def validation_memo() -> DocumentMemo[list[GraphQLError]]:
    """The memo one app's `DocumentValidation` extensions share."""
    return DocumentMemo(_MAX_DOCUMENTS)
