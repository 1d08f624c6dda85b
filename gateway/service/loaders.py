"""Per-request batching: the legacy loader.

Built per request (never shared: a shared loader would never forget). Every ad a request
asks for in one tick of the event loop goes to the legacy status cache at once
(`gateway.cache.legacy`), which answers what it keeps or is reading for another request and
reads the rest in one `POST /status/` per user (the client chunks a user's ads and sends the
chunks in parallel).

`BatchLoader` is the narrow part of a DataLoader this needs (collect the keys of one tick,
load them in one call, answer each key once per request), written here so the service
layer does not depend on the GraphQL framework, and because a general DataLoader's
per-key bookkeeping costs more than the batching it does for us.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, Protocol, TypeVar

from gateway.cache.legacy import LegacyReader
from gateway.domain.errors import GatewayError
from gateway.domain.models import LegacyAdKey, LegacyAdStatus

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BatchLoader(Generic[K, V]):
    """Keys asked for in one tick of the event loop, loaded by one call of `load_many`.

    `load_many` answers one value or exception per key, in the keys' order; an exception it
    raises fails every key of the batch. A key asked for twice in one request is loaded once.
    """

    __slots__ = ("_batch", "_futures", "_load_many", "_pending")

    def __init__(self, load_many: Callable[[list[K]], Awaitable[list[V | BaseException]]]) -> None:
        self._load_many = load_many
        self._futures: dict[K, asyncio.Future[V]] = {}
        self._pending: list[K] = []
        self._batch: asyncio.Task[None] | None = None  # held: the loop keeps tasks weakly

    def load(self, key: K) -> asyncio.Future[V]:
        future = self._futures.get(key)
        if future is not None:
            return future
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._futures[key] = future
        self._pending.append(key)
        if len(self._pending) == 1:
            # A task starts on the loop's next turn, as a `call_soon` would: by then every
            # key of this tick is pending. Started now, the batch goes out one turn sooner.
            self._batch = loop.create_task(self._run_pending())
        return future

    def load_here(self, key: K) -> Awaitable[V]:
        """`key`'s value, loaded by the awaiting task itself: no batch, no task and no turn of
        the event loop before the load starts or after it ends. For a caller that knows
        nothing else of its request loads meanwhile; a key already asked for is shared."""
        future = self._futures.get(key)
        if future is not None:
            return future
        future = asyncio.get_running_loop().create_future()
        self._futures[key] = future
        return self._load_here(key, future)

    async def _load_here(self, key: K, future: asyncio.Future[V]) -> V:
        await self._settle([key])
        return await future  # settled: this does not suspend

    def prime(self, key: K, value: V) -> None:
        """Answer `key` with `value` without loading it (unless it is asked for already)."""
        if key not in self._futures:
            future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
            future.set_result(value)
            self._futures[key] = future

    async def _run_pending(self) -> None:
        keys, self._pending = self._pending, []
        await self._settle(keys)

    async def _settle(self, keys: list[K]) -> None:
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


class LegacyStatuses(Protocol):
    """What the loader needs: one outcome per ad (`gateway.cache.legacy.LegacyStatusCache`)."""

    async def statuses(
        self, keys: Sequence[LegacyAdKey], *, force: bool = False
    ) -> list[LegacyAdStatus | GatewayError]: ...


def legacy_loader(
    statuses: LegacyStatuses, *, force: bool
) -> BatchLoader[LegacyAdKey, LegacyAdStatus]:
    """A loader of legacy ads; `force` asks the upstream to check the portals live."""

    async def load(keys: list[LegacyAdKey]) -> list[LegacyAdStatus | BaseException]:
        return list(await statuses.statuses(keys, force=force))

    return BatchLoader(load)


__all__ = ["BatchLoader", "LegacyReader", "LegacyStatuses", "legacy_loader"]
