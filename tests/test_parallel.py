import os
from pathlib import Path

import pytest

from evonas import parallel
from evonas.parallel import evaluate_stream
from evonas.records import Job

FAULTS = Path(__file__).with_name("faults.py")
slow = pytest.mark.slow  # worker processes
GENOME = {"layers": [], "training": {"lr": 0.001}}


def job(uid, fn="evaluate", seed=None, timeout=0.0):
    return Job(uid, GENOME, uid if seed is None else seed, {}, {"timeout": timeout},
               evaluator=f"{FAULTS}:{fn}")  # fmt: skip


def seed_for(kind):
    from tests.faults import BEHAVIOURS

    return BEHAVIOURS.index(kind)


def by_uid(results):
    return {r.uid: r for r in results}


@slow
def test_every_job_yields_one_result_with_its_uid():
    results = list(evaluate_stream([job(u, "slow") for u in range(6)], n_jobs=2))
    assert sorted(r.uid for r in results) == list(range(6))
    assert all(r.status == "ok" for r in results)
    workers = {r.worker for r in results}
    assert str(os.getpid()) not in workers and 1 <= len(workers) <= 2  # processes, at most 2


@slow
def test_a_dying_worker_costs_only_its_evaluation():
    jobs = [job(0, "slow"), job(1, seed=seed_for("exit")), job(2, "slow"), job(3, "slow")]
    results = by_uid(evaluate_stream(jobs, n_jobs=2, crash_retries=1))
    assert sorted(results) == [0, 1, 2, 3]
    assert results[1].status == "crashed"
    assert results[1].error == "WorkerDied: the worker process died 2 times"
    assert all(results[u].status == "ok" for u in (0, 2, 3))


@slow
def test_segfault_is_a_crash_and_retries_are_configurable():
    results = by_uid(evaluate_stream([job(0, seed=seed_for("segfault"))], 1, crash_retries=0))
    assert results[0].status == "crashed"
    assert "died 1 times" in results[0].error


@slow
def test_sleeping_past_the_timeout_is_a_timeout():
    results = by_uid(evaluate_stream([job(0, seed=seed_for("sleep"), timeout=1.0)], n_jobs=1))
    assert results[0].status == "timeout"
    assert results[0].error == "EvaluationTimeout: evaluation exceeded its timeout of 1 s"


@slow
def test_a_hang_that_ignores_the_alarm_is_killed(monkeypatch):
    monkeypatch.setattr(parallel, "HARD_TIMEOUT_GRACE", 1.0)
    jobs = [job(0, "hang", timeout=0.5), job(1, "slow", timeout=0.5)]
    results = by_uid(evaluate_stream(jobs, n_jobs=2))
    assert results[0].status == "timeout"
    assert results[0].error == "EvaluationTimeout: killed after 0.5 s"
    assert results[1].status == "ok"


@slow
@pytest.mark.parametrize(("kind", "status", "error"), [
    ("raise", "failed", "RuntimeError: injected failure for seed 1"),
    ("nan", "failed", "ValueError: metric 'val_accuracy' is nan"),
])  # fmt: skip
@slow
def test_exceptions_and_nan_are_failures(kind, status, error):
    results = by_uid(evaluate_stream([job(0, seed=seed_for(kind))], n_jobs=1))
    assert (results[0].status, results[0].error) == (status, error)


@slow
def test_stop_request_stops_dispatching_but_keeps_results_in_flight():
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 1

    results = list(evaluate_stream([job(u, "slow") for u in range(8)], 2, should_stop=should_stop))
    assert 1 <= len(results) <= 2
    assert all(r.status == "ok" for r in results)


def test_inline_backend_runs_in_this_process():
    results = list(evaluate_stream([job(u, "slow") for u in range(3)], n_jobs=1, backend="inline"))
    assert [r.uid for r in results] == [0, 1, 2]
    assert {r.worker for r in results} == {str(os.getpid())}


