"""Genome encodings for predictors (torch-free): a genome as named numeric features.

- NAS-Bench-201 cells: the operation on each edge (one-hot), the path encoding (White et al.
  2021: one feature per input-to-output path and the operations along it) and a summary of the
  cell as it computes (edges on a live path, the operations on them, whether the output is
  reached: an edge that no input-to-output path uses changes nothing).
- Chains and graphs: per-gene features: how many genes of each op, each numeric parameter's sum
  and maximum per op (log2 of widths and sizes), each categorical value's count, the first genes'
  ops by position, the depth and, for graphs, how many genes read more than one input.

Features are a sparse `{name: value}` dict, so encodings of different genomes need not share a
vocabulary; `FeatureIndex` turns them into rows of one matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from evonas.genome import Genome

# Input-to-output paths of the 4-node cell, as the edge indices (in NB201_EDGES order) they take.
NB201_PATHS = ((3,), (0, 4), (1, 5), (0, 2, 5))
POSITIONS = 8  # chain genes whose op is also encoded by position
LOG_PARAMS = frozenset({"width", "units", "kernel", "size", "dilation", "stride"})


def encode(genome: Genome, kind: str) -> dict[str, float]:
    """The genome's features; `kind` is the space's (nb201 cells have their own encoding)."""
    return encode_cell(genome) if kind == "nb201" else encode_genes(genome)


def encode_cell(genome: Genome) -> dict[str, float]:
    ops = [gene.params["operation"] for gene in genome.genes]
    features = {f"edge{i}={op}": 1.0 for i, op in enumerate(ops)}
    live_edges: set[int] = set()
    for path in NB201_PATHS:
        if all(ops[e] != "none" for e in path):
            features["path:" + ">".join(ops[e] for e in path)] = 1.0
            live_edges.update(path)
    # Summaries in [0, 1]; weighted by 2 because one of them says as much as several one-hots.
    features["live_edges"] = 2 * len(live_edges) / len(ops)
    for op in {ops[e] for e in live_edges}:
        features[f"live:{op}"] = 2 * sum(ops[e] == op for e in live_edges) / len(ops)
    features["connected"] = 2.0 * bool(live_edges)
    return features


def encode_genes(genome: Genome) -> dict[str, float]:
    features: dict[str, float] = {"genes": float(len(genome.genes))}
    multi_input = 0
    for position, gene in enumerate(genome.genes):
        _add(features, f"n:{gene.op}", 1.0)
        if position < POSITIONS:
            features[f"at{position}={gene.op}"] = 1.0
        if gene.inputs is not None and len(gene.inputs) > 1:
            multi_input += 1
        for name, value in gene.params.items():
            _param(features, gene.op, name, value)
    if genome.is_graph:
        features["multi_input"] = float(multi_input)
    for name, value in genome.training.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            features[f"training.{name}"] = math.log10(value)
    return features


def _param(features: dict[str, float], op: str, name: str, value: Any) -> None:
    if isinstance(value, (bool, str)):
        _add(features, f"{op}.{name}={value}", 1.0)
    elif isinstance(value, (int, float)):
        number = math.log2(value) if name in LOG_PARAMS and value > 0 else float(value)
        _add(features, f"{op}.{name}:sum", number)
        key = f"{op}.{name}:max"
        features[key] = max(features.get(key, number), number)


def _add(features: dict[str, float], key: str, value: float) -> None:
    features[key] = features.get(key, 0.0) + value


class FeatureIndex:
    """A growing vocabulary of feature names (in order of first appearance, so the same genomes
    in the same order give the same matrix) and a cache of each genome's encoding."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.columns: dict[str, int] = {}
        self._encoded: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _sparse(self, genome: Genome) -> tuple[np.ndarray, np.ndarray]:
        key = genome.arch_key()
        if key not in self._encoded:
            features = encode(genome, self.kind)
            columns = [self.columns.setdefault(name, len(self.columns)) for name in features]
            self._encoded[key] = (np.array(columns, dtype=int), np.array(list(features.values())))
        return self._encoded[key]

    def matrix(self, genomes: Sequence[Genome]) -> np.ndarray:
        """One row per genome, one column per feature seen so far (absent features are 0)."""
        encoded = [self._sparse(g) for g in genomes]
        out = np.zeros((len(encoded), len(self.columns)))
        if encoded:
            rows = np.repeat(np.arange(len(encoded)), [len(c) for c, _ in encoded])
            out[rows, np.concatenate([c for c, _ in encoded])] = np.concatenate(
                [v for _, v in encoded]
            )
        return out
