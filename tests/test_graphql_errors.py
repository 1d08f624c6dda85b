"""docs/operating.md "Error codes" over real HTTP: each code, partial results, and what never leaks.

Every test runs the real gateway (uvicorn on loopback) against the upstream simulator,
injects the upstream's misbehaviour with `add_fault` or the simulator's stored data, and
checks the answer a caller sees. Every error body is also checked by `assert_safe`: each
error has `extensions.code`, and no secret, token, traceback or upstream text gets out.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from graphql import get_introspection_query

from gateway.simulator import SIM_CLIENT_SECRET, SIM_LEGACY_API_KEY, RunningSimulator, Simulator
from gateway.simulator.data import Listing

from gateway_harness import RunningGateway, run_gateway

V3 = "classifieds-v3"
LEGACY = "legacy"
CODES = {
    "UPSTREAM_UNAVAILABLE",
    "UPSTREAM_REJECTED",
    "NOT_FOUND",
    "BAD_USER_INPUT",
    "UNAUTHENTICATED",
    "QUERY_TOO_COMPLEX",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "INTERNAL_SERVER_ERROR",
}
# Text the simulator puts in its error bodies (V3 `{"message"}`, legacy envelopes, OAuth).
UPSTREAM_TEXTS = (
    "Simulated upstream failure",
    "belongs to another customer",
    "not found for user",  # legacy: "Advertisement X not found for user Y"
    "Advertisement",
    "Too Many Requests",
    "Authentication failed",
    "invalid_client",
    "server_error",
    "Unauthorized",
    "Forbidden",
    '"message"',  # a JSON error body inside a message
    '"result"',  # ... or a legacy envelope
    "eyJhbGciOi",  # the start of every simulator token, and of its malformed token body
)


# --- helpers -------------------------------------------------------------------------------


def issued_tokens(sim: Simulator) -> set[str]:
    """Every bearer token the gateway presented to the simulator."""
    tokens = set()
    for request in sim.state.requests:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            tokens.add(token)
    return tokens


def assert_safe(body: dict[str, Any], sim: Simulator) -> list[dict[str, Any]]:
    """Every error is coded and leaks nothing; returns the errors."""
    errors: list[dict[str, Any]] = body.get("errors", [])
    text = json.dumps(errors)
    for error in errors:
        code = (error.get("extensions") or {}).get("code")
        assert code in CODES, error
        upstream = error["extensions"].get("upstream")
        assert upstream in (None, V3, LEGACY), error
    secrets = [SIM_LEGACY_API_KEY, SIM_CLIENT_SECRET, *issued_tokens(sim)]
    for secret in secrets:
        assert secret not in text, f"a secret leaked: {secret[:12]}…"
    for error in errors:
        for marker in ("Traceback", 'File "', *UPSTREAM_TEXTS):
            assert marker not in error["message"], f"{marker!r} leaked in {error}"
    return errors


def errors_by_path(errors: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    by_path = {tuple(error["path"]): error for error in errors}
    assert len(by_path) == len(errors), errors
    return by_path


def code_of(error: dict[str, Any]) -> tuple[str, str | None]:
    return error["extensions"]["code"], error["extensions"].get("upstream")


def total_calls(sim: Simulator) -> int:
    return sim.state.calls("v3") + sim.state.calls("legacy") + sim.state.calls("token")


def ref_of(listing: Listing) -> dict[str, Any]:
    return {
        "classifiedId": listing.classified_id,
        "legacy": {"userId": listing.user_id, "adId": listing.ad_id},
    }


def tenant_listings(sim: Simulator, tenant: str = "agency-1") -> list[Listing]:
    return [
        listing
        for listing in sim.data.listings
        if sim.data.tenant_of(listing.classified_id) == tenant
    ]


async def post(
    gw: RunningGateway, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await gw.client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert_safe(body, gw.sim)
    return body


@pytest.fixture
async def fast_gateway(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    """The gateway with a short upstream deadline, so timeouts and retries end quickly."""
    async with run_gateway(simulator, upstream_timeout_s=0.5) as running:
        yield running


@pytest.fixture
async def small_gateway(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    """The gateway with GATEWAY_MAX_LISTINGS=3; legacy read anew by every request (the good
    form of each case must reach the upstreams)."""
    async with run_gateway(simulator, max_listings=3, legacy_cache_ttl_s=0) as running:
        yield running


# --- UPSTREAM_UNAVAILABLE and partial results ----------------------------------------------

LISTING_QUERY = """
query($ref: ListingRef!) {
  listing(ref: $ref) {
    classifiedId
    legacyAd { userId adId }
    state
    portals { portal provider state }
    classified { id latestStatus { status date } }
    legacy { userId adId portals { portal publish { active online } } }
  }
}
"""


@pytest.mark.parametrize("kind", ["error", "timeout"])
@pytest.mark.parametrize("failing", ["v3", "legacy"])
async def test_one_source_unavailable_fails_only_its_fields(
    fast_gateway: RunningGateway, failing: str, kind: str
) -> None:
    gw = fast_gateway
    listing = tenant_listings(gw.sim)[0]
    if kind == "error":
        gw.sim.state.add_fault(failing, "error", status=500)  # type: ignore[arg-type]
    else:
        # Hangs far longer than the gateway's 0.5 s deadline.
        gw.sim.state.add_fault(failing, "timeout", delay_s=20)  # type: ignore[arg-type]

    # A 20 s hang against a 0.5 s deadline: the answer comes because the deadline holds.
    body = await post(gw, LISTING_QUERY, {"ref": ref_of(listing)})

    data = body["data"]["listing"]
    errors = errors_by_path(body["errors"])
    upstream = V3 if failing == "v3" else LEGACY
    failed = {("listing", "state"), ("listing", "portals")}
    failed.add(
        ("listing", "classified", "latestStatus") if failing == "v3" else ("listing", "legacy")
    )
    assert set(errors) == failed
    for error in errors.values():
        assert code_of(error) == ("UPSTREAM_UNAVAILABLE", upstream)
    # The unified view needs both sources, so it fails with either.
    assert data["state"] is None and data["portals"] is None
    # The listing and its keys still resolve.
    assert data["classifiedId"] == listing.classified_id
    assert data["legacyAd"] == {"userId": listing.user_id, "adId": listing.ad_id}
    assert data["classified"]["id"] == listing.classified_id  # parents are never nulled
    if failing == "v3":
        assert data["classified"]["latestStatus"] is None
        assert data["legacy"]["adId"] == listing.ad_id
        assert data["legacy"]["portals"], "the legacy view still answers"
    else:
        assert data["legacy"] is None
        record = gw.sim.state.classified(listing.classified_id)
        assert record is not None
        newest = record.latest()
        assert newest is not None
        assert data["classified"]["latestStatus"]["status"] == newest.item["status"]


# --- UPSTREAM_REJECTED -------------------------------------------------------------------------


async def test_classified_of_another_tenant_is_rejected(gateway: RunningGateway) -> None:
    foreign = tenant_listings(gateway.sim, "agency-2")[0]
    body = await post(
        gateway,
        """query($id: ID!) { listing(ref: {classifiedId: $id}) {
             classifiedId state
             classified { id latestStatus { status } statuses(first: 5) { nodes { id } } }
           } }""",
        {"id": foreign.classified_id},
    )
    errors = errors_by_path(body["errors"])
    assert set(errors) == {
        ("listing", "state"),
        ("listing", "classified", "latestStatus"),
        ("listing", "classified", "statuses"),
    }
    for error in errors.values():
        assert code_of(error) == ("UPSTREAM_REJECTED", V3)
    data = body["data"]["listing"]
    assert data["classifiedId"] == foreign.classified_id
    assert data["classified"] == {
        "id": foreign.classified_id,
        "latestStatus": None,
        "statuses": None,
    }
    # The simulator really answered 403 (not some other failure).
    assert gateway.sim.state.calls("v3", "classified_statuses") >= 1


# --- NOT_FOUND -------------------------------------------------------------------------------


async def test_unknown_classified_fails_only_that_listing(gateway: RunningGateway) -> None:
    known = tenant_listings(gateway.sim)[1]
    body = await post(
        gateway,
        """query($refs: [ListingRef!]!) { listings(refs: $refs) {
             classifiedId state classified { latestStatus { status } }
           } }""",
        {"refs": [{"classifiedId": "no-such-classified"}, {"classifiedId": known.classified_id}]},
    )
    errors = errors_by_path(body["errors"])
    assert set(errors) == {
        ("listings", 0, "state"),
        ("listings", 0, "classified", "latestStatus"),
    }
    for error in errors.values():
        assert code_of(error) == ("NOT_FOUND", V3)
    unknown, other = body["data"]["listings"]
    assert unknown == {
        "classifiedId": "no-such-classified",
        "state": None,
        "classified": {"latestStatus": None},
    }
    assert other["classifiedId"] == known.classified_id
    assert other["state"] is not None
    assert other["classified"]["latestStatus"]["status"]


async def test_unknown_legacy_ad_fails_only_that_listing(gateway: RunningGateway) -> None:
    known = tenant_listings(gateway.sim)[0]
    user_ads = gateway.sim.data.legacy_users[known.user_id]
    missing_ad = max(user_ads) + 1_000
    missing_user = max(gateway.sim.data.legacy_users) + 1_000
    body = await post(
        gateway,
        """query($refs: [ListingRef!]!) { listings(refs: $refs) {
             legacyAd { adId } state portals { portal } legacy { adId portals { portal } }
           } }""",
        {
            "refs": [
                {"legacy": {"userId": known.user_id, "adId": missing_ad}},
                {"legacy": {"userId": known.user_id, "adId": known.ad_id}},
                {"legacy": {"userId": missing_user, "adId": 1}},
            ]
        },
    )
    errors = errors_by_path(body["errors"])
    assert set(errors) == {
        (*prefix, field)
        for prefix in (("listings", 0), ("listings", 2))
        for field in ("state", "portals", "legacy")
    }
    for error in errors.values():
        assert code_of(error) == ("NOT_FOUND", LEGACY)
    missing, found, no_user = body["data"]["listings"]
    assert missing == {
        "legacyAd": {"adId": missing_ad},
        "state": None,
        "portals": None,
        "legacy": None,
    }
    assert no_user["legacy"] is None
    assert found["legacyAd"] == {"adId": known.ad_id}
    assert found["legacy"]["adId"] == known.ad_id
    assert found["state"] is not None
    assert {p["portal"] for p in found["portals"]} == {
        p["portal"] for p in found["legacy"]["portals"]
    }
    # Both ads of the known user went out in one batch; the unknown user in its own.
    assert gateway.sim.state.calls("legacy") == 2


# --- BAD_USER_INPUT: refused before any upstream call ----------------------------------------

LISTING_STATE = "query($ref: ListingRef!) { listing(ref: $ref) { state legacy { adId } } }"
REFRESH = "mutation($ref: ListingRef!) { refreshListing(ref: $ref) { state } }"
LISTINGS = "query($refs: [ListingRef!]!) { listings(refs: $refs) { state } }"
STATUSES = """query($ref: ListingRef!, $first: Int) { listing(ref: $ref) {
  state classified { statuses(first: $first) { nodes { id } } } } }"""
STATUSES_AFTER = """query($ref: ListingRef!, $after: String) { listing(ref: $ref) {
  state classified { statuses(first: 2, after: $after) { nodes { id } } } } }"""
MEDIA = """query($ref: ListingRef!, $media: ID!, $first: Int) { listing(ref: $ref) {
  state classified { media(mediaId: $media) { statuses(first: $first) { nodes { id } } } } } }"""
NODE = "query($id: ID!) { node(id: $id) { id ... on Listing { state legacy { adId } } } }"
IN_FRAGMENT = """query($ref: ListingRef!) { ...Root }
fragment Root on Query { listing(ref: $ref) { ...L } }
fragment L on Listing { state legacy { adId } }"""


def graphql_literal(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {graphql_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(graphql_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    assert isinstance(value, int) and not isinstance(value, bool)
    return str(value)


def inline(query: str, variables: dict[str, Any]) -> str:
    """The same operation with its variables written as literals in place."""
    # Variable definitions hold no parentheses: drop the first "(...)" after the keyword.
    head, _, rest = query.partition("(")
    body = rest.partition(")")[2]
    for name in sorted(variables, key=len, reverse=True):
        body = body.replace(f"${name}", graphql_literal(variables[name]))
    assert "$" not in body, body
    return head + body


async def bad_input_case(
    gw: RunningGateway, case: str
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(query, bad variables, good variables) for `case`; good ones cost upstream calls."""
    listing = tenant_listings(gw.sim)[0]  # a multi-page history, with one media
    ref = ref_of(listing)
    if case == "empty ref":
        return LISTING_STATE, {"ref": {}}, {"ref": ref}
    if case == "empty ref in refreshListing":
        return REFRESH, {"ref": {}}, {"ref": ref}
    if case == "empty ref among refs":
        return LISTINGS, {"refs": [ref, {}]}, {"refs": [ref]}
    if case == "more refs than GATEWAY_MAX_LISTINGS":
        return LISTINGS, {"refs": [ref] * 4}, {"refs": [ref] * 3}
    if case == "first: 0":
        return STATUSES, {"ref": ref, "first": 0}, {"ref": ref, "first": 1}
    if case == "first: 101":
        return STATUSES, {"ref": ref, "first": 101}, {"ref": ref, "first": 100}
    if case == "media first: 0":
        media = {"ref": ref, "media": gw.sim.data.media_of(listing.classified_id)[0]}
        return MEDIA, {**media, "first": 0}, {**media, "first": 5}
    if case in ("a cursor the gateway never gave", "empty after"):
        page = await post(
            gw,
            """query($id: ID!) { listing(ref: {classifiedId: $id}) { classified {
                 statuses(first: 2) { edges { cursor } pageInfo { endCursor } } } } }""",
            {"id": listing.classified_id},
        )
        statuses = page["data"]["listing"]["classified"]["statuses"]
        end_cursor = statuses["pageInfo"]["endCursor"]
        assert end_cursor, "the classified must have a second page"
        # A keyset position whose date does not parse: "ks:not-a-date|id".
        forged = "a3M6bm90LWEtZGF0ZXxpZA"
        bad_after = forged if case == "a cursor the gateway never gave" else ""
        return STATUSES_AFTER, {"ref": ref, "after": bad_after}, {"ref": ref, "after": end_cursor}
    if case in ("bad node id", "node id of nothing"):
        found = await post(gw, LISTING_STATE.replace("state legacy { adId }", "id"), {"ref": ref})
        bad_id = "not-a-listing-id" if case == "bad node id" else "TGlzdGluZzp8"  # "Listing:|"
        return NODE, {"id": bad_id}, {"id": found["data"]["listing"]["id"]}
    if case == "inside a fragment":
        return IN_FRAGMENT, {"ref": {}}, {"ref": ref}
    raise AssertionError(case)


