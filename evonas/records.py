"""Typed records of a run: what the loop breeds, what a worker gets and returns, what the journal
holds. Plain dicts exist only at process and file boundaries (`to_dict`/`from_dict`).

- `Individual`: the loop's view of one genome (parents, operator, status, metrics, DEAP fitness).
- `Job` -> worker -> `Result`: everything an evaluation needs, and what it produced.
- `Row`: one journal row; `COLUMNS` is the journal's one list of fixed columns (metrics come on
  top, one column each); `GenerationRecord`: one row of the generations table; `SupernetEpoch`:
  one epoch of a gradient search.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from typing import Any

from evonas.genome import Genome

OK, FAILED, TIMEOUT, CRASHED, OOM = "ok", "failed", "timeout", "crashed", "oom"
STOPPED = "stopped"  # trained part of its budget, then stopped early (search.early_stop)
INFEASIBLE = "infeasible"  # over a pre-training limit (search.constraints): never trained
STATUSES = (OK, STOPPED, INFEASIBLE, FAILED, TIMEOUT, CRASHED, OOM)
# Statuses with metrics a strategy may select on: a stopped candidate keeps those of the epoch it
# reached. An infeasible candidate has the metrics known before training, which break a limit.
# Every other status but PENDING is a failure.
TRAINED = (OK, STOPPED)
MEASURED = (*TRAINED, INFEASIBLE)  # statuses whose metrics the constraints are checked on
FAILURES = (FAILED, TIMEOUT, CRASHED, OOM)
PENDING = "pending"

# The journal's fixed columns, in table order, with their SQLite types. Everything else in the
# `individuals` table is a metric.
COLUMNS: dict[str, str] = {
    "uid": "INTEGER PRIMARY KEY",
    "generation": "INTEGER NOT NULL",
    "genome": "TEXT NOT NULL",
    "arch_key": "TEXT NOT NULL",
    "parents": "TEXT NOT NULL",
    "operator": "TEXT NOT NULL",
    "origin": "TEXT",
    "status": "TEXT NOT NULL",
    "error": "TEXT",
    "violation": "REAL",
    "prediction": "TEXT",
    "seed": "INTEGER NOT NULL",
    "cached_from": "INTEGER",
    "inherited_from": "TEXT",
    "distilled_from": "TEXT",
    "device": "TEXT",
    "gpu": "TEXT",
    "weights": "TEXT",
    "worker": "TEXT",
    "started_at": "REAL",
    "finished_at": "REAL",
    "eval_seconds": "REAL",
}
TIMING_COLUMNS = ("worker", "started_at", "finished_at", "eval_seconds")
DERIVED_COLUMNS = ("n_layers",)  # added by evonas.analysis.Run.individuals
# Fixed columns that say where and how an evaluation ran; never metrics, never objectives.
PROVENANCE_COLUMNS = ("cached_from", "inherited_from", "distilled_from", "device", "gpu", "weights")


def int_list(values) -> str:
    """A JSON list of integers, as json.dumps writes it (faster on the journal's hot path)."""
    return "[" + ", ".join(map(str, values)) + "]"


def evaluation_seed(run_seed: int, uid: int) -> int:
    """The seed of one evaluation, a function of the run seed and the uid only."""
    return (run_seed * 1_000_003 + uid * 7_919 + 12_345) % (2**31 - 1)


class MetricNameError(ValueError):
    """A metric name the journal cannot keep as a column of its own."""


def check_metric_name(name: str) -> None:
    """Metric names become quoted journal columns: any text except a double quote, and none that
    (ignoring case, as SQLite does) names a fixed column."""
    if not name or '"' in name or name != name.strip():
        raise MetricNameError(f"metric name {name!r}: expected non-empty text without '\"'")
    if name.lower() in COLUMNS or name.lower() in DERIVED_COLUMNS:
        raise MetricNameError(
            f"metric name {name!r} is a journal column of its own ({name.lower()}); rename it"
        )


@dataclass
class Individual:
    """One genome of the run as the loop sees it; `fitness` is DEAP's (see `objectives`)."""

    uid: int
    genome: Genome
    generation: int
    parents: tuple[int, ...] = ()
    operator: str = "sample"
    origin: str = "sampled"  # sampled | offspring | the source of a seed (file:..., run:...)
    status: str = PENDING
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    fitness: Any = None
    init_weights: str | None = None  # a seed's own weights, loaded before training
    inherit: dict[str, Any] | None = None  # the inheritance plan (evonas.weights.plan)
    teacher: dict[str, Any] | None = None  # the model it is distilled from
    traceback: str | None = None  # where its evaluation failed (for log.txt, not the journal)
    violation: float | None = None  # how far past search.constraints (0: within; None: none)
    prediction: dict[str, tuple[float, float]] | None = None  # a predictor's, before evaluation

    @property
    def resolved(self) -> bool:
        return self.status != PENDING

    @property
    def counts(self) -> bool:
        """Fully trained and within the run's constraints: what "best" and statistics count."""
        return self.status == OK and not self.violation

    @property
    def finetuned(self) -> bool:
        """Starts from trained weights (inherited, or a seed's own): trains `finetune_epochs`."""
        return bool(self.inherit or self.init_weights)


@dataclass(frozen=True)
class Child:
    """A genome a strategy bred, before it becomes an Individual."""

    genome: Genome
    parents: tuple[Individual, ...]
    operator: str
    prediction: dict[str, tuple[float, float]] | None = None  # objective -> (mean, std)


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to evaluate one genome (plain data once `to_dict`-ed)."""

    uid: int
    genome: dict[str, Any]
    seed: int
    task: dict[str, Any]
    training: dict[str, Any]
    evaluator: str | None = None  # pkg.module:function of a user evaluator; None: built in
    key: str | None = None  # the genome's key in a lookup table
    init_weights: str | None = None
    inherit: dict[str, Any] | None = None
    teacher: dict[str, Any] | None = None
    device: str = "cpu"  # cpu | gpu
    lease: dict[str, Any] | None = None  # GPU lease settings of a local worker
    weights_path: str | None = None  # where to save the trained state_dict
    # Multi-fidelity (evonas.fidelity): train from epoch `epochs_from` (restored from
    # `resume_from`, a checkpoint) up to `epochs_to` (None: the whole budget), saving a checkpoint
    # to `checkpoint` when stopping short of the budget; `stop_rule`: the median rule's data.
    epochs_from: int = 0
    epochs_to: int | None = None
    resume_from: str | None = None
    checkpoint: str | None = None
    stop_rule: dict[str, Any] | None = None
    limits: tuple[dict[str, Any], ...] = ()  # constraints checked before training (constraints)
    # Gradient search (evonas.gradient): train the supernet one epoch (from `resume_from`, to
    # `checkpoint`) with these settings, instead of evaluating `genome`.
    supernet: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _JOB_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(**{k: v for k, v in data.items() if k in _JOB_FIELDS})


@dataclass(frozen=True)
class Result:
    """What one evaluation produced; `status` is one of STATUSES."""

    uid: int
    status: str
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    worker: str | None = None
    device: str | None = None
    gpu: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    traceback: str | None = None
    curve: tuple[dict[str, float], ...] = ()  # per epoch: {"epoch": e, metric: value, ...}
    partial: bool = False  # trained to a rung of its budget (a checkpoint continues it)
    arch: tuple[tuple[float, ...], ...] = ()  # a supernet epoch's architecture weights

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _RESULT_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        values = {k: v for k, v in data.items() if k in _RESULT_FIELDS}
        if values.get("worker") is not None:
            values["worker"] = str(values["worker"])
        values["curve"] = tuple(values.get("curve") or ())
        values["arch"] = tuple(tuple(row) for row in values.get("arch") or ())
        return cls(**values)

    @classmethod
    def failure(cls, uid: int, status: str, error: str) -> Result:
        """A result made by the parent for an evaluation that produced none (dead worker,
        hard timeout)."""
        now = time.time()
        return cls(uid, status, error, {}, started_at=now, finished_at=now)


_JOB_FIELDS = tuple(f.name for f in fields(Job))
_RESULT_FIELDS = tuple(f.name for f in fields(Result))


@dataclass(frozen=True)
class Row:
    """One journal row: the fixed columns and the metrics."""

    values: dict[str, Any]
    metrics: dict[str, float]

    @classmethod
    def of(
        cls,
        ind: Individual,
        run_seed: int,
        result: Result | None = None,
        cached_from: int | None = None,
        weights: str | None = None,
    ) -> Row:
        values: dict[str, Any] = {
            "uid": ind.uid,
            "generation": ind.generation,
            "genome": ind.genome.to_json(),
            "arch_key": ind.genome.arch_key(),
            "parents": int_list(ind.parents),
            "operator": ind.operator,
            "origin": ind.origin,
            "status": ind.status,
            "error": ind.error,
            "violation": ind.violation,
            "seed": evaluation_seed(run_seed, ind.uid),
            "cached_from": cached_from,
            "inherited_from": json.dumps([p["uid"] for p in ind.inherit["parents"]])
            if ind.inherit
            else None,
            "distilled_from": str(ind.teacher["uid"]) if ind.teacher else None,
            "weights": weights,
            "prediction": json.dumps(ind.prediction) if ind.prediction else None,
        }
        if result is not None:
            values.update(
                worker=result.worker,
                device=result.device,
                gpu=result.gpu,
                started_at=result.started_at,
                finished_at=result.finished_at,
                eval_seconds=result.finished_at - result.started_at,
            )
        return cls(values, dict(ind.metrics))


def metrics_of(row: dict[str, Any]) -> dict[str, float]:
    """The metrics of a journal row read back as a dict (NULLs already dropped)."""
    return {k: v for k, v in row.items() if k not in COLUMNS}


@dataclass(frozen=True)
class SupernetEpoch:
    """One epoch of a gradient search: the genome derived after it (the strongest op per edge),
    the architecture weights (edges x ops, raw; a softmax makes them probabilities) and the
    epoch's metrics (train_loss, arch_loss, val_accuracy of the supernet, tau, epoch_seconds)."""

    epoch: int  # 1, 2, ...
    genome: Genome
    arch: tuple[tuple[float, ...], ...]
    metrics: dict[str, float]
    device: str | None = None
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class GenerationRecord:
    """One finished generation: the population after selection and what was evaluated."""

    generation: int
    population: tuple[int, ...]
    evaluated: int
    failed: int
    stats: dict[str, float]  # best_<objective>, median_<objective>
    finished_at: float = field(default_factory=time.time)
