"""Experiment trackers (`reporters: [tensorboard, mlflow]`): what a real search logged is read
back from real TensorBoard event files and a real local MLflow file store."""

import pytest

from evonas.config import resolve
from tests.conftest import cli, tiny_config_yaml
from tests.test_evolve import TINY, resume_to_end, run_until_stopped, search

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
TRACKED = ["reporters=[tensorboard, mlflow]"]


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path, monkeypatch):
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store
    return store


def tensorboard_scalars(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    everything = {"scalars": 0, "tensors": 0}
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance=everything)
    events.Reload()
    return events, {e.step: e.value for e in events.Scalars(tag)}


def mlflow_run(run_dir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return client, client.get_run((run_dir / "mlflow_run_id").read_text().strip())


def test_every_evaluation_and_generation_is_logged_to_tensorboard_and_mlflow(tmp_path):
    result = search(tmp_path, *TRACKED)
    people = result.individuals.set_index("uid")
    events, accuracy = tensorboard_scalars(result.run_dir, "evaluation/val_accuracy")
    assert accuracy == pytest.approx(people["val_accuracy"].to_dict())
    _, best = tensorboard_scalars(result.run_dir, "generation/best_val_accuracy")
    assert best == pytest.approx(result.generations.set_index("generation")[
        "best_val_accuracy"].to_dict())  # fmt: skip
    assert "evaluation/genome" in events.Tags()["tensors"]

    client, run = mlflow_run(result.run_dir)
    history = client.get_metric_history(run.info.run_id, "evaluation/params")
    assert {m.step: m.value for m in history} == people["params"].to_dict()
    genomes = {a.path for a in client.list_artifacts(run.info.run_id, "genomes")}
    assert genomes == {f"genomes/{uid}.json" for uid in people.index}
    assert run.data.params["search.population"] == "4"
    assert run.data.tags["evonas.state"] == "finished" and run.info.status == "FINISHED"


def test_a_resumed_run_continues_its_mlflow_run_and_logs_each_result_once(tmp_path):
    run_until_stopped(resolve(sets=[*TINY, *TRACKED]), tmp_path / "run", after=3)
    client, stopped = mlflow_run(tmp_path / "run")
    assert stopped.info.status == "KILLED"
    resumed = resume_to_end(tmp_path / "run")
    client, run = mlflow_run(tmp_path / "run")
    assert run.info.run_id == stopped.info.run_id and run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "evaluation/params")]
    assert sorted(steps) == sorted(resumed.individuals["uid"])  # none twice, none missing
    _, accuracy = tensorboard_scalars(tmp_path / "run", "evaluation/val_accuracy")
    assert sorted(accuracy) == sorted(resumed.individuals["uid"])


def test_a_failing_tracker_says_so_once_and_the_search_goes_on(tmp_path, monkeypatch):
    from evonas.trackers import TensorBoardTracker

    def full_disk(self, individual, source):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TensorBoardTracker, "log_evaluation", full_disk)
    result = search(tmp_path, "reporters=[tensorboard]")
    assert result.state == "finished" and len(result.individuals) == 12
    log = (result.run_dir / "log.txt").read_text()
    assert log.count("reporters: tensorboard stopped logging (OSError") == 1


def test_a_tracking_store_mlflow_cannot_use_is_a_one_line_error_before_anything_is_written(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuch://tracking")
    (tmp_path / "c.yaml").write_text(tiny_config_yaml(reporters="reporters: [mlflow]\n"))
    done = cli("search", "--config", "c.yaml", "--name", "r", "--runs-dir", "runs", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "reporters[0]: mlflow cannot use its tracking store" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_tracker_whose_package_is_missing_names_the_extra(monkeypatch):
    from evonas import trackers
    from evonas.config import ConfigError

    monkeypatch.setitem(trackers.PACKAGES, "tensorboard", "no_such_tensorboard")
    with pytest.raises(
        ConfigError, match=r"reporters\[0\]: tensorboard needs .*evonas\[tensorboard\]"
    ):
        trackers.check_tracker("tensorboard", "reporters[0]")
