"""Reporters: what the loop tells the outside world (NEAT-Python's reporters).

The loop calls every reporter at the same points: `started`, `generation_started`, `evaluated`
(each journaled result), `generation_finished`, `info` (a log line) and `ended`. Each hook is
optional (`Reporter` does nothing). Built in:

- `LogReporter`: lines to the terminal and to `RUN_DIR/log.txt`; generation lines come at most
  once per `LOG_SECONDS` (the first and the last always), every other line as it happens;
- `ProgressReporter`: a one-line bar on a terminal (redrawn at most 10 times a second), nothing
  when output is piped;
- `PlotReporter`: the per-generation figures, redrawn at most once per `PLOT_SECONDS` and at
  the end, so plotting never dominates a fast search.

Experiment trackers (`evonas.trackers`) and plugins are further reporters, named in `reporters:`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from evonas.objectives import Objective, best_individual
from evonas.records import FAILURES, INFEASIBLE, Individual

LOG_SECONDS = 1.0
PLOT_SECONDS = 5.0
DRAW_SECONDS = 0.1


@dataclass(frozen=True)
class GenerationSummary:
    generation: int
    generations: int  # of the run
    evaluated: list[Individual]
    failed: int
    stats: dict[str, float]
    elapsed: float


@dataclass(frozen=True)
class Outcome:
    state: str  # finished | stopped | interrupted | failed
    reason: str
    elapsed: float


class Reporter:
    def started(self, replayed: int) -> None:
        pass

    def generation_started(self, generation: int, size: int) -> None:
        pass

    def evaluated(self, individual: Individual, source: str) -> None:
        """A result is known; `source`: worker (evaluated now), cache (identical work) or
        journal (replayed on resume)."""

    def generation_finished(self, summary: GenerationSummary) -> None:
        pass

    def info(self, line: str) -> None:
        pass

    def ended(self, outcome: Outcome) -> None:
        pass


class Reporters(Reporter):
    """Several reporters as one, called in order."""

    def __init__(self, reporters: Sequence[Reporter] = ()) -> None:
        self.reporters = list(reporters)

    def add(self, reporter: Reporter) -> None:
        self.reporters.append(reporter)

    def started(self, replayed: int) -> None:
        for reporter in self.reporters:
            reporter.started(replayed)

    def generation_started(self, generation: int, size: int) -> None:
        for reporter in self.reporters:
            reporter.generation_started(generation, size)

    def evaluated(self, individual: Individual, source: str) -> None:
        for reporter in self.reporters:
            reporter.evaluated(individual, source)

    def generation_finished(self, summary: GenerationSummary) -> None:
        for reporter in self.reporters:
            reporter.generation_finished(summary)

    def info(self, line: str) -> None:
        for reporter in self.reporters:
            reporter.info(line)

    def ended(self, outcome: Outcome) -> None:
        for reporter in self.reporters:
            reporter.ended(outcome)


def number(value: float) -> str:
    """A metric for people: integers without decimals, others to 4 significant digits."""
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4g}"


def number_formats(frame) -> dict:
    """`number` for each float column of a DataFrame (for to_string / to_html)."""
    return {c: number for c in frame.columns if frame[c].dtype.kind == "f"}


class ProgressReporter(Reporter):
    """A one-line progress bar: generation, evaluations, failures, best so far, ETA."""

    def __init__(self, generations: int, quality: Objective, stream: TextIO | None = None,
                 enabled: bool | None = None, note: str = "") -> None:  # fmt: skip
        self.note = note  # e.g. what the children train
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.generations, self.quality = generations, quality
        self.generation = self.size = self.done = self.failed = self.evaluated_here = 0
        self.best: Individual | None = None
        self.started_at = time.monotonic()
        self.drawn_at = 0.0
        self.drawn = False

    def generation_started(self, generation: int, size: int) -> None:
        self.generation, self.size, self.done = generation, size, 0
        self.draw(force=True)

    def evaluated(self, individual: Individual, source: str) -> None:
        if not self.enabled:
            return
        self.done += 1
        self.evaluated_here += source == "worker"
        self.failed += individual.status in FAILURES
        self.best = best_individual([i for i in (self.best, individual) if i], self.quality)
        self.draw()

    def text(self) -> str:
        width = 20
        filled = min(width, int(width * self.done / self.size)) if self.size else 0
        parts = [
            f"gen {self.generation}/{self.generations} [{'#' * filled}{'.' * (width - filled)}]"
            f" {self.done}/{self.size}",
            f"{self.failed} failed",
        ]
        if self.best is not None:
            parts.append(f"best {self.quality.name} {number(self.best.metrics[self.quality.name])}")
        if self.evaluated_here:
            per_eval = (time.monotonic() - self.started_at) / self.evaluated_here
            remaining = max(0, self.size - self.done)
            remaining += self.size * max(0, self.generations - self.generation)
            parts.append(f"ETA {duration(per_eval * remaining)}")
        return " | ".join(parts + ([self.note] if self.note else []))

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self.drawn_at >= DRAW_SECONDS):
            self.stream.write("\r\033[K" + self.text())
            self.stream.flush()
            self.drawn, self.drawn_at = True, now

    def clear(self) -> None:
        if self.enabled and self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn = False

    def ended(self, outcome: Outcome) -> None:
        self.clear()


class LogReporter(Reporter):
    """Log lines: every one to `log_file`, the terminal's share to `echo` (clearing `progress`
    first, so the two never mix)."""

    def __init__(
        self,
        echo: Callable[[str], None] | None,
        log_file: Path | None,
        progress: ProgressReporter | None = None,
    ) -> None:
        self.echo, self.progress = echo, progress
        self.file = open(log_file, "a", buffering=1) if log_file else None  # noqa: SIM115
        self.generation_at = 0.0

    def write(self, line: str) -> None:
        if self.file is not None:
            self.file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        if self.echo is not None:
            if self.progress is not None:
                self.progress.clear()
            self.echo(line)

    def started(self, replayed: int) -> None:
        if replayed:
            self.write(f"replaying {replayed} journaled evaluations")

    def evaluated(self, individual: Individual, source: str) -> None:
        if individual.status in (*FAILURES, INFEASIBLE) and source == "worker":
            self.write(f"  uid {individual.uid} {individual.status}: {individual.error}")
            if individual.traceback and self.file is not None:  # for whoever debugs it
                self.file.write(individual.traceback.rstrip() + "\n")

    def generation_finished(self, summary: GenerationSummary) -> None:
        due = time.monotonic() - self.generation_at >= LOG_SECONDS
        if not due and summary.generation not in (0, summary.generations):
            return
        best = ", ".join(
            f"best {k[5:]} {number(v)}" for k, v in summary.stats.items() if k[:5] == "best_"
        )
        self.write(
            f"generation {summary.generation}/{summary.generations}: {len(summary.evaluated)} "
            f"evaluated, {summary.failed} failed; {best or 'no success yet'} "
            f"[{summary.elapsed:.0f} s]"
        )
        self.generation_at = time.monotonic()

    def info(self, line: str) -> None:
        self.write(line)

    def ended(self, outcome: Outcome) -> None:
        if outcome.state == "interrupted":
            self.write(
                f"interrupted ({outcome.reason}); every finished evaluation is in the journal"
            )
        elif outcome.state in ("stopped", "failed"):
            self.write(f"{outcome.state}: {outcome.reason}")
        if self.file is not None:
            self.file.close()
            self.file = None


class PlotReporter(Reporter):
    """`plots/progress.png` and `plots/pareto.png` every `plot_every` generations, at most once
    per PLOT_SECONDS, and at the end."""

    def __init__(self, draw: Callable[[], None], plot_every: int) -> None:
        self.draw, self.plot_every = draw, plot_every
        self.drawn_at: float | None = None
        self.stale = False

    def generation_finished(self, summary: GenerationSummary) -> None:
        if not self.plot_every:
            return
        self.stale = True
        due = self.drawn_at is None or time.monotonic() - self.drawn_at >= PLOT_SECONDS
        last = summary.generation == summary.generations
        if (summary.generation % self.plot_every == 0 and due) or last:
            self.redraw()

    def redraw(self) -> None:
        self.draw()
        self.drawn_at, self.stale = time.monotonic(), False

    def ended(self, outcome: Outcome) -> None:
        if self.stale and outcome.state != "interrupted":  # a signal is not kept waiting:
            self.redraw()  # an interrupted run's plots are redrawn when it resumes


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
