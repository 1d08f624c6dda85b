"""Per-request batching: the legacy DataLoader.

Built per request (never shared: a shared loader would hand one caller's results to
another and never forget). Every ad a request asks for in one tick of the event loop
becomes one `POST /status/` per user; the client chunks a user's ads and sends the
chunks in parallel.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from strawberry.dataloader import DataLoader

from gateway.domain.errors import GatewayError, UpstreamNotFound, capture
from gateway.domain.models import LegacyAdKey, LegacyAdStatus, LegacyBatch


class LegacyReader(Protocol):
    """What the loader needs of the legacy client."""

    async def ads_status(
        self, user_id: int, ad_ids: Sequence[int], *, force: bool = False
    ) -> LegacyBatch: ...


def legacy_loader(reader: LegacyReader, *, force: bool) -> DataLoader[LegacyAdKey, LegacyAdStatus]:
    """A loader of legacy ads; `force` asks the upstream to check the portals live."""

    async def load(keys: list[LegacyAdKey]) -> list[LegacyAdStatus | BaseException]:
        by_user: dict[int, list[int]] = defaultdict(list)
        for key in keys:
            by_user[key.user_id].append(key.ad_id)
        users = list(by_user)
        batches = await asyncio.gather(
            *(capture(reader.ads_status(user, by_user[user], force=force)) for user in users)
        )
        answers = dict(zip(users, batches, strict=True))
        results: list[LegacyAdStatus | BaseException] = []
        for key in keys:
            batch = answers[key.user_id]
            if isinstance(batch, GatewayError):
                results.append(batch)  # the user's whole call failed
            elif key.ad_id in batch.found:
                results.append(batch.found[key.ad_id])
            else:
                results.append(
                    UpstreamNotFound(
                        f"legacy ad {key.ad_id} of user {key.user_id} not found",
                        upstream="legacy",
                    )
                )
        return results

    return DataLoader(load_fn=load)
