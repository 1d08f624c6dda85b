"""Compiled execution: a validated query operation turned into one Python function.

graphql-core resolves every field through a generic machine (resolve info, path
objects, a resolver call, type checks): ~10 µs a field, and a 50-listing answer has
thousands. Once the service has gathered a request's data (one async step), the
answer is a pure projection of plain domain objects, so it can be generated once
per operation: this module writes the source of a function that walks the gathered
`ListingData` and builds the response dict directly, then `compile()`s it. The
approach follows graphql-jit (one generated function per operation, nested object
builders, errors collected with their paths); the code is our own.

What a compiled operation honours, exactly as graphql-core does it:
- field collection: aliases, merged fields, named and inline fragments (type
  conditions on `Node`), `@skip`/`@include` (the plan is specialised per value of
  the variables the directives read, so the generated code has no directive checks);
- arguments (read per request, once per field occurrence, not per object);
- `__typename`, enum and scalar serialisation (enums and datetimes are left to orjson,
  which writes them exactly as strawberry's serialisers would);
- errors: a stored `GatewayError` (or any exception) becomes a located error on the
  field that needed it, with its path and locations; null propagation of non-null
  violations up to the nearest nullable parent; the same error order.

`compile_operation` returns None for whatever it does not cover (introspection,
mutations, subscriptions, a field or type it has no projection for): the caller then
runs graphql-core for that operation. A differential test suite checks the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    is_abstract_type,
    located_error,
)
from graphql.execution.values import VariableValues

from gateway.domain import cursors, ids
from gateway.domain.errors import GatewayError
from gateway.graphql.selections import included

# --- projections: where each field's value lives in the gathered domain objects ------


@dataclass(frozen=True, slots=True)
class Projection:
    """A field's value as a Python expression over `d`, the parent's domain object.

    `argument` names how the field's arguments become one per-request value (`{arg}` in
    `expr`); `fails` marks expressions that raise a stored error.
    """

    expr: str
    argument: str | None = None


def _attrs(
    type_name: str, names: Mapping[str, str], prefix: str = "d."
) -> dict[tuple[str, str], Projection]:
    return {(type_name, name): Projection(prefix + attr) for name, attr in names.items()}


_STATUS_ITEM = {"status": "status", "rawStatus": "raw_status", "subStatus": "sub_status",
                "message": "message", "date": "status_date"}  # fmt: skip
_PUBLISH = {"pending": "pending", "pendingDate": "pending_date", "processing": "processing",
            "processingDate": "processing_date", "error": "error", "active": "active",
            "startDate": "start_date"}  # fmt: skip

# Status nodes and edges are (public id, item) pairs; connections are `StatusSlice`s.
PROJECTIONS: dict[tuple[str, str], Projection] = {
    ("Listing", "id"): Projection("_listing_id(d.ref)"),
    ("Listing", "classifiedId"): Projection("d.ref.classified_id"),
    ("Listing", "legacyAd"): Projection("d.ref.legacy"),
    ("Listing", "classified"): Projection("(d.classified if d.ref.classified_id else None)"),
    ("Listing", "state"): Projection("_value(d.state)"),
    ("Listing", "portals"): Projection("_value(d.portals)"),
    ("Listing", "legacy"): Projection("_value(d.legacy)"),
    **_attrs("LegacyAdKey", {"userId": "user_id", "adId": "ad_id"}),
    **_attrs(
        "PortalStatus",
        {
            "portal": "portal",
            "provider": "provider",
            "state": "state",
            "since": "since",
            "message": "message",
            "actionRequired": "action_required",
        },
    ),
    ("Classified", "id"): Projection("d.classified_id"),
    ("Classified", "latestStatus"): Projection("_latest(d.latest, d.classified_id)"),
    ("Classified", "statuses"): Projection("d.page({arg})", "classified_page"),
    ("Classified", "media"): Projection("d.media_data({arg})", "media_id"),
    ("ClassifiedStatus", "id"): Projection("d[0]"),
    **_attrs(
        "ClassifiedStatus",
        {**_STATUS_ITEM, "subStatusDetails": "sub_status_details", "portals": "portals"},
        "d[1].",
    ),
    ("ClassifiedStatus", "actionRequired"): Projection("False"),
    ("Media", "id"): Projection("d.media_id"),
    ("Media", "latestStatus"): Projection("_latest(d.latest, d.media_id)"),
    ("Media", "statuses"): Projection("d.page({arg})", "media_page"),
    ("MediaStatus", "id"): Projection("d[0]"),
    **_attrs(
        "MediaStatus",
        {**_STATUS_ITEM, "portal": "portal", "actionRequired": "action_required"},
        "d[1].",
    ),
    ("PageInfo", "hasNextPage"): Projection("d.has_next_page"),
    ("PageInfo", "endCursor"): Projection("_end_cursor(d)"),
    ("PageInfo", "hasPreviousPage"): Projection("d.has_previous_page"),
    ("PageInfo", "startCursor"): Projection("_start_cursor(d)"),
    **_attrs("LegacyAd", {"userId": "user_id", "adId": "ad_id"}),
    ("LegacyAd", "portals"): Projection("[e for e in d.portals if e.portal is not None]"),
    **_attrs(
        "LegacyPortalStatus", {"portal": "portal", "publish": "publish", "features": "features"}
    ),
    **_attrs("LegacyPublishStatus", {**_PUBLISH, "online": "online", "closeDate": "close_date"}),
    ("LegacyPublishStatus", "remoteAdId"): Projection(
        "(None if d.remote_ad_id is None else str(d.remote_ad_id))"
    ),
    **_attrs("LegacyFeatureStatus", {**_PUBLISH, "feature": "feature"}),
}
for _kind in ("ClassifiedStatus", "MediaStatus"):
    PROJECTIONS[(f"{_kind}Connection", "nodes")] = Projection("zip(d.ids, d.items)")
    PROJECTIONS[(f"{_kind}Connection", "edges")] = Projection("_edges(d)")
    PROJECTIONS[(f"{_kind}Connection", "pageInfo")] = Projection("d")
    PROJECTIONS[(f"{_kind}Edge", "cursor")] = Projection("_edge_cursor(d[2], d[3])")
    PROJECTIONS[(f"{_kind}Edge", "node")] = Projection("d")

# Root fields answered by `ListingRequest.listings`: their value is the gathered list.
ROOT_FIELDS = frozenset({"listing", "listings", "node"})
# Scalars whose Python values orjson writes exactly as graphql-core serialises them.
_PLAIN_SCALARS = frozenset({"String", "Boolean", "ID", "DateTime"})


class _Null(Exception):
    """A non-null field came out null: its parent becomes null (or its parent's parent…)."""

    def __init__(self, error: GraphQLError) -> None:
        self.error = error


def _flatten(path: Any) -> list[str | int]:
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    keys.reverse()
    return keys


def _located(error: Exception, nodes: list[FieldNode], path: Any) -> GraphQLError:
    return located_error(error, nodes, _flatten(path))


def _non_null(field_name: str, nodes: list[FieldNode], path: Any) -> _Null:
    error = TypeError(f"Cannot return null for non-nullable field {field_name}.")
    return _Null(_located(error, nodes, path))


def _value(outcome: Any) -> Any:
    if isinstance(outcome, GatewayError):
        raise outcome
    return outcome


def _latest(outcome: Any, owner_id: str) -> tuple[str, Any] | None:
    item = _value(outcome)
    return None if item is None else (ids.status_item_id(owner_id, item), item)


def _raise(error: Exception) -> Any:
    raise error


def _listed(value: Any) -> list[Any] | None:
    return None if value is None else list(value)


_RUNTIME: dict[str, Any] = {
    "_Null": _Null,
    "_located": _located,
    "_non_null": _non_null,
    "_value": _value,
    "_latest": _latest,
    "_listing_id": ids.listing_id,
    "_edge_cursor": cursors.edge_cursor,
    "_start_cursor": cursors.start_cursor,
    "_end_cursor": cursors.end_cursor,
    "_edges": cursors.edges,
    "_int": GraphQLInt.serialize,
    "_listed": _listed,
    "_raise": _raise,
}


# --- the compiled plan -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootField:
    """A root field of the operation: its response key, merged nodes and definition."""

    key: str
    name: str
    nodes: list[FieldNode]
    definition: GraphQLField | None  # None for __typename


@dataclass(frozen=True, slots=True)
class ArgumentSite:
    """A field occurrence whose arguments the projection needs, read once per request."""

    kind: str  # "classified_page", "media_page" or "media_id"
    definition: GraphQLField
    node: FieldNode


# The generated entry point: (root outcomes, argument values, errors) -> data or None.
Projector = Callable[[Sequence[Any], Sequence[Any], list[GraphQLError]], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class CompiledOperation:
    roots: tuple[RootField, ...]
    sites: tuple[ArgumentSite, ...]
    project: Projector
    # The generated code, for debugging and tests; the careful functions at its end are
    # compiled when first called.
    source: str


class NotCompilable(Exception):
    """The operation uses something the compiler does not cover."""


def collect_root_fields(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: VariableValues,
) -> list[RootField]:
    """The operation's root fields as graphql-core collects them (for these directive values)."""
    root_type = schema.get_root_type(operation.operation)
    if root_type is None:
        return []
    return [
        RootField(key, nodes[0].name.value, nodes, root_type.fields.get(nodes[0].name.value))
        for key, nodes in _collect(
            schema, root_type, [operation.selection_set], fragments, variables
        ).items()
    ]


def _collect(
    schema: GraphQLSchema,
    runtime_type: GraphQLObjectType,
    selection_sets: Iterable[SelectionSetNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: VariableValues,
) -> dict[str, list[FieldNode]]:
    fields: dict[str, list[FieldNode]] = {}
    visited: set[str] = set()
    for selection_set in selection_sets:
        _visit(selection_set, schema, runtime_type, fragments, variables, fields, visited)
    return fields


def _visit(
    selection_set: SelectionSetNode,
    schema: GraphQLSchema,
    runtime_type: GraphQLObjectType,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: VariableValues,
    fields: dict[str, list[FieldNode]],
    visited: set[str],
) -> None:
    # A function of the module, not a closure that calls itself: such a closure is a
    # reference cycle, which would keep the request's variables until a full collection.
    for selection in selection_set.selections:
        if not included(selection, variables):  # type: ignore[arg-type]
            continue
        if isinstance(selection, FieldNode):
            key = selection.alias.value if selection.alias else selection.name.value
            fields.setdefault(key, []).append(selection)
        elif isinstance(selection, InlineFragmentNode):
            condition = selection.type_condition
            if condition is None or _applies(schema, condition.name.value, runtime_type):
                _visit(
                    selection.selection_set,
                    schema,
                    runtime_type,
                    fragments,
                    variables,
                    fields,
                    visited,
                )
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if name in visited or fragment is None:
                continue
            visited.add(name)
            if _applies(schema, fragment.type_condition.name.value, runtime_type):
                _visit(
                    fragment.selection_set,
                    schema,
                    runtime_type,
                    fragments,
                    variables,
                    fields,
                    visited,
                )


def _applies(schema: GraphQLSchema, condition: str, runtime_type: GraphQLObjectType) -> bool:
    condition_type = schema.get_type(condition)
    if condition_type is runtime_type:
        return True
    return is_abstract_type(condition_type) and schema.is_sub_type(condition_type, runtime_type)


def compile_operation(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: VariableValues,
) -> CompiledOperation | None:
    """The compiled form of a query operation, or None when graphql-core must run it."""
    if operation.operation is not OperationType.QUERY:
        return None
    try:
        return _Generator(schema, fragments, variables).operation(operation)
    except NotCompilable:
        return None


@dataclass
class _Generator:
    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: VariableValues
    lines: list[str] = field(default_factory=list)
    # Careful functions that a fast function stands in front of: compiled on first use.
    deferred: list[str] = field(default_factory=list)
    deferred_names: list[str] = field(default_factory=list)
    constants: list[Any] = field(default_factory=list)
    sites: list[ArgumentSite] = field(default_factory=list)
    counter: int = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def constant(self, value: Any) -> str:
        self.constants.append(value)
        return f"K[{len(self.constants) - 1}]"

    def operation(self, operation: OperationDefinitionNode) -> CompiledOperation:
        roots = collect_root_fields(self.schema, operation, self.fragments, self.variables)
        listing_type = self.schema.get_type("Listing")
        assert isinstance(listing_type, GraphQLObjectType)
        body = ["def project(R, A, E):", "    data = {}", "    fatal = None"]
        for index, root in enumerate(roots):
            key = repr(root.key)
            if root.name == "__typename":
                body.append(f"    data[{key}] = 'Query'")
                continue
            if root.name not in ROOT_FIELDS or root.definition is None:
                raise NotCompilable(root.name)
            nodes = self.constant(root.nodes)
            builder = self.object_function(listing_type, root.nodes)
            body += [
                f"    v = R[{index}]",
                "    try:",
                "        if isinstance(v, BaseException):",
                f"            raise _Null(_located(v, {nodes}, (None, {key})))",
            ]
            body += self.complete(
                root.definition.type, "v", f"data[{key}]", f"(None, {key})", nodes,
                f"Query.{root.name}", builder, indent=2,
            )  # fmt: skip
            body += [
                "    except _Null as x:",
                *(
                    ["        fatal = fatal or x.error"]
                    if isinstance(root.definition.type, GraphQLNonNull)
                    else ["        E.append(x.error)", f"        data[{key}] = None"]
                ),
            ]
        body += ["    if fatal is not None:", "        E.append(fatal)", "        return None",
                 "    return data"]  # fmt: skip
        source = "\n".join([*self.lines, *body]) + "\n"
        namespace: dict[str, Any] = {**_RUNTIME, "K": self.constants}
        exec(compile(source, "<compiled graphql operation>", "exec"), namespace)
        if self.deferred:
            careful = "\n".join(self.deferred) + "\n"
            namespace.update(_on_first_use(namespace, careful, self.deferred_names))
            source += "\n" + careful
        return CompiledOperation(tuple(roots), tuple(self.sites), namespace["project"], source)

    def object_function(self, object_type: GraphQLObjectType, nodes: list[FieldNode]) -> str:
        """Write a function building `object_type`'s response dict from `d`; returns its name."""
        selection_sets = [node.selection_set for node in nodes if node.selection_set is not None]
        fields = _collect(self.schema, object_type, selection_sets, self.fragments, self.variables)
        name = self.name("o")
        body = [f"def {name}(d, p, A, E):", "    r = {}"]
        for key, field_nodes in fields.items():
            field_name = field_nodes[0].name.value
            if field_name == "__typename":
                body.append(f"    r[{key!r}] = {object_type.name!r}")
                continue
            definition = object_type.fields.get(field_name)
            projection = PROJECTIONS.get((object_type.name, field_name))
            if definition is None or projection is None:
                raise NotCompilable(f"{object_type.name}.{field_name}")
            expr = projection.expr
            if projection.argument is not None:
                self.sites.append(ArgumentSite(projection.argument, definition, field_nodes[0]))
                expr = expr.format(arg=f"A[{len(self.sites) - 1}]")
            inner = _named(definition.type)
            builder = (
                self.object_function(inner, field_nodes)
                if isinstance(inner, GraphQLObjectType)
                else None
            )
            nodes_ref = self.constant(field_nodes)
            path = f"(p, {key!r})"
            body += ["    try:", f"        v = {expr}"]
            body += self.complete(
                definition.type, "v", f"r[{key!r}]", path, nodes_ref,
                f"{object_type.name}.{field_name}", builder, indent=2,
            )  # fmt: skip
            nullable = not isinstance(definition.type, GraphQLNonNull)
            body += [
                "    except _Null as x:",
                *(
                    ["        E.append(x.error)", f"        r[{key!r}] = None"]
                    if nullable
                    else ["        raise"]
                ),
                "    except Exception as e:",
                *(
                    [
                        f"        E.append(_located(e, {nodes_ref}, {path}))",
                        f"        r[{key!r}] = None",
                    ]
                    if nullable
                    else [f"        raise _Null(_located(e, {nodes_ref}, {path}))"]
                ),
            ]
        body.append("    return r")
        fast = self.fast_function(object_type, fields, name)
        if fast is None:
            self.lines += [*body, ""]
            return name
        # Only a failed check of the fast function calls this one: most operations never
        # do, so it is compiled then (it calls no generated function, only the runtime's).
        self.deferred += [*body, ""]
        self.deferred_names.append(name)
        return fast

    def fast_function(
        self, object_type: GraphQLObjectType, fields: Mapping[str, list[FieldNode]], careful: str
    ) -> str | None:
        """For an object of leaves only: one dict literal, checked once; the careful function
        (exact errors, null propagation) runs only when a check fails. None if not leaves-only.

        Projections are pure, so running the careful function after a failed attempt
        repeats nothing observable; leaves-only objects append no errors of their own.
        """
        values: list[str] = []
        checks: list[str] = []
        entries: list[str] = []
        for index, (key, field_nodes) in enumerate(fields.items()):
            field_name = field_nodes[0].name.value
            if field_name == "__typename":
                entries.append(f"{key!r}: {object_type.name!r}")
                continue
            definition = object_type.fields[field_name]
            projection = PROJECTIONS[(object_type.name, field_name)]
            if projection.argument is not None:
                return None
            var = f"v{index}"
            type_ = definition.type
            non_null = isinstance(type_, GraphQLNonNull)
            inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
            if isinstance(inner, GraphQLList):
                item = inner.of_type
                if not isinstance(item, GraphQLNonNull) or not _identity(item.of_type):
                    return None
                values.append(f"{var} = _listed({projection.expr})")
                checks.append(
                    f"{var} is None" if non_null else f"({var} is not None and None in {var})"
                )
                if non_null:
                    checks.append(f"None in {var}")
            elif _identity(inner):
                values.append(f"{var} = {projection.expr}")
                if non_null:
                    checks.append(f"{var} is None")
            elif isinstance(inner, GraphQLScalarType) and inner.name == "Int":
                values.append(f"{var} = {projection.expr}")
                valid = f"({var}.__class__ is int and -2147483648 <= {var} <= 2147483647)"
                checks.append(
                    f"not {valid}" if non_null else f"({var} is not None and not {valid})"
                )
            else:
                return None
            entries.append(f"{key!r}: {var}")
        name = self.name("f")
        body = [f"def {name}(d, p, A, E):"]
        if values:
            body += ["    try:", *(f"        {line}" for line in values)]
            body += ["    except Exception:", f"        return {careful}(d, p, A, E)"]
        if checks:
            body += [f"    if {' or '.join(checks)}:", f"        return {careful}(d, p, A, E)"]
        body += ["    return {" + ", ".join(entries) + "}", ""]
        self.lines += body
        return name

    def complete(
        self,
        type_: GraphQLOutputType,
        value: str,
        target: str,
        path: str,
        nodes: str,
        field_name: str,
        builder: str | None,
        indent: int,
    ) -> list[str]:
        """Statements that complete `value` of `type_` into `target` (graphql-core's
        complete_value): null checks, lists item by item, objects through `builder`."""
        pad = "    " * indent
        if isinstance(type_, GraphQLNonNull):
            inner = type_.of_type
            head = [
                f"{pad}if {value} is None:",
                f"{pad}    raise _non_null({field_name!r}, {nodes}, {path})",
            ]
            return head + self.complete_inner(
                inner, value, target, path, nodes, field_name, builder, indent
            )
        return [
            f"{pad}if {value} is None:",
            f"{pad}    {target} = None",
            f"{pad}else:",
            *self.complete_inner(
                type_, value, target, path, nodes, field_name, builder, indent + 1
            ),
        ]

    def complete_inner(
        self,
        type_: GraphQLOutputType,
        value: str,
        target: str,
        path: str,
        nodes: str,
        field_name: str,
        builder: str | None,
        indent: int,
    ) -> list[str]:
        pad = "    " * indent
        if isinstance(type_, GraphQLList):
            item_type = type_.of_type
            out, index, item, list_path, item_path = (
                self.name(n) for n in ("out", "i", "x", "lp", "ip")
            )
            lines = [f"{pad}{out} = []", f"{pad}{list_path} = {path}",
                     f"{pad}for {index}, {item} in enumerate({value}):",
                     f"{pad}    {item_path} = ({list_path}, {index})"]  # fmt: skip
            if isinstance(item_type, GraphQLNonNull) and (
                builder is not None or _identity(item_type.of_type)
            ):
                # The common case as one comprehension: non-null items, built or passed on.
                made = f"{builder}({item}, ({list_path}, {index}), A, E)" if builder else item
                missing = f"_raise(_non_null({field_name!r}, {nodes}, ({list_path}, {index})))"
                return [
                    f"{pad}{list_path} = {path}",
                    f"{pad}{target} = [{made} if {item} is not None else {missing}"
                    f" for {index}, {item} in enumerate({value})]",
                ]
            if isinstance(item_type, GraphQLNonNull):
                lines += self.complete(
                    item_type, item, f"{item}", item_path, nodes, field_name, builder, indent + 1
                )
            else:
                # A nullable item absorbs its own null propagation.
                lines += [f"{pad}    try:"]
                lines += self.complete(
                    item_type, item, f"{item}", item_path, nodes, field_name, builder, indent + 2
                )
                lines += [f"{pad}    except _Null as y:", f"{pad}        E.append(y.error)",
                          f"{pad}        {item} = None"]  # fmt: skip
            lines += [f"{pad}    {out}.append({item})", f"{pad}{target} = {out}"]
            return lines
        if builder is not None:  # an object, or an interface whose one runtime type it builds
            return [f"{pad}{target} = {builder}({value}, {path}, A, E)"]
        return [f"{pad}{target} = {self.leaf(type_, value)}"]

    def leaf(self, type_: GraphQLOutputType, value: str) -> str:
        if isinstance(type_, GraphQLScalarType):
            if type_.name in _PLAIN_SCALARS:
                return value
            if type_.name == "Int":
                return (
                    f"({value} if {value}.__class__ is int and "
                    f"-2147483648 <= {value} <= 2147483647 else _int({value}))"
                )
        if isinstance(type_, GraphQLEnumType) and all(
            name == str(getattr(enum_value.value, "value", enum_value.value))
            for name, enum_value in type_.values.items()
        ):
            # String enums whose names are their values: orjson writes the member's value.
            return value
        raise NotCompilable(str(type_))


def _on_first_use(
    namespace: dict[str, Any], source: str, names: Sequence[str]
) -> dict[str, Callable[..., Any]]:
    """Stand-ins for the functions `source` defines in `namespace`: the first call of any
    compiles them all over the stand-ins, then calls the real one."""

    def stand_in(name: str) -> Callable[..., Any]:
        def first_call(d: Any, p: Any, a: Any, e: list[GraphQLError]) -> Any:
            if namespace[name] is first_call:
                exec(compile(source, "<compiled graphql operation, errors>", "exec"), namespace)
            return namespace[name](d, p, a, e)

        return first_call

    return {name: stand_in(name) for name in names}


def _identity(type_: Any) -> bool:
    """Leaves whose Python value is already what orjson should write."""
    if isinstance(type_, GraphQLScalarType):
        return type_.name in _PLAIN_SCALARS
    return isinstance(type_, GraphQLEnumType) and all(
        name == str(getattr(enum_value.value, "value", enum_value.value))
        for name, enum_value in type_.values.items()
    )


def _named(type_: GraphQLOutputType) -> Any:
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        type_ = type_.of_type
    return type_
