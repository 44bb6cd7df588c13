"""The run's ledger: every individual by uid, and where each one's result comes from.

A result comes from the first of these that has it:

1. the journal, when a resumed run replays an evaluation it had already journaled;
2. identical work of this run: the same architecture and training genes, training settings,
   weights source and teacher (the cache; the copy is journaled with `cached_from`);
3. an evaluation: the ledger makes the individual's `Job`s: one, or, with early stopping by
   successive halving (`evonas.halving`), one per rung it is promoted to, each continuing from
   the last one's checkpoint (and with the median rule, `evonas.fidelity`, the data a worker
   needs to stop it).

Everything here is decided from journaled state, so a replay makes the same decisions as the
original run and a resumed run ends with the same journal as one that never stopped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from evonas.config import Config, ConfigError
from evonas.constraints import UNMEASURED, pre_training_limits, violation
from evonas.fidelity import MedianRule, median_reference
from evonas.genome import Genome
from evonas.halving import Action, Halving, Member
from evonas.objectives import fitness_class, fitness_values, missing_metric
from evonas.records import (
    FAILED,
    INFEASIBLE,
    MEASURED,
    OK,
    STOPPED,
    TRAINED,
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
        device: str = "cpu",
        lease: dict[str, Any] | None = None,
    ) -> None:
        self.config, self.space, self.store, self.weights = config, space, store, weights
        self.objectives = objectives = config.search.objectives
        self.constraints = config.search.constraints
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
        builtin = config.evaluation == "trainer"  # only the built-in trainer builds the model
        self.limits = tuple(pre_training_limits(self.constraints)) if builtin else ()
        early = self.early = config.search.early_stop
        self.halving = (
            Halving(early.min_epochs, early.reduction_factor, objectives, self.constraints)
            if early.kind == "halving"
            else None
        )
        # uid -> rung epoch -> metrics there; uid -> learning curve (what each rule replays)
        self.rungs = store.journaled_rungs() if self.halving else {}
        self.median = early.kind == "median"
        self.curves = store.journaled_curves() if self.median else {}
        self.copied: set[int] = set()  # uids whose result is a copy of identical work
        self.queued: list[Job] = []  # continuations decided at a rung, for the loop to submit
        self._medians: dict[tuple[int, bool], dict[str, Any]] = {}

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
        individual = self.new(child.genome, generation, parents, child.operator)
        individual.prediction = child.prediction
        return individual

    def seen(self, genome: Genome) -> bool:
        """Whether the same architecture and training genes were already evaluated."""
        return genome.arch_key() in self.seen_keys

    def weights_uid(self, ind: Individual) -> int:
        """The uid whose weights file holds `ind`'s trained weights (itself, or the original of
        a cached copy)."""
        key = self.keys.get(ind.uid) or self._cache_key(ind)
        return self.cache.get(key, ind.uid)

    # --- where results come from -----------------------------------------------------------------

    def jobs(self, individuals: list[Individual], joined: list[Individual]) -> list[Job]:
        """Decide where each of `individuals` gets its result (`prepare`); the jobs to submit.
        `joined`: the individuals the strategy was told so far (the distillation teacher and
        the median rule's completed curves come from them)."""
        teacher = self.weights.teacher(joined, self.weights_uid)
        own = [ind for ind in individuals if self.prepare(ind, teacher)]
        if self.halving is None:
            return [self._job(ind, joined) for ind in own if not ind.resolved]
        members = [Member(ind.uid, self.halving.rungs(self._budget(ind)),
                          dict(self.rungs.get(ind.uid, {})), done=ind.resolved)
                   for ind in own]  # fmt: skip
        self._act(self.halving.open(members))
        for member in members:  # a first job for those the journal holds nothing of
            if not member.done and not member.results:
                ind = self.by_uid[member.uid]
                self.queued.append(self._job(ind, joined, until=self.halving.first_stop(ind.uid)))
        return self.take_jobs()

    def take_jobs(self) -> list[Job]:
        """The continuations decided since the last call (to be submitted)."""
        jobs, self.queued = self.queued, []
        return jobs

    def prepare(self, ind: Individual, teacher: dict[str, Any] | None) -> bool:
        """Decide where `ind`'s result comes from: replayed from the journal or copied from
        identical work now, later from identical work in flight, or from an evaluation of its
        own. True when it has (or had, for a replay) an evaluation of its own."""
        ind.inherit = self.weights.plan_for(ind, self.by_uid, self.weights_uid)
        ind.teacher = teacher
        key = self.keys[ind.uid] = self._cache_key(ind)
        if ind.uid in self.journal:
            self._replay(ind, self.journal[ind.uid])
            return "cached_from" not in self.journal[ind.uid]
        if key in self.cache:
            self._record_copy(ind, self.by_uid[self.cache[key]])
        elif key in self.pending:
            self.copies.setdefault(self.pending[key].uid, []).append(ind)
        else:
            self.pending[key] = ind
            return True
        return False

    def record(self, result: Result) -> list[Individual]:
        """Journal an evaluation's result: its curve, and a rung reached (the decisions it
        allows: continuations queued for `take_jobs`, members stopped), or its end and the
        copies that waited for it. Returns the individuals that got their result.
        ConfigError when the first success of a user's evaluator lacks an objective."""
        ind = self.by_uid[result.uid]
        clash = self.store.metric_clash(result.metrics)
        if clash:  # SQLite column names ignore case: never merge two metrics into one
            result = replace(result, status=FAILED, error=f"MetricNameError: {clash}", metrics={})
        if result.curve:
            self.store.record_curve(ind.uid, result.curve)
            if self.median:  # completed curves are the median rule's reference
                self.curves.setdefault(ind.uid, []).extend(result.curve)
        if result.partial and result.status == OK and self.halving is not None:
            epoch = int(result.metrics["epochs"])
            self.store.record_rung(ind.uid, epoch, result.metrics)
            self.store.drop_checkpoints(ind.uid, below=epoch)
            return self._act(self.halving.arrived(ind.uid, epoch, result.metrics))
        ind.traceback = result.traceback
        recorded = self._finish(ind, result.status, result.error, result.metrics, result)
        if self.halving is not None:
            recorded += self._act(self.halving.finished(ind.uid))
        if self.evaluator and ind.status == OK and not self.checked_metrics:
            self.checked_metrics = True  # the first success tells what the evaluator returns
            constrained = [c.metric for c in self.constraints]
            problem = missing_metric(self.objectives, ind.metrics, self.evaluator, constrained)
            if problem:
                raise ConfigError(f"{problem} (the run stopped at its first success)")
        return recorded

    def _finish(self, ind: Individual, status: str, error: str | None, metrics: dict,
                result: Result | None = None) -> list[Individual]:  # fmt: skip
        """Journal the end of `ind`'s evaluation, and the copies that waited for it."""
        self.pending.pop(self.keys[ind.uid], None)
        self._apply(ind, status, error, metrics)
        weights = self.weights.path(ind.uid) if self.weights.keeps else None
        kept = ind.status in TRAINED and weights is not None and weights.exists()
        relative = str(weights.relative_to(self.store.run_dir)) if kept else None
        self.store.record(Row.of(ind, self.config.seed, result, weights=relative))
        if self.halving and (status != STOPPED or not self.weights.keeps):
            self.store.drop_checkpoints(ind.uid)  # a stopped one's is kept: it may continue
        recorded = [ind]
        for copy in self.copies.pop(ind.uid, []):
            self._record_copy(copy, ind)
            recorded.append(copy)
        return recorded

    def _act(self, actions: list[Action]) -> list[Individual]:
        """Carry out halving decisions: stopped members are journaled (returned), continuations
        queued."""
        recorded = []
        for action in actions:
            ind = self.by_uid[action.uid]
            if action.kind == "stop":
                metrics = self.halving.members[ind.uid].results[action.epoch]
                recorded += self._finish(ind, STOPPED, None, dict(metrics))
            else:
                self.queued.append(self._job(ind, [], action.epoch, action.until))
        return recorded

    def source(self, ind: Individual) -> str:
        """Where `ind`'s result came from: journal (a replay), cache (identical work) or worker."""
        if ind.uid in self.journal:
            return "journal"
        return "cache" if ind.uid in self.copied else "worker"

    def _record_copy(self, ind: Individual, original: Individual) -> None:
        self.copied.add(ind.uid)
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
        if self.constraints and status in MEASURED:
            unmeasured = UNMEASURED if status == INFEASIBLE else 0.0  # never trained
            ind.violation = violation(metrics, self.constraints, unmeasured)
        usable = status in TRAINED  # a stopped candidate competes with what it reached
        values = fitness_values(metrics, usable, self.objectives, ind.violation or 0.0)
        ind.fitness = self.fitness_cls(values)
        self.cache.setdefault(self.keys[ind.uid], ind.uid)
        self.seen_keys.add(ind.genome.arch_key())

    def _budget(self, ind: Individual) -> int:
        training = self.config.training
        return training.finetune_epochs if ind.finetuned else training.epochs

    def _job(self, ind: Individual, joined: list[Individual], start: int = 0,
             until: int | None = None) -> Job:  # fmt: skip
        """`ind`'s job: from its checkpoint at epoch `start` (from scratch where that file is
        gone: training is deterministic, so it ends the same) up to `until` (None: its budget)."""
        weights = self.weights.path(ind.uid).resolve() if self.weights.keeps else None
        resume = self.store.checkpoint_path(ind.uid, start) if start else None
        if resume is not None and not resume.exists():
            start, resume = 0, None
        checkpoint = self.store.checkpoint_path(ind.uid, until) if until else None
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
            epochs_from=start,
            epochs_to=until,
            resume_from=str(resume) if resume else None,
            checkpoint=str(checkpoint) if checkpoint else None,
            stop_rule=self._median_rule(ind, joined),
            limits=self.limits,
        )

    def _median_rule(self, ind: Individual, joined: list[Individual]) -> dict[str, Any] | None:
        """The median rule's data for `ind`: the curves of the completed candidates of its kind
        (trained from scratch, or fine-tuned) among `joined`."""
        if not self.median:
            return None
        key = (len(joined), ind.finetuned)  # `joined` only grows: its length says which it is
        if key not in self._medians:
            done = [j for j in joined if j.status == OK and j.uid in self.curves
                    and j.finetuned == ind.finetuned]  # fmt: skip
            curves = [self.curves[j.uid] for j in done]
            reference = median_reference(curves, [j.metrics for j in done], self.objectives)
            rule = MedianRule(self.objectives, self.early.min_epochs, self.early.min_curves,
                              reference)  # fmt: skip
            current = {k: v for k, v in self._medians.items() if k[0] == len(joined)}
            self._medians = {**current, key: rule.to_dict()}
        return self._medians[key]

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
