"""Credentials for Classifieds V3: the `Authorization` header and the cache scope of a call.

Three modes (`GATEWAY_V3_AUTH`, handed over as `V3AuthOptions.mode`):

- `oauth`: the OAuth 2.0 client-credentials flow of docs/upstreams.md, one token per agency
  (intermediary id), cached for its lifetime less a margin, fetched once for all concurrent
  callers (single-flight), refreshed once after a 401. With an allow-list of agencies
  (`GATEWAY_V3_AGENCIES`), a caller naming another agency is refused (`InvalidInput`) before
  any token is asked for: callers cannot make the gateway fetch a token per agency they
  invent (the vendor punishes clients that fetch many). A caller waits for a token only
  until the deadline of its own operation; the shared fetch goes on for the others. With a
  `TokenStore` (Redis, several replicas), a replica takes the agency's token from the store
  before it asks V3, and only the replica holding the store's claim for the agency fetches:
  N replicas fetch one token per agency, and one of them renews it after a 401;
- `static`: one fixed token from the settings;
- `passthrough`: the caller's own `Authorization: Bearer ...` header.

Tokens and secrets never appear in logs, error messages or reprs. HTTP goes through
`gateway.upstreams._http`; this module catches no connection error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import yarl
from cachetools import LRUCache
from pydantic import SecretStr

from gateway.domain.errors import InvalidInput, Unauthenticated, UpstreamName, UpstreamUnavailable
from gateway.domain.models import Caller
from gateway.upstreams._http import Deadline, RetryPolicy, request
from gateway.upstreams.guard import UpstreamGuard
from gateway.upstreams.wire import Pool

__all__ = [
    "OAuthCredentials",
    "PassthroughCredentials",
    "StaticCredentials",
    "TokenStore",
    "V3AuthOptions",
    "V3Credentials",
    "build_credentials",
    "token_fingerprint",
]

log = logging.getLogger("gateway.upstreams")

UPSTREAM: Final[UpstreamName] = "classifieds-v3"
# The vendor documents 24 h tokens; used only if a token response omits `expires_in`.
_DEFAULT_EXPIRES_IN_S: Final = 86_400.0
_MAX_AGENCY_ID_CHARS: Final = 200
# RFC 6750 b64token, loosened to any visible ASCII: enough to refuse header injection.
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")


class V3Credentials(Protocol):
    """What the V3 client needs to authenticate a call made for `caller`."""

    def tenant(self, caller: Caller) -> str:
        """The cache scope of the caller's V3 data: `agency:<id>` or `token:<16 hex>`."""
        ...

    async def authorization(self, caller: Caller, deadline: Deadline | None = None) -> str:
        """The `Authorization` header value (`Bearer ...`) for a call made for `caller`,
        within the operation's `deadline`."""
        ...

    async def renew(
        self, caller: Caller, rejected: str, deadline: Deadline | None = None
    ) -> str | None:
        """After V3 answered 401 to `rejected`: a fresh header value, or None if impossible."""
        ...


class TokenStore(Protocol):
    """Tokens shared by replicas, per agency. Every method copes with the store being away:
    `get` finds nothing, `claim` grants the claim, `put` stores nothing."""

    async def get(self, agency: str) -> tuple[str, float] | None:
        """The agency's `Authorization` value and how many seconds it stays fresh."""
        ...

    async def put(self, agency: str, header: str, fresh_s: float) -> None: ...

    def claim(self, agency: str) -> AbstractAsyncContextManager[bool]:
        """True inside the block when this replica may fetch the agency's token now."""
        ...


# How often a replica looks for the token another replica is fetching.
_SHARED_WAIT_S: Final = 0.05


def token_fingerprint(token: str) -> str:
    """A stable, non-reversible name for a bearer token: `token:<first 16 hex of sha256>`."""
    return "token:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def _bearer_token(value: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; None unless well-formed."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN_CHARS.match(token):
        return None
    return token


class StaticCredentials:
    """One fixed bearer token (`GATEWAY_V3_TOKEN`) for every call."""

    def __init__(self, token: str | SecretStr) -> None:
        raw = token.get_secret_value() if isinstance(token, SecretStr) else token
        raw = raw.strip()
        # Accept the value with or without its scheme.
        bare = _bearer_token(raw) or raw
        if not _TOKEN_CHARS.match(bare):
            raise ValueError("the static V3 token must be non-empty visible ASCII")
        self._header = f"Bearer {bare}"
        self._tenant = token_fingerprint(bare)

    def __repr__(self) -> str:
        return f"StaticCredentials(tenant={self._tenant!r})"

    def tenant(self, caller: Caller) -> str:
        return self._tenant

    async def authorization(self, caller: Caller, deadline: Deadline | None = None) -> str:
        return self._header

    async def renew(
        self, caller: Caller, rejected: str, deadline: Deadline | None = None
    ) -> str | None:
        return None