BAD_INPUT_CASES = [
    "empty ref",
    "empty ref in refreshListing",
    "empty ref among refs",
    "more refs than GATEWAY_MAX_LISTINGS",
    "first: 0",
    "first: 101",
    "media first: 0",
    "a cursor the gateway never gave",
    "empty after",
    "bad node id",
    "node id of nothing",
    "inside a fragment",
]


async def check_bad_input(gw: RunningGateway, case: str) -> None:
    query, bad, good = await bad_input_case(gw, case)
    for form, text, variables in (
        ("variables", query, bad),
        ("literals", inline(query, bad), {}),
    ):
        gw.sim.state.reset_counters()
        body = await post(gw, text, variables)
        assert "data" not in body, (form, body)
        assert [code_of(e) for e in body["errors"]] == [("BAD_USER_INPUT", None)], (form, body)
        assert "path" not in body["errors"][0], f"{form}: refused by a resolver, not before"
        assert total_calls(gw.sim) == 0, f"{form}: {gw.sim.state.counters()}"

    # The same operation with good arguments does reach the upstreams.
    gw.sim.state.reset_counters()
    body = await post(gw, query, good)
    assert body.get("data") and "errors" not in body, body
    assert total_calls(gw.sim) > 0


async def test_bad_user_input_is_refused_before_any_upstream_call(
    small_gateway: RunningGateway,
) -> None:
    """Each case as literals and as variables. One gateway serves every case (refusals touch
    no upstream, so the cases cannot disturb each other); all failing cases are reported."""
    failures: list[str] = []
    for case in BAD_INPUT_CASES:
        try:
            await check_bad_input(small_gateway, case)
        except AssertionError as exc:
            failures.append(f"{case}: {exc}")
    assert not failures, "\n".join(failures)


