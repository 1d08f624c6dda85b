"""Client for the GoedGeplaatst REST v1 status API (the "legacy" upstream).

Reads one ad (`GET /status/{userId}/{adId}`) or many (`POST /status/`, deduplicated,
chunked, chunks in parallel, paged within a chunk) and parses the loose payloads of
docs/upstreams.md ("Ad status", "Loose payloads"): the `0000-00-00 00:00:00` sentinel is None,
other dates are Europe/Amsterdam local time, `features: false` is empty, every publish and
feature field is optional, numeric strings are ints and `false`/`""`/`0` ids are None.
The key travels in the `Authentication` header (not `Authorization`). Depends on `_http`
and the domain models; catches no connection error.

A batch answered with `result:false` whose errors all name ads that were not found is not
a failure of the whole batch: those ads are missing, and the chunk is asked once more
without them (one extra call per chunk at most). Any other `result:false` fails the call.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from itertools import repeat
from typing import Any, Final, TypedDict
from zoneinfo import ZoneInfo

import orjson
import yarl
from cachetools import LRUCache
from pydantic import SecretStr

from gateway.domain.errors import (
    InvalidInput,
    UpstreamError,
    UpstreamName,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.domain.models import (
    LEGACY_PORTALS,
    LegacyAdStatus,
    LegacyBatch,
    LegacyFeatureStatus,
    LegacyPortalStatus,
    LegacyPublishStatus,
)
from gateway.upstreams._http import Deadline, RetryPolicy, request
from gateway.upstreams.guard import UpstreamGuard
from gateway.upstreams.unknowns import note_unknown
from gateway.upstreams.wire import Pool

__all__ = ["MAX_ITEMS_PER_PAGE", "LegacyClient", "parse_ad", "parse_legacy_date"]

log = logging.getLogger("gateway.upstreams")

UPSTREAM: Final[UpstreamName] = "legacy"
MAX_ITEMS_PER_PAGE: Final = 1000
# `force=true` makes the upstream ask the portal live (docs/upstreams.md, "Ad status").
FORCE_TIMEOUT_FACTOR: Final = 3.0
# A guard against an upstream that ignores `page` and repeats itself.
_MAX_PAGES_PER_CHUNK: Final = 20
AMSTERDAM: Final = ZoneInfo("Europe/Amsterdam")
_NOT_SET: Final = "0000-00-00"
_TRUE_STRINGS: Final = frozenset({"1", "true", "yes"})
# "Advertisement 659599 not found for user 12311" (docs/upstreams.md), also as "ad 659599".
_NAMED_AD = re.compile(r"(?:advertisement|\bad(?:id)?)\D{0,3}?(\d+)", re.IGNORECASE)


# --- parsing --------------------------------------------------------------------------


def parse_legacy_date(value: object) -> datetime | None:
    """An aware Europe/Amsterdam datetime, or None for the sentinel, empty or unparseable values."""
    if value is None or value is False or value == "":
        return None
    if not isinstance(value, str):
        log.info("ignoring a legacy date that is not a string: %r", value)
        return None
    parsed = _amsterdam(value)
    if parsed is None and not value.strip().startswith(_NOT_SET) and value.strip():
        log.info("ignoring an unparseable legacy date %r", value)
    return parsed


# Legacy is read on every request, mostly with the dates of the previous one: a hit costs a
# dict lookup where a parse costs a few microseconds, ~10 dates an ad.
@functools.lru_cache(maxsize=16_384)
def _amsterdam(value: str) -> datetime | None:
    text = value.strip()
    # Never hand the sentinel to a date parser (docs/upstreams.md, "Loose payloads").
    if not text or text.startswith(_NOT_SET):
        return None
    # The documented form has no zone and is Amsterdam time. Any other ISO 8601 form is
    # still a date the upstream set (fractions of a second, a day alone, a zone of its own):
    # read as "not set", a real closeDate would make an OFFLINE ad NOT_PUBLISHED.
    if len(text) < 10 or not text[:4].isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=AMSTERDAM)


def _flag(value: object) -> bool:
    if value is True or value is False:
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_STRINGS
    return False


def _int(value: object) -> int | None:
    """An int from an int, an integral float or a numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    return None


