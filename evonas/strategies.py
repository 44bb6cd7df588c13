"""DEAP glue: fitness from objectives, parent and survivor selection.

Individuals are small dataclasses with a DEAP `fitness` attribute; no `deap.creator` classes (they
pickle badly since DEAP 1.4). Selection draws its randomness from an explicit `random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from deap import base, tools

from evonas.genome import Genome

# Finite worst values: selNSGA2 and crowding distances must never see NaN or inf.
WORST = 1e30


@dataclass
class Individual:
    uid: int
    genome: Genome
    generation: int
    parents: tuple[int, ...] = ()
    operator: str = "sample"
    status: str = "pending"
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    fitness: Any = None


def fitness_class(objectives: list[dict[str, str]]) -> type:
    """A DEAP Fitness subclass whose weights follow the objectives' goals."""
    weights = tuple(1.0 if o["goal"] == "max" else -1.0 for o in objectives)
    return type("Fitness", (base.Fitness,), {"weights": weights})


def fitness_values(
    metrics: dict[str, float], ok: bool, objectives: list[dict[str, str]]
) -> tuple[float, ...]:
    """Objective values of one evaluation; failures and missing metrics get the worst value."""
    values = []
    for objective in objectives:
        worst = -WORST if objective["goal"] == "max" else WORST
        value = metrics.get(objective["name"]) if ok else None
        values.append(worst if value is None else float(value))
    return tuple(values)


@contextmanager
def deap_random(rng: random.Random) -> Iterator[None]:
    """Let DEAP functions that use the global `random` draw from `rng` instead."""
    saved = random.getstate()
    random.setstate(rng.getstate())
    try:
        yield
    finally:
        rng.setstate(random.getstate())
        random.setstate(saved)


def select_survivors(strategy: str, candidates: list[Individual], k: int) -> list[Individual]:
    """(mu + lambda) survivor selection: NSGA-II, or the k best for single-objective search."""
    if strategy == "nsga2":
        return tools.selNSGA2(candidates, k)
    return tools.selBest(candidates, k)


def select_parents(
    strategy: str,
    population: list[Individual],
    k: int,
    rng: random.Random,
    tournament_size: int,
) -> list[Individual]:
    """k parents: binary tournaments on (front rank, crowding) for NSGA-II, else DEAP's
    tournament selection."""
    if strategy == "nsga2":
        return _crowded_tournament(population, k, rng)
    with deap_random(rng):
        return tools.selTournament(population, k, tournsize=tournament_size)


def _crowded_tournament(
    population: list[Individual], k: int, rng: random.Random
) -> list[Individual]:
    fronts = tools.sortNondominated(population, len(population))
    rank: dict[int, int] = {}
    crowding: dict[int, float] = {}
    for level, front in enumerate(fronts):
        tools.emo.assignCrowdingDist(front)
        for ind in front:
            rank[ind.uid] = level
            crowding[ind.uid] = ind.fitness.crowding_dist

    def better(a: Individual, b: Individual) -> Individual:
        key_a = (rank[a.uid], -crowding[a.uid])
        key_b = (rank[b.uid], -crowding[b.uid])
        if key_a == key_b:
            return a if rng.random() < 0.5 else b
        return a if key_a < key_b else b

    return [better(rng.choice(population), rng.choice(population)) for _ in range(k)]
