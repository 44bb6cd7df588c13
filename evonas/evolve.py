"""The generation loop (torch-free), resumable by replay.

    1. Sample the initial population from the space; evaluate it (generation 0).
    2. For each further generation, unless a run limit is reached or a stop was requested:
       a. breed `population` children: pick an operator by weight, select its parents, vary;
       b. evaluate the children in parallel, journaling each result as it arrives;
       c. select the survivors from parents + children (NSGA-II or best-k);
       d. journal the generation and redraw the plots.
    3. Report the best per objective and the Pareto table.

All randomness flows from one `random.Random(seed)`; evaluation seeds depend only on (seed, uid),
so the same config and seed give the same history whatever the number of workers. Resuming runs
the same loop again and takes each journaled result instead of evaluating it: the replay retraces
the original run exactly, and only evaluations that were never journaled are run.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from evonas import inherit, seeds
from evonas.config import (
    ConfigError,
    operator_weights,
    space_settings,
    strategy_name,
)
from evonas.devices import gpu_ids, lease_dir
from evonas.evaluate import OK, evaluation_seed
from evonas.operators import OPERATORS
from evonas.parallel import close_pools, evaluate_stream
from evonas.plots import pareto_front, write_generation_plots
from evonas.progress import Progress
from evonas.spaces import Nb201Space, SequentialSpace
from evonas.store import RunDirError, Store
from evonas.strategies import Child, Individual, fitness_class, fitness_values, make_strategy
from evonas.tasks import load_task

MAX_VARIATION_ATTEMPTS = 20
# Settings that may change when a run is resumed; anything else would break the replay.

FINISHED, STOPPED, INTERRUPTED = "finished", "stopped", "interrupted"


@dataclass
class SearchResult:
    run_dir: Path
    state: str  # finished | stopped (a run limit) | interrupted (a signal)
    reason: str
    individuals: pd.DataFrame
    generations: pd.DataFrame
    pareto: pd.DataFrame


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("evonas", "torch", "deap", "numpy", "joblib"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


class Search:
    """One session of a run; `run()` executes the numbered steps of the module docstring."""

    def __init__(
        self,
        config: dict[str, Any],
        store: Store,
        log: Callable[[str], None] = print,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.echo = log
        self.progress = progress or Progress(enabled=False)
        self.space, input_shape = make_space(config)
        search = config["search"]
        self.objectives = search["objectives"]
        self.population_size = search["population"]
        self.fitness_cls = fitness_class(self.objectives)
        self.rng = random.Random(config["seed"])
        self.strategy = make_strategy(strategy_name(config), config, self.space, self.rng)
        self.weights = operator_weights(config)
        blob = json.dumps(config["training"], sort_keys=True).encode()
        self.training_key = hashlib.sha256(blob).hexdigest()[:16]
        training = config["training"]
        self.keeps_weights = (
            training["save_weights"]
            and training["evaluator"] == "builtin"
            and config["task"]["name"] != "table"
        )
        parallel = config["parallel"]
        self.gpus = gpu_ids(parallel["devices"])
        self.inherits = (
            self.keeps_weights and training["inherit_weights"] and self.space.kind == "sequential"
        )
        # Workers on this node lease GPUs; an existing cluster places GPU work itself.
        local = parallel["backend"] in ("loky", "inline") or not parallel["address"]
        self.lease = (
            {"gpus": self.gpus, "per_gpu": parallel["evaluations_per_gpu"], "folder": lease_dir()}
            if self.gpus and local
            else None
        )
        self.next_uid = 0
        self.cache: dict[str, int] = {}  # cache key -> uid of the first journaled evaluation
        self.seen_keys: set[str] = set()  # architecture keys of everything evaluated
        self.waiting: set[int] = set()  # steady state: children bred but not joined yet
        self.by_uid: dict[int, Individual] = {}
        self.journal = store.journaled_rows()  # results to replay instead of evaluating
        self.seeds = seeds.load(store.run_dir)
        self.journaled_generations = store.journaled_generations()
        self.stop_signal: int | None = None
        self.new_generations = 0  # generations journaled in this session
        self.best_value: float | None = None  # of the first objective, for the progress line
        meta = store.meta()
        self.previous_seconds = float(meta.get("elapsed_seconds", 0.0))
        self.started = time.monotonic()
        store.set_meta(
            {
                "config": config,
                "versions": versions(),
                "device": f"gpus {self.gpus}" if self.gpus else "cpu",
                "input_shape": input_shape,
                "state": "running",
            }
        )

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> SearchResult:
        if self.config["search"]["async_window"]:
            return self.run_steady_state()
        generations = self.config["search"]["generations"]
        population = self.generation_zero()
        if population is None:
            return self.end(INTERRUPTED, self.signal_name())
        for generation in range(1, generations + 1):
            if self.stop_signal is not None:
                return self.end(INTERRUPTED, self.signal_name())
            if generation not in self.journaled_generations:
                reason = self.limit_reached()
                if reason:
                    return self.end(STOPPED, reason)
            children = self.breed(population, generation)
            if not self.evaluate(children, generation):
                return self.end(INTERRUPTED, self.signal_name())
            population = self.strategy.survivors(population, children, self.distinct)
            self.finish_generation(generation, population, children)
        if not self.new_generations:
            self.log(f"the run was already finished ({generations} generations); nothing to do")
        return self.end(FINISHED, f"all {generations} generations done")

    def generation_zero(self) -> list[Individual] | None:
        """The initial population, evaluated and journaled (None when a stop cut it short)."""
        if self.journal:
            self.log(f"replaying {len(self.journal)} journaled evaluations")
        population = self.initial_population()
        if not self.evaluate(population, 0):
            return None
        self.finish_generation(0, population, population)
        return population

    def run_steady_state(self) -> SearchResult:
        """Regularized evolution without a generation barrier: up to `async_window` children are
        in flight; each result is journaled when it arrives, and children join the population in
        uid order. Child i is bred from the population that holds every child up to
        i - async_window, so the history depends on the window, never on the number of workers
        or on the order in which results arrive, and a resume replays it exactly."""
        search = self.config["search"]
        population = self.generation_zero()
        if population is None:
            return self.end(INTERRUPTED, self.signal_name())
        state = {"population": population, "limit": None}
        total = search["generations"] * self.strategy.offspring
        for result in self.results_of(self.steady_jobs(state, total)):
            self.record_result(self.by_uid[result["uid"]], result)
        if self.stop_signal is not None:
            return self.end(INTERRUPTED, self.signal_name())
        if state["limit"]:
            return self.end(STOPPED, state["limit"])
        if not self.new_generations:
            self.log("the run was already finished; nothing to do")
        return self.end(FINISHED, f"all {search['generations']} generations done")

    def steady_jobs(self, state: dict[str, Any], total: int):
        """Jobs of the steady-state mode; None while the child that must join the population
        before the next one is bred is still in flight."""
        window = self.config["search"]["async_window"]
        offspring = self.strategy.offspring
        waiting: deque[tuple[Individual, Individual | None]] = deque()  # bred, not yet joined
        first_bred: dict[str, Individual] = {}  # cache key -> first child bred with it
        first_child = self.next_uid

        def join_oldest():
            """Let the oldest bred child join the population once its result is known."""
            while (waiting[0][1] or waiting[0][0]).status == "pending":
                yield None
            child, original = waiting.popleft()
            self.waiting.discard(child.uid)
            if original is not None:
                self.record_cached(child, original)
            state["population"] = self.strategy.survivors(state["population"], [child], None)
            if (child.uid - first_child + 1) % offspring == 0:
                joined = [c for c in self.by_uid.values() if c.generation == child.generation]
                self.finish_generation(child.generation, state["population"], joined)

        for made in range(total):
            while len(waiting) >= window:  # child `made` sees every child up to made - window
                yield from join_oldest()
                if self.stop_signal is not None:
                    return
            generation = 1 + made // offspring
            if made % offspring == 0 and generation not in self.journaled_generations:
                state["limit"] = self.limit_reached()
                if state["limit"]:
                    break
            joined = set(self.by_uid) - self.waiting
            bred = self.strategy.breed_one(state["population"], self.vary)
            child = self.new_individual(
                bred.genome, generation, tuple(p.uid for p in bred.parents), bred.operator
            )
            self.by_uid[child.uid] = child
            child.inherit = self.inheritance(child)
            child.teacher = self.teacher(joined)
            key = self.cache_key(child)
            original = first_bred.get(key) or (
                self.by_uid[self.cache[key]] if key in self.cache else None
            )
            first_bred.setdefault(key, child)
            if child.uid in self.journal:
                self.replay(child, self.journal[child.uid])
                original = None
            waiting.append((child, original))
            self.waiting.add(child.uid)
            if original is None and child.status == "pending":
                yield self.job(child)
        while waiting and self.stop_signal is None:
            yield from join_oldest()

    def distinct(self, candidates: list[Individual]) -> list[Individual]:
        """Drop later copies of the same architecture, as long as enough remain to select from:
        duplicates crowd a small population and add nothing to the front."""
        seen: set[str] = set()
        unique = []
        for ind in candidates:
            if ind.genome.arch_key() not in seen:
                seen.add(ind.genome.arch_key())
                unique.append(ind)
        return unique if len(unique) >= self.population_size else candidates

    def initial_population(self) -> list[Individual]:
        """Seeds first (with their weights), then mutants of the seeds or fresh samples."""
        population = []
        for seed in self.seeds:
            ind = self.new_individual(seed.genome, 0, operator="seed")
            ind.origin = seed.origin
            ind.init_weights = str(seed.weights.resolve()) if seed.weights else None
            population.append(ind)
        seeded = list(population)
        while len(population) < max(self.strategy.initial_size(), len(seeded)):
            if seeded and self.config["search"]["seed_fill"] == "mutate":
                child = self.vary(lambda k: [self.rng.choice(seeded) for _ in range(k)], True)
                parents = tuple(p.uid for p in child.parents)
                population.append(self.new_individual(child.genome, 0, parents, child.operator))
            else:
                population.append(self.new_individual(self.space.sample(self.rng), 0))
        return population

    def new_individual(
        self, genome, generation: int, parents: tuple[int, ...] = (), operator: str = "sample"
    ) -> Individual:
        individual = Individual(self.next_uid, genome, generation, parents, operator)
        individual.origin = "sampled" if operator == "sample" else "offspring"
        self.next_uid += 1
        return individual

    def breed(self, population: list[Individual], generation: int) -> list[Individual]:
        children = self.strategy.breed(population, self.vary, self.sample, self.seen)
        return [
            self.new_individual(c.genome, generation, tuple(p.uid for p in c.parents), c.operator)
            for c in children
        ]

    def vary(self, select, mutation_only: bool = False) -> Child:
        """A child by an operator drawn by weight, on parents from `select(arity)`; retried while
        the child is identical to a parent."""
        names = [
            name
            for name, weight in self.weights.items()
            if weight > 0 and not (mutation_only and OPERATORS[name].arity > 1)
        ]
        for _attempt in range(MAX_VARIATION_ATTEMPTS):
            operator = OPERATORS[self.rng.choices(names, [self.weights[n] for n in names])[0]]
            parents = select(operator.arity)
            genome = operator.fn(*[p.genome for p in parents], self.space, self.rng)
            if all(genome.arch_key() != p.genome.arch_key() for p in parents):
                break
        return Child(genome, tuple(parents), operator.name)

    def sample(self):
        return self.space.sample(self.rng)

    def seen(self, genome) -> bool:
        """Whether the same architecture and training genes were already bred for evaluation."""
        return self.cache_key_of(genome) in self.seen_keys

    def evaluate(self, individuals: list[Individual], generation: int) -> bool:
        """Evaluate in parallel; journaled results are replayed and identical work (same cache
        key) is trained once. False when a stop request left some individuals unevaluated."""
        jobs, duplicates, first_of = [], [], {}
        teacher = self.teacher()
        for ind in individuals:
            self.by_uid[ind.uid] = ind
            ind.inherit = self.inheritance(ind)
            ind.teacher = teacher
            key = self.cache_key(ind)
            if ind.uid in self.journal:
                self.replay(ind, self.journal[ind.uid])
            elif key in self.cache:
                self.record_cached(ind, self.by_uid[self.cache[key]])
            elif key in first_of:
                duplicates.append((ind, first_of[key]))
            else:
                first_of[key] = ind
                jobs.append(self.job(ind))
        done = len(individuals) - len(jobs) - len(duplicates)
        self.progress.start_generation(generation, len(individuals), done)
        for result in self.results_of(jobs):
            self.record_result(self.by_uid[result["uid"]], result)
        for ind, original in duplicates:
            if original.status != "pending":
                self.record_cached(ind, original)
        return all(ind.status != "pending" for ind in individuals)

    def results_of(self, jobs):
        """Evaluate `jobs` where the config says; results stream back as they finish."""
        parallel = self.config["parallel"]
        return evaluate_stream(
            jobs,
            parallel["n_jobs"],
            crash_retries=parallel["crash_retries"],
            should_stop=lambda: self.stop_signal is not None,
            backend=parallel["backend"],
            address=parallel["address"],
            resources={"GPU": 1} if self.gpus else None,
        )

    def finish_generation(
        self, generation: int, population: list[Individual], evaluated: list[Individual]
    ) -> None:
        stats = self.population_stats(population)
        failed = sum(ind.status != OK for ind in evaluated)
        uids = [ind.uid for ind in population]
        if generation in self.journaled_generations:
            if self.journaled_generations[generation] != uids:
                raise RunDirError(
                    f"{self.store.run_dir}: the replay of generation {generation} disagrees with "
                    "the journal; the run was made by another version of evonas or its task changed"
                )
            return
        meta = {"elapsed_seconds": self.elapsed(), "generation": generation}
        self.store.record_generation(generation, uids, len(evaluated), failed, stats, meta)
        self.new_generations += 1
        if self.keeps_weights:
            self.store.drop_weights(self.worth_keeping(population, generation))
        plot_every = self.config["search"]["plot_every"]
        last = self.config["search"]["generations"]
        if plot_every and (generation % plot_every == 0 or generation == last):
            write_generation_plots(
                self.store.run_dir / "plots",
                self.store.individuals(),
                self.store.generations(),
                self.objectives,
            )
        summary = ", ".join(f"best {k[5:]} {_fmt(v)}" for k, v in stats.items() if k[:5] == "best_")
        last = self.config["search"]["generations"]
        self.log(
            f"generation {generation}/{last}: {len(evaluated)} evaluated, {failed} failed; "
            f"{summary} [{self.elapsed():.0f} s]"
        )

    def worth_keeping(self, population: list[Individual], generation: int) -> set[int]:
        """Weights kept on disk: the current population, the Pareto front and the best per
        objective over the whole run, children of later generations already evaluated (the
        steady state's), and the originals that cached copies point to."""
        joined = set(self.by_uid) - self.waiting
        evaluated = [ind for ind in self.by_uid.values() if ind.status == OK and ind.uid in joined]
        keep = {ind.uid for ind in population}
        later = [ind for ind in self.by_uid.values() if ind.generation > generation]
        keep |= {ind.uid for ind in later}  # the steady state's children in flight
        for ind in later:  # and what they read: their parents and teacher
            keep |= {p["uid"] for p in (ind.inherit or {}).get("parents", [])}
            keep |= {ind.teacher["uid"]} if ind.teacher else set()
        teacher = self.teacher(joined)  # the next evaluations' teacher
        keep |= {teacher["uid"]} if teacher else set()
        if evaluated:
            front = tools_front(evaluated)
            keep |= {ind.uid for ind in front}
        keep |= {self.cache.get(self.cache_key(ind), ind.uid) for ind in list(self.by_uid.values())
                 if ind.uid in keep}  # fmt: skip
        keep.discard("seed")
        return keep

    def limit_reached(self) -> str | None:
        """A run limit that forbids starting another generation, checked at its boundary."""
        search = self.config["search"]
        if search["max_evaluations"]:
            done = len(self.by_uid)
            if done + self.strategy.offspring > search["max_evaluations"]:
                return f"max_evaluations {search['max_evaluations']} reached ({done} done)"
        if search["max_time"] and self.elapsed() >= search["max_time"]:
            return f"max_time {search['max_time']:g} s reached"
        return None

    def request_stop(self, signum: int) -> None:
        """Stop dispatching; evaluations in flight finish and are journaled."""
        self.stop_signal = signum

    def signal_name(self) -> str:
        import signal

        return signal.Signals(self.stop_signal).name if self.stop_signal else "stop requested"

    def end(self, state: str, reason: str) -> SearchResult:
        self.progress.close()
        close_pools()  # a cluster this run started (local loky workers stay warm)
        if state == INTERRUPTED:
            self.log(f"interrupted ({reason}); every finished evaluation is in the journal")
        elif state == STOPPED:
            self.log(f"stopped: {reason}")
        self.store.set_meta({"state": state, "reason": reason, "elapsed_seconds": self.elapsed()})
        individuals = self.store.individuals()
        pareto = pareto_front(individuals, self.objectives)
        return SearchResult(
            self.store.run_dir, state, reason, individuals, self.store.generations(), pareto
        )

    # --- evaluation bookkeeping ---------------------------------------------------------------

    def cache_key(self, ind: Individual) -> str:
        key = self.cache_key_of(ind.genome)
        if ind.inherit:  # the same parents' weights
            parents = ",".join(str(p["uid"]) for p in ind.inherit["parents"])
            genes = hashlib.sha256(json.dumps(ind.inherit["genes"], sort_keys=True).encode())
            key += f"-from-{parents}-{ind.inherit['select']}-{genes.hexdigest()[:12]}"
        if ind.teacher:
            key += f"-teacher-{ind.teacher['uid']}"
        return f"{key}-{ind.origin}" if ind.init_weights else key  # the same weights source

    def teacher(self, among: set[int] | None = None) -> dict[str, Any] | None:
        """The distillation teacher of the next evaluations: the first seed with weights, or the
        best individual so far on the first objective (none before the first generation);
        `among` limits the candidates (the steady state's joined individuals)."""
        source = self.config["training"]["distill_from"]
        if not source or not self.keeps_weights:
            return None
        if source == "seed":
            seed = next((s for s in self.seeds if s.weights), None)
            return {"uid": "seed", "genome": seed.genome.to_dict(),
                    "weights": str(seed.weights.resolve())} if seed else None  # fmt: skip
        done = [
            ind
            for ind in self.by_uid.values()
            if ind.status == OK and (among is None or ind.uid in among)
        ]
        first = self.objectives[0]
        scored = [ind for ind in done if first["name"] in ind.metrics]
        if not scored:
            return None
        sign = 1 if first["goal"] == "max" else -1
        best = max(scored, key=lambda ind: (sign * ind.metrics[first["name"]], -ind.uid))
        weights = self.weights_file(self.cache.get(self.cache_key(best), best.uid))
        return {"uid": best.uid, "genome": best.genome.to_dict(), "weights": str(weights.resolve())}

    def inheritance(self, ind: Individual) -> dict[str, Any] | None:
        """The child's inheritance plan: the parents it inherits from (their trained weights, or
        a seed's own weights for a mutant made beside it) and which genes come from which.
        Decided from journaled statuses only, so a resumed run plans exactly as the original."""
        if not self.inherits or not ind.parents:
            return None
        sources = []
        for uid in dict.fromkeys(ind.parents):
            parent = self.by_uid[uid]
            if ind.generation == 0:  # a mutant of a seed, evaluated beside it: the seed's weights
                weights = Path(parent.init_weights) if parent.init_weights else None
            elif parent.status == OK:
                weights = self.weights_file(self.cache.get(self.cache_key(parent), uid))
            else:
                weights = None
            if weights is not None:
                sources.append((uid, parent.genome, str(weights.resolve())))
        select = "random" if ind.operator == "cut" else self.config["training"]["prune_importance"]
        return inherit.plan(ind.genome, sources, select) if sources else None

    def cache_key_of(self, genome) -> str:
        """Identical work: the same architecture and training genes, the same training settings."""
        return f"{genome.arch_key()}-{self.training_key}"

    def job(self, ind: Individual) -> dict[str, Any]:
        training = self.config["training"]
        evaluator = training["evaluator"]
        return {
            "uid": ind.uid,
            "genome": ind.genome.to_dict(),
            "seed": evaluation_seed(self.config["seed"], ind.uid),
            "task": self.config["task"],
            "training": {k: v for k, v in training.items() if k != "evaluator"},
            "evaluator": None if evaluator == "builtin" else evaluator,
            "key": self.space.to_string(ind.genome) if hasattr(self.space, "to_string") else None,
            "init_weights": ind.init_weights,
            "inherit": ind.inherit,
            "teacher": ind.teacher,
            "device": "gpu" if self.gpus else "cpu",
            "lease": self.lease,
            "weights_path": str(self.weights_file(ind.uid).resolve())
            if self.keeps_weights
            else None,
        }

    def weights_file(self, uid: int) -> Path:
        return self.store.run_dir / "weights" / f"{uid}.pt"

    def apply(self, ind: Individual, status: str, error: str | None, metrics: dict) -> None:
        ind.status, ind.error, ind.metrics = status, error, metrics
        ind.fitness = self.fitness_cls(fitness_values(metrics, status == OK, self.objectives))
        self.cache.setdefault(self.cache_key(ind), ind.uid)
        self.seen_keys.add(self.cache_key_of(ind.genome))
        first = self.objectives[0]
        value = metrics.get(first["name"]) if status == OK else None
        if value is not None:
            better = max if first["goal"] == "max" else min
            self.best_value = value if self.best_value is None else better(self.best_value, value)

    def replay(self, ind: Individual, row: dict[str, Any]) -> None:
        if row["arch_key"] != ind.genome.arch_key():
            raise RunDirError(
                f"{self.store.run_dir}: journaled uid {ind.uid} is not what the replay produced; "
                "the run was made by another version of evonas or its task changed"
            )
        metrics = {k: v for k, v in row.items() if k not in _ROW_COLUMNS}
        self.apply(ind, row["status"], row.get("error"), metrics)

    def record_result(self, ind: Individual, result: dict[str, Any]) -> None:
        self.apply(ind, result["status"], result.get("error"), result["metrics"])
        row = self.row(ind, None)
        weights = self.weights_file(ind.uid)
        row.update(
            weights=str(weights.relative_to(self.store.run_dir))
            if ind.status == OK and weights.exists()
            else None,
            worker=str(result["worker"]) if result.get("worker") else None,
            device=result.get("device"),
            gpu=result.get("gpu"),
            started_at=result.get("started_at"),
            finished_at=result.get("finished_at"),
            eval_seconds=result["finished_at"] - result["started_at"],
        )
        self.store.record_individual(row, ind.metrics)
        self.progress.advance(ind.status != OK, self.best_text())
        if ind.status != OK:
            self.log(f"  uid {ind.uid} {ind.status}: {ind.error}")

    def record_cached(self, ind: Individual, original: Individual) -> None:
        """Reuse the journaled result (success or failure) of identical work."""
        self.apply(ind, original.status, original.error, dict(original.metrics))
        self.store.record_individual(self.row(ind, original.uid), ind.metrics)

    def row(self, ind: Individual, cached_from: int | None) -> dict[str, Any]:
        return {
            "uid": ind.uid,
            "generation": ind.generation,
            "genome": ind.genome.to_json(),
            "arch_key": ind.genome.arch_key(),
            "parents": json.dumps(list(ind.parents)),
            "operator": ind.operator,
            "origin": ind.origin,
            "status": ind.status,
            "error": ind.error,
            "seed": evaluation_seed(self.config["seed"], ind.uid),
            "cached_from": cached_from,
            "inherited_from": json.dumps([p["uid"] for p in ind.inherit["parents"]])
            if ind.inherit
            else None,
            "distilled_from": str(ind.teacher["uid"]) if ind.teacher else None,
        }

    def population_stats(self, population: list[Individual]) -> dict[str, float]:
        stats = {}
        for objective in self.objectives:
            name = objective["name"]
            values = [
                ind.metrics[name] for ind in population if ind.status == OK and name in ind.metrics
            ]
            if values:
                stats[f"best_{name}"] = max(values) if objective["goal"] == "max" else min(values)
                stats[f"median_{name}"] = statistics.median(values)
        return stats

    def best_text(self) -> str:
        if self.best_value is None:
            return ""
        return f"best {self.objectives[0]['name']} {_fmt(self.best_value)}"

    def elapsed(self) -> float:
        return self.previous_seconds + time.monotonic() - self.started

    def log(self, line: str) -> None:
        self.progress.clear()
        self.echo(line)
        with open(self.store.run_dir / "log.txt", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


_ROW_COLUMNS = {
    "uid", "generation", "genome", "arch_key", "parents", "operator", "origin", "status", "error",
    "seed", "cached_from", "weights", "worker", "started_at", "finished_at", "eval_seconds",
    "inherited_from", "distilled_from", "device", "gpu",
}  # fmt: skip


def make_space(config: dict[str, Any]):
    """The configured search space and the task's input shape (None for table lookups)."""
    kind = config["space"]["kind"]
    task_name = config["task"]["name"]
    if kind == "nb201":
        if task_name == "table":
            return Nb201Space(), None
        task = load_task(config["task"])
        return Nb201Space(lr=config["space"]["lr_max"]), task.input_shape
    if task_name == "table":
        raise ConfigError("task.name: the table task looks up cells; use space.kind: nb201")
    task = load_task(config["task"])
    space = SequentialSpace(task.input_shape, task.num_classes, **space_settings(config))
    return space, task.input_shape


def tools_front(individuals: list[Individual]) -> list[Individual]:
    """The first non-dominated front; it contains the best individual of every objective."""
    from deap import tools

    return tools.sortNondominated(individuals, len(individuals), first_front_only=True)[0]


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
