"""Demo mode: listings advance through their lifecycles while the simulator runs.

Every `every_s` seconds a few `listings` move one step on both sides: the classified gets the
next V3 status (delivered to webhooks like `State.append_status`) and every portal of the
legacy ad moves to its next publish state. New V3 items are dated now (and always after the
item they follow); legacy dates use Europe/Amsterdam wall time, as that API does.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .lifecycle import (
    classified_item,
    evolve_portals,
    legacy_state_of,
    next_classified_step,
    next_legacy_state,
    publish_object,
)
from .records import format_status_date
from .state import DeliveryResult, State

_AMSTERDAM = ZoneInfo("Europe/Amsterdam")
_PUBLISHED = ("online", "offline", "closed")
# A long-running demo stops growing a history here, which keeps memory bounded.
MAX_HISTORY = 2000


class Mover:
    """Advances `batch` listings per tick; `run()` ticks every `every_s` seconds until cancelled."""

    def __init__(
        self,
        state: State,
        *,
        seed: int,
        every_s: float | None = None,
        batch: int = 3,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.every_s = every_s
        # Replaceable, so a test can drive the ticks without waiting for them.
        self.sleep = sleep
        self.batch = batch
        self.ticks = 0
        self._state = state
        self._rng = random.Random(f"mover-{seed}")

    async def run(self) -> None:
        if self.every_s is None:
            return
        while True:
            await self.sleep(self.every_s)
            await self.tick()

    async def tick(self) -> list[DeliveryResult]:
        """Advance a few listings now; returns the webhook deliveries this caused."""
        listings = self._state.listings
        chosen = self._rng.sample(listings, min(self.batch, len(listings)))
        results: list[DeliveryResult] = []
        for listing in chosen:
            results += await self.advance_classified(listing.classified_id)
            self.advance_legacy_ad(listing.user_id, listing.ad_id)
        self.ticks += 1
        return results

    async def advance_classified(self, classified_id: str) -> list[DeliveryResult]:
        record = self._state.classified(classified_id)
        if record is None or len(record.statuses) >= MAX_HISTORY:
            return []
        latest = record.latest()
        step = next_classified_step(latest.item if latest else None, self._rng, delete_chance=0.05)
        portals = latest.item.get("portals") if latest else None
        if not isinstance(portals, list) or not portals:
            portals = ["SL"]
        if step.status == "RECEIVING" and step.verb in ("PUT", "PATCH"):
            portals = evolve_portals(portals, self._rng)
        when = datetime.now(UTC)
        if latest is not None and latest.date >= when:
            when = latest.date + timedelta(milliseconds=1)
        item = classified_item(step, portals, when)
        if record.internal_fields:
            revision = record.next_revision()
            item["statusId"] = str(uuid.uuid4())
            item["classifiedId"] = classified_id
            item["customerId"] = record.customer_id
            item["creationDate"] = format_status_date(when)
            item["revision"] = revision if step.status == "RECEIVING" else max(revision - 1, 1)
        return await self._state.append_status(classified_id, item)

    def advance_legacy_ad(self, user_id: int, ad_id: int) -> None:
        ad = self._state.legacy_ad(user_id, ad_id)
        portals = ad.get("portals") if ad else None
        if not isinstance(portals, list):
            return
        now = datetime.now(_AMSTERDAM).replace(tzinfo=None, microsecond=0)
        moved = [self._advance_portal(portal, now) for portal in portals]
        self._state.replace_legacy_portals(user_id, ad_id, moved)

    def _advance_portal(self, portal: object, now: datetime) -> Any:
        publish = portal.get("publish") if isinstance(portal, dict) else None
        if not isinstance(portal, dict) or not isinstance(publish, dict):
            return portal
        new_state = next_legacy_state(legacy_state_of(publish), self._rng)
        remote = publish.get("remoteAdId")
        if isinstance(remote, bool) or not isinstance(remote, int) or remote <= 0:
            remote_id = self._rng.randint(10**9, 10**10 - 1)
        else:
            remote_id = remote
        new_publish = publish_object(
            new_state,
            now,
            remote_ad_id=remote_id,
            no_remote_id=False if remote is False else 0,
            close_date=portal.get("portal") != "website" or new_state in _PUBLISHED,
        )
        return {**portal, "publish": new_publish}
