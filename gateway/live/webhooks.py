"""Live status from V3's webhook: the subscription, and what an accepted callback does.

`Webhooks` is service layer, shared by the edges: the GraphQL mutations subscribe and
unsubscribe through it (for the caller's agency), and the HTTP receiver hands it each
callback body. An accepted status first drops that classified's cached V3 pages for every
tenant, then is published on the event bus (and noted by the change feed, which logs it as a
listing change when it moved a portal's state); a repeated delivery of one status (within a
bounded window of recent ids) is accepted again but published once.

The receiver's URL holds a secret path segment. It never leaves the gateway: every answer
that shows the URL masks it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Protocol
from urllib.parse import urlsplit

import orjson
from cachetools import FIFOCache

from gateway.domain import ids
from gateway.domain.errors import InvalidInput
from gateway.domain.models import Caller, ClassifiedStatusCode, ClassifiedStatusEvent
from gateway.live.bus import EventBus
from gateway.upstreams.v3 import parse_callback

log = logging.getLogger(__name__)

RECEIVER_PREFIX = "/webhooks/v3"
MASK = "***"


class WebhookClient(Protocol):
    """What `Webhooks` needs of the Classifieds V3 client."""

    async def subscribe_webhook(
        self, caller: Caller, url: str, statuses: Sequence[str] | None = None
    ) -> None: ...

    async def unsubscribe_webhook(self, caller: Caller) -> None: ...


class ChangeSink(Protocol):
    """What `Webhooks` needs of the change feed: each published event, to log what it changed."""

    def note_v3(self, event: ClassifiedStatusEvent) -> None: ...


class CacheDropper(Protocol):
    """What `Webhooks` needs of the listing service: forgetting a classified's pages."""

    def drop_classified(self, classified_id: str) -> int: ...


@dataclass(frozen=True, slots=True)
class WebhookRegistration:
    """A subscription as shown to callers: the URL with this gateway's secret masked."""

    url: str
    statuses: tuple[ClassifiedStatusCode, ...] | None
    receiver: bool  # the URL is this gateway's own receiver


@dataclass(slots=True)
class CallbackStats:
    """What became of the callbacks received, for metrics and tests."""

    published: int = 0
    duplicate: int = 0


class Delivery(Enum):
    """What became of one callback."""

    PUBLISHED = "published"
    DUPLICATE = "duplicate"


class Webhooks:
    """The webhook subscription at V3 and the handling of its callbacks."""

    def __init__(
        self,
        *,
        v3: WebhookClient,
        service: CacheDropper,
        events: EventBus,
        public_url: str | None,
        secret: str,
        dedup_window: int = 10_000,
        changes: ChangeSink | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not secret:
            raise ValueError("the webhook secret must not be empty")
        self._v3 = v3
        self._service = service
        self._events = events
        self._changes = changes
        self._public_url = public_url.rstrip("/") if public_url else None
        self._secret = secret
        self._clock = clock
        # Keys of recently published statuses; the oldest fall out first.
        self._recent: FIFOCache[str, None] = FIFOCache(maxsize=dedup_window)
        self.stats = CallbackStats()

    @property
    def receiver_url(self) -> str | None:
        """Where V3 should post callbacks (it appends `/classifieds/{id}/statuses`)."""
        if self._public_url is None:
            return None
        return f"{self._public_url}{RECEIVER_PREFIX}/{self._secret}"

    def mask(self, url: str) -> str:
        """`url` with this gateway's secret replaced by `***`."""
        return url.replace(self._secret, MASK)

    def secret_matches(self, candidate: str) -> bool:
        """Constant-time: the time taken says nothing about how much of the secret matched."""
        return hmac.compare_digest(candidate.encode(), self._secret.encode())

    # --- the subscription at V3 ---------------------------------------------------------

    def _target(self, url: str | None) -> str:
        if url is None:
            if self.receiver_url is None:
                raise InvalidInput(
                    "no url given and GATEWAY_PUBLIC_URL is not set: "
                    "the gateway does not know how V3 reaches its receiver"
                )
            return self.receiver_url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or " " in url:
            raise InvalidInput("url must be an absolute http(s) URL")
        return url

    async def subscribe(
        self,
        caller: Caller,
        statuses: Sequence[ClassifiedStatusCode] | None = None,
        url: str | None = None,
    ) -> WebhookRegistration:
        """Subscribe `url` (default: this gateway's receiver) for the caller's agency."""
        target = self._target(url)
        wanted: tuple[ClassifiedStatusCode, ...] | None = None
        if statuses is not None:
            if not statuses:
                raise InvalidInput("statuses must not be empty; leave it out for every status")
            if ClassifiedStatusCode.UNKNOWN in statuses:
                raise InvalidInput("UNKNOWN is not a status V3 can send")
            wanted = tuple(dict.fromkeys(statuses))
        await self._v3.subscribe_webhook(
            caller, target, None if wanted is None else [s.value for s in wanted]
        )
        return WebhookRegistration(
            url=self.mask(target), statuses=wanted, receiver=target == self.receiver_url
        )

    async def subscribe_at_start(self) -> WebhookRegistration:
        """Subscribe this gateway's receiver for the configured agency (every status)."""
        return await self.subscribe(Caller())

    async def unsubscribe(self, caller: Caller, url: str | None = None) -> bool:
        """Remove the caller's agency's subscription (V3 keeps one per client)."""
        self._target(url)
        await self._v3.unsubscribe_webhook(caller)
        return True

    # --- callbacks ----------------------------------------------------------------------

    def accept(self, classified_id: str, body: bytes) -> Delivery:
        """Handle one callback body for `classified_id`; `InvalidInput` when it is not a status.

        Never calls an upstream: the body carries the news.
        """
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidInput("the body is not valid JSON") from None
        item = parse_callback(payload)
        if item.classified_id is not None and item.classified_id != classified_id:
            # The path names the classified (docs/upstreams.md): a body that says otherwise
            # is odd, not a reason to lose the status.
            log.warning(
                "a V3 callback for classified %s names classified %s in its body; the "
                "path's is used",
                classified_id,
                item.classified_id,
            )
        key = item.status_id or ids.derived_status_id(
            classified_id, item.status_date, item.raw_status
        )
        dedup_key = f"{classified_id}\x00{key}"
        if dedup_key in self._recent:
            self.stats.duplicate += 1
            return Delivery.DUPLICATE
        self._recent[dedup_key] = None
        # Dropped before publishing, so a subscriber that reads the listing at once sees it.
        self._service.drop_classified(classified_id)
        event = ClassifiedStatusEvent(
            classified_id=classified_id, status=item, received_at=self._clock()
        )
        self._events.publish(event)
        if self._changes is not None:
            self._changes.note_v3(event)  # logged as a listing change if it moved a portal
        self.stats.published += 1
        return Delivery.PUBLISHED
