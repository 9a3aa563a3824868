"""Dynamic batching: one worker thread owns the model; requests queue and are answered in batches.

The worker takes the first waiting request, then whatever else arrives within `max_wait` (up to
`max_batch_size` requests), groups them by their key (requests with equal keys can share one model call:
same task, same prompt and generation settings) and runs one call per group. While the model is busy,
requests pile up, so under load batches fill without waiting at all. The queue is bounded: `submit` raises
`QueueFull` instead of letting waiting requests grow without end (the server answers 503).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# Runs one group: (key, the group's payloads) -> one result per payload, in order.
BatchRunner = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class QueueFull(RuntimeError):
    """Too many requests are already waiting for the model."""


@dataclass
class Job:
    key: Hashable  # requests with equal keys share one model call
    payload: Any
    future: Future = field(default_factory=Future)


_STOP = object()


class BatchWorker:
    """A thread that answers `Job`s with `runner`, several at a time."""

    def __init__(self, runner: BatchRunner, max_batch_size: int, max_wait_s: float, max_queue: int,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch or (lambda size: None)  # told each model call's batch size (metrics)
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._loop, name="mixkit-model-worker", daemon=True)
        self._stopping = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Answer every job already queued, then end the thread."""
        self._stopping = True
        self._queue.put(_STOP)  # blocks while the queue is full: the worker is draining it
        self._thread.join(timeout)

    @property
    def depth(self) -> int:
        """Jobs waiting for the model (not counting the batch it is running)."""
        return self._queue.qsize()

    def submit(self, key: Hashable, payload: Any) -> Future:
        if self._stopping:
            raise QueueFull("the server is shutting down")
        job = Job(key, payload)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests are already waiting for the model") from None
        return job.future

    def _loop(self) -> None:
        while True:
            batch, stop = self._collect()
            for key, jobs in group_by_key(batch).items():
                self._run_group(key, jobs)
            if stop:
                return

    def _collect(self) -> tuple[list[Job], bool]:
        """The next batch: the first job, then what arrives within `max_wait_s`; and whether to stop after it."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            try:  # jobs already waiting are taken at once, even past the deadline
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            batch.append(job)
        return batch, False

    def _run_group(self, key: Hashable, jobs: list[Job]) -> None:
        live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.on_batch(len(live))
        try:
            results = self.runner(key, [job.payload for job in live])
            if len(results) != len(live):
                raise RuntimeError(f"the model answered {len(results)} of {len(live)} requests")
        except Exception as error:  # the requests fail; the worker lives on
            logger.exception("model call failed for %d request(s)", len(live))
            for job in live:
                job.future.set_exception(error)
            return
        for job, result in zip(live, results):
            job.future.set_result(result)


def group_by_key(jobs: Sequence[Job]) -> dict[Hashable, list[Job]]:
    """Jobs per key, keys in first-seen order, jobs in arrival order."""
    groups: dict[Hashable, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.key, []).append(job)
    return groups
