"""V3 credentials against the simulator: token request, reuse, per-agency tokens,
single-flight, expiry, 401 renewal, failures, and secret hygiene; static and passthrough."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import Settings
from gateway.domain.errors import (
    InvalidInput,
    Unauthenticated,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.domain.models import Caller
from gateway.runtime import v3_auth_options
from gateway.simulator import (
    SIM_AUDIENCE,
    SIM_CLIENT_ID,
    SIM_CLIENT_SECRET,
    SIM_LEGACY_API_KEY,
    RunningSimulator,
)
from gateway.upstreams import (
    ClassifiedsV3Client,
    Deadline,
    OAuthCredentials,
    PassthroughCredentials,
    RetryPolicy,
    StaticCredentials,
    build_credentials,
    create_session,
)
from gateway.upstreams.wire import Pool

from gateway_harness import NO_PAUSE

USER_AGENT = "TestGateway/1.0.0 aiohttp/3 linux/6"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[Pool]:
    async with create_session(timeout_s=10) as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


def oauth(
    simulator: RunningSimulator,
    session: Pool,
    clock: Clock | None = None,
    **overrides: Any,
) -> OAuthCredentials:
    values: dict[str, Any] = {
        "token_url": simulator.token_url,
        "client_id": SIM_CLIENT_ID,
        "client_secret": SIM_CLIENT_SECRET,
        "audience": SIM_AUDIENCE,
        "default_intermediary_id": "agency-1",
        "user_agent": USER_AGENT,
        "timeout_s": 5.0,  # generous: on a busy machine a token fetch can take a while
        "retry_policy": NO_PAUSE,
    }
    if clock is not None:
        values["clock"] = clock
    values.update(overrides)
    return OAuthCredentials(session, **values)


def client(simulator: RunningSimulator, session: Pool, credentials: Any) -> ClassifiedsV3Client:
    return ClassifiedsV3Client(session, simulator.v3_url, credentials, USER_AGENT, 5.0)


def classified_of(simulator: RunningSimulator, agency: str) -> str:
    return simulator.sim.data.tenants[agency][1]


def bearer_of(simulator: RunningSimulator, endpoint: str = "classified_statuses") -> list[str]:
    return [
        r.headers["Authorization"] for r in simulator.sim.state.requests if r.endpoint == endpoint
    ]


async def test_token_request_is_json_with_all_five_fields(
    simulator: RunningSimulator, session: Pool
) -> None:
    credentials = oauth(simulator, session)
    header = await credentials.authorization(Caller())
    assert header.startswith("Bearer ") and len(header) > 20
    (token_request,) = [r for r in simulator.sim.state.requests if r.upstream == "token"]
    assert token_request.method == "POST"
    assert token_request.headers["Content-Type"].startswith("application/json")
    assert token_request.headers["User-Agent"] == USER_AGENT
    body = token_request.body
    assert set(body) == {"client_id", "client_secret", "grant_type", "audience", "intermediary_id"}
    assert body["client_id"] == SIM_CLIENT_ID
    assert body["client_secret"]  # the simulator redacts it in its log; it accepted it
    assert body["grant_type"] == "client_credentials"
    assert body["audience"] == SIM_AUDIENCE
    assert body["intermediary_id"] == "agency-1"


async def test_token_is_reused_across_calls(simulator: RunningSimulator, session: Pool) -> None:
    v3 = client(simulator, session, oauth(simulator, session))
    for _ in range(5):
        await v3.classified_statuses(Caller(), classified_of(simulator, "agency-1"))
    state = simulator.sim.state
    assert state.calls("token") == 1
    assert state.calls("v3") == 5
    assert len(set(bearer_of(simulator))) == 1


async def test_each_agency_gets_its_own_token(simulator: RunningSimulator, session: Pool) -> None:
    credentials = oauth(simulator, session)
    v3 = client(simulator, session, credentials)
    for _ in range(2):
        await v3.classified_statuses(Caller(), classified_of(simulator, "agency-1"))
        await v3.classified_statuses(
            Caller(intermediary_id="agency-2"), classified_of(simulator, "agency-2")
        )
    state = simulator.sim.state
    assert state.calls("token") == 2
    asked = [r.body["intermediary_id"] for r in state.requests if r.upstream == "token"]
    assert sorted(asked) == ["agency-1", "agency-2"]
    assert len(set(bearer_of(simulator))) == 2
    assert credentials.tenant(Caller()) == "agency:agency-1"
    assert credentials.tenant(Caller(intermediary_id="agency-2")) == "agency:agency-2"
    assert credentials.tenant(Caller(intermediary_id="  ")) == "agency:agency-1"


async def test_another_agency_cannot_read_the_classified(
    simulator: RunningSimulator, session: Pool
) -> None:
    v3 = client(simulator, session, oauth(simulator, session))
    with pytest.raises(UpstreamRejected) as caught:
        await v3.classified_statuses(
            Caller(intermediary_id="agency-2"), classified_of(simulator, "agency-1")
        )
    assert caught.value.status == 403


async def test_concurrent_callers_share_one_token_fetch(
    simulator: RunningSimulator, session: Pool
) -> None:
    simulator.sim.state.set_latency("token", 100)  # keep the fetch in flight while all arrive
    v3 = client(simulator, session, oauth(simulator, session))
    pages = await asyncio.gather(
        *(v3.classified_statuses(Caller(), classified_of(simulator, "agency-1")) for _ in range(20))
    )
    assert len(pages) == 20
    assert simulator.sim.state.calls("token") == 1
    assert simulator.sim.state.calls("v3") == 20
    assert len(set(bearer_of(simulator))) == 1


async def test_single_flight_is_per_agency(simulator: RunningSimulator, session: Pool) -> None:
    simulator.sim.state.set_latency("token", 50)
    credentials = oauth(simulator, session)
    callers = [Caller(intermediary_id=f"agency-{1 + i % 3}") for i in range(30)]
    headers = await asyncio.gather(*(credentials.authorization(c) for c in callers))
    assert simulator.sim.state.calls("token") == 3
    assert len(set(headers)) == 3


async def test_a_failed_fetch_is_shared_but_not_cached(
    simulator: RunningSimulator, session: Pool
) -> None:
    state = simulator.sim.state
    state.add_fault("token", "error", status=503)
    credentials = oauth(simulator, session)
    results = await asyncio.gather(
        *(credentials.authorization(Caller()) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, UpstreamUnavailable) for r in results)
    assert all(
        r.upstream == "classifieds-v3" for r in results if isinstance(r, UpstreamUnavailable)
    )
    assert state.calls("token") == 3, "one shared fetch: one attempt and two retries"
    state.clear_faults()
    assert (await credentials.authorization(Caller())).startswith("Bearer ")
    assert state.calls("token") == 4


async def test_token_is_refreshed_shortly_before_it_expires(
    simulator: RunningSimulator, session: Pool, clock: Clock
) -> None:
    simulator.sim.state.token_ttl_s = 600
    credentials = oauth(simulator, session, clock)
    first = await credentials.authorization(Caller())
    clock.now += 600 - 61  # still outside the 60 s margin
    assert await credentials.authorization(Caller()) == first
    assert simulator.sim.state.calls("token") == 1
    clock.now += 2  # inside the margin: fetch anew
    second = await credentials.authorization(Caller())
    assert second != first
    assert simulator.sim.state.calls("token") == 2


async def test_short_lived_tokens_still_get_reused(
    simulator: RunningSimulator, session: Pool, clock: Clock
) -> None:
    simulator.sim.state.token_ttl_s = 10  # shorter than the margin
    credentials = oauth(simulator, session, clock)
    first = await credentials.authorization(Caller())
    clock.now += 4
    assert await credentials.authorization(Caller()) == first
    clock.now += 2
    assert await credentials.authorization(Caller()) != first


async def test_401_refreshes_once_and_retries_once(
    simulator: RunningSimulator, session: Pool
) -> None:
    state = simulator.sim.state
    v3 = client(simulator, session, oauth(simulator, session))
    classified = classified_of(simulator, "agency-1")
    await v3.classified_statuses(Caller(), classified)
    state.revoke_tokens()
    state.reset_counters()
    page = await v3.classified_statuses(Caller(), classified)
    assert page.items
    assert state.calls("token") == 1
    assert state.calls("v3") == 2
    first, second = bearer_of(simulator)
    assert first != second


async def test_persistent_401_fails_after_one_refresh(
    simulator: RunningSimulator, session: Pool
) -> None:
    state = simulator.sim.state
    state.add_fault("v3", "error", status=401)
    v3 = client(simulator, session, oauth(simulator, session))
    with pytest.raises(UpstreamRejected) as caught:
        await v3.classified_statuses(Caller(), classified_of(simulator, "agency-1"))
    assert caught.value.status == 401
    assert state.calls("token") == 2, "the first token and exactly one refresh"
    assert state.calls("v3") == 2, "the first call and exactly one retry"


async def test_concurrent_401s_share_one_refresh(
    simulator: RunningSimulator, session: Pool
) -> None:
    state = simulator.sim.state
    v3 = client(simulator, session, oauth(simulator, session))
    classified = classified_of(simulator, "agency-1")
    await v3.classified_statuses(Caller(), classified)
    state.revoke_tokens()
    state.reset_counters()
    state.set_latency("token", 50)
    pages = await asyncio.gather(*(v3.classified_statuses(Caller(), classified) for _ in range(20)))
    assert all(page.items for page in pages)
    assert state.calls("token") == 1
    assert state.calls("v3") == 40


async def test_renew_reuses_a_token_someone_else_refreshed(
    simulator: RunningSimulator, session: Pool
) -> None:
    credentials = oauth(simulator, session)
    old = await credentials.authorization(Caller())
    new = await credentials.renew(Caller(), old)
    assert new is not None and new != old
    # A request that still holds the old token learns of the refresh without a new fetch.
    assert await credentials.renew(Caller(), old) == new
    assert simulator.sim.state.calls("token") == 2


async def test_a_renewal_ends_with_the_operation_that_asked_for_it(
    simulator: RunningSimulator, session: Pool
) -> None:
    """401 -> renew -> retry fits in one deadline: a slow token endpoint cannot stretch it."""
    state = simulator.sim.state
    credentials = oauth(simulator, session)
    # No retries: the one attempt has the operation's whole second, not half of it, so a
    # loaded machine cannot make the 401 come too late (it did once, with half).
    v3 = ClassifiedsV3Client(
        session, simulator.v3_url, credentials, USER_AGENT, 1.0,
        retry_policy=RetryPolicy(max_retries=0),
    )  # fmt: skip
    classified = classified_of(simulator, "agency-1")
    await v3.classified_statuses(Caller(), classified)
    state.revoke_tokens()
    state.reset_counters()
    # The 401 comes after 0.2 s of the operation's 1 s; the token no sooner than 1.1 s. A
    # renewal given time of its own would get it, and the retry would then fail on V3's
    # side or succeed.
    state.set_latency("v3", 200)
    state.add_fault("token", "timeout", delay_s=0.9, count=1)
    with pytest.raises(UpstreamUnavailable) as caught:
        await v3.classified_statuses(Caller(), classified)
    assert "token" in str(caught.value), "the renewal, not a later step, ran out of time"
    assert state.calls("v3") == 1
    assert state.calls("token") == 1
    state.set_latency("v3", 0)
    # The shared fetch went on for later callers: the next call joins it, no new fetch.
    assert (await v3.classified_statuses(Caller(), classified)).items
    assert state.calls("token") == 1


async def test_a_caller_waits_for_a_shared_token_only_until_its_own_deadline(
    simulator: RunningSimulator, session: Pool
) -> None:
    state = simulator.sim.state
    state.add_fault("token", "timeout", delay_s=0.4, count=1)
    credentials = oauth(simulator, session)
    patient = asyncio.ensure_future(credentials.authorization(Caller()))
    with pytest.raises(UpstreamUnavailable, match="token"):
        await credentials.authorization(Caller(), Deadline.after(0.05))
    assert (await patient).startswith("Bearer ")  # the shared fetch was not cancelled
    assert state.calls("token") == 1


async def test_wrong_client_secret_is_rejected_without_leaking_it(
    simulator: RunningSimulator,
    session: Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = oauth(simulator, session, client_secret="WRONG-secret-42")
    with pytest.raises(UpstreamRejected) as caught:
        await credentials.authorization(Caller())
    assert caught.value.status == 401
    assert caught.value.upstream == "classifieds-v3"
    assert "token" in str(caught.value)
    for text in (
        str(caught.value),
        repr(caught.value),
        "".join(traceback.format_exception(caught.value)),
        caplog.text,
        repr(credentials),
    ):
        assert "WRONG-secret-42" not in text


async def test_malformed_token_response_is_unavailable(
    simulator: RunningSimulator, session: Pool
) -> None:
    simulator.sim.state.add_fault("token", "malformed", count=1)
    with pytest.raises(UpstreamUnavailable, match="malformed"):
        await oauth(simulator, session).authorization(Caller())


async def test_tokens_never_reach_logs_errors_or_reprs(
    simulator: RunningSimulator,
    session: Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = oauth(simulator, session)
    v3 = client(simulator, session, credentials)
    classified = classified_of(simulator, "agency-1")
    header = await credentials.authorization(Caller())
    token = header.removeprefix("Bearer ")
    simulator.sim.state.add_fault("v3", "error", status=401)
    with pytest.raises(UpstreamRejected) as caught:
        await v3.classified_statuses(Caller(), classified)
    texts = [
        caplog.text,
        str(caught.value),
        "".join(traceback.format_exception(caught.value)),
        repr(credentials),
        repr(v3),
    ]
    for text in texts:
        assert token not in text
        assert SIM_CLIENT_SECRET not in text


async def test_agency_map_is_bounded(simulator: RunningSimulator, session: Pool) -> None:
    credentials = oauth(simulator, session, max_agencies=3)
    for i in range(10):
        await credentials.authorization(Caller(intermediary_id=f"agency-x{i}"))
    assert "agencies=3" in repr(credentials)
    # The most recent agency is still cached: no new fetch.
    await credentials.authorization(Caller(intermediary_id="agency-x9"))
    assert simulator.sim.state.calls("token") == 10


@pytest.mark.parametrize("agency", ["a" * 201, "agency\n2", "tab\there"])
async def test_unusable_agency_id_is_invalid_input(
    simulator: RunningSimulator, session: Pool, agency: str
) -> None:
    with pytest.raises(InvalidInput):
        await oauth(simulator, session).authorization(Caller(intermediary_id=agency))
    assert simulator.sim.state.calls("token") == 0


async def test_static_token(simulator: RunningSimulator, session: Pool) -> None:
    token = simulator.sim.state.issue_token("agency-1")
    credentials = StaticCredentials(token)
    expected_tenant = "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    assert credentials.tenant(Caller(intermediary_id="agency-9")) == expected_tenant
    assert StaticCredentials(f"Bearer {token}").tenant(Caller()) == expected_tenant
    assert token not in repr(credentials)
    v3 = client(simulator, session, credentials)
    await v3.classified_statuses(Caller(), classified_of(simulator, "agency-1"))
    assert bearer_of(simulator) == [f"Bearer {token}"]
    assert simulator.sim.state.calls("token") == 0


async def test_static_token_401_is_not_retried(simulator: RunningSimulator, session: Pool) -> None:
    v3 = client(simulator, session, StaticCredentials("revoked-or-never-valid"))
    with pytest.raises(UpstreamRejected) as caught:
        await v3.classified_statuses(Caller(), classified_of(simulator, "agency-1"))
    assert caught.value.status == 401
    assert simulator.sim.state.calls("v3") == 1
    assert "revoked-or-never-valid" not in str(caught.value)


async def test_passthrough_forwards_the_callers_token(
    simulator: RunningSimulator, session: Pool
) -> None:
    token = simulator.sim.state.issue_token("agency-2")
    credentials = PassthroughCredentials()
    caller = Caller(authorization=f"bearer {token}")
    assert await credentials.authorization(caller) == f"Bearer {token}"
    assert credentials.tenant(caller) == "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    assert credentials.tenant(caller) != credentials.tenant(Caller(authorization="Bearer other"))
    v3 = client(simulator, session, credentials)
    await v3.classified_statuses(caller, classified_of(simulator, "agency-2"))
    assert bearer_of(simulator) == [f"Bearer {token}"]
    assert await credentials.renew(caller, f"Bearer {token}") is None


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer  ", "Basic dXNlcjpwdw==", "Bearer a\r\nX: y"]
)
async def test_passthrough_without_a_bearer_token_is_unauthenticated(
    simulator: RunningSimulator, session: Pool, authorization: str | None
) -> None:
    credentials = PassthroughCredentials()
    caller = Caller(authorization=authorization)
    with pytest.raises(Unauthenticated):
        credentials.tenant(caller)
    v3 = client(simulator, session, credentials)
    with pytest.raises(Unauthenticated):
        await v3.classified_statuses(caller, classified_of(simulator, "agency-1"))
    assert simulator.sim.state.calls("v3") == 0


def settings_for(simulator: RunningSimulator, mode: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        v3_url=simulator.v3_url,
        v3_auth=mode,
        v3_token_url=simulator.token_url,
        v3_client_id=SIM_CLIENT_ID,
        v3_client_secret=SIM_CLIENT_SECRET,
        v3_audience=SIM_AUDIENCE,
        v3_intermediary_id="agency-3",
        v3_token="static-token",
        legacy_url=simulator.legacy_url,
        legacy_api_key=SIM_LEGACY_API_KEY,
        upstream_timeout_s=1,
    )


async def test_build_credentials_follows_the_mode(
    simulator: RunningSimulator, session: Pool
) -> None:
    oauth_credentials = build_credentials(
        v3_auth_options(settings_for(simulator, "oauth")), session
    )
    assert isinstance(oauth_credentials, OAuthCredentials)
    assert oauth_credentials.tenant(Caller()) == "agency:agency-3"
    await oauth_credentials.authorization(Caller())
    (token_request,) = [r for r in simulator.sim.state.requests if r.upstream == "token"]
    assert token_request.body["intermediary_id"] == "agency-3"
    assert isinstance(
        build_credentials(v3_auth_options(settings_for(simulator, "static")), session),
        StaticCredentials,
    )
    assert isinstance(
        build_credentials(v3_auth_options(settings_for(simulator, "passthrough")), session),
        PassthroughCredentials,
    )
