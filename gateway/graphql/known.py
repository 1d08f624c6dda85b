"""Documents this app already knows, which may skip strawberry's pipeline.

strawberry runs every operation through its extension hooks: parsing (here a lookup in the
parser cache), validation (a lookup in the validation memo), the limits, the argument and
cost checks, error coding. For a document the app has parsed and validated before without
errors, most of that work is a lookup that answers "fine"; what is left is per request —
the variables, the argument and cost checks — and that is done here, in one pass. A
document is known only after strawberry's path has seen it once: a document's first request
(and any request that would be refused) goes that way and is answered as it always was.

Two users: queries over HTTP (`GatewaySchema.execute_known`, about a tenth of a small
request's CPU) and subscriptions (`gateway.graphql.streams`, which then hold a twentieth of
the memory while they wait).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
    parse,
)
from strawberry.schema.schema import validate_document

from gateway.graphql.arguments import argument_errors
from gateway.graphql.cost import cost_errors
from gateway.graphql.limits import ParsedDocuments
from gateway.graphql.memo import DocumentMemo
from gateway.graphql.variables import coerce_variables, forget_variables


@dataclass(slots=True)
class KnownDocuments:
    """The app's parsed documents, its validation memo, and the argument and cost limits;
    `queries` and `subscriptions` count the operations run past strawberry's pipeline."""

    documents: ParsedDocuments
    validated: DocumentMemo[list[GraphQLError]]
    max_listings: int
    max_root_fields: int
    max_cost: int
    # What strawberry's path parses and validates with, for `learn`.
    max_tokens: int = 20_000
    rules: tuple[type[ASTValidationRule], ...] = ()
    queries: int = 0
    subscriptions: int = 0

    def learn(self, schema: GraphQLSchema, query: str) -> bool:
        """Parses and validates `query` as strawberry's path would and keeps both, so its
        first request is a known one; whether it is valid. Never executes it."""
        document = self.documents.get(query)
        if document is None:
            try:
                document = parse(query, max_tokens=self.max_tokens)
            except GraphQLError:
                return False
            self.documents.put(query, document)
        errors = self.validated.get(document)
        if errors is None:
            errors = self.validated.put(document, validate_document(schema, document, self.rules))
        return not errors

    def document(
        self,
        schema: GraphQLSchema,
        query: str | None,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        kind: OperationType,
    ) -> DocumentNode | None:
        """The parsed document, if its operation is a `kind` that may skip strawberry's
        pipeline with these variables; else None."""
        if not query:
            return None
        document = self.documents.get(query)
        if document is None or self.validated.get(document) != []:
            return None
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation is not kind:
            return None
        if kind is OperationType.SUBSCRIPTION and not _one_plain_root_field(operation):
            return None
        if variables is not None and not isinstance(variables, dict):
            return None
        # Coerced once here and kept for the argument and cost checks that follow and for the
        # executor's build, which lets it go (the same raw dict and operation:
        # `gateway.graphql.variables`); a refused request's are let go here, so a large
        # request's variables are not kept past their use either way.
        if isinstance(coerce_variables(schema, operation, variables), list) or self._refused(
            schema, document, operation, operation_name, variables
        ):
            forget_variables(operation, variables)
            return None
        return document

    def _refused(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        operation_name: str | None,
        variables: dict[str, Any] | None,
    ) -> bool:
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        return bool(
            argument_errors(schema, document, operation_name, variables, self.max_listings)
            or cost_errors(
                schema,
                operation,
                fragments,
                variables,
                max_root_fields=self.max_root_fields,
                max_cost=self.max_cost,
            )
        )


def _one_plain_root_field(operation: OperationDefinitionNode) -> bool:
    # A subscription has one root field (validation says so); a directive on it is left to
    # strawberry's path.
    selections = operation.selection_set.selections
    return (
        len(selections) == 1
        and isinstance(selections[0], FieldNode)
        and not (selections[0].directives)
    )
