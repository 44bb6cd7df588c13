"""Objectives: what a search optimises, and the only definitions of "better", "best", the Pareto
front and DEAP fitness in evonas.

An objective is a metric name and a goal (`max` or `min`). Failed evaluations and missing metrics
get finite worst values (`WORST`): DEAP's NSGA-II and crowding distances must never see NaN or inf.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator

WORST = 1e30
# An infeasible candidate's fitness (evonas.constraints): past any value a feasible one has, short
# of a failure's, and worse the more it breaks its constraints.
INFEASIBLE = 1e20
# Metrics whose smaller values are better when they are not among a run's objectives.
SMALLER_IS_BETTER = {"params", "flops", "size_bytes", "latency_ms", "train_loss", "train_seconds"}


def metric_name(name: str) -> str:
    """`name` if a config may name a metric so (a journal column), else ValueError."""
    if not name or '"' in name or name != name.strip():
        raise ValueError(f"expected a metric name, got {name!r}")
    return name


class Objective(BaseModel):
    """A metric to optimise: `Objective("val_accuracy", "max")`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    name: str
    goal: Literal["max", "min"]

    def __init__(self, *args: str, **fields: object) -> None:
        super().__init__(**dict(zip(("name", "goal"), args)), **fields)

    _metric_name = field_validator("name")(classmethod(lambda cls, name: metric_name(name)))

    @property
    def sign(self) -> float:
        """+1 when larger is better, -1 when smaller is."""
        return 1.0 if self.goal == "max" else -1.0

    @property
    def worst(self) -> float:
        return -self.sign * WORST

    def better(self, a: float, b: float) -> bool:
        """Whether value `a` is strictly better than `b`."""
        return self.sign * (a - b) > 0

    def best_of(self, values: Iterable[float]) -> float:
        return max(values) if self.goal == "max" else min(values)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "goal": self.goal}


def objective_for(name: str, objectives: Sequence[Objective]) -> Objective:
    """The run's objective on `name`, or the natural goal of a metric that is not one."""
    for objective in objectives:
        if objective.name == name:
            return objective
    return Objective(name, "min" if name in SMALLER_IS_BETTER else "max")


