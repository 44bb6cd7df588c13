"""Where evaluations run: the `Pool` protocol and its backends.

- `loky`: local worker processes from joblib's reusable executor (the default). A worker that
  dies breaks the whole pool; the dispatcher restarts it and finds the culprit.
- `dask`: tasks on a Dask cluster (the scheduler at `parallel.address`, or a local cluster of
  single-threaded worker processes); the cluster reruns a task whose worker died.
- `ray`: tasks on Ray (the cluster at `address`, or a local Ray); Ray retries a task whose
  worker died.
- `inline`: in this process, one job after another (table lookups, debugging): no crash isolation.

Pools take `Job`s and give `Result`s; what crosses to another process goes as plain dicts
(`evaluate.run_job`). The parent stays the only writer of the journal. Cluster pools are started
once per process and reused, so workers stay warm (torch imported, data loaded); `close_pools()`
shuts them down. dask and ray are imported only when used.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Protocol

from evonas.config import ConfigError
from evonas.evaluate import evaluate, init_worker, run_job
from evonas.records import Job, Result

IDLE_WORKER_SECONDS = 600  # keep local workers warm between runs
CONNECT_SECONDS = 30


class WorkerLost(Exception):
    """The process that ran a job died (or the cluster gave up on the job)."""


class Pool(Protocol):
    # True when a dead worker takes every job in flight with it (loky): the dispatcher then
    # restarts the pool and reruns the suspects one at a time to find the culprit. Otherwise the
    # cluster has already retried the job, and a WorkerLost outcome is final.
    restarts_on_worker_death: bool

    def submit(self, job: Job) -> Any:
        """Start evaluating `job`; returns a future."""

    def wait(self, futures: list[Any], timeout: float) -> list[Any]:
        """The futures that are done, waiting up to `timeout` seconds for the first."""

    def outcome(self, future: Any) -> Result:
        """The result of a done future; WorkerLost if its worker died."""

    def cancel(self, future: Any) -> None:
        """Give up on a job (its result is no longer wanted)."""

    def restart(self) -> None:
        """Replace every worker (after a death or a hung job)."""

    def close(self, kill: bool = False) -> None:
        """End of a run: local workers stay warm unless `kill`; a cluster stays until
        `close_pools()`."""


class _Done:
    """The result of an evaluation that already ran (no threads, no locks: lookups are hot)."""

    __slots__ = ("result",)

    def __init__(self, result: Result) -> None:
        self.result = result


class InlinePool:
    """Runs each job in this process as it is submitted."""

    restarts_on_worker_death = False

    def submit(self, job: Job) -> _Done:
        return _Done(evaluate(job))

    def wait(self, futures: list[_Done], timeout: float) -> list[_Done]:
        return futures

    def outcome(self, future: _Done) -> Result:
        return future.result

    def cancel(self, future: _Done) -> None:
        pass

    def restart(self) -> None:
        pass

    def close(self, kill: bool = False) -> None:
        pass


class LokyPool:
    """Local worker processes (joblib's own reusable executor, so that `joblib.Parallel` keeps
    working in this process afterwards)."""

    restarts_on_worker_death = True

    def __init__(self, n_jobs: int) -> None:
        self.n_jobs = n_jobs
        self.executor = self._start()

    def _start(self):
        from joblib.executor import get_memmapping_executor

        _quiet_resource_tracker()
        return get_memmapping_executor(
            self.n_jobs, timeout=IDLE_WORKER_SECONDS, initializer=init_worker
        )

    def submit(self, job: Job) -> Future:
        return self.executor.submit(run_job, job.to_dict())

    def wait(self, futures: list[Future], timeout: float) -> list[Future]:
        done, _ = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def outcome(self, future: Future) -> Result:
        from joblib.externals.loky.process_executor import BrokenProcessPool

        try:
            return Result.from_dict(future.result())
        except BrokenProcessPool:
            raise WorkerLost from None

    def cancel(self, future: Future) -> None:
        pass  # loky cannot stop one task; restart() kills its worker

    def restart(self) -> None:
        _kill(self.executor)
        self.executor = self._start()

    def close(self, kill: bool = False) -> None:
        if kill:
            _kill(self.executor)


def _kill(executor) -> None:
    """Shut a loky executor down, killing its workers, without its manager thread's traceback.

    loky (joblib 1.6) drops the queued work items when it kills its workers but not their ids,
    so its manager thread can die on a KeyError for a job submitted just before (and print a
    traceback after evonas's last line). The jobs are lost either way, as the kill intends, so
    that one error is muted while the thread is joined; any other is printed as usual.
    """
    printed = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        manager = type(args.thread).__name__ == "_ExecutorManagerThread"
        if not (manager and args.exc_type is KeyError):
            printed(args)

    threading.excepthook = hook
    try:
        executor.shutdown(wait=True, kill_workers=True)
    finally:
        threading.excepthook = printed


# After a stop that kills the workers (a full disk, a second Ctrl-C), loky's resource tracker
# frees the semaphores they held and warns that it did, after evonas's last line of output. The
# tracker is a process of its own that inherits this environment, so its warning is silenced
# here; what it frees is freed either way.
_TRACKER_WARNING = "ignore::UserWarning:joblib.externals.loky.backend.resource_tracker"


def _quiet_resource_tracker() -> None:
    current = os.environ.get("PYTHONWARNINGS", "")
    if _TRACKER_WARNING not in current:
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [current, _TRACKER_WARNING]))


class ClusterPool:
    """What the cluster pools share: the cluster replaces dead workers itself, so nothing is
    restarted, and the pool lives until `close_pools()`."""

    restarts_on_worker_death = False

    def restart(self) -> None:
        pass

    def close(self, kill: bool = False) -> None:
        if kill:
            self.shutdown()

    def shutdown(self) -> None:
        raise NotImplementedError


class DaskPool(ClusterPool):
    def __init__(self, n_jobs: int, crash_retries: int, address: str, resources: dict) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError(
                "parallel.backend: dask needs the distributed package: pip install 'evonas[dask]'"
            ) from None
        self.resources = resources or None
        self.cluster = None
        if address:
            try:
                self.client = Client(address, timeout=CONNECT_SECONDS)
            except (OSError, TimeoutError) as exc:
                raise ConfigError(
                    f"parallel.address: no Dask scheduler answers at {address} ({exc})"
                ) from None
        else:
            # allowed-failures is read by the scheduler, which this process starts
            with dask.config.set({"distributed.scheduler.allowed-failures": crash_retries}):
                self.cluster = LocalCluster(
                    n_workers=n_jobs,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    resources=self.resources,
                    silence_logs=logging.ERROR,
                )
            self.client = Client(self.cluster)

    def submit(self, job: Job):
        key = f"evonas-uid{job.uid}-{uuid.uuid4().hex[:8]}"
        return self.client.submit(
            run_job, job.to_dict(), key=key, pure=False, resources=self.resources
        )

    def wait(self, futures: list, timeout: float) -> list:
        from distributed import wait as dask_wait

        try:
            done, _ = dask_wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return [f for f in futures if f.done()]
        return list(done)

    def outcome(self, future) -> Result:
        from distributed import KilledWorker

        try:
            return Result.from_dict(future.result())
        except KilledWorker:
            raise WorkerLost(
                "WorkerDied: Dask workers died running it; the cluster gave up"
            ) from None

    def cancel(self, future) -> None:
        future.cancel()

    def shutdown(self) -> None:
        _forget(self)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class RayPool(ClusterPool):
    def __init__(self, n_jobs: int, crash_retries: int, address: str, resources: dict) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "parallel.backend: ray needs the ray package: pip install 'evonas[ray]'"
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()  # shut down only a Ray this pool started
        if self.started:
            options = {"address": address} if address else {"num_cpus": n_jobs}
            try:
                ray.init(include_dashboard=False, logging_level=logging.ERROR, **options)
            except (ConnectionError, TimeoutError) as exc:
                raise ConfigError(
                    f"parallel.address: no Ray cluster at {address} ({exc})"
                ) from None
        self.task = ray.remote(num_cpus=1, num_gpus=resources.get("GPU", 0),
                               max_retries=crash_retries)(run_job)  # fmt: skip

    def submit(self, job: Job):
        return self.task.remote(job.to_dict())

    def wait(self, futures: list, timeout: float) -> list:
        ready, _ = self.ray.wait(futures, num_returns=1, timeout=timeout)
        return ready

    def outcome(self, ref) -> Result:
        errors = self.ray.exceptions
        try:
            return Result.from_dict(self.ray.get(ref))
        except (errors.WorkerCrashedError, errors.TaskCancelledError, errors.RayTaskError) as exc:
            raise WorkerLost(f"WorkerDied: {type(exc).__name__}") from None

    def cancel(self, ref) -> None:
        self.ray.cancel(ref, force=True)

    def shutdown(self) -> None:
        _forget(self)
        if self.started:
            self.ray.shutdown()


_CLUSTERS: dict[tuple, ClusterPool] = {}
_CLUSTER_KINDS: dict[str, type[ClusterPool]] = {"dask": DaskPool, "ray": RayPool}


def make_pool(
    backend: str,
    n_jobs: int,
    crash_retries: int = 1,
    address: str = "",
    resources: dict[str, Any] | None = None,
) -> Pool:
    """The pool of a backend; a cluster pool is started once per (backend, size, address,
    resources) and reused for the life of this process."""
    if backend == "inline":
        return InlinePool()
    if backend == "loky":
        return LokyPool(n_jobs)
    if backend not in _CLUSTER_KINDS:
        raise ConfigError(f"parallel.backend: unknown backend {backend!r}")
    resources = resources or {}
    key = (backend, n_jobs, crash_retries, address, tuple(sorted(resources.items())))
    if key not in _CLUSTERS:
        _CLUSTERS[key] = _CLUSTER_KINDS[backend](n_jobs, crash_retries, address, resources)
    return _CLUSTERS[key]


@atexit.register
def close_pools() -> None:
    """Shut down the cluster pools this process started."""
    while _CLUSTERS:
        _CLUSTERS.popitem()[1].shutdown()


def _forget(pool: ClusterPool) -> None:
    for key, known in list(_CLUSTERS.items()):
        if known is pool:
            del _CLUSTERS[key]
