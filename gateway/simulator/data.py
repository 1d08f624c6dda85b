"""Deterministic generation of the simulator's catalog from a seed.

Nothing here reads the clock: one seed always gives the same ids, histories and payloads.

V3, per tenant `agency-1`, `agency-2`, … (40 classifieds each, UUID-like ids):
- positions 0 and 5 of `tenants[t]` hold long histories (150-250 items: several pages at
  limit 100; also listed in `multi_page`); positions 7 and 30 have empty histories (`empty`);
- the others hold 1-24 items: realistic lifecycles, some still in progress, some failed,
  some deleted; updates now and then add or drop a portal;
- every third classified (positions 0, 3, 6, …) renders its items, and its media's, with the
  "internal" variant fields (statusId, classifiedId, customerId, creationDate, revision);
- about half of the `RECEIVED` items of a PATCH carry the seed's typo `RECEIVING_PATCH`;
  about half of the failed items carry `subStatusDetails`;
- 0-3 media per non-empty classified, each with a history on one or two portals;
  about half of the `DOWNLOADED` items carry subStatus `DOWNLOADED_001`.

Legacy: 5 users (the first is 12311, as in the vendor's example) with 10-60 ads each:
- ad k (k < 7) of the first user has its marktplaats portal in the k-th state of
  `LEGACY_STATES` (never, pending, processing, error, online, offline, closed), so every state
  is present whatever the seed; other portals and ads draw their state at random;
- positions 3, 10, 17, … of each user's ads render `adId` as a numeric string
  (`string_ad_ids`); positions 1, 6, 11, … render "no remote id" as `false` instead of 0
  (`false_remote_ids`; visible on portals that are not published);
- the website portal has `features: false` and no `closeDate` unless it was published.

`listings` pairs the first 10 classifieds of each tenant with legacy ads, users taken in turn.
"""

from __future__ import annotations

import functools
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from .lifecycle import (
    LEGACY_STATES,
    FeatureState,
    LegacyState,
    Step,
    classified_item,
    evolve_portals,
    feature_object,
    media_item,
    media_statuses,
    next_classified_step,
    publish_object,
)
from .records import ClassifiedRecord, JsonDict, StoredStatus, format_status_date, stored
from .vocabulary import LEGACY_FEATURES, LEGACY_PORTALS, MEDIA_PORTALS, PORTALS

TENANT_COUNT = 3
CLASSIFIEDS_PER_TENANT = 40
LONG_POSITIONS = (0, 5)
EMPTY_POSITIONS = (7, 30)
LISTINGS_PER_TENANT = 10
FIRST_LEGACY_USER = 12311
LEGACY_USER_COUNT = 5

_V3_EPOCH = datetime(2023, 6, 1, tzinfo=UTC)
_LEGACY_EPOCH = datetime(2024, 1, 1)  # naive: legacy dates carry no zone
_STATE_WEIGHTS = (12, 12, 10, 8, 30, 12, 16)
_FEATURE_STATES: tuple[FeatureState, ...] = ("pending", "processing", "active", "error")


class Listing(NamedTuple):
    """One property sold on both portal families: a V3 classified and a legacy ad."""

    classified_id: str
    user_id: int
    ad_id: int


@dataclass(slots=True)
class Catalog:
    """Everything generated from one seed. The simulator's state starts from a deep copy."""

    seed: int
    tenants: dict[str, list[str]] = field(default_factory=dict)
    classifieds: dict[str, ClassifiedRecord] = field(default_factory=dict)
    legacy_users: dict[int, list[int]] = field(default_factory=dict)
    legacy_ads: dict[int, dict[int, JsonDict]] = field(default_factory=dict)
    listings: list[Listing] = field(default_factory=list)
    multi_page: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    string_ad_ids: set[tuple[int, int]] = field(default_factory=set)
    false_remote_ids: set[tuple[int, int]] = field(default_factory=set)

    def tenant_of(self, classified_id: str) -> str:
        return self.classifieds[classified_id].tenant

    def media_of(self, classified_id: str) -> list[str]:
        return list(self.classifieds[classified_id].media)


