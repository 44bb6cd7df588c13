"""Experiment trackers as reporters (`reporters: [tensorboard, mlflow]`).

Each logs, as results arrive, every evaluation's metrics (step: its uid), status and genome, and
each generation's summary (step: the generation); the run's state at the end. Results a resumed
run replays from its journal were logged by the session that made them and are not logged again.

- `tensorboard`: event files under `RUN_DIR/tensorboard/` (`tensorboard --logdir runs/`), written
  with the tensorboard package's own writer (no TensorFlow, no torch in the search's process).
- `mlflow`: one MLflow run per evonas run, in the tracking store MLflow is configured for
  (`MLFLOW_TRACKING_URI`; MLflow's default otherwise), experiment `evonas`
  (`MLFLOW_EXPERIMENT_NAME` to change it). A resumed evonas run continues its MLflow run (its id
  is kept in `RUN_DIR/mlflow_run_id`). Genomes are artifacts `genomes/<uid>.json`.

A tracker that fails (a full disk, a tracking server gone) says so once in the log and stops
logging; the search goes on, and the journal keeps everything.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evonas.config import Config, ConfigError
from evonas.records import Individual
from evonas.reporters import GenerationSummary, Outcome, Reporter

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # the import each tracker needs


def check_tracker(name: str, where: str) -> None:
    """ConfigError when the package a built-in tracker needs is not installed, or MLflow's
    tracking store cannot be used."""
    if importlib.util.find_spec(PACKAGES[name]) is None:
        raise ConfigError(f"{where}: {name} needs the {PACKAGES[name]} package: "
                          f"pip install 'evonas[{name}]'")  # fmt: skip
    if name == "mlflow":  # an unreachable tracking store is an error before the run exists
        from mlflow.tracking import MlflowClient

        try:
            MlflowClient().search_experiments(max_results=1)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"{where}: mlflow cannot use its tracking store "
                              f"(MLFLOW_TRACKING_URI): {first}") from None  # fmt: skip


class Tracker(Reporter):
    """What the trackers share: replayed results are skipped, and the first error is reported
    once (through `info`, set by the loop's log) and turns the tracker off."""

    name = "tracker"

    def __init__(self) -> None:
        self.broken = False
        self.say: Callable[[str], None] = lambda line: None

    def guarded(self, log: Callable[[], None]) -> None:
        if self.broken:
            return
        try:
            log()
        except Exception as exc:  # a tracker must never stop the search
            self.broken = True
            self.say(f"reporters: {self.name} stopped logging ({type(exc).__name__}: {exc}); "
                     "the journal keeps everything")  # fmt: skip

    def evaluated(self, individual: Individual, source: str) -> None:
        if source != "journal":
            self.guarded(lambda: self.log_evaluation(individual, source))

    def generation_finished(self, summary: GenerationSummary) -> None:
        self.guarded(lambda: self.log_generation(summary))

    def ended(self, outcome: Outcome) -> None:
        self.guarded(lambda: self.log_end(outcome))

    def log_evaluation(self, individual: Individual, source: str) -> None:
        raise NotImplementedError

    def log_generation(self, summary: GenerationSummary) -> None:
        raise NotImplementedError

    def log_end(self, outcome: Outcome) -> None:
        raise NotImplementedError


def _genome_text(individual: Individual) -> str:
    return json.dumps(individual.genome.to_dict(), indent=1)


def _generation_metrics(summary: GenerationSummary) -> dict[str, float]:
    return {**summary.stats, "evaluated": float(len(summary.evaluated)),
            "failed": float(summary.failed)}  # fmt: skip


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.writer = EventFileWriter(str(run_dir / "tensorboard"))

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        tags = [
            Summary.Value(tag=f"{prefix}/{k}", simple_value=float(v)) for k, v in values.items()
        ]
        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=tags)))

    def text(self, tag: str, text: str, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.compat.proto.types_pb2 import DT_STRING

        plugin = SummaryMetadata.PluginData(plugin_name="text")
        shape = TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)])
        tensor = TensorProto(dtype=DT_STRING, string_val=[text.encode()], tensor_shape=shape)
        value = Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin), tensor=tensor)
        self.writer.add_event(
            Event(wall_time=time.time(), step=step, summary=Summary(value=[value]))
        )

    def log_evaluation(self, individual: Individual, source: str) -> None:
        self.scalars("evaluation", individual.metrics, individual.uid)
        line = f"{individual.status} ({individual.operator}, from {source})"
        self.text("evaluation/status", line + (f": {individual.error}" if individual.error else ""),
                  individual.uid)  # fmt: skip
        self.text("evaluation/genome", _genome_text(individual), individual.uid)

    def log_generation(self, summary: GenerationSummary) -> None:
        self.scalars("generation", _generation_metrics(summary), summary.generation)
        self.writer.flush()

    def log_end(self, outcome: Outcome) -> None:
        self.text("run/outcome", f"{outcome.state}: {outcome.reason}", 0)
        self.writer.close()


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, run_dir: Path, config: Config) -> None:
        super().__init__()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        id_file = run_dir / "mlflow_run_id"
        if id_file.exists():  # a resumed run continues its MLflow run
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "evonas")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(name)
        )
        run = self.client.create_run(experiment_id, run_name=run_dir.name,
                                     tags={"evonas.run_dir": str(run_dir.resolve())})  # fmt: skip
        self.run_id = run.info.run_id
        id_file.write_text(self.run_id)
        for key, value in _flat(config.to_dict()).items():
            self.client.log_param(self.run_id, key, value[:6000])

    def log_evaluation(self, individual: Individual, source: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"evaluation/{k}", float(v), now, individual.uid)
                   for k, v in individual.metrics.items()]  # fmt: skip
        status = 1.0 if individual.status == "ok" else 0.0
        metrics.append(Metric("evaluation/ok", status, now, individual.uid))
        self.client.log_batch(self.run_id, metrics=metrics)
        record = {"uid": individual.uid, "status": individual.status, "error": individual.error,
                  "operator": individual.operator, "parents": list(individual.parents),
                  "metrics": individual.metrics, "genome": individual.genome.to_dict()}  # fmt: skip
        self.client.log_text(self.run_id, json.dumps(record, indent=1),
                             f"genomes/{individual.uid}.json")  # fmt: skip

    def log_generation(self, summary: GenerationSummary) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"generation/{k}", float(v), now, summary.generation)
                   for k, v in _generation_metrics(summary).items()]  # fmt: skip
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_end(self, outcome: Outcome) -> None:
        self.client.set_tag(self.run_id, "evonas.state", outcome.state)
        self.client.set_tag(self.run_id, "evonas.reason", outcome.reason[:5000])
        status = "FINISHED" if outcome.state in ("finished", "stopped") else "FAILED"
        self.client.set_terminated(
            self.run_id, "KILLED" if outcome.state == "interrupted" else status
        )


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params (`search.population`: `12`)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return flat


def make_tracker(name: str, run_dir: Path, config: Config) -> Tracker:
    """The built-in tracker `name` for a run."""
    if name == "tensorboard":
        return TensorBoardTracker(run_dir)
    return MlflowTracker(run_dir, config)
