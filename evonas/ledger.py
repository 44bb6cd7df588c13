"""The run's ledger: every individual by uid, and where each one's result comes from.

A result comes from the first of these that has it:

1. the journal, when a resumed run replays an evaluation it had already journaled;
2. identical work of this run: the same architecture and training genes, training settings,
   weights source and teacher (the cache; the copy is journaled with `cached_from`);
3. an evaluation: the ledger makes the individual's `Job`.

Everything here is decided from journaled state, so a replay makes the same decisions as the
original run and a resumed run ends with the same journal as one that never stopped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from evonas.config import Config, ConfigError
from evonas.genome import Genome
from evonas.objectives import Objective, fitness_class, fitness_values, missing_metric
from evonas.records import (
    FAILED,
    OK,
    Child,
    Individual,
    Job,
    Result,
    Row,
    evaluation_seed,
    metrics_of,
)
from evonas.spaces import Space
from evonas.store import RunDirError, Store
from evonas.weights import WeightPolicy


class Ledger:
    def __init__(
        self,
        config: Config,
        space: Space,
        store: Store,
        weights: WeightPolicy,
        objectives: list[Objective],
        device: str = "cpu",
        lease: dict[str, Any] | None = None,
    ) -> None:
        self.config, self.space, self.store, self.weights = config, space, store, weights
        self.objectives = objectives
        self.fitness_cls = fitness_class(objectives)
        self.device, self.lease = device, lease
        self.journal = store.journaled_rows()  # results to replay instead of evaluating
        self.by_uid: dict[int, Individual] = {}
        self.next_uid = 0
        self.cache: dict[str, int] = {}  # cache key -> uid of the first result with it
        self.pending: dict[str, Individual] = {}  # cache key -> the evaluation in flight
        self.copies: dict[int, list[Individual]] = {}  # uid in flight -> identical work waiting
        self.seen_keys: set[str] = set()  # architecture keys (training settings are the run's)
        self.keys: dict[int, str] = {}  # uid -> cache key, fixed once its inputs are known
        # checked at the first success; a resumed run was, if its journal holds one
        self.checked_metrics = any(row["status"] == OK for row in self.journal.values())
        training = config.training.model_dump()
        self.training = {k: v for k, v in training.items() if k != "evaluator"}
        blob = json.dumps(training, sort_keys=True).encode()
        self.training_key = hashlib.sha256(blob).hexdigest()[:16]
        self.evaluator = config.training.evaluator if config.evaluation == "evaluator" else None
        self.task = config.task.model_dump()

    # --- individuals ----------------------------------------------------------------------------

    def new(
        self,
        genome: Genome,
        generation: int,
        parents: tuple[int, ...] = (),
        operator: str = "sample",
        origin: str | None = None,
    ) -> Individual:
        origin = origin or ("sampled" if operator == "sample" else "offspring")
        individual = Individual(self.next_uid, genome, generation, parents, operator, origin)
        self.by_uid[individual.uid] = individual
        self.next_uid += 1
        return individual

    def child(self, child: Child, generation: int) -> Individual:
        parents = tuple(p.uid for p in child.parents)
        return self.new(child.genome, generation, parents, child.operator)

    def seen(self, genome: Genome) -> bool:
        """Whether the same architecture and training genes were already evaluated."""
        return genome.arch_key() in self.seen_keys

    def weights_uid(self, ind: Individual) -> int:
        """The uid whose weights file holds `ind`'s trained weights (itself, or the original of
        a cached copy)."""
        key = self.keys.get(ind.uid) or self._cache_key(ind)
        return self.cache.get(key, ind.uid)

    # --- where results come from -----------------------------------------------------------------

    def prepare(self, ind: Individual, teacher: dict[str, Any] | None) -> Job | None:
        """Decide where `ind`'s result comes from: replayed from the journal or copied from
        identical work now (None), later from identical work in flight (None), or from the
        returned job."""
        ind.inherit = self.weights.plan_for(ind, self.by_uid, self.weights_uid)
        ind.teacher = teacher
        key = self.keys[ind.uid] = self._cache_key(ind)
        if ind.uid in self.journal:
            self._replay(ind, self.journal[ind.uid])
        elif key in self.cache:
            self._record_copy(ind, self.by_uid[self.cache[key]])
        elif key in self.pending:
            self.copies.setdefault(self.pending[key].uid, []).append(ind)
        else:
            self.pending[key] = ind
            return self._job(ind)
        return None

    def record(self, result: Result) -> list[Individual]:
        """Journal an evaluation's result, and the copies that waited for it; returns them.
        ConfigError when the first success of a user's evaluator lacks an objective."""
        ind = self.by_uid[result.uid]
        clash = self.store.metric_clash(result.metrics)
        if clash:  # SQLite column names ignore case: never merge two metrics into one
            result = replace(result, status=FAILED, error=f"MetricNameError: {clash}", metrics={})
        self.pending.pop(self.keys[ind.uid], None)
        self._apply(ind, result.status, result.error, result.metrics)
        ind.traceback = result.traceback
        weights = self.weights.path(ind.uid) if self.weights.keeps else None
        kept = ind.status == OK and weights is not None and weights.exists()
        relative = str(weights.relative_to(self.store.run_dir)) if kept else None
        self.store.record(Row.of(ind, self.config.seed, result, weights=relative))
        recorded = [ind]
        for copy in self.copies.pop(ind.uid, []):
            self._record_copy(copy, ind)
            recorded.append(copy)
        if self.evaluator and ind.status == OK and not self.checked_metrics:
            self.checked_metrics = True  # the first success tells what the evaluator returns
            problem = missing_metric(self.objectives, ind.metrics, self.evaluator)
            if problem:
                raise ConfigError(f"{problem} (the run stopped at its first success)")
        return recorded

    def _record_copy(self, ind: Individual, original: Individual) -> None:
        self._apply(ind, original.status, original.error, dict(original.metrics))
        self.store.record(Row.of(ind, self.config.seed, cached_from=original.uid))

    def _replay(self, ind: Individual, row: dict[str, Any]) -> None:
        if row["arch_key"] != ind.genome.arch_key():
            raise RunDirError(
                f"{self.store.run_dir}: journaled uid {ind.uid} is not what the replay produced; "
                "the run was made by another version of evonas or its task changed"
            )
        self._apply(ind, row["status"], row.get("error"), metrics_of(row))

    def _apply(self, ind: Individual, status: str, error: str | None, metrics: dict) -> None:
        ind.status, ind.error, ind.metrics = status, error, metrics
        ind.fitness = self.fitness_cls(fitness_values(metrics, status == OK, self.objectives))
        self.cache.setdefault(self.keys[ind.uid], ind.uid)
        self.seen_keys.add(ind.genome.arch_key())

    def _job(self, ind: Individual) -> Job:
        weights = self.weights.path(ind.uid).resolve() if self.weights.keeps else None
        return Job(
            uid=ind.uid,
            genome=ind.genome.to_dict(),
            seed=evaluation_seed(self.config.seed, ind.uid),
            task=self.task,
            training=self.training,
            evaluator=self.evaluator,
            key=self.space.key(ind.genome),
            init_weights=ind.init_weights,
            inherit=ind.inherit,
            teacher=ind.teacher,
            device=self.device,
            lease=self.lease,
            weights_path=str(weights) if weights else None,
        )

    # --- identical work -----------------------------------------------------------------------

    def _genome_key(self, genome: Genome) -> str:
        """The same architecture and training genes, with the same training settings."""
        return f"{genome.arch_key()}-{self.training_key}"

    def _cache_key(self, ind: Individual) -> str:
        key = self._genome_key(ind.genome)
        if ind.inherit:  # the same parents' weights
            parents = ",".join(str(p["uid"]) for p in ind.inherit["parents"])
            genes = hashlib.sha256(json.dumps(ind.inherit["genes"], sort_keys=True).encode())
            key += f"-from-{parents}-{ind.inherit['select']}-{genes.hexdigest()[:12]}"
        if ind.teacher:
            key += f"-teacher-{ind.teacher['uid']}"
        return f"{key}-{ind.origin}" if ind.init_weights else key  # the same weights source
