"""The generation loop (torch-free).

    1. Sample the initial population from the space; evaluate it (generation 0).
    2. For each further generation:
       a. breed `population` children: pick an operator by weight, select its parents, vary;
       b. evaluate the children in parallel, journaling each result as it arrives;
       c. select the survivors from parents + children (NSGA-II or best-k);
       d. journal the generation and redraw the plots.
    3. Print the best per objective and the Pareto table.

All randomness flows from one `random.Random(seed)`; evaluation seeds depend only on (seed, uid),
so the same config and seed give the same history whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from evonas.config import space_settings
from evonas.evaluate import OK, evaluation_seed
from evonas.operators import OPERATORS
from evonas.parallel import evaluate_stream
from evonas.plots import pareto_data, write_generation_plots
from evonas.spaces import SequentialSpace
from evonas.store import Store
from evonas.strategies import (
    Individual,
    fitness_class,
    fitness_values,
    select_parents,
    select_survivors,
)
from evonas.tasks import load_task

MAX_VARIATION_ATTEMPTS = 20


@dataclass
class SearchResult:
    run_dir: Path
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
    """One run of the loop; `run()` executes the numbered steps of the module docstring."""

    def __init__(
        self, config: dict[str, Any], run_dir: str | Path, log: Callable[[str], None] = print
    ) -> None:
        self.config = config
        self.log = log
        task = load_task(config["task"])
        self.space = SequentialSpace(
            input_shape=task.input_shape, num_classes=task.num_classes, **space_settings(config)
        )
        search = config["search"]
        self.strategy = search["strategy"]
        self.objectives = search["objectives"]
        self.population_size = search["population"]
        self.fitness_cls = fitness_class(self.objectives)
        self.rng = random.Random(config["seed"])
        self.next_uid = 0
        self.cache: dict[str, int] = {}  # cache key -> uid of the journaled ok evaluation
        self.by_uid: dict[int, Individual] = {}
        self.store = Store.create(run_dir, config)
        self.store.set_meta({"versions": versions(), "input_shape": task.input_shape})
        self.started = time.perf_counter()

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> SearchResult:
        try:
            population = [
                self.new_individual(self.space.sample(self.rng), 0)
                for _ in range(self.population_size)
            ]
            self.evaluate(population)
            self.finish_generation(0, population, population)
            for generation in range(1, self.config["search"]["generations"] + 1):
                children = self.breed(population, generation)
                self.evaluate(children)
                population = select_survivors(
                    self.strategy, population + children, self.population_size
                )
                self.finish_generation(generation, population, children)
            return self.result()
        finally:
            self.store.close()

    def new_individual(
        self, genome, generation: int, parents: tuple[int, ...] = (), operator: str = "sample"
    ) -> Individual:
        individual = Individual(self.next_uid, genome, generation, parents, operator)
        self.next_uid += 1
        return individual

    def breed(self, population: list[Individual], generation: int) -> list[Individual]:
        weights = self.config["search"]["operators"]
        names = [name for name, weight in weights.items() if weight > 0]
        children = []
        for _ in range(self.population_size):
            for _attempt in range(MAX_VARIATION_ATTEMPTS):
                operator = OPERATORS[self.rng.choices(names, [weights[n] for n in names])[0]]
                parents = select_parents(
                    self.strategy,
                    population,
                    operator.arity,
                    self.rng,
                    self.config["search"]["tournament_size"],
                )
                genome = operator.fn(*[p.genome for p in parents], self.space, self.rng)
                if all(genome.arch_key() != p.genome.arch_key() for p in parents):
                    break
            parent_uids = tuple(p.uid for p in parents)
            children.append(self.new_individual(genome, generation, parent_uids, operator.name))
        return children

    def evaluate(self, individuals: list[Individual]) -> None:
        """Evaluate in parallel; identical work (same cache key) is trained once."""
        jobs, duplicates, first_of = [], [], {}
        for ind in individuals:
            self.by_uid[ind.uid] = ind
            key = self.cache_key(ind)
            if key in self.cache:
                self.record_cached(ind, self.by_uid[self.cache[key]])
            elif key in first_of:
                duplicates.append((ind, first_of[key]))
            else:
                first_of[key] = ind
                jobs.append(self.job(ind))
        for result in evaluate_stream(jobs, self.config["parallel"]["n_jobs"]):
            self.record_result(self.by_uid[result["uid"]], result)
        for ind, original in duplicates:
            self.record_cached(ind, original)

    def finish_generation(
        self, generation: int, population: list[Individual], evaluated: list[Individual]
    ) -> None:
        stats = self.population_stats(population)
        failed = sum(ind.status != OK for ind in evaluated)
        self.store.record_generation(
            generation, [ind.uid for ind in population], len(evaluated), failed, stats
        )
        write_generation_plots(
            self.store.run_dir / "plots",
            self.store.individuals(),
            self.store.generations(),
            self.objectives,
        )
        summary = ", ".join(f"best {k[5:]} {_fmt(v)}" for k, v in stats.items() if k[:5] == "best_")
        last = self.config["search"]["generations"]
        elapsed = time.perf_counter() - self.started
        self.log(
            f"generation {generation}/{last}: {len(evaluated)} evaluated, {failed} failed; "
            f"{summary} [{elapsed:.0f} s]"
        )

    # --- evaluation bookkeeping ---------------------------------------------------------------

    def cache_key(self, ind: Individual) -> str:
        blob = json.dumps([ind.genome.arch_key(), self.config["training"]], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

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
        }

    def record_result(self, ind: Individual, result: dict[str, Any]) -> None:
        ind.status = result["status"]
        ind.metrics = result["metrics"]
        ind.error = result.get("error")
        ind.fitness = self.fitness_cls(
            fitness_values(ind.metrics, ind.status == OK, self.objectives)
        )
        row = self.row(ind, None)
        row.update(
            worker=str(result.get("worker")),
            started_at=result.get("started_at"),
            finished_at=result.get("finished_at"),
            eval_seconds=result["finished_at"] - result["started_at"],
        )
        self.store.record_individual(row, ind.metrics)
        self.cache.setdefault(self.cache_key(ind), ind.uid)
        if ind.status != OK:
            self.log(f"  uid {ind.uid} failed: {result.get('error')}")

    def record_cached(self, ind: Individual, original: Individual) -> None:
        """Reuse the journaled result (success or failure) of identical work."""
        ind.status, ind.error, ind.metrics = original.status, original.error, dict(original.metrics)
        ind.fitness = self.fitness_cls(
            fitness_values(ind.metrics, ind.status == OK, self.objectives)
        )
        self.store.record_individual(self.row(ind, original.uid), ind.metrics)

    def row(self, ind: Individual, cached_from: int | None) -> dict[str, Any]:
        return {
            "uid": ind.uid,
            "generation": ind.generation,
            "genome": ind.genome.to_json(),
            "arch_key": ind.genome.arch_key(),
            "parents": json.dumps(list(ind.parents)),
            "operator": ind.operator,
            "status": ind.status,
            "error": ind.error,
            "seed": evaluation_seed(self.config["seed"], ind.uid),
            "cached_from": cached_from,
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

    def result(self) -> SearchResult:
        individuals = self.store.individuals()
        front = pareto_data(individuals, self.objectives).query("on_front")["uid"]
        pareto = individuals[individuals["uid"].isin(front)].reset_index(drop=True)
        return SearchResult(self.store.run_dir, individuals, self.store.generations(), pareto)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def run_search(
    config: dict[str, Any], run_dir: str | Path, log: Callable[[str], None] = print
) -> SearchResult:
    """Run a whole search into a new run directory and return its tables."""
    return Search(config, run_dir, log).run()
