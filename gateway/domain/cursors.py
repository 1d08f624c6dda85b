"""Opaque status cursors: where the next page of a status history starts.

A cursor is either an upstream position (V3's own nextToken, wrapped) or a keyset
position in a history the gateway has already read (the statusDate and id of the last
item handed out). A keyset page is cut from the history without asking V3 for it, and
it continues correctly when newer statuses arrived in between: they sort before the
position, never after it. Every edge of a page has a cursor too (`edge_cursor`), and the
last edge's is the page's `pageInfo.endCursor`. Callers see only an opaque string;
anything that does not decode is `InvalidInput`, refused before any upstream call. That
includes a keyset date without a UTC offset: the gateway never writes one, and it could
not be compared with the history's dates (which all carry one).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from gateway.domain.errors import InvalidInput
from gateway.domain.models import StatusSlice

T = TypeVar("T")

_UPSTREAM = "v3:"
_KEYSET = "ks:"
_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")
_NOT_A_CURSOR = "after takes a cursor the gateway gave: a pageInfo.endCursor or an edge's cursor"


@dataclass(frozen=True, slots=True)
class UpstreamCursor:
    """Continue with V3's own page token."""

    token: str


@dataclass(frozen=True, slots=True)
class KeysetCursor:
    """Continue after this item of a history read whole (newest first)."""

    status_date: datetime
    status_id: str


Cursor = UpstreamCursor | KeysetCursor


def encode_cursor(cursor: Cursor) -> str:
    if isinstance(cursor, UpstreamCursor):
        text = _UPSTREAM + cursor.token
    else:
        text = f"{_KEYSET}{cursor.status_date.isoformat()}|{cursor.status_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(opaque: str) -> Cursor:
    """The position behind an `encode_cursor` string; `InvalidInput` for anything else."""
    if not _ALPHABET.match(opaque):
        raise InvalidInput(_NOT_A_CURSOR)
    try:
        text = base64.urlsafe_b64decode(opaque + "=" * (-len(opaque) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(_NOT_A_CURSOR) from None
    if text.startswith(_UPSTREAM) and len(text) > len(_UPSTREAM):
        return UpstreamCursor(text.removeprefix(_UPSTREAM))
    if text.startswith(_KEYSET) and "|" in text:
        date_text, status_id = text.removeprefix(_KEYSET).split("|", 1)
        try:
            status_date = datetime.fromisoformat(date_text)
        except ValueError:
            raise InvalidInput(_NOT_A_CURSOR) from None
        if status_id and status_date.utcoffset() is not None:
            return KeysetCursor(status_date, status_id)
    raise InvalidInput(_NOT_A_CURSOR)


# --- the cursors of a page, as the Relay cursor connections spec places them -----------


class _Dated(Protocol):
    @property
    def status_date(self) -> datetime: ...


def edge_cursor(page: StatusSlice[Any], index: int) -> str:
    """The cursor of the page's edge `index`: where a page after its item starts.

    The last edge's is the page's own end cursor when it has one, so `pageInfo.endCursor`
    is the last edge's cursor as the spec requires, and a V3 page's next page stays one V3
    call (its wrapped nextToken); every other edge's is its item's keyset position, which
    pages on from the history.
    """
    if index == len(page.items) - 1 and page.end_cursor is not None:
        return page.end_cursor
    item: _Dated = page.items[index]
    return encode_cursor(KeysetCursor(item.status_date, page.ids[index]))


def start_cursor(page: StatusSlice[Any]) -> str | None:
    """`pageInfo.startCursor`: the first edge's cursor."""
    return edge_cursor(page, 0) if page.items else None


def end_cursor(page: StatusSlice[Any]) -> str | None:
    """`pageInfo.endCursor`: the last edge's cursor (also on a last page); with no edge,
    where the next page starts, if anywhere."""
    return edge_cursor(page, len(page.items) - 1) if page.items else page.end_cursor


def edges(page: StatusSlice[T]) -> list[tuple[str, T, StatusSlice[T], int]]:
    """The page's edges as (public id, item, page, index): a node reads the first two, the
    cursor is made from the last two only when asked for."""
    return [(page.ids[index], item, page, index) for index, item in enumerate(page.items)]
