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
    origin: str = ""  # sampled | offspring | the source of a seed
    init_weights: str | None = None  # a seed's weights, loaded before training
    inherit: dict[str, Any] | None = None  # where its genes' weights come from (evonas.inherit)
    teacher: dict[str, Any] | None = None  # the model it is distilled from


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


# --- search strategies: how children are bred and who survives ------------------------------


@dataclass
class Child:
    genome: Genome
    parents: tuple[Individual, ...]
    operator: str


class Strategy:
    """Breeds the children of a generation and selects the next population.

    `vary(parents)` applies a weighted random operator of the space to parents chosen by the
    strategy; `sample()` draws a fresh genome; `seen(genome)` says whether identical work was
    already evaluated in this run.
    """

    name = "strategy"

    def __init__(self, population: int, offspring: int, tournament_size: int, rng: random.Random):
        self.population = population
        self.offspring = offspring or self.default_offspring(population)
        self.tournament_size = tournament_size
        self.rng = rng

    def default_offspring(self, population: int) -> int:
        return population

    def initial_size(self) -> int:
        return self.population

    def breed(self, population, vary, sample, seen) -> list[Child]:
        raise NotImplementedError

    def survivors(self, population: list[Individual], children: list[Individual], distinct):
        raise NotImplementedError


class Generational(Strategy):
    """(mu + lambda): parents by tournament, survivors by NSGA-II (nsga2) or best-k (tournament)."""

    def __init__(self, name: str, *args) -> None:
        super().__init__(*args)
        self.name = name

    def breed(self, population, vary, sample, seen) -> list[Child]:
        def select(k: int) -> list[Individual]:
            return select_parents(self.name, population, k, self.rng, self.tournament_size)

        return [vary(select) for _ in range(self.offspring)]

    def survivors(self, population, children, distinct):
        return select_survivors(self.name, distinct(population + children), self.population)


class RandomSearch(Strategy):
    """Random search: every child is a fresh sample; the population is the best seen so far."""

    name = "random"

    def __init__(self, multi_objective: bool, *args) -> None:
        super().__init__(*args)
        self.selection = "nsga2" if multi_objective else "tournament"

    def breed(self, population, vary, sample, seen) -> list[Child]:
        children = []
        for _ in range(self.offspring):
            genome = sample()
            for _attempt in range(20):
                if not seen(genome):
                    break
                genome = sample()
            children.append(Child(genome, (), "sample"))
        return children

    def survivors(self, population, children, distinct):
        return select_survivors(self.selection, distinct(population + children), self.population)


class RegularizedEvolution(Strategy):
    """Aging evolution (Real et al. 2019): a parent is the best of `tournament_size` members
    sampled without replacement; each child joins the population and the oldest member dies."""

    name = "regularized"

    def default_offspring(self, population: int) -> int:
        return 1

    def breed(self, population, vary, sample, seen) -> list[Child]:
        return [self.breed_one(population, vary) for _ in range(self.offspring)]

    def breed_one(self, population, vary) -> Child:
        def select(k: int) -> list[Individual]:
            size = min(self.tournament_size, len(population))
            return [
                max(self.rng.sample(population, size), key=lambda ind: ind.fitness.wvalues)
                for _ in range(k)
            ]

        return vary(select, mutation_only=True)

    def survivors(self, population, children, distinct):
        aged = population + children  # oldest first
        return aged[len(aged) - self.population :] if len(aged) > self.population else aged


class LocalSearch(Strategy):
    """Greedy local search (hill climbing): start from the best of `population` random samples;
    evaluate unseen neighbours of the incumbent, `offspring` (default 1) at a time in random
    order; move to the best child that beats the incumbent; when every neighbour has been seen
    without improvement (a local optimum), restart from a random sample.

    After generation 0 the population is the incumbent alone; neighbours come from the space's
    `neighbors()` when it can enumerate them (NAS-Bench-201), else from random mutations.
    """

    name = "local"

    def default_offspring(self, population: int) -> int:
        return 1

    def initial_size(self) -> int:
        return self.population

    def __init__(self, space, *args) -> None:
        super().__init__(*args)
        self.space = space

    def breed(self, population, vary, sample, seen) -> list[Child]:
        incumbent = max(population, key=lambda ind: ind.fitness.wvalues)
        if hasattr(self.space, "neighbors"):
            candidates = self.space.neighbors(incumbent.genome)
            self.rng.shuffle(candidates)
            unseen = [g for g in candidates if not seen(g)]
            children = [Child(g, (incumbent,), "mutate_edge") for g in unseen[: self.offspring]]
        else:
            children = []
            for _ in range(self.offspring * 10):
                child = vary(lambda k: [incumbent] * k, mutation_only=True)
                if not seen(child.genome) and all(
                    child.genome.arch_key() != c.genome.arch_key() for c in children
                ):
                    children.append(child)
                if len(children) == self.offspring:
                    break
        if not children:  # a local optimum: every neighbour was seen
            genome = sample()
            return [Child(genome, (), "restart")]
        return children

    def survivors(self, population, children, distinct):
        incumbent = max(population, key=lambda ind: ind.fitness.wvalues)
        if len(children) == 1 and children[0].operator == "restart":
            return [children[0]]
        best = max(children, key=lambda ind: ind.fitness.wvalues)
        return [best] if best.fitness.wvalues > incumbent.fitness.wvalues else [incumbent]


def make_strategy(name: str, config: dict, space, rng: random.Random) -> Strategy:
    search = config["search"]
    args = (search["population"], search["offspring"], search["tournament_size"], rng)
    if name in ("nsga2", "tournament"):
        return Generational(name, *args)
    if name == "random":
        return RandomSearch(len(search["objectives"]) > 1, *args)
    if name == "regularized":
        return RegularizedEvolution(*args)
    if name == "local":
        return LocalSearch(space, *args)
    raise ValueError(f"unknown strategy {name!r}")
