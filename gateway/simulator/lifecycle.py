"""Lifecycle steps and wire rendering shared by the data generator and the demo mover.

A V3 classified moves through write operations (POST creates, PUT/PATCH update, DELETE
deletes), each one `RECEIVING -> RECEIVED -> <VERB>ING -> <VERB>ED`, any step of which may
fail. Media go `RECEIVED -> DOWNLOADING -> DOWNLOADED -> AV_SCANNING -> AV_SCANNED ->
AV_CLEANED`. A legacy portal publication goes `never -> pending -> processing -> online ->
offline/closed`, and back to pending on a republish or after an error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from .records import JsonDict, format_status_date
from .vocabulary import (
    LEGACY_NO_DATE,
    MEDIA_MESSAGES,
    PORTALS,
    VERBS,
    classified_message,
    sub_status_for,
)

_FAILURE_DETAILS = (
    "Invalid format: price.amount is required",
    "Invalid format: address.zipCode does not match the expected pattern",
    "Portal rejected the classified: too many pictures",
    "Internal error, reference 5f3c-77a1",
)


@dataclass(frozen=True, slots=True)
class Step:
    """A classified status to append, with the write verb behind it (for the subStatus)."""

    status: str
    verb: str


def verb_of(item: JsonDict) -> str | None:
    """The write verb named by an item's subStatus suffix (`RECEIVED_PUT` -> `PUT`)."""
    sub = item.get("subStatus")
    if isinstance(sub, str):
        for verb in VERBS:
            if sub.endswith("_" + verb):
                return verb
    return None


def next_classified_step(
    latest: JsonDict | None,
    rng: random.Random,
    *,
    delete_chance: float = 0.0,
    fail_chance: float = 0.04,
) -> Step:
    """The step that follows `latest` (None: a classified not yet submitted)."""
    if latest is None:
        return Step("RECEIVING", "POST")
    status = latest.get("status")
    verb = verb_of(latest) or "PUT"
    failed = rng.random() < fail_chance
    if status == "RECEIVING":
        return Step("RECEIVING_FAILED" if failed else "RECEIVED", verb)
    if status == "RECEIVED":
        doing = {"POST": "CREATING", "DELETE": "DELETING"}.get(verb, "UPDATING")
        return Step(doing, verb)
    if status in ("CREATING", "UPDATING", "DELETING"):
        done = str(status).replace("ING", "ED")
        return Step(f"{status}_FAILED" if failed else done, verb)
    if status in ("CREATED", "UPDATED"):
        if rng.random() < delete_chance:
            return Step("RECEIVING", "DELETE")
        return Step("RECEIVING", "PATCH" if rng.random() < 0.25 else "PUT")
    if status == "DELETED":
        return Step("RECEIVING", "POST")
    if status == "CREATING_FAILED":
        return Step("RECEIVING", "POST")
    if status == "DELETING_FAILED":
        return Step("RECEIVING", "DELETE")
    # RECEIVING_FAILED resubmits the same write; UPDATING_FAILED and unknowns submit an update.
    return Step("RECEIVING", verb if status == "RECEIVING_FAILED" else "PUT")


def evolve_portals(portals: list[str], rng: random.Random) -> list[str]:
    """An update sometimes adds or drops a portal, so portals differ between items."""
    roll = rng.random()
    if roll < 0.15 and len(portals) < 5:
        extra = [p for p in PORTALS if p not in portals]
        return [*portals, rng.choice(extra)] if extra else list(portals)
    if roll < 0.25 and len(portals) > 1:
        dropped = rng.choice(portals)
        return [p for p in portals if p != dropped]
    return list(portals)


def classified_item(
    step: Step, portals: list[str], when: datetime, *, typo: bool = False, details: bool = False
) -> JsonDict:
    """A documented-form `ClassifiedStatus` for `step`.

    `typo` reproduces the seed's table row pairing RECEIVED with `RECEIVING_PATCH`; `details`
    adds a `subStatusDetails` to a failed item.
    """
    item: JsonDict = {"portals": list(portals), "status": step.status}
    sub = sub_status_for(step.status, step.verb)
    if sub is not None:
        item["subStatus"] = "RECEIVING_PATCH" if typo and sub == "RECEIVED_PATCH" else sub
    item["message"] = classified_message(step.status, step.verb)
    if details and step.status.endswith("_FAILED"):
        item["subStatusDetails"] = _FAILURE_DETAILS[when.second % len(_FAILURE_DETAILS)]
    item["statusDate"] = format_status_date(when)
    return item


