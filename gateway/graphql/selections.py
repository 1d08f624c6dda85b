"""Reading a query's selection into the service's domain terms (`ListingSelection`).

The edge says what is asked; the service decides what to read. This walks the field
nodes below a root field once, honouring `@skip`/`@include` and fragments, and coerces
the arguments of `statuses` and `media` with the request's variables, so each distinct
argument set is gathered once and every field below the root is a plain projection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    SelectionNode,
)
from graphql.execution.values import VariableValues, get_argument_values, get_directive_values

from gateway.service.plan import ListingSelection, PageArgs, SelectionBuilder

Fragments = Mapping[str, FragmentDefinitionNode]


def included(
    node: FieldNode | FragmentSpreadNode | InlineFragmentNode, variables: VariableValues
) -> bool:
    """Whether `@skip`/`@include` keep `node` for these variables."""
    if not node.directives:
        return True
    skip = get_directive_values(GraphQLSkipDirective, node, variables)
    if skip is not None and skip["if"]:
        return False
    include = get_directive_values(GraphQLIncludeDirective, node, variables)
    return include is None or bool(include["if"])


def fields_of(
    selections: Iterable[SelectionNode], fragments: Fragments, variables: VariableValues
) -> Iterator[FieldNode]:
    """The included fields of a selection set, through fragments of any depth.

    Type conditions are not checked: below the root every position has one object type
    (`Node` has one implementation), and validation refused any fragment that cannot apply.
    """
    for selection in selections:
        if not included(selection, variables):  # type: ignore[arg-type]
            continue
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from fields_of(selection.selection_set.selections, fragments, variables)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                yield from fields_of(fragment.selection_set.selections, fragments, variables)


def _below(
    nodes: Iterable[FieldNode], fragments: Fragments, variables: VariableValues
) -> Iterator[FieldNode]:
    for node in nodes:
        if node.selection_set is not None:
            yield from fields_of(node.selection_set.selections, fragments, variables)


def listing_selection(
    schema: GraphQLSchema,
    fragments: Fragments,
    variables: VariableValues,
    root_nodes: Iterable[FieldNode],
) -> ListingSelection:
    """What the root field (its field nodes merged) asks of its listings."""
    classified_type = _object(schema, "Classified")
    media_type = _object(schema, "Media")
    builder = SelectionBuilder()
    for field in _below(root_nodes, fragments, variables):
        name = field.name.value
        if name == "legacy":
            builder.legacy = True
        elif name in ("portals", "state"):
            builder.unified = True
        elif name == "classified":
            for sub in _below([field], fragments, variables):
                sub_name = sub.name.value
                if sub_name == "latestStatus":
                    builder.latest = True
                elif sub_name == "statuses":
                    args = get_argument_values(classified_type.fields["statuses"], sub, variables)
                    builder.add_page(classified_page_args(args))
                elif sub_name == "media":
                    args = get_argument_values(classified_type.fields["media"], sub, variables)
                    media_id = str(args["mediaId"])
                    builder.add_media(media_id)
                    for leaf in _below([sub], fragments, variables):
                        if leaf.name.value == "latestStatus":
                            builder.add_media(media_id, latest=True)
                        elif leaf.name.value == "statuses":
                            page = get_argument_values(
                                media_type.fields["statuses"], leaf, variables
                            )
                            builder.add_media(media_id, page=media_page_args(page))
    return builder.build()


def classified_page_args(args: Mapping[str, Any]) -> PageArgs:
    """`Classified.statuses` arguments, coerced, as the service's `PageArgs`."""
    return PageArgs.of(args.get("first"), args.get("after"), args.get("status"), args.get("portal"))


def media_page_args(args: Mapping[str, Any]) -> PageArgs:
    """`Media.statuses` arguments, coerced, as the service's `PageArgs`."""
    return PageArgs.of(args.get("first"), args.get("after"))


def _object(schema: GraphQLSchema, name: str) -> GraphQLObjectType:
    type_ = schema.get_type(name)
    assert isinstance(type_, GraphQLObjectType)
    return type_
