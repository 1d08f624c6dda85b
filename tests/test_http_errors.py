"""The shared request helper: error translation, retries, Retry-After, deadlines, secrecy.

Each test runs a small aiohttp app on a loopback port and calls `_http.request` against it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import yarl
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.domain.errors import (
    GatewayError,
    NotFound,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.upstreams._http import (
    Deadline,
    RetryPolicy,
    create_session,
    parse_retry_after,
    request,
)
from gateway.upstreams.wire import Pool, WireError

SECRET = "Bearer sekrit-token-0xDEADBEEF"
BODY_SECRET = "body-leak-CAFEBABE"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Upstream:
    """A loopback server whose one route answers with `handler`, counting requests."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.calls = 0
        self.requests: list[web.Request] = []

    def url(self, path: str = "/thing") -> yarl.URL:
        return self.server.make_url(path)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Upstream]]]:
    servers: list[TestServer] = []

    async def start(handler: Handler) -> Upstream:
        holder: list[Upstream] = []

        async def counted(request: web.Request) -> web.StreamResponse:
            holder[0].calls += 1
            holder[0].requests.append(request)
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", counted)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        holder.append(Upstream(server))
        return holder[0]

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[Pool]:
    async with create_session(timeout_s=5) as s:
        yield s


def status_handler(
    status: int, body: str = f'{{"message": "{BODY_SECRET}"}}', **headers: str
) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=status, text=body, content_type="application/json", headers=headers
        )

    return handler


async def call(session: Pool, url: yarl.URL, *, seconds: float = 2.0, **kwargs: Any) -> Any:
    kwargs.setdefault("retry", True)
    kwargs.setdefault("backoff_s", 0.01)
    return await request(
        session,
        kwargs.pop("method", "GET"),
        url,
        upstream="classifieds-v3",
        endpoint="classified_statuses",
        deadline=Deadline.after(seconds),
        headers={"Authorization": SECRET},
        **kwargs,
    )


