"""Validation once per parsed document: strawberry's `ValidationCache`, keyed by identity.

strawberry's own cache wraps `validate_document` in an `lru_cache` keyed by the schema, the
document and the rules, so every request hashes its whole document (graphql-core nodes hash
by value). The schema and the rules are fixed for an app, and the parser cache hands back one
document object per text, so this extension keys by that object (`DocumentMemo`).
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from gateway.graphql.memo import DocumentMemo

__all__ = ["DocumentValidation"]

_MAX_DOCUMENTS = 1024


class DocumentValidation(SchemaExtension):
    """Validates each parsed document once per app; later requests reuse its errors."""

    def __init__(self, memo: DocumentMemo[list[GraphQLError]]) -> None:
        super().__init__()
        self.memo = memo

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        assert document is not None
        errors = self.memo.get(document)
        if errors is None:
            errors = self.memo.put(
                document,
                validate_document(context.schema._schema, document, context.validation_rules),
            )
        context.pre_execution_errors = errors
        yield


def validation_memo() -> DocumentMemo[list[GraphQLError]]:
    """The memo one app's `DocumentValidation` extensions share."""
    return DocumentMemo(_MAX_DOCUMENTS)
