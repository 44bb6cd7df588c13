"""Learning curves and the median stopping rule (torch-free; the worker and the parent use it).

Every built-in evaluation reports a curve: after each epoch, the epoch's mean training loss and
the validation metrics. A user's evaluator reports its own with `report_epoch`. Curves are
journaled (table `curves`, one row per uid, epoch and metric) and read back by `load_run`.

The median rule (`search.early_stop.kind: median`; Golovin et al. 2017, Google Vizier) stops a
candidate after an epoch at which more than half of the *completed* candidates of its kind
(trained from scratch, or fine-tuned from inherited weights) were better at that same epoch.
"Better" is Pareto dominance over the objectives both sides know by then (the curve's metrics,
and what is known before training, such as params and FLOPs), so with one objective it is the
classic rule, and a multi-objective run stops only candidates dominated at the epoch. The
completed candidates are those the loop had joined when the candidate was bred, so the decision
depends only on journaled data, never on which worker finished first.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from evonas.objectives import Objective, dominates


class Stopped(Exception):  # noqa: N818 - a decision, not an error
    """Raised by `report_epoch` when the median rule stops the candidate; let it propagate."""


@dataclass
class MedianRule:
    """The median rule as a worker applies it (plain data in a `Job`: `to_dict`/`of`)."""

    objectives: list[Objective]
    min_epochs: int
    min_curves: int
    reference: dict[int, list[dict[str, float]]]  # epoch -> completed candidates' values there

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectives": [{"name": o.name, "goal": o.goal} for o in self.objectives],
            "min_epochs": self.min_epochs,
            "min_curves": self.min_curves,
            "reference": {str(e): points for e, points in self.reference.items()},
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> MedianRule:
        return cls(
            objectives=[Objective(o["name"], o["goal"]) for o in data["objectives"]],
            min_epochs=int(data["min_epochs"]),
            min_curves=int(data["min_curves"]),
            reference={int(e): points for e, points in data["reference"].items()},
        )

    def stops(self, epoch: int, values: dict[str, float]) -> bool:
        """Whether a candidate with `values` after `epoch` epochs stops here."""
        points = self.reference.get(epoch, [])
        if epoch < self.min_epochs or len(points) < self.min_curves:
            return False
        better = sum(dominates(p, values, self.objectives) for p in points)
        return better * 2 > len(points)


def median_reference(
    curves: list[list[dict[str, float]]],
    finals: list[dict[str, float]],
    objectives: list[Objective],
) -> dict[int, list[dict[str, float]]]:
    """Per epoch, the objective values of completed candidates (their curve at that epoch over
    their final metrics, which give what does not change with training: params, FLOPs)."""
    names = [o.name for o in objectives]
    reference: dict[int, list[dict[str, float]]] = {}
    for curve, final in zip(curves, finals):
        for point in curve:
            merged = {**final, **point}
            values = {n: float(merged[n]) for n in names if n in merged}
            reference.setdefault(int(point["epoch"]), []).append(values)
    return reference


# --- a user's evaluator reports its curve --------------------------------------------------------


@dataclass
class CurveRecorder:
    """The curve of the evaluation running in this worker, and the rule that may stop it."""

    rule: MedianRule | None = None
    points: list[dict[str, float]] = field(default_factory=list)

    def add(
        self, epoch: int, metrics: dict[str, float], known: dict[str, float] | None = None
    ) -> bool:
        """Record an epoch; True when the rule stops the candidate after it (`known`: metrics
        known before training, such as params and FLOPs)."""
        if self.points and epoch <= self.points[-1]["epoch"]:
            raise ValueError(f"report_epoch: epoch {epoch} after epoch "
                             f"{int(self.points[-1]['epoch'])}; epochs must increase")  # fmt: skip
        self.points.append({"epoch": float(epoch), **metrics})
        return self.rule is not None and self.rule.stops(epoch, {**(known or {}), **metrics})


_RECORDER: contextvars.ContextVar[CurveRecorder | None] = contextvars.ContextVar(
    "evonas_curve", default=None
)


@contextmanager
def recording(recorder: CurveRecorder) -> Iterator[CurveRecorder]:
    """Make `report_epoch` report to `recorder` while a user's evaluator runs."""
    token = _RECORDER.set(recorder)
    try:
        yield recorder
    finally:
        _RECORDER.reset(token)


def report_epoch(epoch: int, **metrics: float) -> None:
    """Report a user evaluator's metrics after `epoch` (1, 2, ...): they become its learning
    curve in the journal. Raises `Stopped` when `search.early_stop` stops the candidate here:
    let it propagate (the evaluation is journaled as `stopped` with these metrics). Outside
    an evaluation it does nothing, so the same function can run on its own."""
    recorder = _RECORDER.get()
    if recorder is None:
        return
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"report_epoch: epoch must be an integer >= 1, got {epoch!r}")
    values = {str(k): float(v) for k, v in metrics.items()}
    if recorder.add(epoch, values):
        raise Stopped(f"stopped after epoch {epoch} by the median rule")
