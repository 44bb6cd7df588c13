"""Constraints: hard limits on metrics (`search.constraints`), and how much a candidate breaks them.

A constraint bounds one metric: `{metric: params, max: 50000}`, `{metric: val_accuracy, min:
0.9}`. A candidate's *violation* is the sum, over the constraints it breaks, of how far it is past
each bound relative to the bound (0.2: 20 % over); 0 means feasible.

- Constraints on what is known before training (`PRE_TRAINING`: params, FLOPs, size) are
  checked by the worker as soon as the model is built: a candidate over such a limit is never
  trained; it is journaled with status `infeasible`, those metrics and its violation.
- Every constraint then ranks candidates by constrained domination (Deb 2002): a feasible
  candidate beats an infeasible one, two infeasible ones compare by violation, two feasible ones
  by their objectives. `evonas.objectives.fitness_values` writes this into the DEAP fitness, so
  NSGA-II's fronts and every single-objective strategy (feasibility first) follow it unchanged.
- "Best" and the Pareto front consider feasible candidates only (`evonas.objectives.successful`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from evonas.objectives import metric_name

# Metrics the built-in trainer knows once the model is built, before it trains a step.
PRE_TRAINING = ("params", "flops", "size_bytes")
MAX_VIOLATION = 1e9  # violations are capped so that the fitness that encodes them stays finite
UNMEASURED = 1.0  # a constraint a candidate rejected before training could not be checked on


class Constraint(BaseModel):
    """A bound on one metric: at most `max`, at least `min` (one of them or both)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    metric: str
    max: float | None = None
    min: float | None = None

    _metric_name = field_validator("metric")(classmethod(lambda cls, name: metric_name(name)))

    @field_validator("max", "min", mode="before")
    @classmethod
    def _number(cls, value: Any) -> float | None:
        if value is None:
            return None
        try:  # numbers written as text count (YAML 1.1 reads 5e4 as text)
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return number

    @model_validator(mode="after")
    def _bounded(self) -> Constraint:
        if self.max is None and self.min is None:
            raise ValueError(f"{self.metric}: give max, min or both")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"{self.metric}: min {self.min:g} is above max {self.max:g}")
        return self

    @property
    def pre_training(self) -> bool:
        return self.metric in PRE_TRAINING

    def violation(self, value: float) -> float:
        """How far `value` is past the bounds, relative to the bound broken (0 within them)."""
        if self.max is not None and value > self.max:
            return (value - self.max) / max(abs(self.max), 1e-12)
        if self.min is not None and value < self.min:
            return (self.min - value) / max(abs(self.min), 1e-12)
        return 0.0

    def describe(self) -> str:
        bounds = [f">= {self.min:g}" if self.min is not None else "",
                  f"<= {self.max:g}" if self.max is not None else ""]  # fmt: skip
        return f"{self.metric} {' and '.join(b for b in bounds if b)}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in {"metric": self.metric, "max": self.max, "min": self.min}.items()
                if v is not None}  # fmt: skip


def violation(
    metrics: Mapping[str, float], constraints: Sequence[Constraint], unmeasured: float = 0.0
) -> float:
    """The total violation of `metrics` (0: feasible). A constraint on a metric the candidate
    lacks adds `unmeasured`: nothing for a trained candidate (whose evaluator simply does not
    report it), a whole bound (`UNMEASURED`) for one rejected before training, so that an
    untrained reject never outranks a trained model that is only slightly past a limit."""
    total = sum(c.violation(metrics[c.metric]) if c.metric in metrics else unmeasured
                for c in constraints)  # fmt: skip
    return min(total, MAX_VIOLATION)


def broken(metrics: Mapping[str, float], constraints: Sequence[Constraint]) -> str | None:
    """Which constraints `metrics` break, for a person (None when none)."""
    found = [
        f"{c.metric} {metrics[c.metric]:g} breaks the constraint {c.describe()}"
        for c in constraints
        if c.metric in metrics and c.violation(metrics[c.metric]) > 0
    ]
    return "; ".join(found) or None


def pre_training_limits(constraints: Sequence[Constraint]) -> list[dict[str, Any]]:
    """The constraints a worker checks before training (plain data for the job)."""
    return [c.to_dict() for c in constraints if c.pre_training]
