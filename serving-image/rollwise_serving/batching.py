"""Micro-batching: concurrent predict calls coalesced into bounded batches, with degradation.

Why micro-batches: with a small model, a server spends over 90 % of its time outside ``predict``,
and a numpy/onnxruntime call on 16 rows costs barely more than on one. Concurrent requests are
therefore queued and run as one bounded call (at most ``--max-batch-size`` rows): the first
request of a quiet period starts the batch on the next event-loop turn, so at concurrency 1
nothing waits; under load (the previous batch was shared) a batch waits two more loop turns, so
requests already on the sockets join it, and everything that arrived meanwhile shares the call. A request
is validated against the model (``Runtime.prepare``) and the feature schema *before* it joins a
batch (in ``dataplane``), and if a batch still fails, each request is retried alone so one poison
request cannot fail its neighbours.

Degradation: when the primary raises, or misses ``--deadline-ms`` (then predict runs in a worker
thread so the deadline can be enforced), the fallback model answers those requests (outcome
``fallback``); while a late primary call is still running, new batches go to the fallback too.
When the primary never loaded and the fallback did (``Repository.fallback_serves``), every
batch goes to the fallback (reason ``unavailable``). Without a fallback the error surfaces (500,
or 504 for the deadline).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rollwise_serving.errors import DeadlineError, PredictError
from rollwise_serving.metrics import ServerMetrics
from rollwise_serving.protocol import InferInput
from rollwise_serving.repository import Repository
from rollwise_serving.runtimes import Array, Prediction

log = logging.getLogger("rollwise_serving.batching")
# Loop turns a batch waits for more requests when the previous batch was shared (i.e. under load).
# Measured with bench/serving.py: 0 turns gives batches of 2-3 at concurrency 16, 2 turns about
# +20 % throughput; more turns add latency without more rows.
EXTRA_TURNS_UNDER_LOAD = 2


@dataclass(slots=True)
class _Item:
    inputs: dict[str, Array]
    raw: Sequence[InferInput]
    rows: int
    group: tuple[Any, ...]
    future: asyncio.Future[tuple[Prediction, bool]] = field(repr=False)


class Batcher:
    """Coalesces concurrent predict calls into bounded batches (see the module docstring)."""

    def __init__(
        self, repository: Repository, metrics: ServerMetrics, *, max_rows: int, deadline_ms: int | None
    ) -> None:
        self.repository = repository
        self.metrics = metrics
        self.max_rows = max_rows
        self.deadline_seconds = deadline_ms / 1000 if deadline_ms else None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="predict") if deadline_ms else None
        self._pending: deque[_Item] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._late: asyncio.Future[Prediction] | None = None
        self._last_batch = 0

    async def submit(self, inputs: dict[str, Array], raw: Sequence[InferInput]) -> tuple[Prediction, bool]:
        """The prediction for these rows and whether the fallback gave it."""
        loop = asyncio.get_running_loop()
        rows = len(next(iter(inputs.values())))
        group = tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(inputs.items()))
        item = _Item(inputs, raw, rows, group, loop.create_future())
        self._pending.append(item)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await item.future

    async def _drain(self) -> None:
        try:
            while self._pending:
                if self._last_batch > 1 and len(self._pending) < self.max_rows:
                    # Under load, give the loop a few turns to read the requests already on
                    # the sockets: a call on 16 rows costs about what one on 1 row does.
                    for _ in range(EXTRA_TURNS_UNDER_LOAD):
                        await asyncio.sleep(0)
                batch = self._take()
                self._last_batch = len(batch)
                try:
                    await self._run(batch)
                except Exception as err:  # a bug here must fail these requests, not hang them
                    log.exception("batch failed unexpectedly")
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(PredictError(f"internal error: {err}"))
        finally:
            self._drainer = None

    def _take(self) -> list[_Item]:
        first = self._pending.popleft()
        batch, rows = [first], first.rows
        runtime = self.repository.primary.runtime or self.repository.fallback_runtime()
        if runtime is not None and not runtime.batchable:
            return batch
        skipped: list[_Item] = []
        while self._pending and rows < self.max_rows:
            item = self._pending.popleft()
            if item.group == first.group and rows + item.rows <= self.max_rows:
                batch.append(item)
                rows += item.rows
            else:
                skipped.append(item)
                if len(skipped) > 16:
                    break
        self._pending.extendleft(reversed(skipped))
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            inputs = {k: np.concatenate([i.inputs[k] for i in batch]) for k in batch[0].inputs}
        rows = sum(item.rows for item in batch)
        if self.repository.fallback_serves:
            await self._fallback(batch, "unavailable")
            return
        try:
            prediction = await self._primary(inputs)
            if len(batch) > 1:
                _check_rows(prediction, rows)
        except TimeoutError:
            await self._fallback(batch, "deadline")
            return
        except Exception as err:
            if len(batch) > 1:  # find the poison: each request alone
                for item in batch:
                    await self._run([item])
                return
            log.warning("primary predict failed: %s: %s", type(err).__name__, err)
            await self._fallback(batch, "error", err)
            return
        _deliver(batch, prediction, fallback=False)

    async def _primary(self, inputs: dict[str, Array]) -> Prediction:
        runtime = self.repository.runtime()
        if self._executor is None:
            return runtime.predict(inputs)
        if self._late is not None and not self._late.done():
            raise TimeoutError("the primary is still busy with a batch that missed its deadline")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, runtime.predict, inputs)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.deadline_seconds)
        except TimeoutError:
            self._late = future
            future.add_done_callback(_consume)
            raise

    async def _fallback(self, batch: list[_Item], reason: str, cause: Exception | None = None) -> None:
        fallback = self.repository.fallback_runtime()
        if fallback is None:
            error: Exception
            if reason == "deadline":
                error = DeadlineError(
                    f"the model missed its {self.deadline_seconds}s deadline and no fallback is set"
                )
            else:
                error = PredictError(f"the model failed: {type(cause).__name__}: {cause}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        counter = self.metrics.fallback_by_reason[reason]
        for item in batch:
            try:
                prediction = fallback.predict(fallback.prepare(item.raw))
            except Exception as err:
                log.warning("fallback predict failed too: %s: %s", type(err).__name__, err)
                if not item.future.done():
                    item.future.set_exception(PredictError(f"the model and its fallback failed: {err}"))
                continue
            counter.inc()
            _deliver([item], prediction, fallback=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _check_rows(prediction: Prediction, rows: int) -> None:
    """A shared call must answer one row per input row, or it cannot be split back per caller."""
    for name, array in prediction.outputs.items():
        if array.ndim == 0 or len(array) != rows:
            shape = list(array.shape)
            raise PredictError(
                f"the model returned output {name!r} with shape {shape} for {rows} input row(s)"
            )


def _consume(future: asyncio.Future[Prediction]) -> None:
    if not future.cancelled():
        future.exception()  # a late primary's error is expected; do not log it as unretrieved


def _deliver(batch: list[_Item], prediction: Prediction, *, fallback: bool) -> None:
    if len(batch) == 1:
        if not batch[0].future.done():
            batch[0].future.set_result((prediction, fallback))
        return
    start = 0
    for item in batch:
        end = start + item.rows
        part = Prediction(
            {k: v[start:end] for k, v in prediction.outputs.items()},
            None if prediction.labels is None else prediction.labels[start:end],
            None if prediction.scores is None else prediction.scores[start:end],
        )
        if not item.future.done():
            item.future.set_result((part, fallback))
        start = end
