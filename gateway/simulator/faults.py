"""Injected faults: what a misbehaving upstream does, and which requests it hits.

A fault matches an upstream (`v3`, `legacy`, `token`) and optionally one endpoint of it. The
first matching fault in insertion order applies; one with a `count` is used up after that many
requests, one without lasts until cleared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, cast, get_args

from .vocabulary import ENDPOINTS, UPSTREAMS, Upstream

FaultKind = Literal["error", "timeout", "malformed", "rate_limit", "reset"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)
DEFAULT_HANG_S: Final = 30.0


@dataclass(slots=True)
class Fault:
    """One injected misbehaviour.

    - `error`: answer `status` (default 500) with the upstream's error body;
    - `timeout`: hang for `delay_s` seconds, then answer normally;
    - `malformed`: answer 200 with a truncated JSON body;
    - `rate_limit`: answer 429 with `Retry-After: retry_after` (default 1);
    - `reset`: drop the connection without answering.
    """

    upstream: Upstream
    kind: FaultKind
    status: int = 500
    count: int | None = None
    endpoint: str | None = None
    retry_after: int | None = None
    delay_s: float = DEFAULT_HANG_S

    def __post_init__(self) -> None:
        if self.upstream not in UPSTREAMS:
            raise ValueError(f"upstream must be one of {', '.join(UPSTREAMS)}")
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if self.endpoint is not None and self.endpoint not in ENDPOINTS[self.upstream]:
            known = ", ".join(ENDPOINTS[self.upstream])
            raise ValueError(f"endpoint of {self.upstream} must be one of {known}")
        if not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or null: until cleared)")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must not be negative")
        if self.delay_s < 0:
            raise ValueError("delay_s must not be negative")

    def matches(self, upstream: str, endpoint: str) -> bool:
        return self.upstream == upstream and self.endpoint in (None, endpoint)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: object) -> Fault:
        """Build from a control-API body; raises ValueError naming the bad field."""
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        unknown = set(body) - {
            "upstream",
            "kind",
            "status",
            "count",
            "endpoint",
            "retry_after",
            "delay_s",
        }
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        status = body.get("status", 500)
        count = body.get("count")
        retry_after = body.get("retry_after")
        delay_s = body.get("delay_s", DEFAULT_HANG_S)
        endpoint = body.get("endpoint")
        for name, value in (("status", status), ("count", count), ("retry_after", retry_after)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an integer")
        if isinstance(delay_s, bool) or not isinstance(delay_s, int | float):
            raise ValueError("delay_s must be a number")
        if endpoint is not None and not isinstance(endpoint, str):
            raise ValueError("endpoint must be a string or null")
        return cls(
            upstream=cast(Upstream, body.get("upstream")),
            kind=cast(FaultKind, body.get("kind")),
            status=status,
            count=count,
            endpoint=endpoint,
            retry_after=retry_after,
            delay_s=float(delay_s),
        )


class FaultBook:
    """The active faults, consumed as requests arrive."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def active(self) -> list[Fault]:
        return list(self._faults)

    def take(self, upstream: str, endpoint: str) -> Fault | None:
        """The fault that applies to this request, counting it against its budget."""
        for fault in self._faults:
            if fault.matches(upstream, endpoint):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                return fault
        return None
