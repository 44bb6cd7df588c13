"""Pruning as mutation: `prune` and `cut`, ordinary registry operators on genomes (torch-free).

Both return a child with fewer parameters that keeps its parent's gene ids, so with
`training.inherit_weights` the child starts from the parent's trained weights
(see `evonas.inherit`). Which channels survive is decided in the worker, where the weights are:

- `prune` narrows one conv or dense layer by `space.prune_fraction`; the worker keeps the most
  important channels (L1 norm of each filter by default, `training.prune_importance: bn` for the
  batch-norm scale);
- `cut` is the random counterpart: it removes a random layer, or a random `prune_fraction` of one
  layer's channels (the worker picks them at random, seeded).

The consumer layer's inputs are sliced to match in the worker as well.
"""

from __future__ import annotations

import random

from evonas.genome import Genome
from evonas.operators import _with_genes, register
from evonas.spaces import SequentialSpace, param_count

PRUNABLE = {"conv": "width", "dense": "units"}


def narrower(size: int, fraction: float) -> int:
    """The size left after removing `fraction` of `size` channels (at least one removed)."""
    return max(1, min(size - 1, round(size * (1.0 - fraction))))


def _narrow_one(genome: Genome, space: SequentialSpace, rng: random.Random) -> Genome:
    candidates = [
        i for i, g in enumerate(genome.genes) if g.op in PRUNABLE and g.params[PRUNABLE[g.op]] > 1
    ]
    if not candidates:
        return genome
    position = rng.choice(candidates)
    gene = genome.genes[position]
    key = PRUNABLE[gene.op]
    genes = list(genome.genes)
    genes[position] = gene.with_params(**{key: narrower(gene.params[key], space.prune_fraction)})
    return _with_genes(genome, genes, space)


@register("prune")
def prune(genome: Genome, space: SequentialSpace, rng: random.Random) -> Genome:
    """Remove the least important `prune_fraction` of one conv/dense layer's channels."""
    return _narrow_one(genome, space, rng)


@register("cut")
def cut(genome: Genome, space: SequentialSpace, rng: random.Random) -> Genome:
    """Remove a random layer whose removal saves parameters, or a random `prune_fraction` of one
    layer's channels."""
    if rng.random() < 0.5 and len(genome.genes) > max(1, space.min_layers):
        size = param_count(genome, space.input_shape, space.num_classes)
        smaller = []
        for position in range(len(genome.genes)):
            child = _with_genes(
                genome, genome.genes[:position] + genome.genes[position + 1 :], space
            )
            if param_count(child, space.input_shape, space.num_classes) < size:
                smaller.append(child)
        if smaller:
            return rng.choice(smaller)
    return _narrow_one(genome, space, rng)