@functools.lru_cache(maxsize=4)
def generate(seed: int) -> Catalog:
    """The catalog for `seed`, built once per process and shared: treat it as read-only."""
    rng = random.Random(seed)
    catalog = Catalog(seed=seed)
    for t in range(TENANT_COUNT):
        _generate_tenant(catalog, f"agency-{t + 1}", rng)
    _generate_legacy(catalog, rng)
    users = list(catalog.legacy_users)
    next_ad = dict.fromkeys(users, 0)
    turn = 0
    for ids in catalog.tenants.values():
        for classified_id in ids[:LISTINGS_PER_TENANT]:
            user = users[turn % len(users)]
            turn += 1
            catalog.listings.append(
                Listing(classified_id, user, catalog.legacy_users[user][next_ad[user]])
            )
            next_ad[user] += 1
    return catalog


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _generate_tenant(catalog: Catalog, tenant: str, rng: random.Random) -> None:
    customer_id = f"RC-{rng.randint(100000, 999999)}" if rng.random() < 0.5 else _uuid(rng)
    ids: list[str] = []
    for position in range(CLASSIFIEDS_PER_TENANT):
        record = ClassifiedRecord(
            classified_id=_uuid(rng),
            tenant=tenant,
            customer_id=customer_id,
            internal_fields=position % 3 == 0,
        )
        if position in LONG_POSITIONS:
            _fill_history(record, rng, rng.randint(150, 250), delete_chance=0.0)
            catalog.multi_page.append(record.classified_id)
        elif position in EMPTY_POSITIONS:
            catalog.empty.append(record.classified_id)
        else:
            _fill_history(record, rng, rng.randint(1, 24), delete_chance=0.08)
        if record.statuses:
            for _ in range(rng.randint(0, 3)):
                _add_media(record, rng)
        catalog.classifieds[record.classified_id] = record
        ids.append(record.classified_id)
    catalog.tenants[tenant] = ids


def _initial_portals(rng: random.Random) -> list[str]:
    portals = ["SL"] if rng.random() < 0.8 else []
    for code in rng.sample(PORTALS[1:], rng.randint(0, 3)):
        portals.append(code)
    return portals or [rng.choice(PORTALS)]


def _fill_history(
    record: ClassifiedRecord, rng: random.Random, length: int, *, delete_chance: float
) -> None:
    when = _V3_EPOCH + timedelta(seconds=rng.randint(0, 400 * 86400))
    portals = _initial_portals(rng)
    latest: JsonDict | None = None
    revision = 0
    while len(record.statuses) < length:
        step = next_classified_step(latest, rng, delete_chance=delete_chance)
        if step.status == "RECEIVING":
            revision += 1
            if step.verb in ("PUT", "PATCH"):
                portals = evolve_portals(portals, rng)
        when = _advance(when, latest, rng)
        latest = _classified_entry(record, step, portals, when, revision, rng)
        if step.status == "DELETED":
            break


def _advance(when: datetime, latest: JsonDict | None, rng: random.Random) -> datetime:
    """Seconds between the steps of one write, hours or days between writes."""
    settled = latest is None or latest.get("status") in ("CREATED", "UPDATED", "DELETED")
    failed = latest is not None and str(latest.get("status")).endswith("_FAILED")
    if settled or failed:
        gap = timedelta(hours=rng.randint(1, 72))
    else:
        gap = timedelta(seconds=rng.randint(1, 90))
    return when + gap + timedelta(milliseconds=rng.randint(1, 999))