async def test_bad_variable_value_is_bad_user_input(gateway: RunningGateway) -> None:
    """A variable that is not of its declared type is the caller's fault, not the gateway's."""
    body = await post(gateway, LISTING_STATE, {"ref": {"classifiedId": 3, "legacy": "x"}})
    assert "data" not in body
    [error] = body["errors"]
    assert code_of(error) == ("BAD_USER_INPUT", None)
    assert "$ref" in error["message"]
    assert total_calls(gateway.sim) == 0


# --- QUERY_TOO_COMPLEX -----------------------------------------------------------------------

# The schema has no cycle back to a listing, so the deepest legitimate selection is 6 levels
# (strawberry counts the root field as 0 and a leaf at its nesting level), far below the
# default limit of 20: a depth refusal is shown with a lowered GATEWAY_MAX_QUERY_DEPTH.
DEPTH_5 = """query($id: ID!, $media: ID!) { node(id: $id) { ... on Listing { state
  classified { media(mediaId: $media) { statuses { pageInfo { hasNextPage } } } } } } }"""
DEPTH_6 = """query($id: ID!, $media: ID!) { node(id: $id) { ... on Listing { state
  classified { media(mediaId: $media) { statuses { edges { node { id } } } } } } } }"""
DEPTH_6_IN_FRAGMENTS = """query($id: ID!, $media: ID!) { node(id: $id) { ...L } }
fragment L on Listing { state classified { ...C } }
fragment C on Classified { media(mediaId: $media) { ...M } }
fragment M on Media { statuses { ... on MediaStatusConnection { edges { ...E } } } }
fragment E on MediaStatusEdge { node { ... { id } } }"""