def assert_clean(exc: BaseException) -> None:
    """Neither the message, the repr nor the formatted traceback holds a secret or the body."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for text in texts:
        assert "sekrit" not in text
        assert BODY_SECRET not in text


async def test_success_returns_decoded_json(serve: Any, session: Pool) -> None:
    upstream = await serve(status_handler(200, '{"items": [1, 2], "x": "é"}'))
    assert await call(session, upstream.url()) == {"items": [1, 2], "x": "é"}
    assert upstream.calls == 1
    sent = upstream.requests[0].headers
    assert sent["Authorization"] == SECRET
    assert sent["Accept"] == "application/json"


async def test_json_body_is_sent_as_json(serve: Any, session: Pool) -> None:
    seen: list[Any] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((request.content_type, await request.json()))
        return web.json_response({"ok": True})

    upstream = await serve(handler)
    await call(session, upstream.url(), method="POST", json={"a": [1, "b"]})
    assert seen == [("application/json", {"a": [1, "b"]})]


async def test_404_is_upstream_not_found(serve: Any, session: Pool) -> None:
    upstream = await serve(status_handler(404))
    with pytest.raises(UpstreamNotFound) as caught:
        await call(session, upstream.url())
    error = caught.value
    assert isinstance(error, NotFound) and isinstance(error, GatewayError)
    assert (error.status, error.upstream, error.code) == (404, "classifieds-v3", "NOT_FOUND")
    assert "classifieds-v3" in str(error) and "classified_statuses" in str(error)
    assert "404" in str(error)
    assert upstream.calls == 1, "a 404 is not retried"
    assert_clean(error)


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422])
async def test_other_4xx_is_rejected_without_retry(serve: Any, session: Pool, status: int) -> None:
    upstream = await serve(status_handler(status))
    with pytest.raises(UpstreamRejected) as caught:
        await call(session, upstream.url())
    assert caught.value.status == status
    assert caught.value.code == "UPSTREAM_REJECTED"
    assert str(status) in str(caught.value)
    assert upstream.calls == 1
    assert_clean(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retried_twice_then_unavailable(
    serve: Any, session: Pool, status: int
) -> None:
    upstream = await serve(status_handler(status))
    with pytest.raises(UpstreamUnavailable) as caught:
        await call(session, upstream.url())
    assert caught.value.status == status
    assert caught.value.code == "UPSTREAM_UNAVAILABLE"
    assert upstream.calls == 3, "one attempt plus at most two retries"
    assert_clean(caught.value)


async def test_writes_are_not_retried(serve: Any, session: Pool) -> None:
    upstream = await serve(status_handler(500))
    with pytest.raises(UpstreamUnavailable):
        await call(session, upstream.url(), method="PUT", retry=False)
    assert upstream.calls == 1


async def test_a_retry_that_succeeds_returns_its_answer(serve: Any, session: Pool) -> None:
    async def flaky(request: web.Request) -> web.StreamResponse:
        if upstream.calls == 1:
            return web.json_response({"message": "boom"}, status=503)
        return web.json_response({"items": []})

    upstream = await serve(flaky)
    assert await call(session, upstream.url()) == {"items": []}
    assert upstream.calls == 2


class Sleeps:
    """Stands in for asyncio.sleep: records each wait and returns at once."""

    def __init__(self) -> None:
        self.waited: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waited.append(seconds)


async def test_429_honours_retry_after(serve: Any, session: Pool) -> None:
    async def limited(request: web.Request) -> web.StreamResponse:
        if upstream.calls == 1:
            return web.json_response(
                {"message": "slow down"}, status=429, headers={"Retry-After": "7"}
            )
        return web.json_response({"items": []})

    upstream = await serve(limited)
    sleeps = Sleeps()
    result = await call(session, upstream.url(), seconds=30, policy=RetryPolicy(sleep=sleeps))
    assert result == {"items": []}
    assert sleeps.waited == [7.0], "the retry waited what Retry-After said"
    assert upstream.calls == 2


async def test_429_with_http_date_retry_after(serve: Any, session: Pool) -> None:
    async def limited(request: web.Request) -> web.StreamResponse:
        if upstream.calls == 1:
            when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
            return web.json_response({}, status=429, headers={"Retry-After": when})
        return web.json_response({"ok": 1})

    upstream = await serve(limited)
    sleeps = Sleeps()
    result = await call(session, upstream.url(), seconds=60, policy=RetryPolicy(sleep=sleeps))
    assert result == {"ok": 1}
    # An HTTP-date has whole-second resolution, and the answer took a moment to arrive.
    [waited] = sleeps.waited
    assert 15 < waited <= 20
    assert upstream.calls == 2


async def test_backoff_grows_exponentially_with_jitter(serve: Any, session: Pool) -> None:
    upstream = await serve(status_handler(503))
    sleeps = Sleeps()
    policy = RetryPolicy(max_retries=3, backoff_s=1.0, max_backoff_s=3.0, sleep=sleeps)
    with pytest.raises(UpstreamUnavailable):
        await call(session, upstream.url(), seconds=60, policy=policy)
    assert upstream.calls == 4
    first, second, third = sleeps.waited
    assert 1 <= first <= 2 and 2 <= second <= 3 and 3 <= third <= 4  # capped at 3, plus jitter


async def test_no_retry_is_sent_with_almost_no_time_left(serve: Any, session: Pool) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.Response()

    upstream = await serve(hang)
    sleeps = Sleeps()
    # The first attempt may take half of 15 ms; the 7.5 ms left are too few for another,
    # even with no pause between them.
    with pytest.raises(UpstreamUnavailable):
        await call(
            session, upstream.url(), seconds=0.015, policy=RetryPolicy(backoff_s=0, sleep=sleeps)
        )
    assert sleeps.waited == [], "a retry was scheduled"
    assert upstream.calls <= 1


async def test_no_retries_when_the_policy_says_none(serve: Any, session: Pool) -> None:
    upstream = await serve(status_handler(503))
    sleeps = Sleeps()
    with pytest.raises(UpstreamUnavailable):
        await call(session, upstream.url(), policy=RetryPolicy(max_retries=0, sleep=sleeps))
    assert (upstream.calls, sleeps.waited) == (1, [])


async def test_retry_after_beyond_the_deadline_fails_at_once(serve: Any, session: Pool) -> None:
    upstream = await serve(status_handler(429, "{}", **{"Retry-After": "3600"}))
    # Ends only because nothing sleeps the hour: a wait past the deadline is not taken.
    with pytest.raises(UpstreamUnavailable) as caught:
        await call(session, upstream.url(), seconds=1)
    assert caught.value.status == 429
    assert caught.value.retry_after == 3600
    assert upstream.calls == 1


async def test_persistent_429_gives_up_after_two_retries(serve: Any, session: Pool) -> None:
    upstream = await serve(status_handler(429, "{}", **{"Retry-After": "0"}))
    with pytest.raises(UpstreamUnavailable) as caught:
        await call(session, upstream.url())
    assert caught.value.status == 429
    assert caught.value.code == "UPSTREAM_UNAVAILABLE"  # transient: the caller may come back
    assert upstream.calls == 3


async def test_hanging_upstream_respects_the_deadline(serve: Any, session: Pool) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.json_response({})

    upstream = await serve(hang)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as caught:
        await call(session, upstream.url(), seconds=0.6)
    assert time.monotonic() - started >= 0.5, "the attempts used the time they had"
    assert upstream.calls >= 2, "a hung attempt leaves time for a retry"
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert_clean(caught.value)


async def test_time_running_out_during_a_backoff_names_the_attempt_that_failed(
    serve: Any, session: Pool
) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.json_response({})

    upstream = await serve(hang)
    loop = asyncio.get_running_loop()
    deadline = Deadline.after(0.2)

    async def overslept(seconds: float) -> None:
        # A loaded machine: the pause before the retry ends past the operation's deadline.
        await asyncio.sleep(deadline.at - loop.time() + 0.01)

    with pytest.raises(UpstreamUnavailable, match="no answer within") as caught:
        await request(
            session, "GET", upstream.url(), upstream="classifieds-v3",
            endpoint="classified_statuses", deadline=deadline, retry=True,
            policy=RetryPolicy(backoff_s=0.001, sleep=overslept),
        )  # fmt: skip
    assert upstream.calls == 1
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_a_timed_out_attempt_with_no_room_for_a_retry_says_the_time_is_spent(
    serve: Any, session: Pool
) -> None:
    """The pause before a retry would outlast the deadline: the operation's time is spent, as
    when the deadline itself ends the attempt (it said only "timed out")."""

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.json_response({})

    upstream = await serve(hang)
    with pytest.raises(UpstreamUnavailable, match=r"no answer within 0\.4s") as caught:
        await request(
            session, "GET", upstream.url(), upstream="classifieds-v3",
            endpoint="classified_statuses", deadline=Deadline.after(0.4), retry=True,
            policy=RetryPolicy(backoff_s=5.0, max_backoff_s=5.0),
        )  # fmt: skip
    assert upstream.calls == 1
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_a_timed_out_attempt_is_retried(serve: Any, session: Pool) -> None:
    async def slow_once(request: web.Request) -> web.StreamResponse:
        if upstream.calls == 1:
            await asyncio.sleep(5)
        return web.json_response({"late": False})

    upstream = await serve(slow_once)
    # One retry, so it is the last attempt and gets all the time left (~0.75 s), not half of
    # it: on a loaded machine a quarter of a second did not always do for an answer.
    answer = await call(session, upstream.url(), seconds=1.5, max_retries=1)
    assert answer == {"late": False}
    assert upstream.calls == 2


async def test_connection_refused_is_unavailable(session: Pool) -> None:
    # Bind a port, then free it: nothing listens there any more.
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    url = server.make_url("/gone")
    await server.close()
    with pytest.raises(UpstreamUnavailable) as caught:
        await call(session, url, seconds=1)
    assert isinstance(caught.value.__cause__, WireError)
    assert isinstance(caught.value.__cause__.__cause__, ConnectionRefusedError)
    assert "connection failed: could not connect (ConnectionRefusedError)" in str(caught.value)
    assert_clean(caught.value)


async def test_connection_reset_is_retried(serve: Any, session: Pool) -> None:
    async def reset_once(request: web.Request) -> web.StreamResponse:
        if upstream.calls == 1 and request.transport is not None:
            request.transport.abort()
            return web.Response()
        return web.json_response({"ok": True})

    upstream = await serve(reset_once)
    assert await call(session, upstream.url()) == {"ok": True}
    assert upstream.calls == 2


@pytest.mark.parametrize("body", [f'{{"items": ["{BODY_SECRET}', "", "<html>oops</html>"])
async def test_malformed_body_is_unavailable(serve: Any, session: Pool, body: str) -> None:
    upstream = await serve(status_handler(200, body))
    with pytest.raises(UpstreamUnavailable, match="malformed") as caught:
        await call(session, upstream.url())
    assert caught.value.status == 200
    assert upstream.calls == 1
    assert_clean(caught.value)


async def test_oversized_body_is_unavailable(serve: Any, session: Pool) -> None:
    upstream = await serve(status_handler(200, '"' + "x" * 5000 + '"'))
    with pytest.raises(UpstreamUnavailable, match="too large"):
        await call(session, upstream.url(), max_body_bytes=1000)


async def test_expect_json_false_ignores_the_body(serve: Any, session: Pool) -> None:
    upstream = await serve(status_handler(200, "OK, not JSON"))
    assert await call(session, upstream.url(), method="DELETE", expect_json=False) is None


async def test_redirects_are_not_followed(serve: Any, session: Pool) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        if request.path == "/elsewhere":
            return web.json_response({"followed": True})
        raise web.HTTPFound("/elsewhere")

    upstream = await serve(redirect)
    with pytest.raises(UpstreamUnavailable) as caught:
        await call(session, upstream.url())
    assert caught.value.status == 302
    assert upstream.calls == 1, "credentials are never replayed to a redirect target"


async def test_body_is_logged_truncated_and_headers_never(
    serve: Any, session: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = await serve(status_handler(400, '{"message": "' + "y" * 2000 + BODY_SECRET + '"}'))
    caplog.set_level(logging.DEBUG, logger="gateway.upstreams")
    with pytest.raises(UpstreamRejected):
        await call(session, upstream.url())
    logged = caplog.text
    assert '{"message": "yyy' in logged, "the raw body is kept for debugging"
    assert BODY_SECRET not in logged, "... truncated"
    assert "sekrit" not in logged


async def test_log_body_false_keeps_the_body_out_of_logs(
    serve: Any, session: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = await serve(status_handler(500, '{"access_token": "' + BODY_SECRET + '"}'))
    caplog.set_level(logging.DEBUG, logger="gateway.upstreams")
    with pytest.raises(UpstreamUnavailable):
        await call(session, upstream.url(), log_body=False)
    assert BODY_SECRET not in caplog.text


async def test_the_session_caps_each_attempt(
    serve: Callable[[Handler], Awaitable[Upstream]],
) -> None:
    answer = asyncio.Event()

    async def stalled(request: web.Request) -> web.StreamResponse:
        await answer.wait()
        return web.json_response({})

    upstream = await serve(stalled)
    async with create_session(timeout_s=0.2, limit=7) as session:
        assert session.limit == 7
        # The operation would allow 30 s; the session's cap ends the attempt first.
        with pytest.raises(UpstreamUnavailable) as caught:
            await call(session, upstream.url(), seconds=30, retry=False)
    answer.set()
    assert "timed out" in str(caught.value)


def test_parse_retry_after() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:10 GMT", now=now) == 10.0
    assert parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now=now) == 0.0
    for garbage in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(garbage) is None
