"""Progress of a search: a one-line bar on a terminal, nothing extra when piped (the per-
generation log lines are the plain-text progress)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total_generations: int = 0, enabled: bool | None = None,
                 stream: TextIO | None = None) -> None:  # fmt: skip
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total_generations = total_generations
        self.generation = 0
        self.total = self.done = self.failed = 0
        self.best = ""
        self.started = time.monotonic()
        self.evaluated_here = 0
        self.drawn = False

    def start_generation(self, generation: int, total: int, done: int) -> None:
        self.generation, self.total, self.done = generation, total, done
        self.draw()

    def advance(self, failed: bool, best: str) -> None:
        self.done += 1
        self.evaluated_here += 1
        self.failed += failed
        self.best = best
        self.draw()

    def eta_seconds(self) -> float | None:
        """Remaining time of the run at this session's mean time per evaluation."""
        if not self.evaluated_here:
            return None
        per_eval = (time.monotonic() - self.started) / self.evaluated_here
        remaining = self.total - self.done
        remaining += self.total * max(0, self.total_generations - self.generation)
        return per_eval * remaining

    def text(self) -> str:
        width = 20
        filled = int(width * self.done / self.total) if self.total else 0
        bar = "#" * filled + "." * (width - filled)
        eta = self.eta_seconds()
        parts = [
            f"gen {self.generation}/{self.total_generations} [{bar}] {self.done}/{self.total}",
            f"{self.failed} failed",
        ]
        if self.best:
            parts.append(self.best)
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        return " | ".join(parts)

    def draw(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K" + self.text())
            self.stream.flush()
            self.drawn = True

    def clear(self) -> None:
        if self.enabled and self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn = False

    def close(self) -> None:
        self.clear()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
