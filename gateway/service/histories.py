"""Status histories read whole, and pages cut from them.

A V3 history is read in pages of 100 until the upstream's nextToken runs out (or a
bound is reached, so a runaway history cannot hold a request forever). Upstream
order is not trusted, so items are kept newest first by statusDate. Any page can then
be cut from a history read whole, continuing with a keyset cursor (the date and id of
its last item) instead of an upstream token, so further pages cost no further read.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from cachetools import LRUCache

from gateway.domain.cursors import KeysetCursor, UpstreamCursor, encode_cursor
from gateway.domain.models import StatusPage, StatusSlice

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100  # the largest page the gateway asks of V3; histories are read in these
# A history longer than this many pages is cut short rather than read without bound.
MAX_HISTORY_PAGES = 50


class Dated(Protocol):
    @property
    def status_date(self) -> datetime: ...


D = TypeVar("D", bound=Dated)


@dataclass(frozen=True, slots=True)
class History(Generic[D]):
    """As much of a status history as was read, newest first."""

    items: tuple[D, ...]
    complete: bool  # every page was read
    # What callers derive from the items (e.g. portal states), kept with them: a history
    # built from the same cached pages is the same object, request after request.
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def latest(self) -> D | None:
        return self.items[0] if self.items else None

    def cut(
        self,
        first: int,
        id_of: Callable[[D], str],
        keep: Callable[[D], bool] | None = None,
        after: KeysetCursor | None = None,
    ) -> StatusSlice[D] | None:
        """A page of the (filtered) history, after `after`; None when only V3 can answer it.

        A history cut short at its page bound answers a first page only when it holds
        more than the page; a keyset page past its end is the end (V3 gave no way further).
        """
        items = self.items if keep is None else tuple(item for item in self.items if keep(item))
        start = 0 if after is None else _position_after(items, after, id_of)
        page = items[start : start + first]
        more = len(items) > start + first
        if not self.complete and not more and after is None:
            return None
        ids = tuple(id_of(item) for item in page)
        end = encode_cursor(KeysetCursor(page[-1].status_date, ids[-1])) if more else None
        return StatusSlice(
            page, has_next_page=more, end_cursor=end, ids=ids, has_previous_page=after is not None
        )


class HistoryMemo:
    """Histories by the cached pages they were built from, so warm reads skip the sort.

    Keyed by the pages' identities and checked against the pages themselves: a page
    the cache replaced (a refresh, a webhook drop, expiry) makes a new history. The pages
    are held weakly, so a history is forgotten as soon as the cache lets go of a page of
    it; `max_entries` bounds the rest.
    """

    def __init__(self, max_entries: int = 2048) -> None:
        self._entries: LRUCache[
            tuple[int, ...], tuple[tuple[weakref.ref[Any], ...], History[Any]]
        ] = LRUCache(maxsize=max_entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, pages: tuple[StatusPage[D], ...], complete: bool) -> History[D]:
        key = tuple(map(id, pages))
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry[1].complete == complete
            and all(ref() is page for ref, page in zip(entry[0], pages, strict=True))
        ):
            return entry[1]
        history = History(newest_first(item for page in pages for item in page.items), complete)
        # The callback names the entry by its key, not by its refs: refs that lead to a
        # callback that holds them would be a cycle, left for a full collection once the
        # entry is evicted.
        forget = functools.partial(self._forget, key)
        self._entries[key] = (tuple(weakref.ref(page, forget) for page in pages), history)
        return history

    def _forget(self, key: tuple[int, ...], gone: weakref.ref[Any]) -> None:
        current = self._entries.get(key)
        if current is not None and any(ref is gone for ref in current[0]):
            del self._entries[key]


async def read_history(
    load_page: Callable[[str | None], Awaitable[StatusPage[D]]],
    what: str,
    memo: HistoryMemo | None = None,
) -> History[D]:
    """Every page `load_page` gives, following nextToken from None to the end."""
    pages: list[StatusPage[D]] = []
    token: str | None = None
    complete = False
    for _ in range(MAX_HISTORY_PAGES):
        page = await load_page(token)
        pages.append(page)
        token = page.next_token
        if token is None:
            complete = True
            break
    else:
        log.warning("history of %s cut at %d pages", what, MAX_HISTORY_PAGES)
    if memo is not None:
        return memo.get(tuple(pages), complete)
    return History(newest_first(item for page in pages for item in page.items), complete)


def newest_first(items: Iterable[D]) -> tuple[D, ...]:
    # A stable sort keeps upstream order among equal dates, so "latest" is deterministic.
    return tuple(sorted(items, key=lambda item: item.status_date, reverse=True))


def _position_after(items: tuple[D, ...], after: KeysetCursor, id_of: Callable[[D], str]) -> int:
    """Where a page after the keyset position starts in newest-first `items`."""
    for index, item in enumerate(items):
        if item.status_date == after.status_date and id_of(item) == after.status_id:
            return index + 1
        if item.status_date < after.status_date:
            # The item itself is gone (or filtered out): continue with anything older.
            return index
    return len(items)


def page_slice(
    page: StatusPage[D], id_of: Callable[[D], str], *, later: bool = False
) -> StatusSlice[D]:
    """An upstream page as callers see it: newest first, the upstream token wrapped as cursor.

    `later`: the page was asked for with a cursor (so a previous page exists)."""
    items = newest_first(page.items)
    cursor = None if page.next_token is None else encode_cursor(UpstreamCursor(page.next_token))
    ids = tuple(id_of(item) for item in items)
    return StatusSlice(items, cursor is not None, cursor, ids=ids, has_previous_page=later)