def missing_metric(
    objectives: Sequence[Objective],
    available: Iterable[str],
    source: str,
    constrained: Sequence[str] = (),
) -> str | None:
    """The error for the first objective (or metric of `search.constraints`, named in order in
    `constrained`) that `source` does not produce, naming the metrics it does and the closest
    one; None when every one is there."""
    import difflib

    available = sorted(available)
    settings = [(f"search.objectives[{i}].name", o.name) for i, o in enumerate(objectives)]
    settings += [(f"search.constraints[{i}].metric", name) for i, name in enumerate(constrained)]
    for setting, name in settings:
        if name not in available:
            close = difflib.get_close_matches(name, available, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            return (
                f"{setting}: {name!r} is not a metric {source} "
                f"produces (it produces: {', '.join(available) or 'none'}){hint}"
            )
    return None


# --- DEAP fitness ------------------------------------------------------------------------------


def fitness_class(objectives: Sequence[Objective]) -> type:
    """A DEAP Fitness subclass whose weights follow the objectives' goals (no `deap.creator`)."""
    from deap import base

    return type("Fitness", (base.Fitness,), {"weights": tuple(o.sign for o in objectives)})


def fitness_values(
    metrics: dict[str, float], ok: bool, objectives: Sequence[Objective], violation: float = 0.0
) -> tuple[float, ...]:
    """Objective values of one evaluation; failures and missing metrics get the worst value.

    A candidate that breaks constraints by `violation` > 0 gets, on every objective, a value
    worse than any feasible one's and better than a failure's, growing with the violation: so
    DEAP's domination is Deb's constrained domination (feasible first, then less violation)."""
    if violation > 0:
        return tuple(-o.sign * INFEASIBLE * (1.0 + violation) for o in objectives)
    values = []
    for objective in objectives:
        value = metrics.get(objective.name) if ok else None
        values.append(objective.worst if value is None else float(value))
    return tuple(values)


# --- Pareto front ------------------------------------------------------------------------------


def dominates(a: dict[str, float], b: dict[str, float], objectives: Sequence[Objective]) -> bool:
    """Metrics `a` are at least as good as `b` on every objective both have, and better on one."""
    strictly = False
    for objective in objectives:
        if objective.name not in a or objective.name not in b:
            continue
        x, y = a[objective.name], b[objective.name]
        if objective.better(y, x):
            return False
        strictly = strictly or objective.better(x, y)
    return strictly


def pareto_mask(values: np.ndarray, objectives: Sequence[Objective]) -> np.ndarray:
    """True for the rows of `values` (one column per objective) that no other row dominates."""
    signed = np.asarray(values, dtype=float).reshape(len(values), len(objectives))
    signed = signed * np.array([o.sign for o in objectives])
    if len(objectives) == 1:
        return signed[:, 0] == signed[:, 0].max() if len(signed) else np.zeros(0, dtype=bool)
    if len(objectives) == 2:
        return _front_of_two(signed)
    # Rows best first (lexicographically): whatever dominates a row comes before it, so a row
    # need only be compared with the front found so far.
    mask = np.zeros(len(signed), dtype=bool)
    front = np.empty((0, signed.shape[1]))
    for i in np.lexsort(-signed.T[::-1]):
        row = signed[i]
        if not (np.all(front >= row, axis=1) & np.any(front > row, axis=1)).any():
            mask[i] = True
            front = np.vstack([front, row])
    return mask


def _front_of_two(signed: np.ndarray) -> np.ndarray:
    """Two objectives (both to maximise) in O(n log n): sorted by the first, then the second,
    a row is dominated by a better first value with a second at least as good, or by an equal
    first value with a better second."""
    mask = np.zeros(len(signed), dtype=bool)
    if not len(signed):
        return mask
    order = np.lexsort((-signed[:, 1], -signed[:, 0]))
    first, second = signed[order, 0], signed[order, 1]
    group_start = np.r_[0, np.flatnonzero(np.diff(first)) + 1]
    starts = np.repeat(group_start, np.diff(np.r_[group_start, len(first)]))
    best_before = np.where(starts > 0, np.maximum.accumulate(second)[starts - 1], -np.inf)
    dominated = (best_before >= second) | (second[starts] > second)
    mask[order] = ~dominated
    return mask


def successful(individuals: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """Rows with status ok, within the run's constraints (`violation` 0 or none) and with a value
    for every objective (empty when a metric never appeared)."""
    names = [o.name for o in objectives]
    if not set(names) <= set(individuals.columns):
        return individuals.iloc[0:0]
    ok = individuals["status"] == "ok"
    if "violation" in individuals.columns:
        ok &= ~(individuals["violation"] > 0)
    return individuals[ok].dropna(subset=names)


def front_flags(
    individuals: pd.DataFrame, objectives: Sequence[Objective]
) -> tuple[pd.Series, pd.Series]:
    """Per row of `individuals`: whether it counts (`successful`: trained, within the
    constraints, every objective known) and whether it is on the Pareto front of those."""
    ok = successful(individuals, objectives)
    feasible = pd.Series(individuals.index.isin(ok.index), index=individuals.index)
    on_front = pd.Series(False, index=individuals.index)
    if not ok.empty:
        mask = pareto_mask(ok[[o.name for o in objectives]].to_numpy(float), objectives)
        on_front[ok.index[mask]] = True
    return feasible, on_front


def pareto_front(individuals: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The journal rows of the successful individuals on the Pareto front, ordered by the last
    objective (then uid)."""
    ok = successful(individuals, objectives)
    if ok.empty:
        return ok.reset_index(drop=True)
    front = ok[pareto_mask(ok[[o.name for o in objectives]].to_numpy(float), objectives)]
    return front.sort_values([objectives[-1].name, "uid"]).reset_index(drop=True)


# --- best ----------------------------------------------------------------------------------------


def quality_floor(values: np.ndarray, quality: Objective, chance: float | None) -> float:
    """The value of the quality objective (a search's first) that a model must reach to count as
    useful: halfway from chance (when it is unknown, from the worst of `values`) to the best."""
    best = quality.best_of(values)
    worst = values.min() if quality.goal == "max" else values.max()
    base = chance if chance is not None else worst
    return float(base + (best - base) / 2)


def useful_mask(
    values: np.ndarray, objectives: Sequence[Objective], chance: float | None
) -> np.ndarray:
    """The rows (one column per objective) that count when "best" is asked on a further
    objective: on the Pareto front, and at least at the quality floor on the first objective
    (the whole front when none reaches it)."""
    values = np.asarray(values, dtype=float).reshape(len(values), len(objectives))
    front = pareto_mask(values, objectives)
    quality = objectives[0]
    floor = quality_floor(values[:, 0], quality, chance)
    useful = front & (quality.sign * values[:, 0] >= quality.sign * floor)
    return useful if useful.any() else front


def best_row(
    individuals: pd.DataFrame,
    name: str,
    objectives: Sequence[Objective],
    chance: float | None = None,
) -> pd.Series:
    """The best successful individual on metric `name`.

    On the first objective, or a metric that is not an objective, it is simply the best value.
    On any other objective (say `params` in an accuracy-against-size search) it is the best among
    the useful models (`useful_mask`: on the Pareto front and halfway from chance to the best on
    the first objective): the smallest model that is also good, not a model at chance level. Ties
    are broken by the objectives in order, then by uid. KeyError when no individual has it."""
    objective = objective_for(name, objectives)
    ok = successful(individuals, [objective])
    if ok.empty:
        raise KeyError(f"no successful individual has metric {name!r}")
    complete = successful(individuals, objectives)
    if name in [o.name for o in objectives[1:]] and not complete.empty:
        values = complete[[o.name for o in objectives]].to_numpy(float)
        ok = complete[useful_mask(values, objectives, chance)]
    order = [objective, *[o for o in objectives if o.name != name]]
    keys = [o.name for o in order if o.name in ok]
    ranked = ok.sort_values(
        [*keys, "uid"], ascending=[o.goal == "min" for o in order if o.name in ok] + [True]
    )
    return ranked.iloc[0]


def best_individual(individuals: Iterable, objective: Objective):
    """The successful feasible individual (an `evonas.records.Individual`) with the best value of
    `objective`, the lowest uid among ties; None when none has it."""
    scored = [ind for ind in individuals if ind.counts and objective.name in ind.metrics]
    if not scored:
        return None
    return max(scored, key=lambda ind: (objective.sign * ind.metrics[objective.name], -ind.uid))


def population_stats(
    metrics: Iterable[dict[str, float]],
    objectives: Sequence[Objective],
    chance: float | None = None,
) -> dict[str, float]:
    """best_<name> and median_<name> of each objective over successful members' metrics; the
    best on a further objective is the best useful member's, as in `best_row`."""
    rows = list(metrics)
    names = [o.name for o in objectives]
    complete = [row for row in rows if all(name in row for name in names)]
    if len(objectives) > 1 and complete:
        values = np.array([[row[name] for name in names] for row in complete])
        useful = [
            row for row, keep in zip(complete, useful_mask(values, objectives, chance)) if keep
        ]
    stats: dict[str, float] = {}
    for index, objective in enumerate(objectives):
        values = [row[objective.name] for row in rows if objective.name in row]
        if values:
            pool = useful if index and complete else rows
            stats[f"best_{objective.name}"] = objective.best_of(row[objective.name] for row in pool)
            stats[f"median_{objective.name}"] = statistics.median(values)
    return stats
