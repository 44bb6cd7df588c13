"""The cluster backends give the same journal as local loky workers."""

import pandas as pd
import pytest

from evonas import pools
from evonas.config import ConfigError, resolve
from evonas.evaluate import MEASURED_METRICS
from evonas.launch import run_search, start_search
from tests.conftest import FAULTS, TINY

pytestmark = pytest.mark.slow  # clusters of worker processes
WHERE = ["worker", "started_at", "finished_at", "eval_seconds", *MEASURED_METRICS]
CONFIG = {**TINY, "parallel": {"backend": "loky"},
          "training": {**TINY["training"], "inherit_weights": True},
          "search": {"population": 4, "generations": 2}}  # fmt: skip


def journal(tmp_path, name, **parallel):
    config = resolve(base={**CONFIG, "parallel": {"n_jobs": 2, **parallel}})
    return run_search(config, tmp_path / name, log=lambda line: None).individuals.drop(
        columns=WHERE
    )


@pytest.fixture(scope="module")
def loky_journal(tmp_path_factory):
    return journal(tmp_path_factory.mktemp("loky"), "loky")


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as local:  # fmt: skip
        yield local


def test_a_search_on_a_dask_cluster_equals_the_loky_journal(tmp_path, loky_journal, cluster):
    on_dask = journal(tmp_path, "dask", backend="dask", address=cluster.scheduler_address)
    pd.testing.assert_frame_equal(on_dask, loky_journal)
    assert on_dask["inherited_from"].notna().any()


def test_a_dying_dask_worker_costs_only_its_evaluation(tmp_path):
    pytest.importorskip("distributed")
    config = resolve(base={**CONFIG, "training": {"evaluator": f"{FAULTS}:evaluate"},
                           "search": {"population": 6, "generations": 0},
                           "parallel": {"backend": "dask", "n_jobs": 2,
                                        "crash_retries": 0}})  # fmt: skip
    people = run_search(config, tmp_path / "crash", log=lambda line: None).individuals
    from tests.faults import behaviour

    for _, row in people.iterrows():
        expected = {"exit": "crashed", "segfault": "crashed", "raise": "failed", "nan": "failed"}
        assert row["status"] == expected.get(behaviour(row["seed"]), "ok"), row["error"]
    assert people.loc[people["status"] == "crashed", "error"].str.startswith("WorkerDied").all()


def test_a_search_on_ray_equals_the_loky_journal(tmp_path, loky_journal):
    pytest.importorskip("ray")
    on_ray = journal(tmp_path, "ray", backend="ray")
    pd.testing.assert_frame_equal(on_ray, loky_journal)


def test_an_unreachable_scheduler_is_an_error_before_the_run_exists(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(pools, "CONNECT_SECONDS", 2)
    parallel = {"backend": "dask", "address": "tcp://127.0.0.1:9"}
    config = resolve(base={**CONFIG, "parallel": parallel})
    with pytest.raises(ConfigError, match="parallel.address: no Dask scheduler answers"):
        start_search(config, tmp_path / "run", log=lambda line: None)
    assert not (tmp_path / "run").exists()