def _id(value: object) -> int | None:
    """An id field: `false`, `""`, `0` and anything non-numeric mean "none"."""
    number = _int(value)
    return number if number else None


def _remote_ad_id(value: object) -> int | None:
    """A portal's own id, documented as an int (`0`, `""`, `false` or null: none). Any
    other value is shown as none too, but counted as an unknown value, not dropped unseen:
    by its kind, since every ad has its own id (a label per value would be unbounded)."""
    number = _int(value)
    blank = value is None or value is False or (isinstance(value, str) and not value.strip())
    if number is None and not blank:
        note_unknown("legacy.remote_ad_id", f"not an integer ({type(value).__name__})")
        log.debug("remoteAdId %r is not an integer: shown as null", value)
    return number if number else None


class _StatusFields(TypedDict):
    pending: bool
    pending_date: datetime | None
    processing: bool
    processing_date: datetime | None
    error: bool
    active: bool
    start_date: datetime | None


def _status_fields(raw: dict[str, Any]) -> _StatusFields:
    """The fields a publish object and a feature object share (docs/upstreams.md),
    parsed one way for both: each optional, absent meaning false or null."""
    return _StatusFields(
        pending=_flag(raw.get("pending")),
        pending_date=parse_legacy_date(raw.get("pendingDate")),
        processing=_flag(raw.get("processing")),
        processing_date=parse_legacy_date(raw.get("processingDate")),
        error=_flag(raw.get("error")),
        active=_flag(raw.get("active")),
        start_date=parse_legacy_date(raw.get("startDate")),
    )


def _publish(raw: object) -> LegacyPublishStatus:
    if not isinstance(raw, dict):
        return LegacyPublishStatus()
    return LegacyPublishStatus(
        **_status_fields(raw),
        online=_flag(raw.get("online")),
        close_date=parse_legacy_date(raw.get("closeDate")),
        remote_ad_id=_remote_ad_id(raw.get("remoteAdId")),
    )


def _features(raw: object) -> tuple[LegacyFeatureStatus, ...]:
    # `false` (the website has no features) and null both mean none (docs/upstreams.md).
    if not isinstance(raw, list):
        return ()
    features: list[LegacyFeatureStatus] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        name = item.get("feature")
        if not isinstance(name, str) or not name:
            log.info("skipping a legacy feature without a name")
            continue
        feature = LegacyFeatureStatus(feature=name, **_status_fields(item))
        if not feature.known:
            note_unknown("legacy.feature", name)
        features.append(feature)
    return tuple(features)


def _portal_status(raw: object) -> LegacyPortalStatus | None:
    if not isinstance(raw, dict):
        return None
    name = raw.get("portal")
    raw_portal = name if isinstance(name, str) else ""
    portal = LEGACY_PORTALS.get(raw_portal.strip().lower())
    if portal is None:
        note_unknown("legacy.portal", raw_portal)
    return LegacyPortalStatus(
        raw_portal=raw_portal,
        portal=portal,
        publish=_publish(raw.get("publish")),
        features=_features(raw.get("features")),
    )


def parse_ad(user_id: int, raw: object) -> LegacyAdStatus | None:
    """One entry of `data`; None when it names no usable adId."""
    if not isinstance(raw, dict):
        return None
    ad_id = _id(raw.get("adId"))
    if ad_id is None:
        log.info("skipping a legacy status entry without a usable adId")
        return None
    portals_raw = raw.get("portals")
    if isinstance(portals_raw, dict):
        portals_raw = list(portals_raw.values())
    portals = tuple(
        status
        for status in map(_portal_status, portals_raw if isinstance(portals_raw, list) else ())
        if status is not None
    )
    return LegacyAdStatus(user_id=user_id, ad_id=ad_id, portals=portals)


# Legacy is re-read on every request and mostly answers what it answered the last time: an
# entry byte-for-byte like one parsed lately reuses that parse (the domain objects are
# immutable). Sized for the largest request (1000 ads) with room to spare; ~5 MB.
_PARSED: Final[LRUCache[tuple[int, bytes], LegacyAdStatus | None]] = LRUCache(maxsize=4096)


