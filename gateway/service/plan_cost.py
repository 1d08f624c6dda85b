"""The upstream cost of a request, estimated from what it asks, before any upstream call.

In the service's own domain terms (`ListingRef`, `ListingSelection`), so every edge
(GraphQL, gRPC) can refuse a request that could make too many upstream calls. The estimate
is an upper bound of the reads `ListingRequest.listings` may plan, ignoring the cache:

- each distinct legacy ad costs its lookup (1), when the legacy view, the unified
  state or a refresh needs it;
- each distinct classified costs its V3 reads: a whole-history read (the unified state,
  a refresh, a keyset cursor, or two or more asks of one classified) counts its page cap
  (`MAX_HISTORY_PAGES`), and `latestStatus` and every `statuses` page 1 more (what a
  history cut at its cap cannot answer is read on its own); otherwise `latestStatus`
  counts 1 and every `statuses` page 1 (a page is at most 100 items, so `first:` counts by
  page);
- each media asked of a classified costs the same way: its whole history (latest status,
  a keyset cursor or two fresh pages) at the page cap, else 1 per page.

Several root fields of one request are priced together (`request_cost`), as
`ListingRequest.expect` plans them: a classified they ask of together is priced once, for
all they ask of it. A test checks the bound against the reads the simulator actually sees. `check_cost` is the
one refusal of a request over `GATEWAY_MAX_UPSTREAM_COST`, whichever edge it came in by.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.domain.cursors import KeysetCursor
from gateway.domain.errors import TooCostly
from gateway.domain.models import LegacyAdKey, ListingRef
from gateway.service.histories import MAX_HISTORY_PAGES
from gateway.service.plan import (
    ClassifiedSelection,
    ListingSelection,
    MediaSelection,
    PageArgs,
    asked_per_classified,
    reads_whole_history,
)


def _keyset(pages: Iterable[PageArgs]) -> bool:
    return any(isinstance(args.cursor, KeysetCursor) for args in pages)


def _fresh(pages: Iterable[PageArgs]) -> int:
    return sum(1 for args in pages if args.after is None)


def request_cost(
    asks: Sequence[tuple[Sequence[ListingRef], ListingSelection]], *, refresh: bool = False
) -> int:
    """Most upstream reads a request's root fields can make together, each `(refs,
    selection)`: a listing asked by several is planned once, for all they ask
    (`ListingRequest.expect`), and an ad is read once per request. Refreshes (mutations,
    run one after the other) each read anew: they add up."""
    if refresh or len(asks) == 1:
        return sum(read_cost(refs, selection, refresh=refresh) for refs, selection in asks)
    legacy = {
        ref.legacy
        for refs, selection in asks
        if selection.legacy or selection.unified
        for ref in refs
        if ref.legacy is not None
    }
    return len(legacy) + sum(
        classified_cost(asked.classified, unified=asked.unified, refresh=False)
        for asked in asked_per_classified(asks).values()
    )


def classified_cost(asked: ClassifiedSelection, *, unified: bool, refresh: bool) -> int:
    """Most V3 reads one classified's asks can make (its media included)."""
    if reads_whole_history(asked, unified=unified, refresh=refresh):
        cost = MAX_HISTORY_PAGES + int(asked.latest) + len(asked.pages)
    else:
        cost = int(asked.latest) + len(asked.pages)
    return cost + sum(media_cost(media) for media in asked.media)


def media_cost(asked: MediaSelection) -> int:
    """Most V3 reads the asks of one media can make."""
    if asked.latest or _keyset(asked.pages) or _fresh(asked.pages) >= 2:
        return MAX_HISTORY_PAGES + len(asked.pages)
    return len(asked.pages)


def read_cost(
    refs: Iterable[ListingRef], selection: ListingSelection, *, refresh: bool = False
) -> int:
    """Most upstream reads `ListingRequest.listings(refs, selection)` can make."""
    legacy: set[LegacyAdKey] = set()
    classifieds: set[str] = set()
    for ref in refs:
        if ref.legacy is not None and (selection.legacy or selection.unified or refresh):
            legacy.add(ref.legacy)
        if ref.classified_id is not None:
            classifieds.add(ref.classified_id)
    per_classified = classified_cost(
        selection.classified, unified=selection.unified, refresh=refresh
    )
    return len(legacy) + len(classifieds) * per_classified


def check_cost(cost: int, limit: int) -> None:
    """`TooCostly` when a request estimated at `cost` upstream reads exceeds `limit`."""
    if cost > limit:
        raise TooCostly(
            f"this request could make up to {cost} upstream reads; the limit is {limit}",
            cost=cost,
            limit=limit,
        )
