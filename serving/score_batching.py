"""Scoring of concurrent personalised requests in one pass over the item factors.

Requests whose user vectors are ready in the same event-loop turn (their Redis replies came
in together, as they do when the process is busy or was descheduled for a moment) are scored
by one `score_batch` instead of one mat-vec each. The work per request then falls as the
load rises (figures in docs/benchmarks.md), so a queue drains faster instead of growing; a
lone request waits one loop turn, microseconds.

A batch only ever holds requests scoring the same factor matrix, i.e. the same model version
(invariant 2): each request passes the matrix of the version it took at its start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from serving.scoring import score_batch

# Larger batches would make their first request wait for the whole product.
MAX_BATCH = 8


@dataclass(eq=False)
class _Batch:
    item_factors: np.ndarray
    vectors: list[np.ndarray] = field(default_factory=list)
    futures: list[asyncio.Future[np.ndarray]] = field(default_factory=list)


class ScoringBatcher:
    def __init__(self, max_batch: int = MAX_BATCH,
                 observe: Callable[[int], None] | None = None) -> None:
        self.max_batch = max_batch
        self.observe = observe  # called with each batch's size
        self._open: dict[int, _Batch] = {}  # id(item_factors) -> batch being filled

    async def scores(self, item_factors: np.ndarray, user_vector: np.ndarray) -> np.ndarray:
        """Every item's score for the user (a fresh row of its own: safe to mutate)."""
        loop = asyncio.get_running_loop()
        key = id(item_factors)  # the batch holds the matrix, so the id cannot be reused
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(item_factors)
            # Runs after the callbacks that are ready now: the other requests of this turn.
            loop.call_soon(self._run, key, batch)
        future: asyncio.Future[np.ndarray] = loop.create_future()
        batch.vectors.append(user_vector)
        batch.futures.append(future)
        if len(batch.vectors) >= self.max_batch:
            del self._open[key]  # full: later requests start the next one
        return await future

    def _run(self, key: int, batch: _Batch) -> None:
        if self._open.get(key) is batch:
            del self._open[key]
        if self.observe is not None:
            self.observe(len(batch.vectors))
        try:
            rows = score_batch(batch.item_factors, batch.vectors)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, row in zip(batch.futures, rows, strict=True):
            if not future.done():  # a cancelled request
                future.set_result(row)