@slow
def test_joblib_parallel_still_works_after_a_search_in_the_same_process():
    from joblib import Parallel, delayed

    list(evaluate_stream([job(0, "slow"), job(1, "slow")], n_jobs=2))
    assert Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]


@slow
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_killing_the_local_pool_with_jobs_queued_prints_nothing_and_it_starts_again():
    import time

    from evonas.pools import LokyPool

    pool = LokyPool(1)
    queued = [pool.executor.submit(time.sleep, 60) for _ in range(12)]  # more than it can take
    pool.restart()  # kills the sleeping worker and drops the queue
    assert all(f.done() for f in queued)
    assert pool.outcome(pool.submit(job(0, "slow"))).status == "ok"
    pool.executor.submit(time.sleep, 60)
    pool.close(kill=True)  # a traceback from loky's thread would fail this test


class Ticket:
    """A future of the fake pool (hashable by identity, like real futures)."""

    def __init__(self, job):
        self.job = job


class FakePool:
    """A pool like loky's, in this process: a worker death breaks every job in flight; jobs
    marked `hang` never finish; jobs marked `late` finish only after a restart."""

    restarts_on_worker_death = True

    def __init__(self):
        self.running: set[int] = set()
        self.together: list[set[int]] = []  # who was running, at each start
        self.restarts = 0

    def submit(self, job):
        self.running.add(job.uid)
        self.together.append(set(self.running))
        return Ticket(job)

    def wait(self, futures, timeout):
        kinds = [(f, f.job.training.get("kind")) for f in futures]
        return [f for f, kind in kinds if kind == "ok" or (kind == "late" and self.restarts)]

    def outcome(self, future):
        from evonas.pools import WorkerLost
        from evonas.records import Result

        job = future.job
        if self.crashing:
            self.running.discard(job.uid)
            raise WorkerLost
        self.running.discard(job.uid)
        return Result(job.uid, "ok")

    @property
    def crashing(self):
        return any(uid in self.crashers for uid in self.running)

    crashers: set[int] = set()

    def restart(self):
        self.running.clear()
        self.restarts += 1

    def cancel(self, future):
        pass

    def close(self, kill=False):
        pass


def fake_job(uid, kind="ok", timeout=0.0):
    return Job(uid, GENOME, uid, {}, {"timeout": timeout, "kind": kind})


def drain(dispatcher):
    results = []
    while batch := dispatcher.results():
        results += batch
    return {r.uid: r for r in results}


def test_suspects_of_a_worker_death_run_alone_until_the_culprit_is_found():
    pool = FakePool()
    pool.crashers = {2}
    dispatcher = parallel.Dispatcher(pool, n_jobs=3, crash_retries=1)
    for uid in range(6):
        dispatcher.submit(fake_job(uid))
    results = drain(dispatcher)
    assert results[2].status == "crashed" and "died 2 times" in results[2].error
    assert all(results[uid].status == "ok" for uid in (0, 1, 3, 4, 5))
    first_crash = next(i for i, running in enumerate(pool.together) if 2 in running)
    suspects = [running for running in pool.together[first_crash + 1 :] if 2 in running]
    assert suspects and all(running == {2} for running in suspects)  # alone, every time


def test_jobs_killed_beside_a_hung_one_start_again_together(monkeypatch):
    monkeypatch.setattr(parallel, "HARD_TIMEOUT_GRACE", 0.0)
    pool = FakePool()
    dispatcher = parallel.Dispatcher(pool, n_jobs=3, crash_retries=1)
    dispatcher.submit(fake_job(0, "hang", timeout=0.001))
    for uid in (1, 2):  # no timeout of their own: they are only ever killed beside the hung one
        dispatcher.submit(fake_job(uid, "late"))
    results = drain(dispatcher)
    assert results[0].status == "timeout"
    assert results[1].status == results[2].status == "ok"
    assert {1, 2} in pool.together  # innocent: they ran side by side again, not one at a time