def _parse_ad_cached(user_id: int, raw: object) -> LegacyAdStatus | None:
    """`parse_ad`, served from `_PARSED` when this exact entry was parsed before."""
    try:
        key = (user_id, orjson.dumps(raw))
    except TypeError:  # not plain JSON data (never from the wire)
        return parse_ad(user_id, raw)
    try:
        ad = _PARSED[key]
    except KeyError:
        ad = parse_ad(user_id, raw)
        # orjson's bytes keep the whole buffer it wrote into (~4.5 KB for a ~1 KB entry):
        # the key kept is a copy of its own size.
        _PARSED[(user_id, bytes(memoryview(key[1])))] = ad
        return ad
    # A reused parse still counts the values the domain lacks, as a fresh one does.
    for portal in ad.portals if ad is not None else ():
        if portal.portal is None:
            note_unknown("legacy.portal", portal.raw_portal)
        for feature in portal.features:
            if not feature.known:
                note_unknown("legacy.feature", feature.feature)
    return ad


def _ads(user_id: int, data: object) -> tuple[list[LegacyAdStatus], int]:
    """Parsed ads of `data` and how many entries it held (for the short-page test)."""
    entries: Iterable[object]
    if isinstance(data, list):
        entries = data
    elif isinstance(data, dict):
        # One ad as an object, or ads keyed by id: both seen on loosely typed endpoints.
        entries = [data] if "adId" in data else list(data.values())
    else:
        entries = []
    entries = list(entries)
    parsed = [ad for ad in map(_parse_ad_cached, repeat(user_id), entries) if ad is not None]
    return parsed, len(entries)


def _error_text(item: object) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        code, message = item.get("code"), item.get("message")
        if message is not None:
            return f"{code}: {message}" if code is not None else str(message)
    try:
        return orjson.dumps(item).decode()
    except TypeError:
        return repr(item)


def _error_code(item: object) -> int | None:
    return _int(item.get("code")) if isinstance(item, dict) else None


class _MissingAds(Exception):
    """`result:false` whose every error names an ad of the request that was not found."""

    def __init__(self, error: UpstreamError, ad_ids: frozenset[int]) -> None:
        super().__init__(error.message)
        self.error = error
        self.ad_ids = ad_ids


def _missing_ad(item: object, asked: Collection[int]) -> int | None:
    """The ad an error entry reports as not found, when it is one of `asked`."""
    if _error_code(item) not in (None, 404):
        return None
    ad_id = _id(item.get("adId")) if isinstance(item, dict) else None
    if ad_id is None:
        text = _error_text(item)
        match = _NAMED_AD.search(text)
        if match is None or "not found" not in text.lower():
            return None
        ad_id = int(match[1])
    return ad_id if ad_id in asked else None


def _envelope(body: Any, endpoint: str, asked: Collection[int] = ()) -> tuple[object, list[object]]:
    """`(data, errors)` of a successful envelope; a refusal raises the matching error, or
    `_MissingAds` when all it says is that some of the `asked` ads do not exist."""
    label = f"{UPSTREAM} {endpoint}"
    if not isinstance(body, dict):
        raise UpstreamUnavailable(f"{label}: malformed response (no envelope)", upstream=UPSTREAM)
    errors = body.get("errors")
    error_items: list[object] = (
        errors if isinstance(errors, list) else ([] if errors in (None, False) else [errors])
    )
    if "result" not in body:
        raise UpstreamUnavailable(f"{label}: malformed response (no result)", upstream=UPSTREAM)
    if not _flag(body.get("result")):
        log.debug("%s: result false: %s", label, "; ".join(map(_error_text, error_items)))
        refusal = _refusal(label, [_error_code(item) for item in error_items])
        named = [_missing_ad(item, asked) for item in error_items]
        if named and None not in named:
            raise _MissingAds(refusal, frozenset(ad_id for ad_id in named if ad_id is not None))
        raise refusal
    if error_items:
        log.debug("%s: errors: %s", label, "; ".join(map(_error_text, error_items)))
    return body.get("data"), error_items


