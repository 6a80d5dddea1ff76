"""Dynamic batching: requests that arrive close together are decoded as one batch, on one thread.

Decoding a batch of sentences costs little more than decoding one, so under load the
server gains throughput by waiting a few milliseconds for company. `DynamicBatcher` keeps a
bounded queue of `Job` s; its worker thread takes the oldest job, waits up to ``wait_s`` after
that job arrived for more jobs with the same key (same search options) until their cost (source
subwords times beam size) would pass ``max_cost``, and hands them to ``run`` together. Each job's
`Future` receives its own result. The event loop never decodes, so it keeps accepting and
refusing requests while a batch runs; one thread decodes, so the model is never used twice at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The queue holds too many sentences to take this job now; the client should retry later."""


@dataclass
class Job:
    """One request's work: ``size`` sentences costing ``cost`` tokens; ``payload`` goes to ``run``.

    Jobs with equal ``key`` may share a batch.
    """

    key: Hashable
    size: int
    cost: int
    payload: Any
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """A bounded queue of jobs and the one worker thread that runs them in batches.

    ``run(jobs)`` returns one result per job, in order; if it raises, every job of that batch
    gets the exception. At most ``max_queued`` sentences wait at once (`submit` raises `QueueFull`).
    """

    def __init__(
        self,
        run: Callable[[Sequence[Job]], Sequence[Any]],
        wait_s: float,
        max_cost: int,
        max_queued: int,
        name: str = "lstm-mt-decoder",
    ) -> None:
        self._run = run
        self._wait_s = wait_s
        self._max_cost = max_cost
        self._max_queued = max_queued
        self._pending: deque[Job] = deque()
        self._queued = 0
        self._closing = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    @property
    def queued(self) -> int:
        """Sentences waiting (not counting the batch being decoded)."""
        return self._queued

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def submit(self, key: Hashable, size: int, cost: int, payload: Any) -> Future:
        """Queue a job; its future receives ``run``'s result for it. `QueueFull` when there is no room."""
        job = Job(key, size, cost, payload)
        with self._condition:
            if self._closing:
                raise QueueFull("the server is shutting down")
            if self._queued + size > self._max_queued:
                raise QueueFull(f"{self._queued} sentences are waiting (at most {self._max_queued})")
            self._pending.append(job)
            self._queued += size
            self._condition.notify()
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Decode what is queued, then stop the worker (waits for it up to ``timeout`` seconds)."""
        with self._condition:
            self._closing = True
            self._condition.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            try:
                results = self._run(batch)
            except Exception as error:  # each waiting client gets the failure; the worker lives on
                for job in batch:
                    job.future.set_exception(error)
                continue
            for job, result in zip(batch, results):
                job.future.set_result(result)

    def _next_batch(self) -> list[Job]:
        """Block until a batch is due (or closing with nothing left: [])."""
        with self._condition:
            while not self._pending and not self._closing:
                self._condition.wait()
            if not self._pending:
                return []
            first = self._pending[0]
            deadline = first.arrived + self._wait_s
            while not self._closing and self._compatible_cost(first) < self._max_cost:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            batch = self._take(first)
            self._queued -= sum(job.size for job in batch)
            return batch

    def _compatible_cost(self, first: Job) -> int:
        return sum(job.cost for job in self._pending if job.key == first.key)

    def _take(self, first: Job) -> list[Job]:
        """Remove and return ``first`` and, in arrival order, the jobs with its key that fit the cost cap."""
        batch: list[Job] = []
        kept: deque[Job] = deque()
        cost = 0
        for job in self._pending:
            if job.key == first.key and (not batch or cost + job.cost <= self._max_cost):
                batch.append(job)
                cost += job.cost
            else:
                kept.append(job)
        self._pending = kept
        return batch
