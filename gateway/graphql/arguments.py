"""Argument checks that run before execution, so a bad request costs no upstream call.

graphql-core validation rules cannot see variables, so this runs as an `on_execute`
hook: it walks the chosen operation (and its fragments) with the coerced variables and
applies the service's own checks to the arguments of the fields that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    get_operation_ast,
    visit,
)
from graphql.execution.values import get_argument_values, get_variable_values
from strawberry.extensions import SchemaExtension

from gateway.errors import InvalidInput
from gateway.graphql.inputs import ref_from_arguments
from gateway.service import DEFAULT_PAGE_SIZE, check_page_args, check_ref, check_refs

Check = Callable[[dict[str, Any], int], None]


def _check_listing(args: dict[str, Any], _max: int) -> None:
    check_ref(ref_from_arguments(args["ref"]))


def _check_listings(args: dict[str, Any], max_listings: int) -> None:
    check_refs([ref_from_arguments(ref) for ref in args["refs"]], max_listings)


def _check_page(args: dict[str, Any], _max: int) -> None:
    first = args.get("first")
    check_page_args(DEFAULT_PAGE_SIZE if first is None else first, args.get("after"))


CHECKS: dict[str, Check] = {
    "Query.listing": _check_listing,
    "Query.listings": _check_listings,
    "Mutation.refreshListing": _check_listing,
    "Classified.statuses": _check_page,
    "Media.statuses": _check_page,
}


def argument_errors(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    max_listings: int,
) -> list[GraphQLError]:
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return []
    coerced = get_variable_values(schema, operation.variable_definitions or (), variables or {})
    if isinstance(coerced, list):
        return []  # bad variables: execution reports them itself
    errors: list[GraphQLError] = []
    definitions: list[OperationDefinitionNode | FragmentDefinitionNode] = [operation]
    definitions += [d for d in document.definitions if isinstance(d, FragmentDefinitionNode)]
    for definition in definitions:
        type_info = TypeInfo(schema)
        visit(
            definition,
            TypeInfoVisitor(type_info, _Checker(type_info, coerced, max_listings, errors)),
        )
    return errors


class _Checker(Visitor):
    def __init__(
        self,
        type_info: TypeInfo,
        variables: Any,
        max_listings: int,
        errors: list[GraphQLError],
    ) -> None:
        super().__init__()
        self.type_info = type_info
        self.variables = variables
        self.max_listings = max_listings
        self.errors = errors

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        parent = self.type_info.get_parent_type()
        field = self.type_info.get_field_def()
        if parent is None or field is None:
            return
        check = CHECKS.get(f"{parent.name}.{node.name.value}")
        if check is None:
            return
        try:
            check(get_argument_values(field, node, self.variables), self.max_listings)
        except InvalidInput as exc:
            self.errors.append(GraphQLError(exc.message, node, extensions={"code": exc.code}))
        except GraphQLError:
            return  # an argument graphql-core cannot coerce: execution reports it


class ArgumentChecks(SchemaExtension):
    """Refuses a request whose arguments the service would refuse, before it runs."""

    def __init__(self, *, max_listings: int) -> None:
        self.max_listings = max_listings

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None:
            errors = argument_errors(
                context.schema._schema,
                context.graphql_document,
                context.operation_name,
                context.variables,
                self.max_listings,
            )
            if errors:
                context.result = ExecutionResult(data=None, errors=errors)
                request_context = context.context
                if hasattr(request_context, "request_error"):
                    request_context.request_error = True
        yield
