"""Compiled execution answers exactly what graphql-core answers, over the same gathered data.

Hypothesis writes operations over the real schema (aliases, repeated fields, named and
inline fragments, `@skip`/`@include` with literals and variables, variables for field
arguments, `__typename`) against real simulator data, with upstream failures injected
per source. Each operation's reads are gathered once; then the compiled function and
graphql-core both project that data, and `data` (bytes, so key order counts) and the
translated `errors` (message, path, locations, extensions, in order) must be identical.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from graphql import GraphQLSchema, get_operation_ast, parse, validate
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.domain import ids
from gateway.domain.cursors import KeysetCursor, encode_cursor
from gateway.domain.models import Caller, LegacyAdKey, ListingRef
from gateway.graphql.context import GatewayContext
from gateway.graphql.errors import translate
from gateway.graphql.executor import GatewayExecutor, Plans
from gateway.graphql.schema import build_schema
from gateway.runtime import Runtime, open_runtime
from gateway.simulator import RunningSimulator, Simulator

from gateway_harness import settings_for

settings.register_profile(
    "differential",
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

CLASSIFIED_CODES = ["CREATED", "UPDATED", "RECEIVED", "DELETED", "CREATING_FAILED"]
PORTALS = ["SL", "BU", "LI", "MARKTPLAATS"]
FAULTS = {
    "legacy": ("legacy", "status_post"),
    "v3": ("v3", "classified_statuses"),
    "media": ("v3", "media_statuses"),
}


@dataclass
class World:
    """One simulator and one gateway runtime, on a loop of their own, for every example."""

    loop: asyncio.AbstractEventLoop
    running: RunningSimulator
    runtime: Runtime
    schema: GraphQLSchema
    refs: list[str]  # ListingRef literals
    nodes: list[str]  # listing ids
    media: list[str]

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    loop = asyncio.new_event_loop()
    sim_context = Simulator(seed=7).serve()
    running = loop.run_until_complete(sim_context.__aenter__())
    # No cache: every example reads upstream, so the faults it injects apply.
    runtime_context = open_runtime(settings_for(running, cache_ttl_s=0, legacy_cache_ttl_s=0))
    runtime = loop.run_until_complete(runtime_context.__aenter__())
    data = running.sim.data
    mine = [item for item in data.listings if data.tenant_of(item.classified_id) == "agency-1"]
    with_media = next(item for item in mine if data.media_of(item.classified_id))
    refs = [
        f'{{classifiedId: "{with_media.classified_id}", legacy: {{userId: {with_media.user_id}, adId: {with_media.ad_id}}}}}',
        f'{{classifiedId: "{mine[1].classified_id}"}}',
        f"{{legacy: {{userId: {mine[2].user_id}, adId: {mine[2].ad_id}}}}}",
        '{classifiedId: "no-such-classified"}',
    ]
    nodes = [
        ids.listing_id(
            ListingRef(with_media.classified_id, LegacyAdKey(with_media.user_id, with_media.ad_id))
        ),
        ids.listing_id(ListingRef(legacy=LegacyAdKey(mine[2].user_id, mine[2].ad_id))),
        ids.listing_id(ListingRef("no-such-classified")),
    ]
    world = World(
        loop, running, runtime, build_schema()._schema, refs, nodes,
        data.media_of(with_media.classified_id),
    )  # fmt: skip
    try:
        yield world
    finally:
        loop.run_until_complete(runtime_context.__aexit__(None, None, None))
        loop.run_until_complete(sim_context.__aexit__(None, None, None))
        loop.close()


# --- operations ----------------------------------------------------------------------

# Strategies are built once: hypothesis validates a strategy object the first time it draws
# from it, and building them inside every draw made generation most of this test's time.
BOOLEANS = st.booleans()
QUARTER = st.integers(0, 3)
DIRECTIVE = st.sampled_from(["", "", "", "skip", "include"])
FIRST = st.sampled_from([1, 2, 3, 20, 100])
CONDITION = st.sampled_from(["Listing", "Node"])
ROOT_COUNT = st.integers(1, 3)
ROOT_KIND = st.sampled_from(["listing", "listings", "node"])


@dataclass
class Writer:
    """Accumulates what one generated operation needs besides its selection."""

    draw: Any
    variables: dict[str, tuple[str, Any]] = field(default_factory=dict)  # name -> (type, value)
    fragments: list[str] = field(default_factory=list)
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def boolean(self) -> str:
        if self.draw(BOOLEANS):
            return "true" if self.draw(BOOLEANS) else "false"
        name = self.fresh("b")
        self.variables[name] = ("Boolean!", self.draw(BOOLEANS))
        return f"${name}"

    def directives(self) -> str:
        choice = self.draw(DIRECTIVE)
        return f" @{choice}(if: {self.boolean()})" if choice else ""

    def first(self) -> str:
        value = self.draw(FIRST)
        if self.draw(BOOLEANS):
            name = self.fresh("f")
            self.variables[name] = ("Int", value)
            return f"${name}"
        return str(value)

    def after(self) -> list[str]:
        """No `after` (a first page), or a keyset position inside the histories (a later page)."""
        if self.draw(BOOLEANS):
            return []
        if self.draw(BOOLEANS):
            name = self.fresh("a")
            self.variables[name] = ("String", LATER)
            return [f"after: ${name}"]
        return [f'after: "{LATER}"']


# A keyset position in the simulator's histories: what follows it is a later page.
LATER = encode_cursor(KeysetCursor(datetime(2023, 10, 1, tzinfo=UTC), "keyset-position"))

SCALARS: dict[str, list[str]] = {
    "Listing": ["id", "classifiedId", "state", "__typename"],
    "LegacyAdKey": ["userId", "adId"],
    "PortalStatus": ["portal", "provider", "state", "since", "message", "actionRequired"],
    "Classified": ["id", "__typename"],
    "ClassifiedStatus": ["id", "status", "rawStatus", "subStatus", "subStatusDetails",
                         "message", "portals", "date", "actionRequired"],
    "Media": ["id"],
    "MediaStatus": ["id", "portal", "status", "rawStatus", "subStatus", "message",
                    "actionRequired", "date"],
    "PageInfo": ["hasNextPage", "endCursor", "hasPreviousPage", "startCursor", "__typename"],
    "LegacyAd": ["userId", "adId"],
    "LegacyPortalStatus": ["portal"],
    "LegacyPublishStatus": ["pending", "pendingDate", "processing", "error", "active",
                            "online", "startDate", "closeDate", "remoteAdId"],
    "LegacyFeatureStatus": ["feature", "active", "startDate", "error"],
}  # fmt: skip


def selection(w: Writer, type_name: str, depth: int, media: list[str]) -> str:
    """A selection set on `type_name`: some scalars, some objects, fragments, directives."""
    parts: list[str] = []
    for name in w.draw(SCALAR_LISTS[type_name]):
        alias = f"{w.fresh('s')}: " if w.draw(QUARTER) == 0 else ""
        parts.append(f"{alias}{name}{w.directives()}")
    children = CHILD_LISTS.get(type_name) if depth else None
    for child in w.draw(children) if children is not None else []:
        parts.append(OBJECT_FIELDS[child](w, depth - 1, media))
    if type_name == "Listing" and w.draw(QUARTER) == 0:
        inner = selection(w, "Listing", max(depth - 1, 0), media)
        condition = w.draw(CONDITION)
        if condition == "Node":
            inner = f"{{ id ... on Listing {inner} }}"
        if w.draw(BOOLEANS):
            parts.append(f"... on {condition}{w.directives()} {inner}")
        else:
            name = w.fresh("F")
            w.fragments.append(f"fragment {name} on {condition} {inner}")
            parts.append(f"...{name}{w.directives()}")
    return "{ " + " ".join(w.draw(st.permutations(parts))) + " }"


def _object(name: str, type_name: str) -> Any:
    def write(w: Writer, depth: int, media: list[str]) -> str:
        return f"{name}{w.directives()} {selection(w, type_name, depth, media)}"

    return write


def _statuses(w: Writer, depth: int, media: list[str]) -> str:
    args = [f"first: {w.first()}", *w.after()]
    if w.draw(BOOLEANS):
        args.append(f"status: [{', '.join(w.draw(STATUS_FILTER))}]")
    if w.draw(BOOLEANS):
        args.append(f"portal: [{', '.join(w.draw(PORTAL_FILTER))}]")
    return f"{w.fresh('p')}: statuses({', '.join(args)}){w.directives()} {connection(w, 'ClassifiedStatus', depth)}"


def connection(w: Writer, node: str, depth: int) -> str:
    parts = [f"pageInfo {selection(w, 'PageInfo', 0, [])}"]
    if w.draw(BOOLEANS):
        parts.append(f"nodes {selection(w, node, 0, [])}")
    if w.draw(BOOLEANS):
        parts.append(f"edges {{ cursor node {selection(w, node, 0, [])} }}")
    return "{ " + " ".join(parts) + " }"


def _media(w: Writer, depth: int, media: list[str]) -> str:
    media_id = w.draw(st.sampled_from([*media[:2], "no-such-media"]))
    parts = [selection(w, "Media", 0, [])[2:-2]]
    if w.draw(BOOLEANS):
        parts.append(f"latestStatus {selection(w, 'MediaStatus', 0, [])}")
    if w.draw(BOOLEANS):
        parts.append(
            f"{w.fresh('m')}: statuses({', '.join([f'first: {w.first()}', *w.after()])})"
            f" {connection(w, 'MediaStatus', 0)}"
        )
    return f'{w.fresh("md")}: media(mediaId: "{media_id}") {{ {" ".join(parts)} }}'


OBJECT_FIELDS: dict[str, Any] = {
    "legacyAd": _object("legacyAd", "LegacyAdKey"),
    "portals": _object("portals", "PortalStatus"),
    "classified": _object("classified", "Classified"),
    "legacy": _object("legacy", "LegacyAd"),
    "latestStatus": _object("latestStatus", "ClassifiedStatus"),
    "statuses": _statuses,
    "media": _media,
    "legacyPortals": _object("portals", "LegacyPortalStatus"),
    "publish": _object("publish", "LegacyPublishStatus"),
    "features": _object("features", "LegacyFeatureStatus"),
}
OBJECTS: dict[str, list[str]] = {
    "Listing": ["legacyAd", "portals", "classified", "legacy"],
    "Classified": ["latestStatus", "statuses", "media"],
    "LegacyAd": ["legacyPortals"],
    "LegacyPortalStatus": ["publish", "features"],
    **{name: [] for name in SCALARS if name not in ("Listing", "Classified", "LegacyAd", "LegacyPortalStatus")},
}  # fmt: skip
SCALAR_LISTS = {
    name: st.lists(st.sampled_from(fields), min_size=1, max_size=4)
    for name, fields in SCALARS.items()
}
CHILD_LISTS = {
    name: st.lists(st.sampled_from(children), max_size=3)
    for name, children in OBJECTS.items()
    if children
}
STATUS_FILTER = st.lists(st.sampled_from(CLASSIFIED_CODES), max_size=2)
PORTAL_FILTER = st.lists(st.sampled_from(PORTALS), max_size=2)


@st.composite
def operations(
    draw: Any, refs: list[str], nodes: list[str], media: list[str]
) -> tuple[str, dict[str, Any]]:
    w = Writer(draw)
    roots = []
    for _ in range(draw(ROOT_COUNT)):
        kind = draw(ROOT_KIND)
        body = selection(w, "Listing", 2, media)
        if kind == "listing":
            head = f"listing(ref: {draw(st.sampled_from(refs))})"
        elif kind == "listings":
            chosen = draw(st.lists(st.sampled_from(refs), min_size=1, max_size=3))
            head = f"listings(refs: [{', '.join(chosen)}])"
        else:
            head = f"node(id: $node{len(roots)})"
            body = f"{{ id ... on Listing {body} }}"
            w.variables[f"node{len(roots)}"] = ("ID!", draw(st.sampled_from(nodes)))
        if draw(BOOLEANS):
            roots.append(f"__typename{w.directives()}")
        roots.append(f"{w.fresh('r')}: {head}{w.directives()} {body}")
    declared = ", ".join(f"${name}: {type_}" for name, (type_, _) in w.variables.items())
    text = f"query Q{f'({declared})' if declared else ''} {{ {' '.join(roots)} }}\n" + "\n".join(
        w.fragments
    )
    return text, {name: value for name, (_, value) in w.variables.items()}


# --- the comparison ------------------------------------------------------------------


async def both_ways(
    world: World, text: str, variables: dict[str, Any]
) -> tuple[bytes, bytes, list[Any], list[Any]]:
    document = parse(text)
    assert not validate(world.schema, document), validate(world.schema, document)
    context = GatewayContext(
        request=None,  # type: ignore[arg-type]
        response=None,
        listings=world.runtime.service.request(Caller()),
        max_listings=200,
        events=world.runtime.events,
        webhooks=world.runtime.webhooks,
    )
    executor = GatewayExecutor.build(
        world.schema, document, context_value=context, raw_variable_values=variables
    )
    assert isinstance(executor, GatewayExecutor), executor
    executor.plans = Plans(compiled=True)  # type: ignore[misc]
    gathered = await executor.gather(context)
    assert gathered.plan is not None, "the generated operation must compile"
    compiled = executor.project(gathered)
    interpreted = await executor.interpret(context, gathered)
    assert get_operation_ast(document) is not None
    return (
        orjson.dumps(compiled.data),
        orjson.dumps(interpreted.data),
        [translate(e).formatted for e in compiled.errors or ()],
        [translate(e).formatted for e in interpreted.errors or ()],
    )


@settings(settings.get_profile("differential"))
@given(data=st.data())
def test_compiled_and_graphql_core_answer_identically(world: World, data: st.DataObject) -> None:
    text, variables = data.draw(operations(world.refs, world.nodes, world.media), label="operation")
    faults = data.draw(st.sets(st.sampled_from(sorted(FAULTS))), label="failing sources")
    state = world.running.sim.state
    state.clear_faults()
    for source in faults:
        upstream, endpoint = FAULTS[source]
        # 404 and 403 are answered at once (no retry, no backoff): NOT_FOUND, UPSTREAM_REJECTED.
        state.add_fault(
            upstream, "error", status=404 if source == "media" else 403, endpoint=endpoint
        )
    try:
        compiled, interpreted, compiled_errors, interpreted_errors = world.run(
            both_ways(world, text, variables)
        )
    finally:
        state.clear_faults()
    event(f"errors: {min(len(compiled_errors), 3)}")
    assert compiled == interpreted, (text, compiled, interpreted)
    assert compiled_errors == interpreted_errors, (text, compiled_errors, interpreted_errors)


def test_a_failed_root_field_nulls_the_data_in_the_same_way(world: World) -> None:
    """A non-null root field whose read failed: data null, the other fields' errors first."""
    state = world.running.sim.state
    state.add_fault("legacy", "error", status=403, endpoint="status_post")

    async def run() -> tuple[bytes, bytes, list[Any], list[Any]]:
        service = world.runtime.service
        original = service.request

        def failing_request(caller: Caller) -> Any:
            scope = original(caller)
            listings = scope.listings

            async def fail_on_unknown(refs: Any, *args: Any, **kwargs: Any) -> Any:
                if any(ref.classified_id == "no-such-classified" for ref in refs):
                    raise RuntimeError("a bug")
                return await listings(refs, *args, **kwargs)

            scope.listings = fail_on_unknown  # type: ignore[method-assign]
            return scope

        service.request = failing_request  # type: ignore[method-assign]
        try:
            return await both_ways(
                world,
                f"{{ a: listing(ref: {world.refs[0]}) {{ id legacy {{ adId }} }}"
                f" b: listing(ref: {world.refs[3]}) {{ id }}"
                f" c: listing(ref: {world.refs[2]}) {{ legacy {{ adId }} }} }}",
                {},
            )
        finally:
            service.request = original  # type: ignore[method-assign]

    try:
        compiled, interpreted, compiled_errors, interpreted_errors = world.run(run())
    finally:
        state.clear_faults()
    assert compiled == interpreted == b"null"
    assert compiled_errors == interpreted_errors
    assert [error["path"] for error in compiled_errors] == [["a", "legacy"], ["c", "legacy"], ["b"]]
