"""Variation operators and their registry.

A mutation is `op(genome, space, rng) -> genome`; a crossover is `op(a, b, space, rng) -> genome`.
Every operator returns a feasible genome (it ends in `space.repair`), keeps the ids of the genes it
carries over and gives new ids to new genes. An operator may return its input unchanged when it
does not apply (e.g. removing a layer from a one-layer genome); the loop then tries again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from evonas.genome import SPATIAL_OPS, Genome
from evonas.spaces import SequentialSpace


@dataclass(frozen=True)
class Operator:
    name: str
    fn: Callable[..., Genome]
    arity: int  # 1 for mutations, 2 for crossovers
    space: str  # the kind of search space it works on


OPERATORS: dict[str, Operator] = {}

# Operator weights used when the config's search.operators is empty.
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "sequential": {
        "add_layer": 1.0,
        "remove_layer": 1.0,
        "change_op": 1.0,
        "change_width": 1.0,
        "change_kernel": 1.0,
        "change_activation": 0.5,
        "change_lr": 1.0,
        "crossover": 1.0,
    },
    "nb201": {"mutate_edge": 1.0, "crossover_edges": 0.5},
}
# Added to the sequential defaults when children inherit their parents' weights.
PRUNING_WEIGHTS = {"prune": 1.0, "cut": 0.5}


def register(
    name: str, arity: int = 1, space: str = "sequential"
) -> Callable[[Callable[..., Genome]], Callable[..., Genome]]:
    def decorate(fn: Callable[..., Genome]) -> Callable[..., Genome]:
        OPERATORS[name] = Operator(name, fn, arity, space)
        return fn

    return decorate


def _flat_before(genome: Genome, position: int, space: SequentialSpace) -> bool:
    """True when the input of position `position` is already flat."""
    return not space.spatial or any(g.op == "dense" for g in genome.genes[:position])


def _spatial_after(genome: Genome, position: int) -> bool:
    return any(g.op in SPATIAL_OPS for g in genome.genes[position:])


def _with_genes(genome: Genome, genes: list, space: SequentialSpace) -> Genome:
    return space.repair(Genome(genes=tuple(genes), training=dict(genome.training)))


@register("add_layer")
def add_layer(genome: Genome, space: SequentialSpace, rng: random.Random) -> Genome:
    """Insert a new random layer at a position where its op fits."""
    if len(genome.genes) >= space.max_layers:
        return genome
    position = rng.randint(0, len(genome.genes))
    ops = space.allowed_ops(flat=_flat_before(genome, position, space))
    if _spatial_after(genome, position):
        ops = [op for op in ops if op != "dense"]
    if not ops:
        return genome
    genes = list(genome.genes)
    genes.insert(position, space.sample_gene(rng.choice(ops), rng))
    return _with_genes(genome, genes, space)


@register("remove_layer")
def remove_layer(genome: Genome, space: SequentialSpace, rng: random.Random) -> Genome:
    if len(genome.genes) <= space.min_layers:
        return genome
    genes = list(genome.genes)
    del genes[rng.randrange(len(genes))]
    return _with_genes(genome, genes, space)


@register("change_op")
def change_op(genome: Genome, space: SequentialSpace, rng: random.Random) -> Genome:
    """Replace one layer by a new layer of another op (a new gene id: new weights)."""
    if not genome.genes:
        return genome
    position = rng.randrange(len(genome.genes))
    old = genome.genes[position]
    ops = space.allowed_ops(flat=_flat_before(genome, position, space))
    if _spatial_after(genome, position + 1):
        ops = [op for op in ops if op != "dense"]
    ops = [op for op in ops if op != old.op]
    if not ops:
        return genome
    genes = list(genome.genes)
    genes[position] = space.sample_gene(rng.choice(ops), rng)
    return _with_genes(genome, genes, space)


def _change_param(
    genome: Genome, space: SequentialSpace, rng: random.Random, choices_by_key: dict[str, tuple]
) -> Genome:
    """Set one parameter of one layer that has it to another value from its choices."""
    candidates = [
        (i, key)
        for i, gene in enumerate(genome.genes)
        for key in choices_by_key
        if key in gene.params and any(value != gene.params[key] for value in choices_by_key[key])
    ]
    if not candidates:
        return genome
    position, key = rng.choice(candidates)
    gene = genome.genes[position]
    value = rng.choice([v for v in choices_by_key[key] if v != gene.params[key]])
    genes = list(genome.genes)
    genes[position] = gene.with_params(**{key: value})
    return _with_genes(genome, genes, space)


@register("change_width")
def change_width(genome: Genome, space: SequentialSpace, rng: random.Random) -> Genome:
    return _change_param(genome, space, rng, {"width": space.widths, "units": space.units})


@register("change_kernel")
def change_kernel(genome: Genome, space: SequentialSpace, rng: random.Random) -> Genome:
    choices = {"kernel": space.kernels, "stride": space.strides, "dilation": space.dilations}
    return _change_param(genome, space, rng, choices)


@register("change_activation")
def change_activation(genome: Genome, space: SequentialSpace, rng: random.Random) -> Genome:
    return _change_param(genome, space, rng, {"activation": space.activations})


@register("change_lr")
def change_lr(genome: Genome, space: SequentialSpace, rng: random.Random) -> Genome:
    """Multiply the learning rate by a log-normal factor (sigma 0.7), clipped to the space."""
    lr = genome.training["lr"] * math.exp(rng.gauss(0.0, 0.7))
    training = {**genome.training, "lr": float(f"{lr:.3g}")}
    return space.repair(Genome(genes=genome.genes, training=training))


@register("crossover", arity=2)
def crossover(a: Genome, b: Genome, space: SequentialSpace, rng: random.Random) -> Genome:
    """Shape-aware one-point crossover: a's head joined to b's tail where the shapes agree.

    The cut points are chosen so the tail never puts a spatial layer after a's head has flattened
    the features. The learning rate comes from either parent.
    """
    pairs = [
        (i, j)
        for i in range(len(a.genes) + 1)
        for j in range(len(b.genes) + 1)
        if not (_flat_before(a, i, space) and _spatial_after(b, j))
        and space.min_layers <= i + len(b.genes) - j <= space.max_layers
    ]
    if not pairs:
        return a
    i, j = rng.choice(pairs)
    training = dict(rng.choice((a, b)).training)
    genes = list(a.genes[:i]) + list(b.genes[j:])
    return space.repair(Genome(genes=tuple(genes), training=training))


@register("mutate_edge", space="nb201")
def mutate_edge(genome: Genome, space, rng: random.Random) -> Genome:
    """One edge of a NAS-Bench-201 cell to another operation (the benchmark's mutation)."""
    operations = space.operations(genome)
    edge = rng.randrange(len(operations))
    operations[edge] = rng.choice([op for op in space.ops if op != operations[edge]])
    return space.genome(operations)


@register("crossover_edges", arity=2, space="nb201")
def crossover_edges(a: Genome, b: Genome, space, rng: random.Random) -> Genome:
    """Uniform crossover of two cells: each edge's operation from either parent."""
    return space.genome(
        [rng.choice(pair) for pair in zip(space.operations(a), space.operations(b))]
    )


def mutation_names(space: str = "sequential") -> list[str]:
    return [name for name, op in OPERATORS.items() if op.arity == 1 and op.space == space]


# pruning operators live in their own module and register themselves here
from evonas import prune as _prune  # noqa: E402, F401
