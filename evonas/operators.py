"""Variation operators, their registry, and `Variation`, which draws them by weight.

A mutation is `op(genome, space, rng) -> genome`; a crossover is `op(a, b, space, rng) -> genome`.
Every operator returns a feasible genome (chain operators end in `space.repair`; graph operators
return their input when the child would not be valid), keeps the ids of the genes it
carries over and gives new ids to new genes. An operator may return its input unchanged when it
does not apply (e.g. removing a layer from a one-layer genome); `Variation` then tries again.

Graph genomes have their own operators under the same names where they mean the same thing
(`evonas.graph_operators`: channel groups, blocks, skips, homologous crossover); the registry
binds a name per kind of space.

Pruning is a mutation: `prune` and `cut` narrow a layer or remove one; the child keeps its
parent's gene ids, so with `training.inherit_weights` it starts from the parent's trained weights
and the worker decides which channels survive (`evonas.inherit`):

- `prune` narrows one conv or dense layer by `space.prune_fraction`; the worker keeps the most
  important channels (L1 norm of each filter by default, `training.prune_importance: bn` for the
  batch-norm scale);
- `cut` is the random counterpart: it removes a random layer, or a random `prune_fraction` of one
  layer's channels (the worker picks them at random, seeded).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evonas import graph_operators
from evonas.config import OPERATOR_NAMES
from evonas.genome import SPATIAL_OPS, Genome
from evonas.records import Child, Individual
from evonas.spaces import SequentialSpace, Space, param_count

MAX_VARIATION_ATTEMPTS = 20


@dataclass(frozen=True)
class Operator:
    name: str
    fn: Callable[..., Genome]
    arity: int  # 1 for mutations, 2 for crossovers
    space: str  # the kind of search space it works on


# (space kind, name) -> operator: one name (prune, crossover) may mean one function per space.
OPERATORS: dict[tuple[str, str], Operator] = {}


def register(
    name: str, arity: int = 1, spaces: tuple[str, ...] = ("sequential",)
) -> Callable[[Callable[..., Genome]], Callable[..., Genome]]:
    """Bind `name` (listed in config.OPERATOR_NAMES for each of `spaces`) to an operator."""
    for space in spaces:
        if name not in OPERATOR_NAMES[space]:
            raise ValueError(f"operator {name!r} is not in config.OPERATOR_NAMES[{space!r}]")

    def decorate(fn: Callable[..., Genome]) -> Callable[..., Genome]:
        for space in spaces:
            OPERATORS[space, name] = Operator(name, fn, arity, space)
        return fn

    return decorate


def plugin_operator(ref: str, space: Space) -> Operator:
    """A user's operator named `pkg.module:function` (or `path/file.py:function`), bound for
    `space`: a mutation `fn(genome, space, rng) -> Genome` or a crossover `fn(a, b, space, rng)`.
    Its child is repaired by the space; an infeasible one counts as no change (the parent's
    genome), so `Variation` tries again."""
    import inspect

    from evonas.plugins import PluginError, load_callable

    what = f"search.operators.{ref}"
    fn = load_callable(ref, what=what)
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(fn).parameters.values()
    required = [p for p in parameters if p.default is p.empty and p.kind in positional]
    arity = len(required) - 2
    if arity not in (1, 2):
        raise PluginError(f"{what}: an operator takes (genome, space, rng) or (a, b, space, rng); "
                          f"{fn.__name__} takes {len(required)} arguments")  # fmt: skip

    def apply(*args: Any) -> Genome:
        genomes, space, rng = args[:-2], args[-2], args[-1]
        child = fn(*genomes, space, rng)
        if not isinstance(child, Genome):
            raise PluginError(f"{what}: returned {type(child).__name__}, expected a Genome")
        child = space.repair(child)
        return genomes[0] if space.infeasible(child) else child

    return Operator(ref, apply, arity, space.kind)


def bind_operators(weights: Mapping[str, float], space: Space) -> None:
    """Register the plugins among the operators of `weights` for `space`, and check that every
    other name is an operator of its kind (a plugin space's kind is known only now)."""
    from evonas.config import ConfigError, is_plugin

    for name in weights:
        if is_plugin(name):
            OPERATORS[space.kind, name] = plugin_operator(name, space)
        elif (space.kind, name) not in OPERATORS:
            known = sorted(n for kind, n in OPERATORS if kind == space.kind)
            raise ConfigError(f"search.operators.{name}: unknown operator for a {space.kind} "
                              f"space; expected one of {known} or a plugin (with no "
                              "search.operators, the space's default_operators)")  # fmt: skip


def arity(space: Space, name: str) -> int:
    """How many parents operator `name` takes on `space` (once bound)."""
    return OPERATORS[space.kind, name].arity


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


@register("change_lr", spaces=("sequential", "graph"))
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


@register("mutate_edge", spaces=("nb201",))
def mutate_edge(genome: Genome, space, rng: random.Random) -> Genome:
    """One edge of a NAS-Bench-201 cell to another operation (the benchmark's mutation)."""
    operations = space.operations(genome)
    edge = rng.randrange(len(operations))
    operations[edge] = rng.choice([op for op in space.ops if op != operations[edge]])
    return space.genome(operations)


@register("crossover_edges", arity=2, spaces=("nb201",))
def crossover_edges(a: Genome, b: Genome, space, rng: random.Random) -> Genome:
    """Uniform crossover of two cells: each edge's operation from either parent."""
    return space.genome(
        [rng.choice(pair) for pair in zip(space.operations(a), space.operations(b))]
    )


def mutation_names(space: str = "sequential") -> list[str]:
    return [op.name for op in OPERATORS.values() if op.arity == 1 and op.space == space]


# --- pruning as mutation -------------------------------------------------------------------------

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


# --- graph operators (evonas.graph_operators) ---------------------------------------------------

for _name in ("insert_gene", "insert_block", "remove_gene", "remove_block", "add_skip",
              "remove_skip", "change_width", "change_kernel", "change_activation",
              "change_groups", "prune", "cut"):  # fmt: skip
    register(_name, spaces=("graph",))(getattr(graph_operators, _name))
register("crossover", arity=2, spaces=("graph",))(graph_operators.crossover)


# --- drawing operators by weight -----------------------------------------------------------------


def operator_weights(
    configured: Mapping[str, float], space: Space, inherit_weights: bool
) -> dict[str, float]:
    """The configured weights, else the space's defaults (with its pruning operators when
    children inherit their parents' weights)."""
    if configured:
        return dict(configured)
    if inherit_weights and space.inherits_weights:
        return {**space.default_operators, **space.pruning_operators}
    return dict(space.default_operators)


class Variation:
    """Makes children: an operator drawn by weight, applied to the parents a strategy selects.
    All randomness comes from `rng` (the run's)."""

    def __init__(self, space: Space, weights: Mapping[str, float], rng: random.Random) -> None:
        bind_operators(weights, space)
        self.space, self.weights, self.rng = space, dict(weights), rng

    def vary(self, select: Callable[[int], list[Individual]], mutation_only: bool = False) -> Child:
        """A child by an operator drawn by weight, on parents from `select(arity)`; tried again
        (up to MAX_VARIATION_ATTEMPTS times) while the child is identical to a parent."""
        kind = self.space.kind
        names = [
            name
            for name, weight in self.weights.items()
            if weight > 0 and not (mutation_only and OPERATORS[kind, name].arity > 1)
        ]
        for _attempt in range(MAX_VARIATION_ATTEMPTS):
            name = self.rng.choices(names, [self.weights[n] for n in names])[0]
            operator = OPERATORS[kind, name]
            parents = select(operator.arity)
            genome = operator.fn(*[p.genome for p in parents], self.space, self.rng)
            if all(genome.arch_key() != p.genome.arch_key() for p in parents):
                break
        return Child(genome, tuple(parents), operator.name)

    def sample(self) -> Genome:
        return self.space.sample(self.rng)
