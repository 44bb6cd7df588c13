"""Surrogate-assisted breeding: any strategy, with a predictor choosing what to evaluate.

`SurrogateAssisted` wraps a strategy (the `Strategy` protocol) and keeps its lifecycle; only
`ask` changes. Asked for n children, it:

    1. asks the strategy for `candidates` times as many (for local search: up to that many
       unseen neighbours of the incumbent) and drops copies and genomes already evaluated;
       a local search's restart (a random sample) is kept as it is;
    2. refits the predictor on every result told so far (encoded by `evonas.encodings`);
    3. scores the candidates with the acquisition function (one objective: expected improvement
       or the upper confidence bound over the best so far; several: how few of the measured
       results dominate the candidate's optimistic prediction, ties broken by the sum of
       per-objective acquisitions);
    4. returns the n best that are promising (expected improvement at least 1 % of the spread of
       results; an optimistic value better than the best; for several objectives, not dominated)
       and, for each place left, the best of `samples` fresh samples of the space: when the
       predictor says the strategy's own proposals are not worth an evaluation, it looks
       elsewhere. The proposals it passed over count as seen for the strategy, so a local
       search moves on from them (and restarts once every neighbour is evaluated or passed
       over; a restart forgets them). A random search's samples are replaced by the best of
       fresh samples: random search with a predictor is Bayesian optimisation over samples.

Until `min_observations` results are in, the strategy's own children are returned. Each child
carries its prediction (mean and standard deviation per objective), journaled with the result.
Fits and scores depend only on what was told, in breeding order, and on the run's random
stream, so the history is the same for any number of workers and a replay retraces it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from evonas.config import Search
from evonas.encodings import FeatureIndex
from evonas.genome import Genome
from evonas.objectives import Objective
from evonas.operators import Variation
from evonas.predictors import ACQUISITIONS, Predictor, make_predictor
from evonas.records import TRAINED, Child, Individual

SAMPLE, RESTART = "sample", "restart"  # operators of children that have no parents
PROMISING_EI = 0.01  # of the spread of measured values


class SurrogateAssisted:
    """A strategy whose children are screened by a predictor (see the module docstring).

    `make_inner(seen)` makes the wrapped strategy (an `evonas.strategies.Strategy`) with the
    `seen` test it is to use."""

    def __init__(self, make_inner: Callable[[Callable[[Genome], bool]], Any], search: Search,
                 variation: Variation, seen: Callable[[Genome], bool]) -> None:  # fmt: skip
        settings = search.surrogate
        self.variation, self.seen = variation, seen
        self.passed_over: set[str] = set()  # proposals the predictor found not worth evaluating
        # The strategy sees those as seen: a local search moves on (and restarts) without them.
        self.inner = inner = make_inner(lambda g: seen(g) or g.arch_key() in self.passed_over)
        self.name = f"{inner.name}+{search.predictor}"
        self.offspring, self.initial_size = inner.offspring, inner.initial_size
        self.objectives: list[Objective] = list(search.objectives)
        self.predictor_name = search.predictor
        self.acquisition = ACQUISITIONS[settings.acquisition]
        self.ei = settings.acquisition == "ei"
        self.beta = settings.beta
        self.candidates, self.samples = settings.candidates, settings.samples
        self.min_observations = settings.min_observations
        self.rng: random.Random = variation.rng
        self.features = FeatureIndex(variation.space.kind)
        self.genomes: list[Genome] = []  # what was measured, in the order it was told
        self.values: list[tuple[float, ...]] = []  # its objectives, oriented: larger is better

    @property
    def population(self) -> list[Individual]:
        return self.inner.population

    # --- the lifecycle: the strategy's, with observations -------------------------------------

    def start(self, evaluated: list[Individual]) -> None:
        self.observe(evaluated)
        self.inner.start(evaluated)

    def tell(self, children: list[Individual]) -> list[Individual]:
        self.observe(children)
        return self.inner.tell(children)

    def observe(self, individuals: list[Individual]) -> None:
        for ind in individuals:
            if ind.status in TRAINED and all(o.name in ind.metrics for o in self.objectives):
                self.genomes.append(ind.genome)
                self.values.append(tuple(o.sign * ind.metrics[o.name] for o in self.objectives))

    def ask(self, n: int) -> list[Child]:
        proposed = self.inner.ask(n * self.candidates)
        if len(self.genomes) < self.min_observations:
            return proposed[:n]
        models = self.fit()
        # A restart stays the random jump it is: the way out of a basin the predictor believes
        # in (chosen by the predictor, restarts went back to where it was sure; see BENCHMARKS).
        restarts = [c for c in proposed if c.operator == RESTART][:n]
        if restarts:  # a new climb: what was passed over near the last one may be worth it now
            self.passed_over.clear()
        chosen = [replace(s.child, prediction=s.prediction) for s in self.score(models, restarts)]
        bred = [c for c in self.unique(proposed) if c.operator not in (SAMPLE, RESTART)]
        best_first = sorted(self.score(models, bred), key=lambda s: -s.score)
        chosen += [replace(s.child, prediction=s.prediction) for s in best_first if s.promising]
        chosen = chosen[:n]
        self.passed_over.update(s.child.genome.arch_key() for s in best_first if not s.promising)
        if len(chosen) < n:  # look elsewhere: the best of fresh samples
            fresh = self.fresh_samples(exclude={c.genome.arch_key() for c in bred})
            best_first = sorted(self.score(models, fresh), key=lambda s: -s.score)
            chosen += [Child(s.child.genome, (), SAMPLE, s.prediction)
                       for s in best_first[: n - len(chosen)]]  # fmt: skip
        return chosen

    # --- the steps ------------------------------------------------------------------------------

    def unique(self, children: list[Child]) -> list[Child]:
        """Drop copies and what was evaluated already: an evaluation of those is a cache hit."""
        keys: set[str] = set()
        kept = []
        for child in children:
            key = child.genome.arch_key()
            if key not in keys and not self.seen(child.genome):
                keys.add(key)
                kept.append(child)
        return kept

    def fresh_samples(self, exclude: set[str]) -> list[Child]:
        children = [Child(self.variation.sample(), (), SAMPLE) for _ in range(self.samples)]
        unique = self.unique(children)
        return [c for c in unique if c.genome.arch_key() not in exclude]

    def fit(self) -> list[Predictor]:
        """One predictor per objective, fit on every measurement so far."""
        X, measured = self.features.matrix(self.genomes), np.array(self.values)
        models = []
        for k in range(len(self.objectives)):
            model = make_predictor(self.predictor_name, self.rng.getrandbits(31))
            model.fit(X, measured[:, k])
            models.append(model)
        return models

    def predict(self, models: list[Predictor], genomes: list[Genome]) -> tuple:
        """Mean and std of each genome (rows) on each objective (columns). Features that nothing
        measured has are left out: they say nothing yet."""
        X = self.features.matrix(genomes)[:, : models[0].width]
        predictions = [model.predict(X) for model in models]
        return np.array([m for m, _ in predictions]).T, np.array([s for _, s in predictions]).T

    def score(self, models: list[Predictor], children: list[Child]) -> list[Scored]:
        """Each child's acquisition score, whether it is promising, and its prediction."""
        if not children:
            return []
        mean, std = self.predict(models, [c.genome for c in children])
        measured = np.array(self.values)
        best, spread = measured.max(axis=0), measured.std(axis=0)
        spread[spread == 0] = 1.0
        gains = np.stack(  # per objective, in units of the spread of what was measured
            [
                self.acquisition(mean[:, k], std[:, k], best[k], self.beta) / spread[k]
                for k in range(len(best))
            ],  # fmt: skip
            axis=1,
        )
        if len(self.objectives) == 1:
            scores = gains[:, 0]
            promising = scores >= PROMISING_EI if self.ei else scores > 0
        else:  # predicted dominance: optimistic predictions that few measured results dominate
            dominated_by = _dominated_by(mean + self.beta * std, measured)
            total = gains.sum(axis=1)  # ties broken by it, scaled below 1 to stay tie-breaking
            scores = -dominated_by + total / (1.0 + np.abs(total).max())
            promising = dominated_by == 0
        return [
            Scored(
                child,
                float(scores[i]),
                bool(promising[i]),
                {
                    o.name: (o.sign * float(mean[i, k]), float(std[i, k]))
                    for k, o in enumerate(self.objectives)
                },
            )  # fmt: skip
            for i, child in enumerate(children)
        ]


@dataclass(frozen=True)
class Scored:
    child: Child
    score: float  # larger is more worth evaluating
    promising: bool
    prediction: dict[str, tuple[float, float]]  # objective -> (mean, std), in its own units


def _dominated_by(candidates: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """For each candidate row, how many measured rows dominate it (larger is better)."""
    at_least = (measured[None, :, :] >= candidates[:, None, :]).all(axis=2)
    better = (measured[None, :, :] > candidates[:, None, :]).any(axis=2)
    return (at_least & better).sum(axis=1)
