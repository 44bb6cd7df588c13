"""Search strategies: the `Strategy` protocol (ask/tell) and random, local, regularized,
tournament and NSGA-II search, with the selection functions they are made of.

Lifecycle, as for Optuna's samplers: the loop evaluates generation 0 (`initial_size` genomes)
and calls `start(evaluated)`; then, until the run ends, it calls `ask(n)` for n children, evaluates
them and calls `tell(children)` with their results, in the order they were bred. `tell` returns
the new population. A generational strategy is asked for a whole generation at a time; in the
steady state the loop asks for one child at a time and tells each in breeding order, so both are
the same loop with another window (see `evonas.evolve`).

Individuals carry a DEAP fitness (`evonas.objectives`); no `deap.creator` classes. Selection draws
its randomness from the run's explicit `random.Random` (through `Variation.rng`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Protocol, runtime_checkable

from deap import tools

from evonas.config import Search
from evonas.genome import Genome
from evonas.operators import Variation
from evonas.records import Child, Individual
from evonas.surrogate import SurrogateAssisted


@runtime_checkable
class Strategy(Protocol):
    name: str
    offspring: int  # children per generation
    initial_size: int  # genomes in generation 0
    population: list[Individual]

    def start(self, evaluated: list[Individual]) -> None:
        """Begin from the evaluated generation 0."""

    def ask(self, n: int) -> list[Child]:
        """n children bred from the current population."""

    def tell(self, children: list[Individual]) -> list[Individual]:
        """Take evaluated children (in breeding order); return the new population."""


# --- selection functions, by name ----------------------------------------------------------------


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


_RANKS: dict[tuple[int, ...], tuple[dict[int, int], dict[int, float]]] = {}


def rank_and_crowding(population: list[Individual]) -> tuple[dict[int, int], dict[int, float]]:
    """Each member's non-dominated front (0 = the Pareto front) and crowding distance; kept for
    the population last asked about (a generation's children select from the same one)."""
    key = tuple((ind.uid, ind.fitness.wvalues) for ind in population)
    if key not in _RANKS:
        rank: dict[int, int] = {}
        crowding: dict[int, float] = {}
        for level, front in enumerate(tools.sortNondominated(population, len(population))):
            tools.emo.assignCrowdingDist(front)
            for ind in front:
                rank[ind.uid] = level
                crowding[ind.uid] = ind.fitness.crowding_dist
        _RANKS.clear()
        _RANKS[key] = (rank, crowding)
    return _RANKS[key]


def sel_crowded_tournament(
    population: list[Individual], k: int, rng: random.Random, tournament_size: int
) -> list[Individual]:
    """NSGA-II's parents: binary tournaments on (front rank, crowding distance)."""
    rank, crowding = rank_and_crowding(population)

    def better(a: Individual, b: Individual) -> Individual:
        key_a = (rank[a.uid], -crowding[a.uid])
        key_b = (rank[b.uid], -crowding[b.uid])
        if key_a == key_b:
            return a if rng.random() < 0.5 else b
        return a if key_a < key_b else b

    return [better(rng.choice(population), rng.choice(population)) for _ in range(k)]


def sel_tournament(
    population: list[Individual], k: int, rng: random.Random, tournament_size: int
) -> list[Individual]:
    """DEAP's tournament selection on the (single-objective) fitness."""
    with deap_random(rng):
        return tools.selTournament(population, k, tournsize=tournament_size)


def sel_best_of_sample(
    population: list[Individual], k: int, rng: random.Random, tournament_size: int
) -> list[Individual]:
    """Regularized evolution's parent: the best of `tournament_size` members sampled without
    replacement."""
    size = min(tournament_size, len(population))
    return [
        max(rng.sample(population, size), key=lambda ind: ind.fitness.wvalues) for _ in range(k)
    ]


ParentSelection = Callable[[list[Individual], int, random.Random, int], list[Individual]]
PARENT_SELECTIONS: dict[str, ParentSelection] = {
    "crowded_tournament": sel_crowded_tournament,
    "tournament": sel_tournament,
    "best_of_sample": sel_best_of_sample,
}


def sel_youngest(candidates: list[Individual], k: int) -> list[Individual]:
    """Aging: the k most recent (candidates are oldest first)."""
    return candidates[len(candidates) - k :] if len(candidates) > k else candidates


SurvivorSelection = Callable[[list[Individual], int], list[Individual]]
SURVIVOR_SELECTIONS: dict[str, SurvivorSelection] = {
    "nsga2": tools.selNSGA2,  # (mu + lambda) on every objective
    "best": tools.selBest,  # the k best on the single objective
    "youngest": sel_youngest,
}


def distinct(candidates: list[Individual], size: int) -> list[Individual]:
    """Drop later copies of the same architecture, as long as `size` remain to select from:
    duplicates crowd a small population and add nothing to the front."""
    seen: set[str] = set()
    unique = []
    for ind in candidates:
        if ind.genome.arch_key() not in seen:
            seen.add(ind.genome.arch_key())
            unique.append(ind)
    return unique if len(unique) >= size else candidates


# --- strategies ------------------------------------------------------------------------------


class BaseStrategy:
    """What every strategy shares: its settings, the variation that makes children, a `seen`
    test for genomes whose identical work was already evaluated, and the population."""

    name = "strategy"

    def __init__(self, search: Search, variation: Variation, seen: Callable[[Genome], bool]):
        self.size = search.population
        self.offspring = search.offspring or self.default_offspring()
        self.initial_size = search.population
        self.tournament_size = search.tournament_size
        self.variation, self.seen = variation, seen
        self.rng = variation.rng
        self.population: list[Individual] = []

    def default_offspring(self) -> int:
        return self.size

    def start(self, evaluated: list[Individual]) -> None:
        self.population = list(evaluated)

    def select(self, parents: str, k: int) -> list[Individual]:
        return PARENT_SELECTIONS[parents](self.population, k, self.rng, self.tournament_size)

    def survive(self, survivors: str, children: list[Individual]) -> list[Individual]:
        candidates = distinct(self.population + children, self.size)
        self.population = SURVIVOR_SELECTIONS[survivors](candidates, self.size)
        return self.population


class Generational(BaseStrategy):
    """(mu + lambda): parents by a named selection, survivors by another (NSGA-II: crowded
    tournaments and NSGA-II survival; tournament: tournaments and the best survive)."""

    def __init__(self, name: str, parents: str, survivors: str, *args) -> None:
        super().__init__(*args)
        self.name, self.parents, self.survivors = name, parents, survivors

    def ask(self, n: int) -> list[Child]:
        return [self.variation.vary(lambda k: self.select(self.parents, k)) for _ in range(n)]

    def tell(self, children: list[Individual]) -> list[Individual]:
        return self.survive(self.survivors, children)


class RandomSearch(BaseStrategy):
    """Random search: every child is a fresh sample (unseen where 20 draws find one); the
    population is the best seen so far (NSGA-II survival for several objectives)."""

    name = "random"

    def __init__(self, multi_objective: bool, *args) -> None:
        super().__init__(*args)
        self.survivors = "nsga2" if multi_objective else "best"

    def ask(self, n: int) -> list[Child]:
        children = []
        for _ in range(n):
            genome = self.variation.sample()
            for _attempt in range(20):
                if not self.seen(genome):
                    break
                genome = self.variation.sample()
            children.append(Child(genome, (), "sample"))
        return children

    def tell(self, children: list[Individual]) -> list[Individual]:
        return self.survive(self.survivors, children)


class RegularizedEvolution(BaseStrategy):
    """Aging evolution (Real et al. 2019): a parent is the best of `tournament_size` members
    sampled without replacement; its mutant joins the population and the oldest member dies."""

    name = "regularized"

    def default_offspring(self) -> int:
        return 1

    def ask(self, n: int) -> list[Child]:
        return [
            self.variation.vary(lambda k: self.select("best_of_sample", k), mutation_only=True)
            for _ in range(n)
        ]

    def tell(self, children: list[Individual]) -> list[Individual]:
        self.population = sel_youngest(self.population + children, self.size)
        return self.population


class LocalSearch(BaseStrategy):
    """Greedy local search (hill climbing): start from the best of `population` random samples;
    evaluate unseen neighbours of the incumbent, `offspring` (default 1) at a time in random
    order; move to the best child that beats the incumbent; when every neighbour has been seen
    without improvement (a local optimum), restart from a random sample.

    After generation 0 the population is the incumbent alone; neighbours come from the space's
    `neighbors()` where it enumerates them (NAS-Bench-201), else from random mutations.
    """

    name = "local"

    def default_offspring(self) -> int:
        return 1

    def incumbent(self) -> Individual:
        return max(self.population, key=lambda ind: ind.fitness.wvalues)

    def ask(self, n: int) -> list[Child]:
        incumbent = self.incumbent()
        space = self.variation.space
        if space.enumerates_neighbours:
            candidates = space.neighbors(incumbent.genome)
            self.rng.shuffle(candidates)
            unseen = (g for g in candidates if not self.seen(g))  # lazily: n are enough
            children = [Child(g, (incumbent,), "mutate_edge") for g in islice(unseen, n)]
        else:
            children = []
            for _ in range(n * 10):
                child = self.variation.vary(lambda k: [incumbent] * k, mutation_only=True)
                if not self.seen(child.genome) and all(
                    child.genome.arch_key() != c.genome.arch_key() for c in children
                ):
                    children.append(child)
                if len(children) == n:
                    break
        if not children:  # a local optimum: every neighbour was seen
            return [Child(self.variation.sample(), (), "restart")]
        return children

    def tell(self, children: list[Individual]) -> list[Individual]:
        incumbent = self.incumbent()
        if len(children) == 1 and children[0].operator == "restart":
            self.population = [children[0]]
        else:
            best = max(children, key=lambda ind: ind.fitness.wvalues)
            self.population = (
                [best] if best.fitness.wvalues > incumbent.fitness.wvalues else [incumbent]
            )
        return self.population


class DerivedCells(BaseStrategy):
    """A gradient search's population: the cells its supernet derived (`evonas.gradient`
    evaluates them as generation 0). It breeds nothing: the search ends there."""

    name = "gradient"

    def ask(self, n: int) -> list[Child]:
        raise RuntimeError("a gradient search breeds no children")

    def tell(self, children: list[Individual]) -> list[Individual]:
        raise RuntimeError("a gradient search breeds no children")


STRATEGIES: dict[str, Callable[..., BaseStrategy]] = {
    "nsga2": lambda *args: Generational("nsga2", "crowded_tournament", "nsga2", *args),
    "tournament": lambda *args: Generational("tournament", "tournament", "best", *args),
    "random": lambda *args: RandomSearch(len(args[0].objectives) > 1, *args),
    "regularized": RegularizedEvolution,
    "local": LocalSearch,
    "gradient": DerivedCells,
}


def make_strategy(
    name: str, search: Search, variation: Variation, seen: Callable[[Genome], bool]
) -> Strategy:
    """The strategy registered under `name` (config.STRATEGIES, `auto` resolved), or a user's
    (`pkg.module:factory` or `path/file.py:factory`): `factory(search, variation, seen)` returns
    an object of the `Strategy` protocol (subclassing `BaseStrategy` gives it the basics). With
    `search.predictor` set, it is wrapped in surrogate-assisted breeding (`evonas.surrogate`)."""
    if search.predictor != "none":
        return SurrogateAssisted(lambda screened: _make(name, search, variation, screened),
                                 search, variation, seen)  # fmt: skip
    return _make(name, search, variation, seen)


def _make(name: str, search: Search, variation: Variation, seen: Callable[[Genome], bool]):
    if name in STRATEGIES:
        return STRATEGIES[name](search, variation, seen)
    from evonas.plugins import PluginError, load_callable

    factory = load_callable(name, what="search.strategy")
    try:
        strategy = factory(search, variation, seen)
    except Exception as exc:
        raise PluginError(f"search.strategy: {name} failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(strategy, Strategy):
        raise PluginError(f"search.strategy: {name} made a {type(strategy).__name__}, not a "
                          "Strategy (the protocol in evonas.strategies)")  # fmt: skip
    return strategy
