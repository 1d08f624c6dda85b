"""W3C trace context (`traceparent`) for upstream calls.

`child_traceparent(incoming)` continues the caller's trace when its header is valid (same
trace-id and flags, a fresh parent-id for our outgoing call) and starts a new trace
otherwise. Format and validity rules: https://www.w3.org/TR/trace-context/#traceparent-header
Depends on nothing but the standard library.
"""

from __future__ import annotations

import random
import re
from typing import Final

__all__ = ["child_traceparent", "new_traceparent", "parse_traceparent"]

_HEADER = re.compile(
    r"^(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?$"
)
_ZERO_TRACE_ID: Final = "0" * 32
_ZERO_SPAN_ID: Final = "0" * 16
# A trace the gateway starts itself is marked sampled, as in the vendor's example header.
_NEW_TRACE_FLAGS: Final = "01"


def _random_hex(nbytes: int) -> str:
    # Ids need to be unique, not secret: the process's generator, as OpenTelemetry's SDK
    # uses, without a system call per upstream request as `secrets` makes.
    while not (value := random.getrandbits(nbytes * 8)):  # all-zero ids are invalid
        pass
    return f"{value:0{nbytes * 2}x}"


def parse_traceparent(header: str | None) -> tuple[str, str] | None:
    """(trace-id, flags) of a valid `traceparent` header, or None if absent or invalid."""
    if not header:
        return None
    match = _HEADER.match(header.strip())
    if match is None:
        return None
    version = match["version"]
    if version == "ff":
        return None
    # Version 00 has exactly four fields; a later version may append more, which we drop.
    if version == "00" and match["rest"] is not None:
        return None
    if match["trace_id"] == _ZERO_TRACE_ID or match["parent_id"] == _ZERO_SPAN_ID:
        return None
    return match["trace_id"], match["flags"]


def new_traceparent() -> str:
    """A `traceparent` that starts a new trace."""
    return f"00-{_random_hex(16)}-{_random_hex(8)}-{_NEW_TRACE_FLAGS}"


def child_traceparent(incoming: str | None) -> str:
    """The `traceparent` for one outgoing call made on behalf of a caller who sent `incoming`."""
    parsed = parse_traceparent(incoming)
    if parsed is None:
        return new_traceparent()
    trace_id, flags = parsed
    return f"00-{trace_id}-{_random_hex(8)}-{flags}"
