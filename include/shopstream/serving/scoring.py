"""Scoring on the event loop: feature lookups and model calls batched over concurrent requests.

Each request queues its cart-adds and awaits a future. One task takes everything queued since its last
round, reads all their online state in ONE Redis transaction (while it waits, new requests queue up for the
next round), computes each request's features on its own
(:func:`~shopstream.serving.feature_store.lookups_from_replies`: requests do not see each other), and scores
all rows with ONE model call. A model call and a Redis round trip cost about the same for one row as for a
hundred, so under load the cost per request falls instead of the queue growing. Every row of a round is
scored by the same model version; a swap takes effect at the next round.

The booster path (a few hundred microseconds a call) runs on the loop; the pyfunc path (milliseconds) runs
in a worker thread so the loop keeps reading requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from shopstream.serving.feature_store import (
    LOOKUP_REPLIES,
    Event,
    Keys,
    Lookup,
    lookups_from_replies,
    queue_lookup,
)
from shopstream.serving.model import LoadedModel, ModelManager

log = logging.getLogger("shopstream.serving.scoring")


class NoModel(RuntimeError):
    """No model is loaded yet."""


class FeatureStoreUnavailable(RuntimeError):
    """Redis did not answer the lookups."""


@dataclass
class Scored:
    model: LoadedModel
    lookups: list[Lookup]
    probabilities: list[float]


class Scorer:
    """The batching task of one event loop: :meth:`start` it in the loop, then ``await score(events)``."""

    def __init__(self, manager: ModelManager, redis_client, keys: Keys, max_rows: int = 4096,
                 on_round: Callable[[int], None] | None = None) -> None:
        self.manager = manager
        self.redis = redis_client          # redis.asyncio client
        self.keys = keys
        self.max_rows = max_rows
        self.on_round = on_round           # called with the rows of each model call
        self._queue: asyncio.Queue[tuple[list[Event], asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scorer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def score(self, events: list[Event]) -> Scored:
        """Features and probabilities of these cart-adds (raises NoModel or FeatureStoreUnavailable)."""
        if self._queue is None:
            raise RuntimeError("Scorer.start() was not called in this event loop")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((events, fut))
        return await fut

    # ----------------------------------------------------------------- the batching task
    async def _run(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            jobs = [await queue.get()]
            n = len(jobs[0][0])
            while n < self.max_rows and not queue.empty():
                jobs.append(queue.get_nowait())
                n += len(jobs[-1][0])
            try:
                await self._round(jobs)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - never let the task die; the jobs carry the error
                log.exception("scoring round failed")
                for _events, fut in jobs:
                    if not fut.done():
                        fut.set_exception(e)

    async def _round(self, jobs: list[tuple[list[Event], asyncio.Future]]) -> None:
        model = self.manager.current           # one model for the whole round
        if model is None:
            for _events, fut in jobs:
                _resolve(fut, exc=NoModel(self.manager.problem or "no model loaded yet"))
            return
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for events, _fut in jobs:
                    for e in events:
                        queue_lookup(pipe, self.keys, e)
                replies = await pipe.execute()
        except Exception as e:  # noqa: BLE001 - any Redis failure: the feature store is unavailable
            err = FeatureStoreUnavailable(f"{type(e).__name__}: {e}"[:300])
            for _events, fut in jobs:
                _resolve(fut, exc=err)
            return
        groups: list[list[Lookup]] = []
        i = 0
        for events, _fut in jobs:
            k = LOOKUP_REPLIES * len(events)
            groups.append(lookups_from_replies(replies[i:i + k], events))
            i += k
        await self._predict(model, jobs, groups)

    async def _predict(self, model: LoadedModel, jobs: list, groups: list[list[Lookup]]) -> None:
        rows = [lk.features for group in groups for lk in group]
        try:
            if model.booster is not None:
                proba = model.predict(rows)
            else:
                proba = await asyncio.to_thread(model.predict, rows)
        except Exception as e:  # noqa: BLE001 - score each request alone, so one bad request fails alone
            if len(jobs) == 1:
                _resolve(jobs[0][1], exc=e)
                return
            for job, group in zip(jobs, groups, strict=True):
                await self._predict(model, [job], [group])
            return
        if self.on_round:
            self.on_round(len(rows))
        i = 0
        for (_events, fut), group in zip(jobs, groups, strict=True):
            _resolve(fut, Scored(model, group, proba[i:i + len(group)]))
            i += len(group)


def _resolve(fut: asyncio.Future, value=None, exc: BaseException | None = None) -> None:
    if fut.done():          # the request went away (client disconnected, cancelled)
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
