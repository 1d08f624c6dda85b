"""Client for AVIV Classifieds Management V3: status histories and the webhook subscription.

Builds the exact wire requests of docs/upstreams.md ("Classifieds V3") and parses answers into
`gateway.domain.models` with the lenient rules told there. URLs are assembled from
percent-encoded parts and handed to the HTTP client as already encoded, so an id can never
address another path and `nextToken` reaches V3 byte for byte. Depends on `_http`
(transport and error translation), `v3_auth` (credentials), `trace` and the domain models.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlsplit

import yarl

from gateway.domain.errors import InvalidInput, UpstreamName, UpstreamRejected, UpstreamUnavailable
from gateway.domain.models import (
    V3_PORTALS,
    Caller,
    ClassifiedStatusCode,
    ClassifiedStatusItem,
    MediaStatusCode,
    MediaStatusItem,
    Portal,
    StatusPage,
)
from gateway.domain.records import frozen_builder
from gateway.upstreams._http import Deadline, RetryPolicy, request
from gateway.upstreams.guard import UpstreamGuard
from gateway.upstreams.trace import child_traceparent
from gateway.upstreams.unknowns import note_unknown
from gateway.upstreams.v3_auth import V3Credentials
from gateway.upstreams.wire import Pool

__all__ = [
    "ClassifiedsV3Client",
    "parse_classified_status",
    "parse_media_status",
    "parse_rfc3339",
]

log = logging.getLogger("gateway.upstreams")
T = TypeVar("T")

UPSTREAM: Final[UpstreamName] = "classifieds-v3"

# Each code with its value, the one string every item holds (an enum's `.value` is a
# descriptor call, ~0.3 us an item).
_CLASSIFIED_STATUSES: Final = {c.value: (c, c.value) for c in ClassifiedStatusCode}
_MEDIA_STATUSES: Final = {c.value: (c, c.value) for c in MediaStatusCode}
_UNKNOWN_CLASSIFIED: Final = (ClassifiedStatusCode.UNKNOWN, "")
_UNKNOWN_MEDIA: Final = (MediaStatusCode.UNKNOWN, "")
_PORTALS: Final = {p.value: p for p in V3_PORTALS}
_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?P<fraction>\.\d+)?"
    r"(?P<zone>[Zz]|[+-]\d{2}:?\d{2})?$"
)


_fromisoformat = datetime.fromisoformat
# Every field, in declaration order (gateway.domain.records).
_classified_status_item = frozen_builder(ClassifiedStatusItem)
_media_status_item = frozen_builder(MediaStatusItem)
# Text that quote(..., safe="") leaves as it is (RFC 3986's unreserved characters).
_UNRESERVED: Final = re.compile(r"[A-Za-z0-9_.~-]+").fullmatch
# Cached pages hold many items with the same message, sub-status, classified and customer:
# one string for each halves an item's memory (decoded JSON makes a new one every time).
_intern = sys.intern
# Portal lists already read (as V3 sent them) and what they came to; bounded.
_KNOWN_PORTAL_LISTS: dict[tuple[Any, ...], tuple[tuple[Portal, ...], tuple[str, ...]]] = {}
_MAX_PORTAL_LISTS: Final = 1024


class _Malformed(Exception):
    """An item lacks a required field; the whole page is then malformed."""


# --- URL building ---------------------------------------------------------------------


def _segment(value: str) -> str:
    """One path segment, percent-encoded so it can never become `/`, `?`, `#` or a dot-segment."""
    # Ids are nearly always unreserved characters only, which quote() returns as they are.
    encoded = value if _UNRESERVED(value) else quote(value, safe="")
    if encoded in {".", ".."}:
        # quote() leaves dots alone; as a whole segment they would climb the path.
        encoded = encoded.replace(".", "%2E")
    return encoded


def _query(params: Sequence[tuple[str, str]]) -> str:
    # Every byte outside the unreserved set is percent-encoded, so `+`, `/`, `=` and any
    # odd byte of an opaque nextToken arrive exactly as V3 sent them.
    return "&".join(f"{_quoted(key)}={_quoted(value)}" for key, value in params)


def _quoted(value: str) -> str:
    return value if _UNRESERVED(value) else quote(value, safe="")


def _encode_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string")
    try:
        return _segment(value)
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid text") from None


# --- parsing --------------------------------------------------------------------------


def parse_rfc3339(value: object) -> datetime | None:
    """An aware UTC datetime from an RFC 3339 string; None if it is not one.

    More than six fractional digits are truncated; a value without an offset is taken as UTC
    (V3 documents `Z`).
    """
    # The common shapes (`2024-01-31T10:20:30[.123]Z`, or with `±HH:MM`) go straight to the
    # standard parser, which reads them exactly as the general path would (a property test
    # holds the two together); anything it refuses, and every other shape, takes that path.
    if type(value) is str:
        size = len(value)
        if size >= 20 and value[4] == "-" and value[10] == "T" and value[16] == ":":
            if value[-1] == "Z":
                if size == 20 or (value[19] == "." and _digits(value[20:-1])):
                    try:
                        return _fromisoformat(value)
                    except ValueError:
                        pass
            elif (
                size >= 25
                and value[-3] == ":"
                and value[-6] in "+-"
                and (size == 25 or (value[19] == "." and _digits(value[20:-6])))
            ):
                try:
                    return _to_utc(_fromisoformat(value))
                except ValueError:
                    pass
    return _parse_rfc3339_general(value)


def _digits(text: str) -> bool:
    return text.isdigit() and text.isascii()


def _to_utc(parsed: datetime) -> datetime | None:
    try:
        # Year 1 with a positive offset falls before datetime.min once in UTC.
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _parse_rfc3339_general(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value.strip())
    if match is None:
        return None
    fraction = (match["fraction"] or "")[:7]
    zone = match["zone"] or "Z"
    if zone in {"Z", "z"}:
        zone = "+00:00"
    elif ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    try:
        parsed = datetime.fromisoformat(f"{match['date']}T{match['time']}{fraction}{zone}")
    except (ValueError, OverflowError):
        return None
    return _to_utc(parsed)


def _text(value: object) -> str | None:
    """An optional string field; numbers are accepted as their text, anything else is None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _shared(value: object) -> str | None:
    """An optional id that repeats across a history's items, held once in memory; an empty
    one is no id."""
    text = _text(value)
    return _intern(text) if text else None


