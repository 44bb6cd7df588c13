"""Parent side of evaluation: run jobs with joblib and stream results back as they finish."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from joblib import Parallel, delayed

from evonas.evaluate import run_job


def evaluate_stream(jobs: Iterable[dict[str, Any]], n_jobs: int) -> Iterator[dict[str, Any]]:
    """Yield one result per job, in completion order; each result carries its job's uid.

    `n_jobs == 1` runs in this process; otherwise loky worker processes, which stay warm between
    calls (torch imported and the dataset loaded once per worker).
    """
    jobs = list(jobs)
    if n_jobs == 1 or len(jobs) <= 1:
        yield from (run_job(job) for job in jobs)
        return
    parallel = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")
    yield from parallel(delayed(run_job)(job) for job in jobs)
