"""Parent side of evaluation: run jobs in worker processes and stream results as they finish.

Workers come from joblib's loky executor (or a Dask or Ray cluster, see `evonas.distributed`)
and stay warm between generations (torch imported and the dataset loaded once per worker). Every
evaluation runs in a worker, so a worker that dies (segfault, `os._exit`, the OOM killer) costs
only its evaluation:

- the next job is dispatched as soon as a worker is free; never more jobs in flight than workers;
- when a worker dies, the jobs that were in flight are suspects; each is rerun alone, so the one
  that kills its worker is known for certain; it is retried `crash_retries` times, then reported
  with status `crashed`;
- a job that outlives its timeout by a grace period (a hang that the in-worker alarm could not
  interrupt) has its workers killed and is reported as `timeout`;
- `should_stop()` stops dispatching; jobs in flight finish and are still yielded.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from joblib.executor import get_memmapping_executor
from joblib.externals.loky.process_executor import BrokenProcessPool

from evonas.evaluate import CRASHED, TIMEOUT, init_worker, run_job

IDLE_WORKER_SECONDS = 600  # keep workers warm between generations
POLL_SECONDS = 0.2
HARD_TIMEOUT_GRACE = 10.0
BACKENDS = ("loky", "dask", "ray", "inline")


class WorkerLost(Exception):
    """The process that ran a job died (or the cluster gave up on the job)."""


class LokyPool:
    """Local worker processes from joblib's reusable loky executor; a dead worker breaks the
    whole pool, which is then restarted (the dispatch loop finds the culprit)."""

    kills_all_on_death = True

    def __init__(self, n_jobs: int) -> None:
        self.n_jobs = n_jobs
        self.executor = self._start()

    def _start(self):
        # joblib's own reusable executor, so that joblib.Parallel keeps working in this process
        return get_memmapping_executor(
            self.n_jobs, timeout=IDLE_WORKER_SECONDS, initializer=init_worker
        )

    def submit(self, job: dict[str, Any]) -> Future:
        return self.executor.submit(run_job, job)

    def wait(self, futures: list) -> list:
        done, _ = wait(futures, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        return list(done)

    def outcome(self, future: Future) -> dict[str, Any]:
        try:
            return future.result()
        except BrokenProcessPool:
            raise WorkerLost from None

    def restart(self) -> None:
        self.executor.shutdown(wait=True, kill_workers=True)
        self.executor = self._start()

    def cancel(self, future: Future) -> None:
        pass  # loky cannot stop one task; restart() kills its worker

    def close(self, kill: bool = False) -> None:
        if kill:
            self.executor.shutdown(wait=False, kill_workers=True)


def make_pool(
    backend: str, n_jobs: int, crash_retries: int, address: str = "", resources: dict | None = None
):
    """The worker pool of a backend; cluster pools are started once per process and reused."""
    if backend == "loky":
        return LokyPool(n_jobs)
    from evonas.distributed import DaskPool, RayPool, shared_pool

    if backend in ("dask", "ray"):
        cls = DaskPool if backend == "dask" else RayPool
        return shared_pool(cls, n_jobs, crash_retries, address, resources or {})
    raise ValueError(f"parallel.backend: unknown backend {backend!r}; expected {list(BACKENDS)}")


def close_pools() -> None:
    """Shut down the cluster pools of this process (none unless dask or ray was used)."""
    import sys

    if "evonas.distributed" in sys.modules:
        sys.modules["evonas.distributed"].close_pools()


def _failure(job: dict[str, Any], status: str, error: str) -> dict[str, Any]:
    now = time.time()
    return {"uid": job["uid"], "status": status, "error": error, "metrics": {},
            "worker": None, "started_at": now, "finished_at": now}  # fmt: skip


def evaluate_stream(
    jobs: Iterable[dict[str, Any] | None],
    n_jobs: int,
    crash_retries: int = 1,
    should_stop: Callable[[], bool] = lambda: False,
    backend: str = "loky",
    address: str = "",
    resources: dict | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one result per job (in completion order), unless stopped early; each result carries
    its job's uid. `jobs` is read lazily, one job whenever a worker is free; it may yield None
    for "no job before the next result" (the steady-state loop breeds from results), but only
    while some job is in flight. Backend `inline` evaluates in this process, one job after
    another: for table lookups and debugging, without crash isolation. `address` is an existing
    Dask scheduler or Ray cluster (default: start a local one); `resources` are what each
    evaluation needs from a cluster worker (e.g. {"GPU": 1})."""
    source = iter(jobs)
    if backend == "inline":
        for job in source:
            if should_stop():
                return
            if job is not None:
                yield run_job(job)
        return
    solo: deque[dict[str, Any]] = deque()  # suspects of a worker death, each run alone
    crashes: Counter[int] = Counter()
    in_flight: dict[Any, tuple[dict[str, Any], float]] = {}
    exhausted = False
    pool = make_pool(backend, n_jobs, crash_retries, address, resources)
    try:
        while not exhausted or solo or in_flight:
            if should_stop():
                exhausted = True
                solo.clear()
            if solo and not in_flight:
                job = solo.popleft()
                in_flight[pool.submit(job)] = (job, time.monotonic())
            while not solo and not exhausted and len(in_flight) < n_jobs:
                job = next(source, _END)
                if job is _END:
                    exhausted = True
                elif job is None:
                    break  # the source waits for a result
                else:
                    in_flight[pool.submit(job)] = (job, time.monotonic())
            if not in_flight:
                continue
            broken = []
            for future in pool.wait(list(in_flight)):
                job, _started = in_flight.pop(future)
                try:
                    yield pool.outcome(future)
                except WorkerLost as lost:
                    if not pool.kills_all_on_death:  # the cluster already retried it
                        yield _failure(job, CRASHED, str(lost) or "WorkerDied: worker lost")
                        continue
                    broken.append(job)
            overdue = _overdue(in_flight)
            for job in overdue:
                limit = job["training"].get("timeout")
                yield _failure(job, TIMEOUT, f"EvaluationTimeout: killed after {limit:g} s")
            if not pool.kills_all_on_death:
                for future, (job, _) in list(in_flight.items()):
                    if job in overdue:
                        pool.cancel(future)
                        del in_flight[future]
                continue
            if broken or overdue:
                # The pool is gone (or must go): every job still in flight is lost with it.
                pool.restart()
                lost = broken + [job for job, _ in in_flight.values() if job not in overdue]
                in_flight.clear()
                yield from _handle_crash(lost, bool(overdue), solo, crashes, crash_retries)
    except BaseException:
        pool.close(kill=True)
        raise
    pool.close()


_END = object()


def _overdue(in_flight: dict[Future, tuple[dict[str, Any], float]]) -> list[dict[str, Any]]:
    now = time.monotonic()
    overdue = []
    for job, started in in_flight.values():
        limit = job["training"].get("timeout") or 0
        if limit and now - started > limit * 1.5 + HARD_TIMEOUT_GRACE:
            overdue.append(job)
    return overdue


def _handle_crash(
    lost: list[dict[str, Any]],
    killed_on_purpose: bool,
    solo: deque[dict[str, Any]],
    crashes: Counter[int],
    crash_retries: int,
) -> Iterator[dict[str, Any]]:
    """A job that was alone when its worker died is the culprit; others become solo suspects."""
    if len(lost) == 1 and not killed_on_purpose:
        job = lost[0]
        crashes[job["uid"]] += 1
        if crashes[job["uid"]] > crash_retries:
            attempts = crashes[job["uid"]]
            yield _failure(job, CRASHED, f"WorkerDied: the worker process died {attempts} times")
            return
    solo.extendleft(reversed(lost))
