"""Counts of upstream values the domain enums lack (new portals, statuses, features).

An unknown value never fails a request (docs/upstreams.md); the parsers keep the raw
string, log it, and count it here under `(kind, value)`, e.g. `("v3.portal", "XX")`. The
metrics layer can export `UNKNOWN_VALUES` as it is. Depends on the standard library only.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Final

__all__ = ["UNKNOWN_VALUES", "note_unknown"]

log = logging.getLogger("gateway.upstreams")

UNKNOWN_VALUES: Counter[tuple[str, str]] = Counter()
# A misbehaving upstream could send endless distinct values; past this many distinct keys
# new ones are folded into one bucket so memory stays bounded.
_MAX_DISTINCT: Final = 1000
_OVERFLOW: Final = "<other>"
_MAX_VALUE_CHARS: Final = 100


def note_unknown(kind: str, value: str) -> None:
    """Record (and log at info) one occurrence of an unknown upstream value."""
    value = value[:_MAX_VALUE_CHARS]
    key = (kind, value)
    if key not in UNKNOWN_VALUES and len(UNKNOWN_VALUES) >= _MAX_DISTINCT:
        key = (kind, _OVERFLOW)
    UNKNOWN_VALUES[key] += 1
    if UNKNOWN_VALUES[key] == 1:
        log.info("unknown %s value %r from upstream", kind, value)
    else:
        log.debug("unknown %s value %r from upstream", kind, value)
