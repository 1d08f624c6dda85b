"""Which classifieds a caller's tenant may see, for the streams that fan out webhook events.

V3's callbacks carry no tenant, and the event bus delivers every event to every
subscriber that asked for its classified. Before a subscriber gets an event, this asks
V3 — with the subscriber's own credentials, through the tenant-keyed page cache — for the
classified's latest status: a classified V3 answers for is the tenant's; one it refuses
(not found, rejected, unauthenticated) is not, and its events are withheld. Answers are
remembered per subscriber (bounded); an upstream that is unavailable withholds the event
without remembering, so the check fails closed and is asked again next time.
"""

from __future__ import annotations

from collections.abc import Callable

from cachetools import LRUCache

from gateway.domain.errors import GatewayError, NotFound, Unauthenticated, UpstreamRejected
from gateway.domain.models import ListingRef
from gateway.service.listings import ListingRequest
from gateway.service.plan import ClassifiedSelection, ListingSelection

_LATEST = ListingSelection(classified=ClassifiedSelection(latest=True))
_NOT_YOURS = (NotFound, UpstreamRejected, Unauthenticated)


class Visibility:
    """One subscriber's view: `await visibility.allows(classified_id)`."""

    def __init__(self, scope: Callable[[], ListingRequest], max_entries: int = 4096) -> None:
        self._scope = scope
        self._known: LRUCache[str, bool] = LRUCache(maxsize=max_entries)

    async def allows(self, classified_id: str) -> bool:
        known = self._known.get(classified_id)
        if known is not None:
            return known
        [data] = await self._scope().listings([ListingRef(classified_id=classified_id)], _LATEST)
        latest = None if data.classified is None else data.classified.latest
        if isinstance(latest, _NOT_YOURS):
            self._known[classified_id] = False
            return False
        if isinstance(latest, GatewayError):
            return False  # V3 could not say: withhold, ask again next time
        self._known[classified_id] = True
        return True
