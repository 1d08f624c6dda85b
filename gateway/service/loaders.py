"""Per-request batching: the legacy loader.

Built per request (never shared: a shared loader would hand one caller's results to
another and never forget). Every ad a request asks for in one tick of the event loop
becomes one `POST /status/` per user; the client chunks a user's ads and sends the
chunks in parallel.

`BatchLoader` is the narrow part of a DataLoader this needs (collect the keys of one tick,
load them in one call, answer each key once per request), written here so the service
layer does not depend on the GraphQL framework, and because a general DataLoader's
per-key bookkeeping costs more than the batching it does for us.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, Protocol, TypeVar

from gateway.domain.errors import GatewayError, UpstreamNotFound, capture
from gateway.domain.models import LegacyAdKey, LegacyAdStatus, LegacyBatch

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BatchLoader(Generic[K, V]):
    """Keys asked for in one tick of the event loop, loaded by one call of `load_many`.

    `load_many` answers one value or exception per key, in the keys' order; an exception it
    raises fails every key of the batch. A key asked for twice in one request is loaded once.
    """

    __slots__ = ("_futures", "_load_many", "_pending")

    def __init__(self, load_many: Callable[[list[K]], Awaitable[list[V | BaseException]]]) -> None:
        self._load_many = load_many
        self._futures: dict[K, asyncio.Future[V]] = {}
        self._pending: list[K] = []

    def load(self, key: K) -> asyncio.Future[V]:
        future = self._futures.get(key)
        if future is not None:
            return future
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._futures[key] = future
        self._pending.append(key)
        if len(self._pending) == 1:
            loop.call_soon(self._dispatch)
        return future

    def prime(self, key: K, value: V) -> None:
        """Answer `key` with `value` without loading it (unless it is asked for already)."""
        if key not in self._futures:
            future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
            future.set_result(value)
            self._futures[key] = future

    def _dispatch(self) -> None:
        keys, self._pending = self._pending, []
        asyncio.get_running_loop().create_task(self._run(keys))

    async def _run(self, keys: list[K]) -> None:
        try:
            values = await self._load_many(keys)
            if len(values) != len(keys):
                raise RuntimeError(f"loaded {len(values)} values for {len(keys)} keys")
        except BaseException as error:
            for key in keys:
                future = self._futures[key]
                if not future.done():
                    future.set_exception(error)
            if isinstance(error, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            return
        for key, value in zip(keys, values, strict=True):
            future = self._futures[key]
            if future.done():
                continue
            if isinstance(value, BaseException):
                future.set_exception(value)
            else:
                future.set_result(value)


class LegacyReader(Protocol):
    """What the loader needs of the legacy client."""

    async def ads_status(
        self, user_id: int, ad_ids: Sequence[int], *, force: bool = False
    ) -> LegacyBatch: ...


def legacy_loader(reader: LegacyReader, *, force: bool) -> BatchLoader[LegacyAdKey, LegacyAdStatus]:
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

    return BatchLoader(load)
