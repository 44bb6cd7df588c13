"""Architecture weights of a gradient search, torch-free: their probabilities, the cells they
derive, and the journal's supernet epochs as tables (`Run.supernet`, `Run.arch_weights`)."""

from __future__ import annotations

import math

import pandas as pd

from evonas.records import SupernetEpoch
from evonas.spaces import NB201_EDGES, NB201_OPS, Nb201Space


def probabilities(arch: tuple[tuple[float, ...], ...]) -> list[list[float]]:
    """Softmax of each edge's architecture weights."""
    result = []
    for row in arch:
        top = max(row)
        exps = [math.exp(v - top) for v in row]
        result.append([e / sum(exps) for e in exps])
    return result


def derived_operations(arch: tuple[tuple[float, ...], ...], ops: tuple[str, ...],
                       top: int = 1) -> list[list[str]]:  # fmt: skip
    """The strongest op per edge, then up to `top - 1` cells that differ from it on one edge,
    most probable first (ties: by edge, then op, for a stable order)."""
    probs = probabilities(arch)
    best = [max(range(len(ops)), key=lambda o, p=p: (p[o], -o)) for p in probs]
    cells = [[ops[o] for o in best]]
    swaps = sorted(
        ((math.log(p[o]) - math.log(p[best[e]]), e, o) for e, p in enumerate(probs)
         for o in range(len(ops)) if o != best[e]),
        key=lambda swap: (-swap[0], swap[1], swap[2]),
    )  # fmt: skip
    for _, edge, op in swaps[: top - 1]:
        cell = list(cells[0])
        cell[edge] = ops[op]
        cells.append(cell)
    return cells


def supernet_table(epochs: list[SupernetEpoch]) -> pd.DataFrame:
    """`Run.supernet`: one row per epoch (its columns are documented there)."""
    space = Nb201Space()
    rows, previous = [], None
    for epoch in epochs:
        cell = space.to_string(epoch.genome)
        rows.append({"epoch": epoch.epoch, "cell": cell, "changed": cell != previous,
                     **epoch.metrics, "device": epoch.device, "finished_at": epoch.finished_at,
                     "genome": epoch.genome.to_json()})  # fmt: skip
        previous = cell
    table = pd.DataFrame(rows, columns=None if rows else ["epoch", "cell", "changed", "genome"])
    if "finished_at" in table:
        table["finished_at"] = pd.to_datetime(table["finished_at"], unit="s", utc=True)
    return table


def arch_weight_table(epochs: list[SupernetEpoch]) -> pd.DataFrame:
    """`Run.arch_weights`: one row per epoch, edge and op."""
    ops = NB201_OPS  # the nb201 space's ops (the only cell space a supernet is built for)
    rows = [
        {"epoch": epoch.epoch, "edge": f"{target}<-{source}", "op": ops[o], "weight": weight,
         "raw": epoch.arch[e][o]}
        for epoch in epochs
        for e, ((target, source), probs) in enumerate(zip(NB201_EDGES, probabilities(epoch.arch)))
        for o, weight in enumerate(probs)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["epoch", "edge", "op", "weight", "raw"])