def _text_once(value: object) -> str | None:
    """`_text`, held once in memory."""
    text = _text(value)
    return None if text is None else _intern(text)


def _required(item: dict[str, Any]) -> tuple[str, str, datetime]:
    status, message = item.get("status"), item.get("message")
    if not isinstance(status, str) or not status or not isinstance(message, str):
        raise _Malformed("status and message are required")
    status_date = parse_rfc3339(item.get("statusDate"))
    if status_date is None:
        raise _Malformed("statusDate is required and must be RFC 3339")
    return status, message, status_date


def _revision(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and value >= 1:
        return value
    return None


def _portal(code: str, kind: str) -> Portal | None:
    portal = _PORTALS.get(code)
    if portal is None:
        note_unknown(kind, code)
    return portal


def parse_classified_status(item: object) -> ClassifiedStatusItem:
    """One V3 `ClassifiedStatus` (public or internal variant); raises `_Malformed`."""
    if not isinstance(item, dict):
        raise _Malformed("an item is not an object")
    raw_status, message, status_date = _required(item)
    status, value = _CLASSIFIED_STATUSES.get(raw_status, _UNKNOWN_CLASSIFIED)
    if status is ClassifiedStatusCode.UNKNOWN:
        value = raw_status
        note_unknown("v3.classified_status", raw_status)
    get = item.get

    raw_portals = get("portals")
    portals: tuple[Portal, ...] = ()
    unknown: tuple[str, ...] = ()
    if raw_portals:
        if isinstance(raw_portals, str):  # tolerate a lone code where a list belongs
            raw_portals = [raw_portals]
        if isinstance(raw_portals, list):
            portals, unknown = _portals(raw_portals)

    sub_status = _text_once(get("subStatus"))
    # The vendor's table pairs RECEIVED with RECEIVING_PATCH, a typo (docs/upstreams.md).
    if sub_status == "RECEIVING_PATCH" and status is ClassifiedStatusCode.RECEIVED:
        sub_status = "RECEIVED_PATCH"

    revision = get("revision")
    return _classified_status_item(
        status,
        value,
        _intern(message),
        status_date,
        portals,
        unknown,
        sub_status,
        _text(get("subStatusDetails")),
        _text(get("statusId")) or None,
        _shared(get("classifiedId")),
        _shared(get("customerId")),
        None if revision is None else _revision(revision),
    )


def _portals(codes: list[Any]) -> tuple[tuple[Portal, ...], tuple[str, ...]]:
    """Known portals in first-seen order without repeats, and the codes the enum lacks."""
    try:
        return _KNOWN_PORTAL_LISTS[tuple(codes)]
    except (KeyError, TypeError):  # not seen yet, or an unhashable entry
        pass
    portals, unknown = _read_portals(codes)
    if not unknown:
        # A page repeats a handful of portal lists; unknown codes are counted every time,
        # so only lists without one are remembered.
        if len(_KNOWN_PORTAL_LISTS) >= _MAX_PORTAL_LISTS:
            _KNOWN_PORTAL_LISTS.clear()
        with contextlib.suppress(TypeError):  # an unhashable entry: not remembered
            _KNOWN_PORTAL_LISTS[tuple(codes)] = (portals, unknown)
    return portals, unknown


def _read_portals(codes: list[Any]) -> tuple[tuple[Portal, ...], tuple[str, ...]]:
    portals: list[Portal] = []
    unknown: list[str] = []
    for code in codes:
        if not isinstance(code, str) or not code:
            continue
        portal = _PORTALS.get(code)
        if portal is not None:
            if portal not in portals:
                portals.append(portal)
        else:
            note_unknown("v3.portal", code)
            if code not in unknown:
                unknown.append(code)
    return tuple(portals), tuple(unknown)


def parse_callback(body: object) -> ClassifiedStatusItem:
    """The `ClassifiedStatus` of a webhook callback body (docs/upstreams.md), leniently parsed.

    Raises `InvalidInput` for a body that is not a status: the sender, not V3, is at fault.
    """
    try:
        return parse_classified_status(body)
    except _Malformed as exc:
        raise InvalidInput(f"the body is not a classified status: {exc}") from None


def parse_media_status(item: object) -> MediaStatusItem:
    """One V3 `MediaStatus` (public or internal variant); raises `_Malformed`."""
    if not isinstance(item, dict):
        raise _Malformed("an item is not an object")
    raw_status, message, status_date = _required(item)
    status, value = _MEDIA_STATUSES.get(raw_status, _UNKNOWN_MEDIA)
    if status is MediaStatusCode.UNKNOWN:
        value = raw_status
        note_unknown("v3.media_status", raw_status)
    raw_portal = item.get("portal")
    portal: Portal | None = None
    unknown_portal: str | None = None
    if isinstance(raw_portal, str) and raw_portal:
        portal = _portal(raw_portal, "v3.media_portal")
        unknown_portal = raw_portal if portal is None else None
    return _media_status_item(
        status,
        value,
        _intern(message),
        status_date,
        portal,
        unknown_portal,
        _text_once(item.get("subStatus")),
        _text(item.get("subStatusDetails")),
        _text(item.get("statusId")) or None,
        _shared(item.get("mediaId")),
        _shared(item.get("classifiedId")),
        _shared(item.get("customerId")),
    )


# --- the client -----------------------------------------------------------------------


class ClassifiedsV3Client:
    """Reads V3 status histories and manages the webhook subscription.

    One instance per process, sharing one `Pool` (owned by the caller).
    Every call carries `User-Agent`, `Authorization: Bearer ...` and `traceparent`; reads
    are retried per `_http.request`; a 401 renews the credentials once and retries once.

        client = ClassifiedsV3Client(session, v3_url, credentials, user_agent, 5.0)
        page = await client.classified_statuses(Caller(), "0b6c...", limit=100)
    """

    def __init__(
        self,
        session: Pool,
        base_url: str,
        credentials: V3Credentials,
        user_agent: str,
        timeout_s: float,
        *,
        guard: UpstreamGuard | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self._session = session
        self._guard = guard
        self._retry_policy = retry_policy or RetryPolicy()
        # Kept as text: paths are appended already percent-encoded.
        self._base = str(yarl.URL(base_url.rstrip("/")))
        self._credentials = credentials
        self._user_agent = user_agent
        self._timeout_s = timeout_s

    @property
    def credentials(self) -> V3Credentials:
        return self._credentials

    def tenant(self, caller: Caller) -> str:
        """The cache scope of `caller`'s V3 data (see `V3Credentials.tenant`)."""
        return self._credentials.tenant(caller)

    def __repr__(self) -> str:
        return f"ClassifiedsV3Client(base_url={self._base!r}, credentials={self._credentials!r})"

    async def classified_statuses(
        self,
        caller: Caller,
        classified_id: str,
        *,
        latest: bool = False,
        current: bool = False,
        statuses: Sequence[str] = (),
        portals: Sequence[str] = (),
        limit: int | None = None,
        next_token: str | None = None,
    ) -> StatusPage[ClassifiedStatusItem]:
        """One page of a classified's status history (`GET /classifieds/{id}/statuses`).

        `latest` sends `filter=latest`, `current` sends `current=true`; `statuses` and
        `portals` are sent as repeated `status`/`portal` keys; `next_token` is the previous
        page's token, untouched. Raises `InvalidInput` before any call for an empty id.
        """
        path = f"/classifieds/{_encode_id(classified_id, 'classifiedId')}/statuses"
        params: list[tuple[str, str]] = []
        if latest:
            params.append(("filter", "latest"))
        if current:
            params.append(("current", "true"))
        params += [("status", _param(s, "status")) for s in _many(statuses, "statuses")]
        params += [("portal", _param(p, "portal")) for p in _many(portals, "portals")]
        params += _paging(limit, next_token)
        body = await self._get(caller, "classified_statuses", path, params)
        return _page(body, parse_classified_status, "classified_statuses")

    async def media_statuses(
        self,
        caller: Caller,
        classified_id: str,
        media_id: str,
        *,
        limit: int | None = None,
        next_token: str | None = None,
    ) -> StatusPage[MediaStatusItem]:
        """One page of a media's status history (`GET /classifieds/{id}/media/{mediaId}/statuses`)."""
        path = (
            f"/classifieds/{_encode_id(classified_id, 'classifiedId')}"
            f"/media/{_encode_id(media_id, 'mediaId')}/statuses"
        )
        body = await self._get(caller, "media_statuses", path, _paging(limit, next_token))
        return _page(body, parse_media_status, "media_statuses")

    async def subscribe_webhook(
        self, caller: Caller, url: str, statuses: Sequence[str] | None = None
    ) -> None:
        """Subscribe `url` to classified status callbacks (`PUT /webhooks`); replaces any earlier one."""
        if not _is_http_url(url):
            raise InvalidInput("the webhook url must be an absolute http(s) URL")
        payload: dict[str, object] = {"url": url}
        if statuses is not None:
            payload["statuses"] = [_param(s, "status") for s in _many(statuses, "statuses")]
        await self._call(caller, "PUT", "webhooks_put", "/webhooks", (), payload, retry=False)

    async def unsubscribe_webhook(self, caller: Caller) -> None:
        """Remove the subscription (`DELETE /webhooks`)."""
        await self._call(caller, "DELETE", "webhooks_delete", "/webhooks", (), None, retry=False)

    async def _get(
        self, caller: Caller, endpoint: str, path: str, params: Sequence[tuple[str, str]]
    ) -> Any:
        return await self._call(caller, "GET", endpoint, path, params, None, retry=True)

    async def _call(
        self,
        caller: Caller,
        method: str,
        endpoint: str,
        path: str,
        params: Sequence[tuple[str, str]],
        payload: object,
        *,
        retry: bool,
    ) -> Any:
        deadline = Deadline.after(self._timeout_s)
        query = _query(params)
        url = yarl.URL(f"{self._base}{path}{'?' + query if query else ''}", encoded=True)
        expect_json = method == "GET"

        async def send(authorization: str) -> Any:
            headers = {
                "User-Agent": self._user_agent,
                "Authorization": authorization,
                "traceparent": child_traceparent(caller.traceparent),
            }
            return await request(
                self._session,
                method,
                url,
                upstream=UPSTREAM,
                endpoint=endpoint,
                deadline=deadline,
                headers=headers,
                json=payload,
                retry=retry,
                expect_json=expect_json,
                guard=self._guard,
                policy=self._retry_policy,
            )

        authorization = await self._credentials.authorization(caller, deadline)
        try:
            return await send(authorization)
        except UpstreamRejected as exc:
            if exc.status != 401:
                raise
            renewed = await self._credentials.renew(caller, authorization, deadline)
            if renewed is None:
                raise
            log.info("%s %s: 401, retrying once with renewed credentials", UPSTREAM, endpoint)
        return await send(renewed)


def _many(values: Sequence[str] | str, what: str) -> Sequence[str]:
    if isinstance(values, str):  # a lone string would otherwise be split into characters
        raise InvalidInput(f"{what} must be a list of strings")
    return values


def _param(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"every {what} must be a non-empty string")
    return str(value)  # a StrEnum member becomes its plain value


def _paging(limit: int | None, next_token: str | None) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput("limit must be a positive integer")
        params.append(("limit", str(limit)))
    if next_token:
        if not isinstance(next_token, str):
            raise InvalidInput("nextToken must be a string")
        try:
            next_token.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput("nextToken is not valid text") from None
        params.append(("nextToken", next_token))
    return params


def _is_http_url(url: object) -> bool:
    if not isinstance(url, str) or any(ch.isspace() for ch in url):
        return False
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


def _page(body: Any, parse: Callable[[object], T], endpoint: str) -> StatusPage[T]:
    """A `StatusPage` from a decoded body; a page V3 should not have sent is `UpstreamUnavailable`."""
    label = f"{UPSTREAM} {endpoint}"
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise UpstreamUnavailable(f"{label}: malformed response (no items list)", upstream=UPSTREAM)
    try:
        items = tuple(parse(item) for item in body["items"])
    except _Malformed as exc:
        raise UpstreamUnavailable(
            f"{label}: malformed response ({exc})", upstream=UPSTREAM
        ) from exc
    token = body.get("nextToken")
    if token is not None and not isinstance(token, str):
        raise UpstreamUnavailable(
            f"{label}: malformed response (nextToken is not a string)", upstream=UPSTREAM
        )
    # An absent or empty token ends the history (docs/upstreams.md, "Status histories").
    return StatusPage(items=items, next_token=token or None)
