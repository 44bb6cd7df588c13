"""Parent side of evaluation: run jobs in worker processes and stream results as they finish.

Workers come from joblib's loky executor and stay warm between generations (torch imported and
the dataset loaded once per worker). Every evaluation runs in a worker, so a worker that dies
(segfault, `os._exit`, the OOM killer) costs only its evaluation:

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


def _executor(n_jobs: int):
    # joblib's own reusable loky executor, so that joblib.Parallel keeps working in this process
    return get_memmapping_executor(n_jobs, timeout=IDLE_WORKER_SECONDS, initializer=init_worker)


def _failure(job: dict[str, Any], status: str, error: str) -> dict[str, Any]:
    now = time.time()
    return {"uid": job["uid"], "status": status, "error": error, "metrics": {},
            "worker": None, "started_at": now, "finished_at": now}  # fmt: skip


def evaluate_stream(
    jobs: Iterable[dict[str, Any]],
    n_jobs: int,
    crash_retries: int = 1,
    should_stop: Callable[[], bool] = lambda: False,
    backend: str = "loky",
) -> Iterator[dict[str, Any]]:
    """Yield one result per job (in completion order), unless stopped early; each result carries
    its job's uid. Backend `inline` evaluates in this process, one job after another: for table
    lookups and debugging, without crash isolation."""
    if backend == "inline":
        for job in jobs:
            if should_stop():
                return
            yield run_job(job)
        return
    pending = deque(jobs)
    solo: deque[dict[str, Any]] = deque()  # suspects of a worker death, each run alone
    crashes: Counter[int] = Counter()
    in_flight: dict[Future, tuple[dict[str, Any], float]] = {}
    executor = _executor(n_jobs)
    try:
        while pending or solo or in_flight:
            if should_stop():
                pending.clear()
                solo.clear()
            if solo and not in_flight:
                job = solo.popleft()
                in_flight[executor.submit(run_job, job)] = (job, time.monotonic())
            while not solo and pending and len(in_flight) < n_jobs:
                job = pending.popleft()
                in_flight[executor.submit(run_job, job)] = (job, time.monotonic())
            if not in_flight:
                continue
            done, _ = wait(list(in_flight), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            broken = []
            for future in done:
                job, _started = in_flight.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    broken.append(job)
            overdue = _overdue(in_flight)
            if broken or overdue:
                # The pool is gone (or must go): every job still in flight is lost with it.
                executor.shutdown(wait=True, kill_workers=True)
                lost = broken + [job for job, _ in in_flight.values()]
                in_flight.clear()
                for job in overdue:
                    limit = job["training"].get("timeout")
                    yield _failure(job, TIMEOUT, f"EvaluationTimeout: killed after {limit:g} s")
                lost = [job for job in lost if job not in overdue]
                yield from _handle_crash(lost, bool(overdue), solo, crashes, crash_retries)
                executor = _executor(n_jobs)
    except BaseException:
        executor.shutdown(wait=False, kill_workers=True)
        raise


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
