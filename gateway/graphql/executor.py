"""How a validated query runs: gather everything in one async step, then project.

strawberry hands execution to graphql-core's executor; the gateway's subclass takes
over query operations once parsing, validation and argument checks have passed:

1. the root fields (`listing`, `listings`, `node`) are read into domain selections and
   the service gathers all of them at once (`ListingRequest.listings`);
2. the answer is projected from the gathered data, by the operation's compiled
   function (`compiler.py`) when there is one, else by graphql-core itself, whose
   root resolvers then pick up the gathered data instead of reading anew.

Mutations and subscriptions run as graphql-core runs them. Plans are cached per
document text, operation name and the values of the variables `@skip`/`@include` read,
bounded by the memory their documents hold.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from cachetools import LRUCache
from graphql import (
    DirectiveNode,
    DocumentNode,
    ExecutionResult,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLResolveInfoHelpers,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    Visitor,
    assert_valid_schema,
    visit,
)
from graphql.execution.collect_fields import FragmentDetails
from graphql.execution.executor import Executor, default_field_resolver, default_type_resolver
from graphql.execution.values import get_argument_values
from graphql.pyutils import AwaitableOrValue
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gateway.domain import ids
from gateway.domain.errors import GatewayError, capture
from gateway.domain.models import ListingRef
from gateway.graphql.compiler import (
    ROOT_FIELDS,
    ArgumentSite,
    CompiledOperation,
    RootField,
    collect_root_fields,
    compile_operation,
)
from gateway.graphql.context import GatewayContext
from gateway.graphql.inputs import ref_from_arguments
from gateway.graphql.limits import BYTES_PER_CHARACTER
from gateway.graphql.selections import classified_page_args, listing_selection, media_page_args
from gateway.graphql.variables import coerce_variables, forget_variables
from gateway.service.listings import ListingRequest
from gateway.service.plan import ListingSelection


@dataclass(slots=True)
class ExecutionStats:
    """How query operations ran, for tests, benchmarks and metrics."""

    compiled: int = 0  # projected by a compiled function
    fallback: int = 0  # compilation on, but the operation needs graphql-core (e.g. introspection)
    interpreted: int = 0  # compilation off: graphql-core projected the gathered data
    plans_built: int = 0


@dataclass(frozen=True, slots=True)
class Gathered:
    """What the gather step read: one outcome per root field (None: not ours to read)."""

    plan: CompiledOperation | None
    roots: tuple[RootField, ...]
    outcomes: tuple[Any, ...]
    arguments: tuple[Any, ...]  # the compiled plan's argument values


_NOT_COMPILED = object()  # a cached "graphql-core runs this one"


class Plans:
    """Compiled operations keyed by document text, operation name and the values of the
    variables that `@skip`/`@include` read.

    A plan holds parts of its document (and through their locations, its tokens), so the
    plans are bounded as the parsed documents are (`gateway.graphql.limits`): by the memory
    their documents are estimated to hold, `max_bytes`; a document heavier than a sixteenth
    of it is compiled for each request, never kept.
    """

    def __init__(self, *, compiled: bool, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.compiled = compiled
        self.stats = ExecutionStats()
        self.largest = max_bytes // 16
        self._plans: LRUCache[tuple[Any, ...], tuple[Any, int]] = LRUCache(
            maxsize=max(1, max_bytes), getsizeof=_weight
        )
        self._directive_variables: LRUCache[tuple[str, str | None], tuple[tuple[str, ...], int]] = (
            LRUCache(maxsize=max(1, max_bytes), getsizeof=_weight)
        )

    def plan(self, executor: GatewayExecutor) -> CompiledOperation | None:
        operation = executor.operation
        if not self.compiled or operation.loc is None:
            return None
        text = operation.loc.source.body
        name = operation.name.value if operation.name else None
        variables = executor.variable_values.coerced
        weight = len(text) * BYTES_PER_CHARACTER
        kept = weight <= self.largest
        found = self._directive_variables.get((text, name))
        if found is not None:
            names = found[0]
        else:
            names = _directive_variables(operation, executor.fragment_definitions.values())
            if kept:
                self._directive_variables[(text, name)] = (names, len(text))
        key = (text, name, *(bool(variables.get(var)) for var in names))
        entry = self._plans.get(key)
        if entry is not None:
            plan = entry[0]
        else:
            self.stats.plans_built += 1
            plan = compile_operation(
                executor.schema,
                operation,
                executor.fragment_definitions,
                executor.variable_values,
            )
            if plan is None:
                plan = _NOT_COMPILED
            if kept:
                self._plans[key] = (plan, weight)
        return None if plan is _NOT_COMPILED else plan


def _weight(entry: tuple[Any, int]) -> int:
    return entry[1]


def _directive_variables(
    operation: OperationDefinitionNode, fragments: Sequence[FragmentDefinitionNode] | Any
) -> tuple[str, ...]:
    names: dict[str, None] = {}

    class Finder(Visitor):
        def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
            if node.name.value in ("skip", "include"):
                for argument in node.arguments or ():
                    if isinstance(argument.value, VariableNode):
                        names[argument.value.name.value] = None

    for definition in (operation, *fragments):
        visit(definition, Finder())
    return tuple(names)


class _HelpersMadeWhenAsked:
    """The async helpers of an executor that has let its own go (`GatewayExecutor`)."""

    def __get__(self, executor: Any, owner: Any = None) -> Any:
        if executor is None:
            return self
        return GraphQLResolveInfoHelpers(executor.gather_async_work, executor.track_async_work)


class GatewayExecutor(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor, with the gateway's gather step and compiled projection."""

    plans: ClassVar[Plans] = Plans(compiled=False)

    # graphql-core's executor holds the helpers it hands resolvers as its own bound methods:
    # a reference cycle, which would keep the executor and all it holds (the request's
    # context, its variables and reads) alive until a full collection, and a serving process
    # runs those rarely (`gateway.process.garbage`). A query lets them go once it has run;
    # should anything ask after that, it gets new ones.
    async_helpers = _HelpersMadeWhenAsked()

    @classmethod
    def build(  # type: ignore[override]
        cls,
        schema: GraphQLSchema,
        document: DocumentNode,
        root_value: Any = None,
        context_value: Any = None,
        raw_variable_values: dict[str, Any] | None = None,
        operation_name: str | None = None,
        field_resolver: Any = None,
        type_resolver: Any = None,
        subscribe_field_resolver: Any = None,
        max_coercion_errors: int = 50,
        enable_early_execution: bool = False,
        middleware: Any = None,
        is_awaitable: Any = None,
        is_async_iterable: Any = None,
        **rest: Any,
    ) -> list[GraphQLError] | Executor[Any]:
        """graphql-core's `build`, with the variables coerced as the checks before execution
        already coerced them (`coerce_variables` keeps the result for the same operation and
        raw dict), instead of a second time. Anything but a plain document with one
        operation to run and variables that coerce — an error to report, middleware,
        fragment variables — is built by graphql-core as before."""
        fragment_definitions: dict[str, FragmentDefinitionNode] = {}
        operations: list[OperationDefinitionNode] = []
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                operations.append(definition)
            elif isinstance(definition, FragmentDefinitionNode):
                if definition.variable_definitions:
                    operations.clear()
                    break
                fragment_definitions[definition.name.value] = definition
        chosen = [
            o
            for o in operations
            if operation_name is None or (o.name is not None and o.name.value == operation_name)
        ]
        variables = (
            coerce_variables(schema, chosen[0], raw_variable_values)
            if middleware is None
            and len(chosen) == 1
            and not (operation_name is None and len(operations) > 1)
            else None
        )
        if len(chosen) == 1:
            # The last of the request's users of the kept coercion (`gateway.graphql.known`).
            forget_variables(chosen[0], raw_variable_values)
        if variables is None or isinstance(variables, list):
            return super().build(
                schema,
                document,
                root_value,
                context_value,
                raw_variable_values,
                operation_name,
                field_resolver,
                type_resolver,
                subscribe_field_resolver,
                max_coercion_errors,
                enable_early_execution,
                middleware,
                is_awaitable,
                is_async_iterable,
                **rest,
            )
        assert_valid_schema(schema)
        fragments = {
            name: FragmentDetails(definition, None)
            for name, definition in fragment_definitions.items()
        }
        return cls(
            schema,
            fragment_definitions,
            fragments,
            root_value,
            context_value,
            chosen[0],
            variables,
            field_resolver or default_field_resolver,
            type_resolver or default_type_resolver,
            subscribe_field_resolver or default_field_resolver,
            enable_early_execution,
            None,
            is_awaitable,
            is_async_iterable,
            **rest,
        )

    def execute_operation(self, serially: bool | None = None) -> AwaitableOrValue[Any]:
        context = self.context_value
        if self.operation.operation is not OperationType.QUERY or not isinstance(
            context, GatewayContext
        ):
            return super().execute_operation(serially)
        return self._gather_then_project(context, serially)

    async def _gather_then_project(self, context: GatewayContext, serially: bool | None) -> Any:
        try:
            gathered = await self.gather(context)
            if gathered.plan is not None:
                self.plans.stats.compiled += 1
                return self.project(gathered)
            if self.plans.compiled:
                self.plans.stats.fallback += 1
            else:
                self.plans.stats.interpreted += 1
            return await self.interpret(context, gathered, serially)
        finally:
            self.__dict__.pop("async_helpers", None)

    async def gather(self, context: GatewayContext) -> Gathered:
        """Every root field's reads, in one async step (and the compiled plan, if any)."""
        plan = self.plans.plan(self)
        roots = (
            plan.roots
            if plan is not None
            else tuple(
                collect_root_fields(
                    self.schema, self.operation, self.fragment_definitions, self.variable_values
                )
            )
        )
        # One root field read (the usual query) is the request's only read: see `sole`.
        sole = sum(1 for root in roots if _is_read(root)) == 1
        try:
            # Several read: each classified is planned once, for all they ask of it.
            asks = {} if sole else self._asks(roots)
            if asks:
                context.listings.expect(list(asks.values()))
            reads = [
                self._root_read(context.listings, root, sole=sole, ask=asks.get(root.key))
                for root in roots
            ]
            arguments = [] if plan is None else [self._site_value(site) for site in plan.sites]
        except GraphQLError:
            # An argument graphql-core cannot coerce: let it run the operation and say so.
            return Gathered(None, (), (), ())
        try:
            started = [capture(read) for read in reads if read is not None]
            # One root field (the usual query) is awaited as it is, without a task.
            outcomes = iter(
                [await started[0]] if len(started) == 1 else await asyncio.gather(*started)
            )
        except BaseException:
            # Cancelled (the caller left, its deadline passed): a read whose task never
            # started is closed here, or it is reported as never awaited.
            for read in reads:
                if read is not None and inspect.getcoroutinestate(read) == inspect.CORO_CREATED:
                    read.close()
            raise
        by_root = tuple(next(outcomes) if read is not None else None for read in reads)
        return Gathered(plan, roots, by_root, tuple(arguments))

    def project(self, gathered: Gathered) -> ExecutionResult:
        """The answer, built by the operation's compiled function."""
        assert gathered.plan is not None
        errors: list[GraphQLError] = []
        values = [
            _root_value(root, outcome)
            for root, outcome in zip(gathered.roots, gathered.outcomes, strict=True)
        ]
        data = gathered.plan.project(values, gathered.arguments, errors)
        return ExecutionResult(data, errors or None)

    async def interpret(
        self, context: GatewayContext, gathered: Gathered, serially: bool | None = None
    ) -> Any:
        """The answer, built by graphql-core; its root resolvers take the gathered data."""
        context.gathered = {
            root.key: outcome
            for root, outcome in zip(gathered.roots, gathered.outcomes, strict=True)
            if outcome is not None
        }
        result = super().execute_operation(serially)
        if self.is_awaitable(result):
            result = await result
        return result

    def _root_read(
        self,
        scope: ListingRequest,
        root: RootField,
        *,
        sole: bool,
        ask: tuple[list[ListingRef], ListingSelection] | None = None,
    ) -> Any:
        """The service call answering one root field (a coroutine), or None for others;
        `ask`: its refs and selection, when already built."""
        if not _is_read(root):
            return None
        if ask is not None:
            return scope.listings(*ask, sole=sole)
        assert root.definition is not None
        args = get_argument_values(root.definition, root.nodes[0], self.variable_values)
        return self._read_root(scope, root, args, sole)

    async def _read_root(
        self, scope: ListingRequest, root: RootField, args: dict[str, Any], sole: bool
    ) -> Any:
        refs, selection = self._ask(root, args)
        return await scope.listings(refs, selection, sole=sole)

    def _ask(
        self, root: RootField, args: dict[str, Any]
    ) -> tuple[list[ListingRef], ListingSelection]:
        """The refs a listing root field names, and what it asks of them."""
        if root.name == "listings":
            refs = [ref_from_arguments(ref) for ref in args["refs"]]
        elif root.name == "listing":
            refs = [ref_from_arguments(args["ref"])]
        else:
            refs = [ids.listing_ref(str(args["id"]))]
        selection = listing_selection(
            self.schema, self.fragment_definitions, self.variable_values, root.nodes
        )
        return refs, selection

    def _asks(
        self, roots: Sequence[RootField]
    ) -> dict[str, tuple[list[ListingRef], ListingSelection]]:
        """What each reading root field asks, by response key; one whose arguments fail is
        left out (its own read reports the failure)."""
        asks = {}
        for root in roots:
            if not _is_read(root):
                continue
            assert root.definition is not None
            try:
                args = get_argument_values(root.definition, root.nodes[0], self.variable_values)
                asks[root.key] = self._ask(root, args)
            except (GraphQLError, GatewayError):
                continue
        return asks

    def _site_value(self, site: ArgumentSite) -> Any:
        args = get_argument_values(site.definition, site.node, self.variable_values)
        if site.kind == "classified_page":
            return classified_page_args(args)
        if site.kind == "media_page":
            return media_page_args(args)
        return str(args["mediaId"])


def _is_read(root: RootField) -> bool:
    """Whether the gather step reads this root field (the listing fields)."""
    return root.name in ROOT_FIELDS and root.definition is not None


def _root_value(root: RootField, outcome: Any) -> Any:
    if outcome is None or isinstance(outcome, BaseException) or root.name == "listings":
        return outcome
    return outcome[0]


def executor_class(*, compiled: bool, max_bytes: int = 64 * 1024 * 1024) -> type[GatewayExecutor]:
    """An executor class with its own plan cache (one per schema), bounded by `max_bytes`."""
    plans = Plans(compiled=compiled, max_bytes=max_bytes)
    return type("GatewayExecutor", (GatewayExecutor,), {"plans": plans})


def gathered_root(context: Any, key: str) -> Any:
    """What the gather step read for the root field at `key` (None: read it yourself)."""
    gathered: Mapping[str, Any] | None = getattr(context, "gathered", None)
    return None if gathered is None else gathered.get(key)


def execution_stats(schema: Any) -> ExecutionStats:
    """How a strawberry schema built by `build_schema` has run its queries so far."""
    executor = getattr(schema, "execution_context_class", None)
    plans = getattr(executor, "plans", None)
    return plans.stats if isinstance(plans, Plans) else ExecutionStats()
