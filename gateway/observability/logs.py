"""Logging setup: JSON lines for `serve`, readable lines for `demo`; the per-request line.

`configure_logging(json=True)` sends every record to stderr as one JSON object (via
python-json-logger) with the fields passed in `extra`, so a log pipeline can index trace
ids, operations and durations. `log_request` writes the one line per GraphQL request.
Nothing here logs headers, bodies or settings values: secrets never reach a log.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

from pythonjsonlogger.json import JsonFormatter

from gateway.observability.record import RequestRecord

__all__ = ["ACCESS_LOGGER", "configure_logging", "log_request"]

ACCESS_LOGGER: Final = "gateway.access"
_TEXT_FORMAT: Final = "%(levelname)s %(name)s: %(message)s"
# The process id tells apart the workers of `gateway serve --workers N`.
_JSON_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"

access_log = logging.getLogger(ACCESS_LOGGER)


def configure_logging(*, json: bool, level: int | str = logging.INFO) -> None:
    """Route every logger to stderr, as JSON objects or as readable text."""
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(
            JsonFormatter(
                _JSON_FORMAT,
                rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)


def log_request(record: RequestRecord, *, method: str, status: int, seconds: float) -> None:
    """The one line per request: operation, outcome, duration, upstream calls, trace id."""
    access_log.info(
        "%s /graphql %s %s %d in %.1f ms, %d upstream calls, trace %s",
        method,
        record.operation,
        record.outcome,
        status,
        seconds * 1000,
        record.upstream_calls,
        record.trace_id,
        extra={
            "trace_id": record.trace_id,
            "operation": record.operation,
            "outcome": record.outcome,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "upstream_calls": record.upstream_calls,
        },
    )
