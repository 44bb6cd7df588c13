"""When a run stops breeding: after its generations, at a run limit, or when it cannot mean
anything any more (the loop's `has_next` asks; like pymoo's termination objects)."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from evonas.records import OK, Individual

if TYPE_CHECKING:
    from evonas.config import Search


@dataclass
class Termination:
    generations: int
    max_evaluations: int = 0
    max_time: float = 0.0
    # A run whose last `failure_window` evaluations all failed means nothing: it stops as failed.
    failure_window: int = 1
    recent: deque = field(default_factory=deque)

    @classmethod
    def of(cls, search: Search, offspring: int) -> Termination:
        window = max(offspring, search.population)
        return cls(search.generations, search.max_evaluations, search.max_time, window)

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
        The reason names the most frequent error."""
        if any(ind.status == OK for ind in evaluated):
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
