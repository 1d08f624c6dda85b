"""The simulator's stored records: one V3 classified with its media, and legacy ad payloads.

Items are kept verbatim as the wire dicts the simulator answers with, so tests can install
odd upstream data (unknown values, missing fields). Each one also gets a private `status_id`,
the ordering tie-breaker that `nextToken` names even when the item does not render `statusId`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JsonDict = dict[str, Any]

UNDATED = datetime.min.replace(tzinfo=UTC)  # the sort date of an item without a usable one
_ID_NAMESPACE = uuid.UUID("5b1f0c8e-8a43-4e55-9f3c-2a4f6d6c9e10")


def parse_status_date(value: object) -> datetime:
    """An aware datetime for an RFC 3339 `statusDate`; unparseable values sort oldest."""
    if not isinstance(value, str):
        return UNDATED
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return UNDATED
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def format_status_date(when: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and `Z`, as the vendor's examples show."""
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class StoredStatus:
    """One status item as sent on the wire, plus the id that orders it and names it in tokens."""

    status_id: str
    item: JsonDict
    date: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.date = parse_status_date(self.item.get("statusDate"))

    @property
    def sort_key(self) -> tuple[datetime, str]:
        return (self.date, self.status_id)


def stored(owner_id: str, index: int, item: JsonDict) -> StoredStatus:
    """Wrap a raw item; its own `statusId` wins, else a stable id from its owner and position."""
    raw_id = item.get("statusId")
    if isinstance(raw_id, str) and raw_id:
        return StoredStatus(raw_id, item)
    return StoredStatus(str(uuid.uuid5(_ID_NAMESPACE, f"{owner_id}:{index}")), item)


def newest_first(history: list[StoredStatus]) -> list[StoredStatus]:
    return sorted(history, key=lambda s: s.sort_key, reverse=True)


@dataclass(slots=True)
class ClassifiedRecord:
    """A classified owned by one tenant (intermediary), with its history and its media's."""

    classified_id: str
    tenant: str
    customer_id: str
    # Whether generated items carry the "internal" variant fields (statusId, revision, ...).
    internal_fields: bool = False
    statuses: list[StoredStatus] = field(default_factory=list)
    media: dict[str, list[StoredStatus]] = field(default_factory=dict)

    def copy(self) -> ClassifiedRecord:
        """A copy with its own lists; items are shared, as nothing edits a stored item."""
        media = {media_id: list(history) for media_id, history in self.media.items()}
        return ClassifiedRecord(
            self.classified_id,
            self.tenant,
            self.customer_id,
            self.internal_fields,
            list(self.statuses),
            media,
        )

    def append(self, item: JsonDict) -> StoredStatus:
        entry = stored(self.classified_id, len(self.statuses), item)
        self.statuses.append(entry)
        return entry

    def latest(self) -> StoredStatus | None:
        return max(self.statuses, key=lambda s: s.sort_key, default=None)

    def next_revision(self) -> int:
        revisions = [s.item.get("revision") for s in self.statuses]
        return max((r for r in revisions if isinstance(r, int)), default=0) + 1
