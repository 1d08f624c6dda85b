"""The record of one incoming request, reachable from anywhere that request's work runs.

The HTTP edge opens a `RequestRecord` in a context variable; tasks the request starts
(loaders, cache loads) inherit it, so the upstream observer can count that request's
upstream calls and the GraphQL view can name its operation and outcome, and the edge
writes one log line and the request metrics from it at the end. Standard library only.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["RequestRecord", "current_record"]


@dataclass(slots=True)
class RequestRecord:
    """What one request did; filled in as it runs."""

    trace_id: str = ""
    operation: str = "-"
    # ok | partial (data and errors) | error (no data) | overloaded | rejected (refused before
    # execution) | disconnected (the caller left before sending its request)
    outcome: str = "ok"
    upstream_calls: int = 0


current_record: ContextVar[RequestRecord | None] = ContextVar("gateway_request", default=None)
