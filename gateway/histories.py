"""Status histories read whole, and pages cut from them.

A V3 history is read in pages of 100 until the upstream's nextToken runs out (or a
bound is reached, so a runaway history cannot hold a request forever). Upstream
order is not trusted, so items are kept newest first by statusDate. A page that
needs no upstream cursor can then be cut from a whole history instead of being read.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from gateway.models import StatusPage, StatusSlice

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

    def latest(self) -> D | None:
        return self.items[0] if self.items else None

    def cut(self, first: int, keep: Callable[[D], bool] | None = None) -> StatusSlice[D] | None:
        """The first page of the (filtered) history, when it needs no upstream cursor."""
        if not self.complete:
            return None
        items = tuple(item for item in self.items if keep is None or keep(item))
        if len(items) > first:
            return None  # a further page needs the upstream's own nextToken
        return StatusSlice(items, has_next_page=False, end_cursor=None)


async def read_history(
    load_page: Callable[[str | None], Awaitable[StatusPage[D]]], what: str
) -> History[D]:
    """Every page `load_page` gives, following nextToken from None to the end."""
    items: list[D] = []
    token: str | None = None
    for _ in range(MAX_HISTORY_PAGES):
        page = await load_page(token)
        items.extend(page.items)
        token = page.next_token
        if token is None:
            return History(newest_first(items), complete=True)
    log.warning("history of %s cut at %d pages", what, MAX_HISTORY_PAGES)
    return History(newest_first(items), complete=False)


def newest_first(items: Iterable[D]) -> tuple[D, ...]:
    # A stable sort keeps upstream order among equal dates, so "latest" is deterministic.
    return tuple(sorted(items, key=lambda item: item.status_date, reverse=True))


def page_slice(page: StatusPage[D]) -> StatusSlice[D]:
    """An upstream page as callers see it: newest first, the upstream token as cursor."""
    return StatusSlice(newest_first(page.items), page.next_token is not None, page.next_token)
