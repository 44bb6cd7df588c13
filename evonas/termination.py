"""When a run stops breeding: after its generations, at a run limit, or when it cannot mean
anything any more (the loop's `has_next` asks; like pymoo's termination objects)."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from evonas.records import FAILURES, Individual

if TYPE_CHECKING:
    from evonas.config import Search
    from evonas.constraints import Constraint


@dataclass
class Termination:
    generations: int
    max_evaluations: int = 0
    max_time: float = 0.0
    # A run whose last `failure_window` evaluations all failed means nothing: it stops as failed.
    failure_window: int = 1
    constraints: tuple[Constraint, ...] = ()
    recent: deque = field(default_factory=deque)

    @classmethod
    def of(cls, search: Search, offspring: int) -> Termination:
        window = max(offspring, search.population)
        constraints = tuple(search.constraints)
        return cls(search.generations, search.max_evaluations, search.max_time, window, constraints)

    def limit(self, evaluations: int, step: int, elapsed: float) -> str | None:
        """The run limit that forbids the next generation (checked where it starts):
        `max_evaluations` counts the step it would take, `max_time` the run's time over all
        its sessions."""
        if self.max_evaluations and evaluations + step > self.max_evaluations:
            return f"max_evaluations {self.max_evaluations} reached ({evaluations} done)"
        if self.max_time and elapsed >= self.max_time:
            return f"max_time {self.max_time:g} s reached"
        return None

    def failure(self, evaluated: list[Individual]) -> str | None:
        """Why the run has failed, given a generation's evaluations: the last `failure_window`
        evaluations (a generation, or a population's worth of one-child generations) all failed.
        The reason names the most frequent error. Candidates stopped early or over a constraint
        are not failures: they were measured, and rank below the others."""
        if any(ind.status not in FAILURES for ind in evaluated):
            self.recent.clear()  # the failures that count are those since the last success
            return None
        self.recent.extend(evaluated)
        while len(self.recent) > self.failure_window:
            self.recent.popleft()
        if len(self.recent) < self.failure_window:
            return None
        errors = Counter(ind.error or ind.status for ind in self.recent)
        error, count = errors.most_common(1)[0]
        return (
            f"every one of the last {len(self.recent)} evaluations failed; most frequent "
            f"error ({count}x): {error}"
        )

    def unmet(self, individuals: Iterable[Individual]) -> str | None:
        """Why a run that ended has no result: no fully trained candidate met its constraints
        (None when one did, or when it has none)."""
        if not self.constraints or any(ind.counts for ind in individuals):
            return None
        wanted = "; ".join(c.describe() for c in self.constraints)
        return (f"no fully trained candidate met search.constraints ({wanted}): loosen them, or "
                "search a space whose models can meet them")  # fmt: skip
