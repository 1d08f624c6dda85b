"""Opaque status cursors: where the next page of a status history starts.

A cursor is either an upstream position (V3's own nextToken, wrapped) or a keyset
position in a history the gateway has already read (the statusDate and id of the last
item handed out). A keyset page is cut from the history without asking V3 for it, and
it continues correctly when newer statuses arrived in between: they sort before the
position, never after it. Callers see only an opaque string; anything that does not
decode is `InvalidInput`, refused before any upstream call. That includes a keyset date
without a UTC offset: the gateway never writes one, and it could not be compared with the
history's dates (which all carry one).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.errors import InvalidInput

_UPSTREAM = "v3:"
_KEYSET = "ks:"
_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")


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
        raise InvalidInput("after takes a pageInfo.endCursor")
    try:
        text = base64.urlsafe_b64decode(opaque + "=" * (-len(opaque) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("after takes a pageInfo.endCursor") from None
    if text.startswith(_UPSTREAM) and len(text) > len(_UPSTREAM):
        return UpstreamCursor(text.removeprefix(_UPSTREAM))
    if text.startswith(_KEYSET) and "|" in text:
        date_text, status_id = text.removeprefix(_KEYSET).split("|", 1)
        try:
            status_date = datetime.fromisoformat(date_text)
        except ValueError:
            raise InvalidInput("after takes a pageInfo.endCursor") from None
        if status_id and status_date.utcoffset() is not None:
            return KeysetCursor(status_date, status_id)
    raise InvalidInput("after takes a pageInfo.endCursor")
