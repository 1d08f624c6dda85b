"""The simulator's mutable state: stored data, tokens, webhooks, counters, faults, request log.

Handlers and tests share one `State`. It is plain Python (no locks): everything runs on one
event loop, and no method awaits between reading and writing the same structure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDictProxy

from .data import Catalog, Listing
from .faults import DEFAULT_HANG_S, Fault, FaultBook, FaultKind
from .records import ClassifiedRecord, JsonDict, stored
from .vocabulary import (
    ENDPOINTS,
    SIM_AUDIENCE,
    SIM_CLIENT_ID,
    TOKEN_LIFETIME_S,
    UPSTREAMS,
    Upstream,
)

LegacyErrorStyle = Literal["mixed", "object", "string"]
LegacyMissingAds = Literal["errors", "refuse"]
_MAX_TOKENS = 10_000


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request an upstream endpoint received, as it arrived (secrets kept out of repr)."""

    upstream: str
    endpoint: str
    method: str
    path: str  # raw, still percent-encoded, without the query string
    query: list[tuple[str, str]]
    headers: CIMultiDictProxy[str] = field(repr=False)  # case-insensitive lookups
    body: Any = field(repr=False)  # parsed JSON, else text, else None; token secrets redacted


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of one webhook callback: the subscriber's HTTP status, or why none came."""

    classified_id: str
    url: str
    status: int | None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 201

    def to_json(self) -> JsonDict:
        return {
            "classifiedId": self.classified_id,
            "url": self.url,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What an issued bearer token stands for."""

    client_id: str
    intermediary_id: str
    audience: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Subscription:
    """A webhook subscription of one (client, intermediary); no `statuses` means all."""

    client_id: str
    intermediary_id: str
    url: str
    statuses: tuple[str, ...] | None

    def wants(self, status: object) -> bool:
        return not self.statuses or status in self.statuses


class State:
    """Everything the running simulator knows and remembers."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        latency_ms: float = 0,
        request_log_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Stored items are never edited in place (appends and whole replacements only), so
        # copying the containers is enough to keep the catalog pristine.
        self._classifieds = {cid: r.copy() for cid, r in catalog.classifieds.items()}
        self._legacy = {user: dict(ads) for user, ads in catalog.legacy_ads.items()}
        self.listings: list[Listing] = list(catalog.listings)
        self.requests: deque[RecordedRequest] = deque(maxlen=request_log_size)
        self.deliveries: deque[DeliveryResult] = deque(maxlen=200)
        self.token_ttl_s: float = TOKEN_LIFETIME_S
        self.tokens_issued = 0
        self.webhook_timeout_s = 5.0
        self.force_delay_s = 0.1  # `force=true` asks the portal live, so it is slower
        self.legacy_error_style: LegacyErrorStyle = "mixed"
        # "refuse": a POST naming an unknown ad answers `result:false`, naming the missing
        # ads, instead of `result:true` with the found ones (both are seen upstream).
        self.legacy_missing_ads: LegacyMissingAds = "errors"
        self._clock = clock
        self._counters: Counter[tuple[str, str]] = Counter()
        self._faults = FaultBook()
        self._latency_ms: dict[str, float] = dict.fromkeys(UPSTREAMS, float(latency_ms))
        self._tokens: dict[str, TokenGrant] = {}
        self._subscriptions: dict[tuple[str, str], Subscription] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()

    # --- lifecycle (driven by the application) ---------------------------------------------

    def open(self, session: aiohttp.ClientSession | None) -> None:
        """Called at app startup; a fresh Event binds to the serving loop."""
        self._session = session
        self._closing = asyncio.Event()

    def close(self) -> None:
        """Called at app shutdown: wakes hanging `timeout` faults so the server can stop."""
        self._closing.set()
        self._session = None

    async def hang(self, seconds: float) -> None:
        """Sleep for `seconds`, or less if the app shuts down meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    # --- counters and request log ----------------------------------------------------------

    def record(self, request: RecordedRequest) -> None:
        self._counters[(request.upstream, request.endpoint)] += 1
        self.requests.append(request)

    def calls(self, upstream: str, endpoint: str | None = None) -> int:
        """Requests received by an upstream (or one endpoint of it) since the last reset."""
        return sum(
            n for (u, e), n in self._counters.items() if u == upstream and endpoint in (None, e)
        )

    def counters(self) -> dict[str, dict[str, int]]:
        return {u: {e: self._counters[(u, e)] for e in ENDPOINTS[u]} for u in UPSTREAMS}

    def reset_counters(self) -> None:
        """Zero the counters and empty the request log."""
        self._counters.clear()
        self.requests.clear()

    # --- faults and latency ----------------------------------------------------------------

    def add_fault(
        self,
        upstream: Upstream,
        kind: FaultKind,
        *,
        status: int = 500,
        count: int | None = None,
        endpoint: str | None = None,
        retry_after: int | None = None,
        delay_s: float | None = None,
    ) -> Fault:
        """Make `upstream` misbehave; `count=None` lasts until `clear_faults()`."""
        hang = DEFAULT_HANG_S if delay_s is None else delay_s
        return self._faults.add(Fault(upstream, kind, status, count, endpoint, retry_after, hang))

    def add_fault_object(self, fault: Fault) -> Fault:
        return self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        return self._faults.active()

    def take_fault(self, upstream: str, endpoint: str) -> Fault | None:
        return self._faults.take(upstream, endpoint)

    def set_latency(self, upstream: str, ms: float) -> None:
        """Delay every answer of `upstream` by `ms` milliseconds."""
        if upstream not in UPSTREAMS:
            raise ValueError(f"upstream must be one of {', '.join(UPSTREAMS)}")
        if ms < 0:
            raise ValueError("ms must not be negative")
        self._latency_ms[upstream] = float(ms)

    def latency_s(self, upstream: str) -> float:
        return self._latency_ms.get(upstream, 0.0) / 1000

    # --- tokens ----------------------------------------------------------------------------

    def issue_token(
        self, intermediary_id: str, *, client_id: str = SIM_CLIENT_ID, audience: str = SIM_AUDIENCE
    ) -> str:
        """A new valid bearer token for (client, intermediary)."""
        now = self._clock()
        self._tokens = {t: g for t, g in self._tokens.items() if g.expires_at > now}
        while len(self._tokens) >= _MAX_TOKENS:
            del self._tokens[next(iter(self._tokens))]
        token = _jwt_looking(client_id, audience)
        self._tokens[token] = TokenGrant(
            client_id, intermediary_id, audience, now + self.token_ttl_s
        )
        self.tokens_issued += 1
        return token

    def grant_for(self, token: str) -> TokenGrant | None:
        """The grant behind a live token; None when unknown, expired or revoked."""
        grant = self._tokens.get(token)
        if grant is None or grant.expires_at <= self._clock():
            return None
        return grant

    def revoke_tokens(self) -> None:
        """Invalidate every issued token: V3 answers 401 until a new one is fetched."""
        self._tokens.clear()

    # --- webhooks --------------------------------------------------------------------------

    def subscribe(
        self, client_id: str, intermediary_id: str, url: str, statuses: Iterable[str] | None
    ) -> Subscription:
        sub = Subscription(client_id, intermediary_id, url, tuple(statuses) if statuses else None)
        self._subscriptions[(client_id, intermediary_id)] = sub
        return sub

    def unsubscribe(self, client_id: str, intermediary_id: str) -> bool:
        return self._subscriptions.pop((client_id, intermediary_id), None) is not None

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions.values())

    # --- V3 data ---------------------------------------------------------------------------

    def classified(self, classified_id: str) -> ClassifiedRecord | None:
        return self._classifieds.get(classified_id)

    def tenants(self) -> dict[str, list[str]]:
        """Intermediary id -> its classified ids, as stored now."""
        result: dict[str, list[str]] = {}
        for record in self._classifieds.values():
            result.setdefault(record.tenant, []).append(record.classified_id)
        return result

    def put_classified(
        self,
        classified_id: str,
        *,
        tenant: str,
        items: list[JsonDict],
        media: dict[str, list[JsonDict]] | None = None,
    ) -> ClassifiedRecord:
        """Install (or replace) a raw history, kept verbatim in any order."""
        record = ClassifiedRecord(classified_id, tenant, customer_id=f"RC-{tenant}")
        for item in items:
            record.append(item)
        for media_id, media_items in (media or {}).items():
            record.media[media_id] = [stored(media_id, i, it) for i, it in enumerate(media_items)]
        self._classifieds[classified_id] = record
        return record

    def copy_classified(self, source_id: str, classified_id: str) -> ClassifiedRecord:
        """Install a copy of `source_id`'s record (history and media) under a new id.

        Raises KeyError for an unknown source. Items are shared, as nothing edits them.
        """
        record = self._classifieds[source_id].copy()
        record.classified_id = classified_id
        self._classifieds[classified_id] = record
        return record

    async def append_status(self, classified_id: str, item: JsonDict) -> list[DeliveryResult]:
        """Append `item` verbatim and POST it to the owning tenant's webhook subscribers.

        Raises KeyError for an unknown classified. Returns one result per callback made.
        """
        record = self._classifieds[classified_id]
        record.append(item)
        targets = [
            s
            for s in self._subscriptions.values()
            if s.intermediary_id == record.tenant and s.wants(item.get("status"))
        ]
        if not targets:
            return []
        if self._session is not None and not self._session.closed:
            results = await self._deliver_all(self._session, targets, classified_id, item)
        else:
            # Called with no app running (a unit test): a short-lived session does.
            async with aiohttp.ClientSession() as session:
                results = await self._deliver_all(session, targets, classified_id, item)
        self.deliveries.extend(results)
        return results

    async def _deliver_all(
        self,
        session: aiohttp.ClientSession,
        targets: list[Subscription],
        classified_id: str,
        item: JsonDict,
    ) -> list[DeliveryResult]:
        calls = (self._deliver(session, s.url, classified_id, item) for s in targets)
        return list(await asyncio.gather(*calls))

    async def _deliver(
        self, session: aiohttp.ClientSession, base: str, classified_id: str, item: JsonDict
    ) -> DeliveryResult:
        url = f"{base.rstrip('/')}/classifieds/{quote(classified_id, safe='')}/statuses"
        timeout = aiohttp.ClientTimeout(total=self.webhook_timeout_s)
        try:
            async with session.post(url, json=item, timeout=timeout) as response:
                await response.read()
                return DeliveryResult(classified_id, url, response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return DeliveryResult(classified_id, url, None, type(exc).__name__)

    # --- legacy data -----------------------------------------------------------------------

    def legacy_user_exists(self, user_id: int) -> bool:
        return user_id in self._legacy

    def legacy_ad(self, user_id: int, ad_id: int) -> JsonDict | None:
        return self._legacy.get(user_id, {}).get(ad_id)

    def legacy_ads(self, user_id: int) -> dict[int, JsonDict]:
        return self._legacy.get(user_id, {})

    def legacy_users(self) -> dict[int, list[int]]:
        return {user: list(ads) for user, ads in self._legacy.items()}

    def put_legacy_ad(self, user_id: int, ad_id: int, portals: list[JsonDict]) -> JsonDict:
        """Install (or replace) a raw legacy ad; `portals` is served verbatim."""
        ad: JsonDict = {"adId": ad_id, "portals": portals}
        self._legacy.setdefault(user_id, {})[ad_id] = ad
        return ad

    def replace_legacy_portals(self, user_id: int, ad_id: int, portals: list[JsonDict]) -> None:
        """Swap an existing ad's portals, keeping its `adId` rendering."""
        ads = self._legacy[user_id]
        ads[ad_id] = {**ads[ad_id], "portals": portals}


def _jwt_looking(client_id: str, audience: str) -> str:
    """An opaque random token shaped like a JWT; it carries no tenant and no secret."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = json.dumps({"alg": "RS256", "typ": "JWT"}).encode()
    claims = {
        "sub": client_id,
        "aud": audience,
        "jti": secrets.token_hex(16),
        "iat": int(time.time()),
    }
    return ".".join(
        (part(header), part(json.dumps(claims).encode()), part(secrets.token_bytes(32)))
    )