def _refusal(label: str, codes: list[int | None]) -> UpstreamError:
    """The error for `result:false` with a 2xx status, chosen from the `errors` codes."""
    message = f"{label}: the upstream refused the request (result false)"
    # A server error or a rate limit says more about the call than any ad it names as not
    # found, and passes; then a refusal of the request itself. Only when all it reports is
    # "not found" is the call's answer NOT_FOUND: with another error beside it, ads that
    # exist would be reported missing.
    if any(code is not None and (code >= 500 or code == 429) for code in codes):
        return UpstreamUnavailable(message, upstream=UPSTREAM, status=429 if 429 in codes else None)
    status = next(
        (code for code in codes if code is not None and 400 <= code < 500 and code != 404), None
    )
    if status is None and 404 in codes:
        return UpstreamNotFound(message, upstream=UPSTREAM, status=404)
    return UpstreamRejected(message, upstream=UPSTREAM, status=status)


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{what} must be a positive integer")
    return value


def _chunks(values: Sequence[int], size: int) -> list[Sequence[int]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


# --- the client -----------------------------------------------------------------------


class LegacyClient:
    """Reads ad statuses from the legacy API.

    One instance per process over one `Pool` (owned by the caller).

        client = LegacyClient(session, legacy_url, api_key, timeout_s=5.0, max_batch=100)
        batch = await client.ads_status(12311, [659593, 659594])
    """

    def __init__(
        self,
        session: Pool,
        base_url: str,
        api_key: str | SecretStr,
        timeout_s: float,
        max_batch: int,
        *,
        guard: UpstreamGuard | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self._session = session
        self._guard = guard
        self._retry_policy = retry_policy or RetryPolicy()
        self._base = str(yarl.URL(base_url.rstrip("/")))
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self._timeout_s = timeout_s
        self._max_batch = max(1, min(max_batch, MAX_ITEMS_PER_PAGE))

    def __repr__(self) -> str:
        return f"LegacyClient(base_url={self._base!r}, max_batch={self._max_batch})"

    @property
    def scope(self) -> str:
        """Who this client reads as: a digest of the base URL and the key (never the key).

        The legacy API answers every caller alike through one key, so this, not the caller,
        is what an answer shared across requests or replicas must be scoped by."""
        material = f"{self._base}\n{self._api_key.get_secret_value()}".encode()
        return hashlib.sha256(material).hexdigest()[:16]

    def _headers(self) -> dict[str, str]:
        return {"Authentication": self._api_key.get_secret_value()}

    def _deadline(self, force: bool) -> Deadline:
        return Deadline.after(self._timeout_s * (FORCE_TIMEOUT_FACTOR if force else 1.0))

    async def ad_status(self, user_id: int, ad_id: int, *, force: bool = False) -> LegacyAdStatus:
        """Status of one ad; `UpstreamNotFound` when the upstream does not know it.

        Without `force` this is `GET /status/{userId}/{adId}`. With `force` it is a one-ad
        `POST /status/`, the only documented way to pass `force`.
        """
        user_id = _positive_int(user_id, "userId")
        ad_id = _positive_int(ad_id, "adId")
        if force:
            found = await self._chunk(user_id, [ad_id], force=True)
            endpoint = "status_post"
        else:
            url = yarl.URL(f"{self._base}/status/{user_id}/{ad_id}", encoded=True)
            body = await request(
                self._session,
                "GET",
                url,
                upstream=UPSTREAM,
                endpoint="status_get",
                deadline=self._deadline(False),
                headers=self._headers(),
                retry=True,
                guard=self._guard,
                policy=self._retry_policy,
            )
            data, _ = _envelope(body, "status_get")
            ads, _ = _ads(user_id, data)
            found = {ad.ad_id: ad for ad in ads}
            endpoint = "status_get"
        if ad_id in found:
            return found[ad_id]
        raise UpstreamNotFound(
            f"{UPSTREAM} {endpoint}: ad {ad_id} of user {user_id} not found", upstream=UPSTREAM
        )

    async def ads_status(
        self, user_id: int, ad_ids: Sequence[int], *, force: bool = False
    ) -> LegacyBatch:
        """Statuses of many ads of one user; ads the upstream does not report are `missing`.

        Duplicates are dropped; ids go in chunks of at most `max_batch` (and 1000), sent in
        parallel; a chunk whose ads all come back on its first page costs exactly one call.
        A chunk refused only for naming missing ads is asked once more without them; any
        other refusal fails the whole call, and so does a second one (`UpstreamUnavailable`).
        """
        user_id = _positive_int(user_id, "userId")
        unique = list(dict.fromkeys(_positive_int(ad_id, "adId") for ad_id in ad_ids))
        if not unique:
            return LegacyBatch(user_id=user_id)
        chunks = _chunks(unique, self._max_batch)
        guard = self._guard
        # No span where nothing records one: a no-op span costs ~6 µs of a small request.
        batch_span: AbstractContextManager[object] = (
            guard.tracer.start_as_current_span(
                "legacy batch",
                attributes={"gateway.batch.ads": len(unique), "gateway.batch.chunks": len(chunks)},
            )
            if guard is not None and guard.traced
            else nullcontext()
        )
        with batch_span:
            # One chunk, the usual case, is awaited here: a task would cost two turns of
            # the event loop, each behind every other request's work.
            results: list[dict[int, LegacyAdStatus] | BaseException] = (
                [await self._chunk(user_id, chunks[0], force=force)]
                if len(chunks) == 1
                else await asyncio.gather(
                    *(self._chunk(user_id, chunk, force=force) for chunk in chunks),
                    return_exceptions=True,
                )
            )
        found: dict[int, LegacyAdStatus] = {}
        for result in results:
            if isinstance(result, BaseException):
                raise result
            found.update(result)
        return LegacyBatch(
            user_id=user_id,
            found={ad_id: found[ad_id] for ad_id in unique if ad_id in found},
            missing=frozenset(ad_id for ad_id in unique if ad_id not in found),
        )

    async def _chunk(
        self, user_id: int, ad_ids: Sequence[int], *, force: bool
    ) -> dict[int, LegacyAdStatus]:
        """One chunk; ads the upstream refused as missing are left out of the answer."""
        deadline = self._deadline(force)
        try:
            return await self._pages(user_id, ad_ids, force=force, deadline=deadline)
        except _MissingAds as missing:
            rest = [ad_id for ad_id in ad_ids if ad_id not in missing.ad_ids]
            log.info(
                "%s status_post: user %d has no ads %s; asking once more for the other %d",
                UPSTREAM,
                user_id,
                sorted(missing.ad_ids),
                len(rest),
            )
        if not rest:
            return {}
        try:
            return await self._pages(user_id, rest, force=force, deadline=deadline)
        except _MissingAds:
            # Bounded: one extra call per chunk. The other ads exist but went unanswered,
            # so this is the upstream failing, not those ads missing.
            raise UpstreamUnavailable(
                f"{UPSTREAM} status_post: refused again after leaving out the missing ads",
                upstream=UPSTREAM,
            ) from None

    async def _pages(
        self, user_id: int, ad_ids: Sequence[int], *, force: bool, deadline: Deadline
    ) -> dict[int, LegacyAdStatus]:
        """One chunk, paged until every id is seen, a page is short, or a page adds nothing."""
        url = yarl.URL(f"{self._base}/status/", encoded=True)
        wanted = set(ad_ids)
        per_page = min(len(ad_ids), MAX_ITEMS_PER_PAGE)
        found: dict[int, LegacyAdStatus] = {}
        if self._guard is not None:
            self._guard.observer.batch(UPSTREAM, len(ad_ids))
        for page in range(1, _MAX_PAGES_PER_CHUNK + 1):
            body = await request(
                self._session,
                "POST",
                url,
                upstream=UPSTREAM,
                endpoint="status_post",
                deadline=deadline,
                headers=self._headers(),
                json={
                    "userId": user_id,
                    "adId": list(ad_ids),
                    "force": force,
                    "page": page,
                    "itemsPerPage": per_page,
                },
                retry=True,
                guard=self._guard,
                policy=self._retry_policy,
            )
            data, _ = _envelope(body, "status_post", wanted)
            ads, count = _ads(user_id, data)
            new = [ad for ad in ads if ad.ad_id in wanted and ad.ad_id not in found]
            found.update((ad.ad_id, ad) for ad in new)
            if wanted <= found.keys() or count < per_page or not new:
                break
        return found