class PassthroughCredentials:
    """The caller's own `Authorization: Bearer ...` header, forwarded unchanged."""

    def __repr__(self) -> str:
        return "PassthroughCredentials()"

    @staticmethod
    def _token(caller: Caller) -> str:
        token = _bearer_token(caller.authorization)
        if token is None:
            raise Unauthenticated(
                "Classifieds V3 needs the caller's own 'Authorization: Bearer <token>' header"
            )
        return token

    def tenant(self, caller: Caller) -> str:
        return token_fingerprint(self._token(caller))

    async def authorization(self, caller: Caller, deadline: Deadline | None = None) -> str:
        return f"Bearer {self._token(caller)}"

    async def renew(
        self, caller: Caller, rejected: str, deadline: Deadline | None = None
    ) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class _Token:
    header: str = field(repr=False)
    fresh_until: float


class OAuthCredentials:
    """Client-credentials tokens, one per agency, cached and fetched single-flight.

    `clock` (monotonic seconds) is injectable so tests can age tokens without sleeping.
    The per-agency map is an LRU bounded by `max_agencies`. Token requests carry
    `user_agent` (V3's validated three-token User-Agent, as every V3 call does). With
    `allowed_agencies`, only those (and the default) may be named by callers.
    """

    def __init__(
        self,
        session: Pool,
        *,
        token_url: str,
        client_id: str,
        client_secret: str | SecretStr,
        audience: str,
        default_intermediary_id: str,
        user_agent: str,
        timeout_s: float,
        expiry_margin_s: float = 60.0,
        max_agencies: int = 1024,
        allowed_agencies: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
        guard: UpstreamGuard | None = None,
        retry_policy: RetryPolicy | None = None,
        store: TokenStore | None = None,
    ) -> None:
        self._session = session
        # Empty: any agency a caller names.
        self._allowed = (
            frozenset(allowed_agencies) | {default_intermediary_id}
            if allowed_agencies
            else frozenset[str]()
        )
        self._store = store
        # Per agency: the header V3 refused, which a token from the store must not be.
        self._rejected: dict[str, str] = {}
        self._guard = guard
        self._retry_policy = retry_policy or RetryPolicy()
        self._token_url = yarl.URL(token_url)
        self._client_id = client_id
        self._client_secret = (
            client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        )
        self._audience = audience
        self._default_agency = default_intermediary_id
        self._user_agent = user_agent
        self._timeout_s = timeout_s
        self._margin_s = expiry_margin_s
        self._clock = clock
        self._tokens: LRUCache[str, _Token] = LRUCache(maxsize=max_agencies)
        self._inflight: dict[str, asyncio.Task[_Token]] = {}
        self.fetch_count = 0  # token requests made; for diagnostics and tests
        self.shared_count = 0  # tokens taken from the store instead

    def __repr__(self) -> str:
        return (
            f"OAuthCredentials(token_url={str(self._token_url)!r}, client_id={self._client_id!r}, "
            f"audience={self._audience!r}, agencies={len(self._tokens)})"
        )

    def _agency(self, caller: Caller) -> str:
        agency = (caller.intermediary_id or "").strip() or self._default_agency
        if len(agency) > _MAX_AGENCY_ID_CHARS or not agency.isprintable():
            raise InvalidInput("the intermediary id must be printable and at most 200 characters")
        if self._allowed and agency not in self._allowed:
            raise InvalidInput("the intermediary id names no agency this gateway acts for")
        return agency

    def tenant(self, caller: Caller) -> str:
        return f"agency:{self._agency(caller)}"

    async def authorization(self, caller: Caller, deadline: Deadline | None = None) -> str:
        agency = self._agency(caller)
        cached = self._tokens.get(agency)
        if cached is not None and cached.fresh_until > self._clock():
            return cached.header
        return await self._shared_fetch(agency, deadline)

    async def renew(
        self, caller: Caller, rejected: str, deadline: Deadline | None = None
    ) -> str | None:
        agency = self._agency(caller)
        cached = self._tokens.get(agency)
        if cached is not None and cached.header != rejected and cached.fresh_until > self._clock():
            return cached.header  # another request has refreshed already
        if agency not in self._inflight and cached is not None and cached.header == rejected:
            del self._tokens[agency]
        self._rejected[agency] = rejected
        return await self._shared_fetch(agency, deadline)

    async def aclose(self) -> None:
        """Cancel token fetches still running (call before closing the session)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _shared_fetch(self, agency: str, deadline: Deadline | None) -> str:
        task = self._inflight.get(agency)
        if task is None:
            # The fetch has a budget of its own: it serves every waiter, and a token that
            # arrives after one waiter's deadline is still wanted by the next.
            task = asyncio.create_task(self._fetch(agency), name="v3-token-fetch")
            self._inflight[agency] = task
            task.add_done_callback(lambda done: self._forget(agency, done))
        if deadline is None:
            deadline = Deadline.after(self._timeout_s)
        try:
            # Each waiter waits only until its operation's deadline (one deadline covers
            # token, call, 401, renewal and retry). Shielded: one waiter giving up must not
            # cancel the fetch the others wait for.
            async with asyncio.timeout_at(deadline.at):
                token = await asyncio.shield(task)
        except TimeoutError:
            raise UpstreamUnavailable(
                f"{UPSTREAM} token: no answer within the operation's {deadline.seconds:g}s",
                upstream=UPSTREAM,
            ) from None
        return token.header

    def _forget(self, agency: str, task: asyncio.Task[_Token]) -> None:
        if self._inflight.get(agency) is task:
            del self._inflight[agency]
        if not task.cancelled():
            task.exception()  # a failure reaches the waiters; it is never cached

    async def _fetch(self, agency: str) -> _Token:
        store = self._store
        if store is None:
            return await self._fetch_here(agency)
        rejected = self._rejected.pop(agency, None)
        give_up_at = self._clock() + self._timeout_s
        while True:
            shared = await store.get(agency)
            if shared is not None and shared[0] != rejected:
                header, fresh_s = shared
                token = _Token(header=header, fresh_until=self._clock() + fresh_s)
                self._tokens[agency] = token
                self.shared_count += 1
                return token
            async with store.claim(agency) as mine:
                if mine or self._clock() >= give_up_at:
                    token = await self._fetch_here(agency)
                    await store.put(agency, token.header, token.fresh_until - self._clock())
                    return token
            await asyncio.sleep(_SHARED_WAIT_S)  # another replica is fetching it

    async def _fetch_here(self, agency: str) -> _Token:
        self.fetch_count += 1
        started = self._clock()
        body = await request(
            self._session,
            "POST",
            self._token_url,
            upstream=UPSTREAM,
            endpoint="token",
            deadline=Deadline.after(self._timeout_s),
            headers={"User-Agent": self._user_agent},
            json={
                "client_id": self._client_id,
                "client_secret": self._client_secret.get_secret_value(),
                "grant_type": "client_credentials",
                "audience": self._audience,
                "intermediary_id": agency,
            },
            retry=True,
            log_body=False,  # the body holds the access token
            guard=self._guard,
            policy=self._retry_policy,
        )
        token = self._parse(body)
        expires_in = _expires_in(body)
        margin = min(self._margin_s, expires_in / 2)
        fresh = _Token(header=f"Bearer {token}", fresh_until=started + expires_in - margin)
        self._tokens[agency] = fresh
        log.info("fetched a V3 token for agency %r, valid for %.0fs", agency, expires_in)
        return fresh

    @staticmethod
    def _parse(body: Any) -> str:
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not _TOKEN_CHARS.match(token):
            raise UpstreamUnavailable(
                "classifieds-v3 token: malformed token response (no usable access_token)",
                upstream=UPSTREAM,
            )
        token_type = body.get("token_type")
        if isinstance(token_type, str) and token_type.lower() != "bearer":
            log.warning(
                "V3 token endpoint returned token_type %r; sending it as Bearer", token_type
            )
        return token


def _expires_in(body: dict[str, Any]) -> float:
    value = body.get("expires_in")
    if isinstance(value, bool):
        value = None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, int | float) and value > 0:
        return float(value)
    log.warning("V3 token response has no usable expires_in; assuming the documented 24 h")
    return _DEFAULT_EXPIRES_IN_S


@dataclass(frozen=True, slots=True)
class V3AuthOptions:
    """How V3 calls authenticate, as plain values (the composition root reads the settings)."""

    mode: str  # "oauth", "static" or "passthrough"
    token_url: str = ""
    client_id: str = ""
    client_secret: SecretStr = field(default_factory=lambda: SecretStr(""))
    audience: str = ""
    intermediary_id: str = ""
    # Agencies callers may name (besides `intermediary_id`); empty: any.
    agencies: tuple[str, ...] = ()
    token: SecretStr = field(default_factory=lambda: SecretStr(""))
    user_agent: str = ""
    timeout_s: float = 5.0


def build_credentials(
    options: V3AuthOptions,
    session: Pool,
    *,
    clock: Callable[[], float] = time.monotonic,
    guard: UpstreamGuard | None = None,
    retry_policy: RetryPolicy | None = None,
    token_store: TokenStore | None = None,
) -> V3Credentials:
    """The credentials `options.mode` asks for; `session` is used for token requests,
    `token_store` (oauth only) shares tokens with other replicas."""
    if options.mode == "oauth":
        return OAuthCredentials(
            session,
            token_url=options.token_url,
            client_id=options.client_id,
            client_secret=options.client_secret,
            audience=options.audience,
            default_intermediary_id=options.intermediary_id,
            allowed_agencies=options.agencies,
            user_agent=options.user_agent,
            timeout_s=options.timeout_s,
            clock=clock,
            guard=guard,
            retry_policy=retry_policy,
            store=token_store,
        )
    if options.mode == "static":
        return StaticCredentials(options.token)
    if options.mode == "passthrough":
        return PassthroughCredentials()
    raise ValueError(f"unknown V3 auth mode {options.mode!r}")
