"""Argument checks that run before execution, so a bad request costs no upstream call.

graphql-core validation rules cannot see variables, so this runs as an `on_execute`
hook. Which fields of a document need checking is worked out once per document (the
parser cache hands back the same document object for the same text); each request
then only coerces those fields' arguments with its own variables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLField,
    GraphQLSchema,
    OperationDefinitionNode,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    get_operation_ast,
    visit,
)
from graphql.execution.values import get_argument_values
from strawberry.extensions import SchemaExtension

from gateway.domain import ids
from gateway.domain.errors import InvalidInput
from gateway.graphql.inputs import ref_from_arguments
from gateway.graphql.memo import DocumentMemo
from gateway.graphql.variables import coerce_variables
from gateway.service.checks import (
    DEFAULT_PAGE_SIZE,
    check_id,
    check_page_args,
    check_ref,
    check_refs,
    check_status_filter,
)

Check = Callable[[dict[str, Any], int], None]


def _check_listing(args: dict[str, Any], _max: int) -> None:
    check_ref(ref_from_arguments(args["ref"]))


def _check_listings(args: dict[str, Any], max_listings: int) -> None:
    check_refs([ref_from_arguments(ref) for ref in args["refs"]], max_listings)


def _check_node(args: dict[str, Any], _max: int) -> None:
    check_ref(ids.listing_ref(str(args["id"])))


def _check_page(args: dict[str, Any], _max: int) -> None:
    first = args.get("first")
    check_page_args(DEFAULT_PAGE_SIZE if first is None else first, args.get("after"))
    check_status_filter(args.get("status") or ())


def _check_media(args: dict[str, Any], _max: int) -> None:
    check_id(str(args["mediaId"]), "mediaId")


CHECKS: dict[str, Check] = {
    "Query.listing": _check_listing,
    "Query.listings": _check_listings,
    "Query.node": _check_node,
    "Mutation.refreshListing": _check_listing,
    "Classified.statuses": _check_page,
    "Classified.media": _check_media,
    "Media.statuses": _check_page,
}


@dataclass(frozen=True, slots=True)
class _Site:
    """A field in the document whose arguments need a check."""

    node: FieldNode
    field: GraphQLField
    check: Check


_plans: DocumentMemo[dict[str | None, list[_Site]]] = DocumentMemo()


def _sites(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode
) -> list[_Site]:
    per_operation = _plans.get(document)
    if per_operation is None:
        per_operation = _plans.put(document, {})
    key = operation.name.value if operation.name else None
    sites = per_operation.get(key)
    if sites is None:
        sites = []
        definitions: list[OperationDefinitionNode | FragmentDefinitionNode] = [operation]
        definitions += [d for d in document.definitions if isinstance(d, FragmentDefinitionNode)]
        for definition in definitions:
            type_info = TypeInfo(schema)
            visit(definition, TypeInfoVisitor(type_info, _Collector(type_info, sites)))
        per_operation[key] = sites
    return sites


class _Collector(Visitor):
    def __init__(self, type_info: TypeInfo, sites: list[_Site]) -> None:
        super().__init__()
        self.type_info = type_info
        self.sites = sites

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        parent = self.type_info.get_parent_type()
        field = self.type_info.get_field_def()
        if parent is None or field is None:
            return
        check = CHECKS.get(f"{parent.name}.{node.name.value}")
        if check is not None:
            self.sites.append(_Site(node, field, check))


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
    sites = _sites(schema, document, operation)
    if not sites:
        return []
    coerced = coerce_variables(schema, operation, variables)
    if isinstance(coerced, list):
        return []  # bad variables: execution reports them itself
    errors: list[GraphQLError] = []
    for site in sites:
        try:
            site.check(get_argument_values(site.field, site.node, coerced), max_listings)
        except InvalidInput as exc:
            errors.append(GraphQLError(exc.message, site.node, extensions={"code": exc.code}))
        except GraphQLError:
            continue  # an argument graphql-core cannot coerce: execution reports it
    return errors


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