async def listing_node(gw: RunningGateway) -> dict[str, Any]:
    listing = tenant_listings(gw.sim)[0]
    found = await post(
        gw, "query($ref: ListingRef!) { listing(ref: $ref) { id } }", {"ref": ref_of(listing)}
    )
    return {
        "id": found["data"]["listing"]["id"],
        "media": gw.sim.data.media_of(listing.classified_id)[0],
    }


async def test_depth_limit_refuses_deeper_selections(simulator: RunningSimulator) -> None:
    async with run_gateway(simulator, max_query_depth=5) as gw:
        variables = await listing_node(gw)
        for query in (DEPTH_6, DEPTH_6_IN_FRAGMENTS):
            gw.sim.state.reset_counters()
            body = await post(gw, query, variables)
            assert "data" not in body
            assert {code_of(e) for e in body["errors"]} == {("QUERY_TOO_COMPLEX", None)}
            assert total_calls(gw.sim) == 0
        # Exactly at the limit passes.
        body = await post(gw, DEPTH_5, variables)
        assert "errors" not in body, body
        assert body["data"]["node"]["classified"]["media"]["statuses"]["pageInfo"]


async def test_default_depth_limit_passes_deepest_query_and_graphiql_introspection(
    gateway: RunningGateway,
) -> None:
    variables = await listing_node(gateway)
    body = await post(gateway, DEPTH_6_IN_FRAGMENTS, variables)
    assert "errors" not in body, body
    assert body["data"]["node"]["classified"]["media"]["statuses"]["edges"]

    # What GraphiQL sends (graphql-js getIntrospectionQuery with every option it turns on).
    introspection = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    )
    for accept in ("application/json", "application/graphql-response+json"):
        response = await gateway.client.post(
            "/graphql",
            json={"query": introspection, "operationName": "IntrospectionQuery"},
            headers={"accept": accept},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        types = {t["name"] for t in body["data"]["__schema"]["types"]}
        assert {"Listing", "ListingRef", "PublicationState", "Node"} <= types


def aliases(count: int, field: str = "__typename", prefix: str = "a") -> str:
    return " ".join(f"{prefix}{i}: {field}" for i in range(count))


async def test_alias_limit(gateway: RunningGateway) -> None:
    body = await post(gateway, "{ " + aliases(200) + " }")
    assert body["data"] == {f"a{i}": "Query" for i in range(200)}

    ref = f'{{classifiedId: "{tenant_listings(gateway.sim)[0].classified_id}"}}'
    gateway.sim.state.reset_counters()
    too_many = [
        "{ " + aliases(201) + " }",
        # Split between the operation and nested fragments (strawberry < 0.315.7 missed these).
        "{ " + aliases(150) + " ...F } fragment F on Query { ...G b: __typename } "
        "fragment G on Query { " + aliases(50, prefix="g") + " }",
        # Aliases of upstream-backed fields: refused before any of them is read.
        "{ " + aliases(201, f"listing(ref: {ref}) {{ state }}") + " }",
    ]
    for query in too_many:
        body = await post(gateway, query)
        assert "data" not in body, query[:80]
        assert [code_of(e) for e in body["errors"]] == [("QUERY_TOO_COMPLEX", None)]
    assert total_calls(gateway.sim) == 0


async def test_token_limit_refuses_a_document_before_it_is_parsed_whole(
    gateway: RunningGateway,
) -> None:
    # The largest real query, 200 literal refs of both kinds, is far from the limit.
    refs = ", ".join(
        f'{{classifiedId: "c-{i}", legacy: {{userId: {i + 1}, adId: {i + 1}}}}}' for i in range(200)
    )
    body = await post(gateway, f"{{ listings(refs: [{refs}]) {{ id }} }}")
    assert len(body["data"]["listings"]) == 200
    # No aliases, so the alias limit does not see it: the parser stops at the token count.
    flood = "{ " + " ".join(["__typename"] * 21_000) + " }"
    refused = await post(gateway, flood)
    assert "data" not in refused
    assert [code_of(e) for e in refused["errors"]] == [("QUERY_TOO_COMPLEX", None)]


async def test_deep_introspection_counts_towards_the_depth_limit(gateway: RunningGateway) -> None:
    deep = "{ __schema { types { " + "ofType { " * 40 + "name" + " }" * 40 + " } } }"
    body = await post(gateway, deep)
    assert "data" not in body
    assert {code_of(e) for e in body["errors"]} == {("QUERY_TOO_COMPLEX", None)}
    # At the limit, introspection fields count like any others and still pass.
    at_limit = "{ __schema { types { " + "ofType { " * 18 + "name" + " }" * 18 + " } } }"
    assert "errors" not in await post(gateway, at_limit)


@pytest.mark.parametrize(
    "text",
    ["exceeds maximum operation depth", "aliases found. Allowed", "Document contains more than"],
)
async def test_a_limit_is_recognised_by_its_rule_not_by_the_words_of_a_message(
    gateway: RunningGateway, text: str
) -> None:
    # graphql-core quotes the literal in its message: the words are there, no limit is hit.
    body = await post(gateway, f'{{ listing(ref: "{text}") {{ id }} }}')
    [error] = body["errors"]
    assert text in error["message"]
    assert code_of(error) == ("GRAPHQL_VALIDATION_FAILED", None)


async def test_a_long_malformed_document_is_a_parse_failure(gateway: RunningGateway) -> None:
    body = await post(gateway, "{ listing(ref: ) " + "__typename " * 30_000 + "}")
    assert [code_of(e) for e in body["errors"]] == [("GRAPHQL_PARSE_FAILED", None)]


@pytest.mark.parametrize("selection", ["state classified", "classified"])
async def test_unknown_as_a_status_filter_is_refused_before_any_read(
    gateway: RunningGateway, selection: str
) -> None:
    """Whether the page would be cut from a history or asked of V3: the same answer."""
    classified_id = tenant_listings(gateway.sim)[0].classified_id
    for status in ("[UNKNOWN]", "[CREATED, UNKNOWN]"):
        body = await post(
            gateway,
            f"query($id: ID!) {{ listing(ref: {{classifiedId: $id}}) {{ {selection} "
            f"{{ statuses(status: {status}) {{ nodes {{ id }} }} }} }} }}",
            {"id": classified_id},
        )
        assert "data" not in body
        assert [code_of(e) for e in body["errors"]] == [("BAD_USER_INPUT", None)]
    by_variable = await post(
        gateway,
        "query($id: ID!, $s: [ClassifiedStatusCode!]) { listing(ref: {classifiedId: $id}) "
        "{ classified { statuses(status: $s) { nodes { id } } } } }",
        {"id": classified_id, "s": ["UNKNOWN"]},
    )
    assert [code_of(e) for e in by_variable["errors"]] == [("BAD_USER_INPUT", None)]
    assert total_calls(gateway.sim) == 0


# --- nothing leaks, whatever the upstream does -------------------------------------------------

UNAVAILABLE, REJECTED = "UPSTREAM_UNAVAILABLE", "UPSTREAM_REJECTED"


@pytest.mark.parametrize(
    ("upstream", "kind", "status", "code"),
    [
        ("v3", "error", 503, UNAVAILABLE),
        ("v3", "error", 400, REJECTED),
        ("v3", "error", 401, REJECTED),  # refreshed once, then given up
        ("v3", "malformed", 200, UNAVAILABLE),
        ("v3", "reset", 0, UNAVAILABLE),
        ("v3", "rate_limit", 429, UNAVAILABLE),  # transient (docs/operating.md)
        ("token", "error", 500, UNAVAILABLE),
        ("token", "error", 401, REJECTED),
        ("token", "malformed", 200, UNAVAILABLE),
        ("legacy", "error", 502, UNAVAILABLE),
        ("legacy", "error", 401, REJECTED),
        ("legacy", "malformed", 200, UNAVAILABLE),
    ],
)
async def test_upstream_failures_are_coded_and_leak_nothing(
    gateway: RunningGateway, upstream: str, kind: str, status: int, code: str
) -> None:
    gw = gateway
    healthy, listing = tenant_listings(gw.sim)[2:4]
    # A first, healthy request makes the gateway fetch (and hold) a token, so the error
    # check below also looks for that token; the token fault then needs a fresh tenant.
    await post(gw, LISTING_QUERY, {"ref": ref_of(healthy)})
    assert issued_tokens(gw.sim)
    gw.sim.state.add_fault(
        upstream,  # type: ignore[arg-type]
        kind,  # type: ignore[arg-type]
        status=status if kind == "error" else 500,
        retry_after=0 if kind == "rate_limit" else None,
    )
    headers = {"x-intermediary-id": "agency-2"} if upstream == "token" else None
    if upstream == "token":
        listing = tenant_listings(gw.sim, "agency-2")[0]
    response = await gw.client.post(
        "/graphql",
        json={"query": LISTING_QUERY, "variables": {"ref": ref_of(listing)}},
        headers=headers,
    )
    assert response.status_code == 200
    body = response.json()
    errors = assert_safe(body, gw.sim)
    source = LEGACY if upstream == "legacy" else V3
    assert errors, body
    assert {code_of(e) for e in errors} == {(code, source)}
    failed_field = "legacy" if source == LEGACY else "classified"
    other_field = "classified" if source == LEGACY else "legacy"
    assert body["data"]["listing"][other_field] is not None
    if source == LEGACY:
        assert body["data"]["listing"]["legacy"] is None
    else:
        assert body["data"]["listing"][failed_field] == {
            "id": listing.classified_id,
            "latestStatus": None,
        }


class BrokenV3:
    async def classified_statuses(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"boom {SIM_CLIENT_SECRET} {SIM_LEGACY_API_KEY}")


async def test_unexpected_failure_is_opaque(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (not a GatewayError) reaches the caller as "Unexpected error", nothing more."""
    listing = tenant_listings(gateway.sim)[0]
    monkeypatch.setattr(gateway.app.state.runtime.service, "v3", BrokenV3())
    body = await post(
        gateway,
        "query($id: ID!) { listing(ref: {classifiedId: $id}) { classified { latestStatus { status } } } }",
        {"id": listing.classified_id},
    )
    [error] = body["errors"]
    assert error["message"] == "Unexpected error"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    assert body["data"]["listing"]["classified"] == {"latestStatus": None}
    assert "boom" not in json.dumps(body)


async def test_retries_follow_the_settings(simulator: RunningSimulator) -> None:
    listing = tenant_listings(simulator.sim)[0]
    async with run_gateway(
        simulator, upstream_retries=0, cache_ttl_s=0, legacy_cache_ttl_s=0
    ) as gw:
        await post(gw, LISTING_QUERY, {"ref": ref_of(listing)})  # fetches the token
        gw.sim.state.reset_counters()
        gw.sim.state.add_fault("v3", "error", status=503)
        gw.sim.state.add_fault("legacy", "error", status=503)
        body = await post(gw, LISTING_QUERY, {"ref": ref_of(listing)})
    assert {code_of(e) for e in body["errors"]} >= {("UPSTREAM_UNAVAILABLE", V3)}
    assert gw.calls("v3", "classified_statuses") == 1 and gw.calls("legacy") == 1
