"""Weights of a run: where each model's state_dict lives, which parent a child inherits each gene
from, which model teaches, and which files are kept.

Parent side (torch-free): `WeightPolicy` and `plan`. Files: `save_state_dict` and
`load_state_dict` import torch when called (workers, export, analysis); a state_dict is always
read with `torch.load(weights_only=True)`, so a file with a pickled payload is refused, never run.
The worker side of inheritance (copying tensors channel by channel) is `evonas.inherit`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evonas.genome import Genome
from evonas.objectives import Objective, best_individual, pareto_mask
from evonas.records import OK, Individual

if TYPE_CHECKING:
    from evonas.config import Config
    from evonas.spaces import Space

WEIGHTED = ("conv", "dense", "residual")


class UnsafeFileError(ValueError):
    """A weights file that is not plain tensors and containers; refused, never unpickled."""


# --- files ---------------------------------------------------------------------------------------


def save_state_dict(model: Any, path: str | Path) -> None:
    """Write a model's state_dict atomically (readable with torch.load(weights_only=True))."""
    save_state(model.state_dict(), path)


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Write a dict of tensors and plain values atomically (a state_dict, a checkpoint)."""
    import torch

    path = str(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException as exc:  # a full disk, or a stop: no half-written file stays behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(exc, RuntimeError) and shutil.disk_usage(os.path.dirname(path)).free < 2**20:
            # torch says only "file write failed"; say what the parent recognises
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from None
        raise


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)` with a clear error instead of running a payload."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise UnsafeFileError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # torch's bold escapes
        first = text.splitlines()[0] if text else type(exc).__name__
        raise UnsafeFileError(
            f"{path}: not a plain state_dict; refusing to unpickle arbitrary objects ({first})"
        ) from None


# --- inheritance plans (parent side) --------------------------------------------------------------


def plan(
    child: Genome, parents: list[tuple[int, Genome, str]], select: str = "l1"
) -> dict[str, Any] | None:
    """Where each gene of `child` inherits from; `parents` are (uid, genome, weights path).

    A gene takes its weights from the parent that holds the same stable gene id. An id shared by
    several parents (common ancestry) is taken from the parent whose gene has the same
    parameters and the same neighbours as in the child. None when no gene is shared.
    """
    genes: dict[str, int] = {}
    for position, gene in enumerate(child.genes):
        scores = [
            (score, -index)
            for index, (_, genome, _) in enumerate(parents)
            if (score := _match(child, position, genome)) is not None
        ]
        if scores:
            genes[str(gene.id)] = -max(scores)[1]
    if not genes:
        return None
    weighted = [g for g in child.genes if g.op in WEIGHTED and str(g.id) in genes]
    return {
        "parents": [
            {"uid": uid, "genome": genome.to_dict(), "weights": weights}
            for uid, genome, weights in parents
        ],
        "genes": genes,
        "head": genes[str(weighted[-1].id)] if weighted else 0,
        "select": select,
    }


def _match(child: Genome, position: int, parent: Genome) -> tuple[bool, bool, bool] | None:
    ids = [g.id for g in parent.genes]
    gene = child.genes[position]
    if gene.id not in ids:
        return None
    at = ids.index(gene.id)
    if parent.genes[at].op != gene.op:  # hand-written or imported ids may repeat across lineages
        return None
    before = child.genes[position - 1].id if position else None
    after = child.genes[position + 1].id if position + 1 < len(child.genes) else None
    return (
        parent.genes[at].params == gene.params,
        (ids[at - 1] if at else None) == before,
        (ids[at + 1] if at + 1 < len(ids) else None) == after,
    )


# --- the run's policy ----------------------------------------------------------------------------

WeightsUid = Callable[[Individual], int]  # whose file holds an individual's weights (cache copies)


class WeightPolicy:
    """Which evaluations save weights, inherit, are distilled, and which files stay on disk.

    Every decision reads journaled state only (statuses, metrics, the cache), so a resumed run
    decides exactly as the original did."""

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        space: Space,
        seed_teacher: tuple[Genome, Path] | None,
        objectives: list[Objective],
    ) -> None:
        """`seed_teacher`: the genome and weights of the first seed that has weights."""
        training = config.training
        self.keeps = training.save_weights and config.evaluation == "trainer"
        self.inherits = self.keeps and training.inherit_weights and space.inherits_weights
        self.distill_from = training.distill_from if self.keeps else ""
        self.importance = training.prune_importance
        self.folder = run_dir / "weights"
        self.seed_teacher = seed_teacher
        self.objectives = objectives

    def path(self, uid: int) -> Path:
        return self.folder / f"{uid}.pt"

    def plan_for(
        self, child: Individual, by_uid: Mapping[int, Individual], weights_uid: WeightsUid
    ) -> dict[str, Any] | None:
        """The child's inheritance plan: its parents' trained weights (or, for a mutant bred
        beside a seed in generation 0, the seed's own weights) and which genes come from which."""
        if not self.inherits or not child.parents:
            return None
        sources = []
        for uid in dict.fromkeys(child.parents):
            parent = by_uid[uid]
            if child.generation == 0:
                weights = Path(parent.init_weights) if parent.init_weights else None
            elif parent.status == OK:
                weights = self.path(weights_uid(parent))
            else:
                weights = None
            if weights is not None:
                sources.append((uid, parent.genome, str(weights.resolve())))
        select = "random" if child.operator == "cut" else self.importance
        return plan(child.genome, sources, select) if sources else None

    def teacher(
        self, candidates: Iterable[Individual], weights_uid: WeightsUid
    ) -> dict[str, Any] | None:
        """The distillation teacher of the next evaluations: the first seed with weights, or the
        best of `candidates` on the first objective (none before anything succeeded)."""
        if not self.distill_from:
            return None
        if self.distill_from == "seed":
            if self.seed_teacher is None:
                return None
            genome, weights = self.seed_teacher
            return {"uid": "seed", "genome": genome.to_dict(), "weights": str(weights.resolve())}
        best = best_individual(candidates, self.objectives[0])
        if best is None:
            return None
        weights = self.path(weights_uid(best)).resolve()
        return {"uid": best.uid, "genome": best.genome.to_dict(), "weights": str(weights)}

    def worth_keeping(
        self,
        population: list[Individual],
        joined: list[Individual],
        in_flight: list[Individual],
        weights_uid: WeightsUid,
    ) -> set[int]:
        """Weights kept on disk after a generation: the population, the Pareto front over every
        joined individual, children already bred for later generations and the weights they read
        (parents, teacher), the next teacher, and the originals that cached copies point to."""
        keep = {ind.uid for ind in population} | {ind.uid for ind in in_flight}
        for ind in in_flight:
            keep |= {p["uid"] for p in (ind.inherit or {}).get("parents", [])}
            keep |= {ind.teacher["uid"]} if ind.teacher else set()
        teacher = self.teacher(joined, weights_uid)
        keep |= {teacher["uid"]} if teacher else set()
        evaluated = [ind for ind in joined if ind.status == OK]
        if evaluated:
            values = [ind.fitness.values for ind in evaluated]
            front = pareto_mask(values, self.objectives)
            keep |= {ind.uid for ind, on in zip(evaluated, front) if on}
        by_uid = {ind.uid: ind for ind in [*joined, *in_flight]}
        keep |= {weights_uid(by_uid[uid]) for uid in list(keep) if uid in by_uid}
        keep.discard("seed")
        return keep