def _classified_entry(
    record: ClassifiedRecord,
    step: Step,
    portals: list[str],
    when: datetime,
    revision: int,
    rng: random.Random,
) -> JsonDict:
    item = classified_item(
        step,
        portals,
        when,
        typo=step.verb == "PATCH" and rng.random() < 0.5,
        details=rng.random() < 0.5,
    )
    if record.internal_fields:
        item["statusId"] = _uuid(rng)
        item["classifiedId"] = record.classified_id
        item["customerId"] = record.customer_id
        item["creationDate"] = format_status_date(when + timedelta(milliseconds=rng.randint(0, 40)))
        item["revision"] = max(revision, 1)
    record.append(item)
    return item


def _add_media(record: ClassifiedRecord, rng: random.Random) -> None:
    media_id = _uuid(rng)
    first = record.statuses[0].date
    classified_portals = record.statuses[0].item.get("portals", [])
    candidates = [p for p in MEDIA_PORTALS if p in classified_portals] or ["SL"]
    history: list[StoredStatus] = []
    for portal in rng.sample(candidates, min(len(candidates), rng.randint(1, 2))):
        when = first + timedelta(seconds=rng.randint(5, 600))
        for status in media_statuses(rng, deleted=rng.random() < 0.1):
            when += timedelta(seconds=rng.randint(1, 30), milliseconds=rng.randint(1, 999))
            item = media_item(portal, status, when, sub_status=rng.random() < 0.5)
            if record.internal_fields:
                item["statusId"] = _uuid(rng)
                item["mediaId"] = media_id
                item["classifiedId"] = record.classified_id
                item["customerId"] = record.customer_id
                item["creationDate"] = format_status_date(when)
            history.append(stored(media_id, len(history), item))
    record.media[media_id] = history


def _generate_legacy(catalog: Catalog, rng: random.Random) -> None:
    users = [FIRST_LEGACY_USER]
    while len(users) < LEGACY_USER_COUNT:
        candidate = rng.randint(10000, 99999)
        if candidate not in users:
            users.append(candidate)
    ad_id = 659593
    for u, user in enumerate(users):
        ads: dict[int, JsonDict] = {}
        for position in range(rng.randint(10, 60)):
            forced = LEGACY_STATES[position] if u == 0 and position < len(LEGACY_STATES) else None
            string_id = position % 7 == 3
            false_remote = position % 5 == 1
            portals = _legacy_portals(rng, forced, no_remote_id=False if false_remote else 0)
            ads[ad_id] = {"adId": str(ad_id) if string_id else ad_id, "portals": portals}
            if string_id:
                catalog.string_ad_ids.add((user, ad_id))
            if false_remote:
                catalog.false_remote_ids.add((user, ad_id))
            ad_id += rng.randint(1, 40)
        catalog.legacy_ads[user] = ads
        catalog.legacy_users[user] = list(ads)


def _legacy_portals(
    rng: random.Random, forced: LegacyState | None, *, no_remote_id: int | bool
) -> list[JsonDict]:
    present = [
        forced is not None or rng.random() < 0.75,
        rng.random() < 0.4,
        rng.random() < 0.8,
    ]
    if not any(present):
        present[2] = True
    portals: list[JsonDict] = []
    for name, here in zip(LEGACY_PORTALS, present, strict=True):
        if not here:
            continue
        state = forced if forced is not None and name == "marktplaats" else None
        state = state or rng.choices(LEGACY_STATES, weights=_STATE_WEIGHTS)[0]
        at = _LEGACY_EPOCH + timedelta(seconds=rng.randint(0, 500 * 86400))
        publish = publish_object(
            state,
            at,
            remote_ad_id=rng.randint(1_000_000_000, 9_999_999_999),
            no_remote_id=no_remote_id,
            close_date=name != "website" or state in ("online", "offline", "closed"),
        )
        features: list[JsonDict] | bool = False
        if name != "website":
            features = [
                feature_object(feature, rng.choice(_FEATURE_STATES), at)
                for feature in rng.sample(LEGACY_FEATURES, rng.randint(0, 3))
            ]
        portals.append({"portal": name, "publish": publish, "features": features})
    return portals
