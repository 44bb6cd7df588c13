"""The result stream: jobs go to a pool, results come back as they finish.

`Dispatcher` keeps at most `n_jobs` evaluations in flight and starts the next queued job as soon
as a worker is free. A worker that dies costs only its evaluation:

- with a pool that a dead worker breaks (loky), the jobs that were in flight are suspects; each is
  rerun alone (nothing else runs beside it), so the one that kills its worker is known for
  certain; it is retried `crash_retries` times, then reported with status `crashed`;
- a job that outlives its timeout by a grace period (a hang that the in-worker alarm could not
  interrupt) is given up (its workers killed where the pool allows) and reported as `timeout`;
  the jobs killed with it are innocent and start again as they were;
- once `should_stop()` is true nothing more is started; jobs in flight finish and are returned.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from evonas.pools import Pool, WorkerLost, make_pool
from evonas.records import CRASHED, TIMEOUT, Job, Result

POLL_SECONDS = 0.2
HARD_TIMEOUT_GRACE = 10.0


class Dispatcher:
    def __init__(
        self,
        pool: Pool,
        n_jobs: int,
        crash_retries: int = 1,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.pool, self.n_jobs, self.crash_retries = pool, n_jobs, crash_retries
        self.should_stop = should_stop
        self.queue: deque[Job] = deque()  # submitted, not started
        self.solo: deque[Job] = deque()  # suspects of a worker death, each run alone
        self.in_flight: dict[Any, tuple[Job, float]] = {}
        self.alone = False  # a suspect is running: nothing else may start
        self.crashes: Counter[int] = Counter()

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    @property
    def busy(self) -> bool:
        """Something is queued or running (a stop empties the queue)."""
        return bool(self.queue or self.solo or self.in_flight)

    def results(self, before_waiting: Callable[[], None] = lambda: None) -> list[Result]:
        """The results that are ready, waiting for at least one if none is (`before_waiting` is
        called first: the journal commits then). Empty when nothing is queued or in flight."""
        while True:
            self._start_jobs()
            if not self.in_flight:
                return []
            futures = list(self.in_flight)
            done = self.pool.wait(futures, timeout=0)
            if not done:
                before_waiting()
                done = self.pool.wait(futures, timeout=POLL_SECONDS)
            found = self._collect(done)
            if found:
                return found

    def close(self, kill: bool = False) -> None:
        self.pool.close(kill=kill)

    # --- internals ------------------------------------------------------------------------------

    def _start_jobs(self) -> None:
        if self.should_stop():
            self.queue.clear()
            self.solo.clear()
        self.alone = self.alone and bool(self.in_flight)
        if self.solo or self.alone:  # suspects, one at a time and alone
            if self.solo and not self.in_flight:
                self._start(self.solo.popleft())
                self.alone = True
            return
        while self.queue and len(self.in_flight) < self.n_jobs:
            self._start(self.queue.popleft())

    def _start(self, job: Job) -> None:
        self.in_flight[self.pool.submit(job)] = (job, time.monotonic())

    def _collect(self, done: list[Any]) -> list[Result]:
        results, broken = [], []
        for future in done:
            job, _started = self.in_flight.pop(future)
            try:
                results.append(self.pool.outcome(future))
            except WorkerLost as lost:
                if self.pool.restarts_on_worker_death:
                    broken.append(job)
                else:  # the cluster already retried it
                    error = str(lost) or "WorkerDied: worker lost"
                    results.append(Result.failure(job.uid, CRASHED, error))
        overdue = self._overdue()
        for job in overdue:
            limit = job.training.get("timeout")
            results.append(
                Result.failure(job.uid, TIMEOUT, f"EvaluationTimeout: killed after {limit:g} s")
            )
        if not self.pool.restarts_on_worker_death:
            for future, (job, _) in list(self.in_flight.items()):
                if job in overdue:
                    self.pool.cancel(future)
                    del self.in_flight[future]
        elif broken or overdue:
            # The pool is gone (or must go): every job still in flight is lost with it.
            self.pool.restart()
            others = [job for job, _ in self.in_flight.values() if job not in overdue]
            self.in_flight.clear()
            if broken:
                results += self._suspects(broken + others)
            else:  # killed on purpose beside a hung job: innocent, they start again
                self.queue.extendleft(reversed(others))
        return results

    def _overdue(self) -> list[Job]:
        now = time.monotonic()
        overdue = []
        for job, started in self.in_flight.values():
            limit = job.training.get("timeout") or 0
            if limit and now - started > limit * 1.5 + HARD_TIMEOUT_GRACE:
                overdue.append(job)
        return overdue

    def _suspects(self, lost: list[Job]) -> list[Result]:
        """A job that was alone when its worker died is the culprit; others rerun alone."""
        if len(lost) == 1:
            job = lost[0]
            self.crashes[job.uid] += 1
            if self.crashes[job.uid] > self.crash_retries:
                attempts = self.crashes[job.uid]
                error = f"WorkerDied: the worker process died {attempts} times"
                return [Result.failure(job.uid, CRASHED, error)]
        self.solo.extendleft(reversed(lost))
        return []


def evaluate_stream(
    jobs: Iterable[Job],
    n_jobs: int,
    crash_retries: int = 1,
    should_stop: Callable[[], bool] = lambda: False,
    backend: str = "loky",
) -> Iterator[Result]:
    """Evaluate `jobs` on a fresh pool of `backend`; one result per job, in completion order
    (fewer after a stop)."""
    dispatcher = Dispatcher(make_pool(backend, n_jobs, crash_retries), n_jobs, crash_retries,
                            should_stop)  # fmt: skip
    for job in jobs:
        dispatcher.submit(job)
    try:
        while results := dispatcher.results():
            yield from results
    except BaseException:
        dispatcher.close(kill=True)
        raise
    dispatcher.close()
