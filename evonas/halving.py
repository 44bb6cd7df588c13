"""Successive halving within each generation (`search.early_stop.kind: halving`; torch-free).

The children a generation evaluates together form a group. Each trains up to its first rung
(`min_epochs`), saving a checkpoint there; once every member has reached the rung (or failed),
the best 1/eta of them continue from their checkpoints to the next rung (min_epochs x eta, x
eta^2, ...) and the others are stopped, journaled as `stopped` with the metrics they reached.
A member's rungs are the ladder's epochs below its own budget: `training.epochs` from scratch,
`finetune_epochs` for a child that inherits weights, so a fine-tuned child joins the rungs
only where its fine-tune budget goes past them.

Ranking at a rung: with one objective, by its value; with several, by non-dominated fronts, and
every member of the first front continues (a multi-objective run stops only members dominated at
the rung), then the next fronts until 1/eta continue. With `search.constraints`, domination is
constrained domination, as in selection: a member within the constraints at the rung beats one
past them, and two past them compare by how far. Ties go to the earlier child. Every
decision is a function of the rung results alone, which are journaled (table `rungs`), so a
resumed run makes the same decisions whatever order results arrived in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from evonas.constraints import Constraint, violation
from evonas.objectives import Objective, dominates


@dataclass
class Member:
    uid: int
    rungs: tuple[int, ...]  # epochs at which it may be stopped (below its budget)
    results: dict[int, dict[str, float]] = field(default_factory=dict)  # rung -> metrics
    done: bool = False  # its evaluation is over (finished, failed or stopped)
    stopped_at: int | None = None


@dataclass(frozen=True)
class Action:
    """What a decision means for a member still evaluating: stop at `epoch`, or continue from
    its checkpoint at `epoch` up to `until` (None: its whole budget)."""

    uid: int
    kind: str  # continue | stop
    epoch: int
    until: int | None = None


@dataclass
class Group:
    members: list[Member]
    level: int = 0  # the ladder index of the next rung to decide


class Halving:
    def __init__(self, min_epochs: int, eta: int, objectives: Sequence[Objective],
                 constraints: Sequence[Constraint] = ()) -> None:  # fmt: skip
        self.min_epochs, self.eta, self.objectives = min_epochs, eta, list(objectives)
        self.constraints = list(constraints)
        self.worst = {o.name: o.worst for o in self.objectives}  # for a metric a rung lacks
        self.groups: dict[int, Group] = {}  # uid -> its group
        self.members: dict[int, Member] = {}

    def rungs(self, budget: int) -> tuple[int, ...]:
        """The ladder's epochs below `budget`."""
        rungs, epoch = [], self.min_epochs
        while epoch < budget:
            rungs.append(epoch)
            epoch *= self.eta
        return tuple(rungs)

    def open(self, members: list[Member]) -> list[Action]:
        """A new group (members with what the journal already holds of them); the decisions
        those results already allow."""
        group = Group(members)
        for member in members:
            self.groups[member.uid] = group
            self.members[member.uid] = member
        return self._decide(group)

    def first_stop(self, uid: int) -> int | None:
        """Where a member's first job stops: its first rung (None: it trains its budget)."""
        rungs = self.members[uid].rungs
        return rungs[0] if rungs else None

    def arrived(self, uid: int, epoch: int, metrics: dict[str, float]) -> list[Action]:
        """A member reached a rung."""
        self.members[uid].results[epoch] = metrics
        return self._decide(self.groups[uid])

    def finished(self, uid: int) -> list[Action]:
        """A member's evaluation is over (its budget trained, or failed)."""
        if uid not in self.members:
            return []
        self.members[uid].done = True
        return self._decide(self.groups[uid])

    def next_stop(self, member: Member, epoch: int) -> int | None:
        later = [r for r in member.rungs if r > epoch]
        return later[0] if later else None

    # --- decisions --------------------------------------------------------------------------

    def _decide(self, group: Group) -> list[Action]:
        actions: list[Action] = []
        while True:
            epoch = self.min_epochs * self.eta**group.level
            alive = [m for m in group.members if epoch in m.rungs and m.stopped_at is None]
            if not alive:
                if any(epoch < max(m.rungs, default=0) for m in group.members):
                    group.level += 1  # nobody reached this rung alive; later ones may exist
                    continue
                return actions
            if not all(epoch in m.results or m.done for m in alive):
                return actions  # someone is still training towards it
            ranked = [m for m in alive if epoch in m.results]
            keep = self._kept(ranked, epoch)
            for member in ranked:
                if member.uid not in keep:
                    member.stopped_at = epoch
                    if not member.done:
                        actions.append(Action(member.uid, "stop", epoch))
                elif not member.done:
                    until = self.next_stop(member, epoch)
                    if until is None or until not in member.results:
                        actions.append(Action(member.uid, "continue", epoch, until))
            group.level += 1

    def _kept(self, ranked: list[Member], epoch: int) -> set[int]:
        """The uids of `ranked` that continue past `epoch`."""
        quota = math.ceil(len(ranked) / self.eta)
        remaining = list(ranked)
        kept: list[Member] = []
        first = True
        while remaining and (first or len(kept) < quota):
            front = [m for m in remaining if not any(self._beats(o, m, epoch) for o in remaining)]
            if first and len(self.objectives) > 1:
                kept += front  # never stop a member no other one dominates
            else:
                kept += front[: max(0, quota - len(kept))]
            remaining = [m for m in remaining if m not in front]
            first = False
        return {m.uid for m in kept}

    def _beats(self, a: Member, b: Member, epoch: int) -> bool:
        if self.constraints:  # constrained domination
            past_a = violation(a.results[epoch], self.constraints)
            past_b = violation(b.results[epoch], self.constraints)
            if past_a or past_b:
                return past_a < past_b
        return dominates({**self.worst, **a.results[epoch]}, {**self.worst, **b.results[epoch]},
                         self.objectives)  # fmt: skip