def media_statuses(rng: random.Random, *, deleted: bool) -> list[str]:
    """A media processing run, possibly failing, possibly ending in a deletion."""
    run = ["RECEIVED", "DOWNLOADING"]
    if rng.random() < 0.1:
        return [*run, "DOWNLOADING_FAILED"]
    run += ["DOWNLOADED", "AV_SCANNING"]
    if rng.random() < 0.06:
        return [*run, "AV_QUARANTINED"]
    run += ["AV_SCANNED", "AV_CLEANED"]
    return [*run, "DELETING", "DELETED"] if deleted else run


def media_item(portal: str, status: str, when: datetime, *, sub_status: bool) -> JsonDict:
    """A documented-form `MediaStatus`; `sub_status` adds `DOWNLOADED_001` on DOWNLOADED."""
    item: JsonDict = {"portal": portal, "status": status}
    if sub_status and status == "DOWNLOADED":
        item["subStatus"] = "DOWNLOADED_001"
    item["message"] = MEDIA_MESSAGES[status]
    item["statusDate"] = format_status_date(when)
    return item


LegacyState = Literal["never", "pending", "processing", "error", "online", "offline", "closed"]
LEGACY_STATES: tuple[LegacyState, ...] = (
    "never",
    "pending",
    "processing",
    "error",
    "online",
    "offline",
    "closed",
)
FeatureState = Literal["pending", "processing", "active", "error"]


def legacy_date(when: datetime | None) -> str:
    return LEGACY_NO_DATE if when is None else when.strftime("%Y-%m-%d %H:%M:%S")


def legacy_state_of(publish: JsonDict) -> LegacyState:
    """Classify a raw publish object, first matching flag wins."""
    if publish.get("error") is True:
        return "error"
    if publish.get("processing") is True:
        return "processing"
    if publish.get("pending") is True:
        return "pending"
    if publish.get("active") is True:
        return "online" if publish.get("online") is True else "offline"
    close = publish.get("closeDate")
    if isinstance(close, str) and close != LEGACY_NO_DATE:
        return "closed"
    return "never"


def next_legacy_state(state: LegacyState, rng: random.Random) -> LegacyState:
    """The publication state one step later; closed and errored ads get republished."""
    if state == "pending":
        return "processing"
    if state == "processing":
        return "error" if rng.random() < 0.1 else "online"
    if state == "online":
        return "offline" if rng.random() < 0.4 else "closed"
    if state == "offline":
        return "closed"
    return "pending"


def publish_object(
    state: LegacyState,
    at: datetime,
    *,
    remote_ad_id: int,
    no_remote_id: int | bool = 0,
    close_date: bool = True,
) -> JsonDict:
    """A publish object in `state` as of `at`.

    `no_remote_id` is how "no portal id" is rendered (0, or `False` as some endpoints do);
    `close_date=False` leaves `closeDate` out, as the vendor's website example does.
    """
    pending = processing = start = close = None
    if state == "pending":
        pending = at
    elif state in ("processing", "error"):
        pending, processing = at - timedelta(minutes=3), at
    elif state in ("online", "offline"):
        start, close = at, at + timedelta(days=60)
    elif state == "closed":
        start, close = at - timedelta(days=30), at
    published = state in ("online", "offline", "closed")
    publish: JsonDict = {
        "pending": state == "pending",
        "pendingDate": legacy_date(pending),
        "processing": state == "processing",
        "processingDate": legacy_date(processing),
        "error": state == "error",
        "active": state in ("online", "offline"),
        "online": state == "online",
        "startDate": legacy_date(start),
        "closeDate": legacy_date(close),
        "remoteAdId": remote_ad_id if published else no_remote_id,
    }
    if not close_date:
        del publish["closeDate"]
    return publish


def feature_object(name: str, state: FeatureState, at: datetime) -> JsonDict:
    """A marktplaats-style feature status, with the undocumented `processing*` extras."""
    return {
        "feature": name,
        "pending": state == "pending",
        "pendingDate": legacy_date(at if state == "pending" else None),
        "processing": state == "processing",
        "processingDate": legacy_date(at if state in ("processing", "error") else None),
        "error": state == "error",
        "active": state == "active",
        "startDate": legacy_date(at if state == "active" else None),
    }
