"""Cluster backends for `evonas.parallel`: Dask (`distributed`) and Ray, imported lazily.

Each pool submits `run_job` as a task and hands results back to the parent, which stays the only
writer of the journal. The cluster itself handles a worker that dies: it reruns the task on
another worker up to `crash_retries` times and then gives up on it, which the run journals as
`crashed`. A job that outlives its hard timeout is cancelled and journaled as `timeout` (a task
that ignores cancellation keeps its worker busy until it returns). Pools are started once per
process and reused by every generation, so workers stay warm (torch imported, data loaded).
"""

from __future__ import annotations

import atexit
import logging
import uuid
from typing import Any

from evonas.config import ConfigError
from evonas.evaluate import run_job

POLL_SECONDS = 0.2
CONNECT_SECONDS = 30
_POOLS: dict[tuple, Any] = {}


def shared_pool(cls: type, n_jobs: int, crash_retries: int, address: str, resources: dict):
    """One pool per (kind, size, address, resources) for the life of this process."""
    key = (cls.__name__, n_jobs, crash_retries, address, tuple(sorted(resources.items())))
    if key not in _POOLS:
        _POOLS[key] = cls(n_jobs, crash_retries, address, resources)
    return _POOLS[key]


@atexit.register
def close_pools() -> None:
    while _POOLS:
        _POOLS.popitem()[1].shutdown()


def forget(pool: Any) -> None:
    for key, known in list(_POOLS.items()):
        if known is pool:
            del _POOLS[key]


class ClusterPool:
    """What the cluster pools share: the cluster replaces dead workers itself, so nothing is
    restarted, and the pool lives until the run ends (`shutdown`)."""

    kills_all_on_death = False

    def restart(self) -> None:
        pass

    def close(self, kill: bool = False) -> None:
        if kill:
            self.shutdown()

    def shutdown(self) -> None:
        raise NotImplementedError


class DaskPool(ClusterPool):
    """Tasks on a Dask cluster: the scheduler at `address`, or a local cluster of `n_jobs`
    single-threaded worker processes on loopback."""

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

    def submit(self, job: dict[str, Any]):
        key = f"evonas-uid{job['uid']}-{uuid.uuid4().hex[:8]}"
        return self.client.submit(run_job, job, key=key, pure=False, resources=self.resources)

    def wait(self, futures: list) -> list:
        from distributed import wait

        try:
            done, _ = wait(futures, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return [f for f in futures if f.done()]
        return list(done)

    def outcome(self, future) -> dict[str, Any]:
        from distributed import KilledWorker

        from evonas.parallel import WorkerLost

        try:
            return future.result()
        except KilledWorker:
            raise WorkerLost(
                "WorkerDied: Dask workers died running it; the cluster gave up"
            ) from None

    def cancel(self, future) -> None:
        future.cancel()

    def shutdown(self) -> None:
        forget(self)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class RayPool(ClusterPool):
    """Tasks on Ray: the cluster at `address`, or a local Ray started with `n_jobs` CPUs."""

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

    def submit(self, job: dict[str, Any]):
        return self.task.remote(job)

    def wait(self, futures: list) -> list:
        ready, _ = self.ray.wait(futures, num_returns=1, timeout=POLL_SECONDS)
        return ready

    def outcome(self, ref) -> dict[str, Any]:
        from evonas.parallel import WorkerLost

        try:
            return self.ray.get(ref)
        except (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.TaskCancelledError,
                self.ray.exceptions.RayTaskError) as exc:  # fmt: skip
            raise WorkerLost(f"WorkerDied: {type(exc).__name__}") from None

    def cancel(self, ref) -> None:
        self.ray.cancel(ref, force=True)

    def shutdown(self) -> None:
        forget(self)
        if self.started:
            self.ray.shutdown()
