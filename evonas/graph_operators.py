"""Variation operators on graph genomes (torch-free); `evonas.operators` registers them.

Each is `op(genome, space, rng) -> genome` (crossover takes two genomes) and returns either a valid
child inside the space's limits or its input unchanged (the operator did not apply; `Variation`
draws again). Children keep their parents' gene ids; new genes get fresh random ids. Where the
shapes allow, a child computes what its parent computed once it has inherited the parent's weights
(`evonas.graph_inherit`): an inserted convolution starts as the identity, an inserted block or skip
connection adds a branch whose last convolution starts at zero, a widened group's new channels are
read with zero weights, a larger kernel is the old one zero-padded, and a depthwise convolution
made dense keeps its filters on the diagonal. Removing a gene or block, narrowing, and the
activation and kernel changes alter the function; inheritance keeps what it can.

Pruning is a mutation here too: `prune` narrows one channel group by `space.prune_fraction`
(the worker keeps the most important channels of every tied layer), `cut` removes a random block
or a random share of one group's channels.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from evonas.channels import channel_groups, is_depthwise, with_width
from evonas.genome import Gene, Genome
from evonas.graph import INPUT, GraphError, graph_shapes, link, parse_graph_params

if TYPE_CHECKING:
    from evonas.spaces import GraphSpace

WIDTH_FACTORS = (0.5, 0.75, 1.5, 2.0)
SWAPPABLE_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "hardswish")
BYPASSABLE = frozenset({"convolution", "batch_norm", "activation", "dropout", "channel_dropout",
                        "identity", "scale", "max_pool", "avg_pool"})  # fmt: skip


# --- helpers -------------------------------------------------------------------------------------


def _finish(
    parent: Genome, genes: Sequence[Gene], space: GraphSpace, training: dict | None = None
) -> Genome:
    """The child made of `genes` when it is valid and inside the space's limits, else `parent`."""
    try:
        linked = link(_without_dead(genes), "child")
    except GraphError:
        return parent
    child = Genome(genes=linked, training=dict(training or parent.training))
    return child if space.infeasible(child) is None else parent


def _without_dead(genes: Sequence[Gene]) -> list[Gene]:
    """The genes that still lead to the output (the last gene)."""
    needed = {genes[-1].id}
    for gene in reversed(genes):
        if gene.id in needed:
            needed.update(gene.inputs)
    return [g for g in genes if g.id in needed]


def _shapes(genome: Genome, space: GraphSpace) -> dict[int, tuple[int, ...]]:
    shapes = dict(zip(genome.gene_ids(), graph_shapes(genome.genes, space.input_shape)))
    return {INPUT: tuple(space.input_shape), **shapes}


def _new_gene(genome_ids: set[int], rng: random.Random, op: str, inputs: Sequence[int],
              **params: Any) -> Gene:  # fmt: skip
    """A gene with a fresh id (added to `genome_ids`) and its op's defaults filled in."""
    gene_id = rng.randrange(1, 2**31)
    while gene_id in genome_ids:
        gene_id = rng.randrange(1, 2**31)
    genome_ids.add(gene_id)
    filled, _ = parse_graph_params(params, op, f"new {op}")
    return Gene(id=gene_id, op=op, params=filled, inputs=tuple(inputs))


def _redirect(genes: Sequence[Gene], old: int, new: int, skip: set[int]) -> list[Gene]:
    """Every gene (but those in `skip`) that read `old` reads `new` instead."""
    return [
        g if g.id in skip or old not in g.inputs
        else replace(g, inputs=tuple(new if i == old else i for i in g.inputs))
        for g in genes
    ]  # fmt: skip


def _insert_after(genes: Sequence[Gene], anchor: int, new: list[Gene]) -> list[Gene]:
    """`new` placed right after `anchor` (first when it is the input); the readers of `anchor`
    read the last of `new` instead."""
    rewired = _redirect(genes, anchor, new[-1].id, {g.id for g in new})
    at = 0 if anchor == INPUT else [g.id for g in genes].index(anchor) + 1
    return rewired[:at] + new + rewired[at:]


def _anchors(genome: Genome, shapes, spatial: bool | None = None) -> list[int]:
    """Tensors a gene can be inserted after: the input and every gene but the output."""
    ids = [INPUT, *genome.gene_ids()[:-1]]
    if spatial is None:
        return ids
    return [i for i in ids if (len(shapes[i]) >= 2) == spatial]


def _odd(kernels: Sequence[int]) -> list[int]:
    """Kernel sizes that a symmetric padding keeps the size of (1 when there are none)."""
    return [k for k in kernels if k % 2] or [1]


def _same_padding(gene: Gene) -> bool:
    """A convolution padded so that its kernel size does not change its output size."""
    p = gene.params
    if p["padding"] == "same":
        return True
    kernels, dilations, pads = (v if isinstance(v, list) else [v]
                                for v in (p["kernel"], p["dilation"], p["padding"]))  # fmt: skip
    if not isinstance(pads, list) or len(set(kernels)) != 1 or len(set(dilations)) != 1:
        return False
    k, d = kernels[0], dilations[0]
    return k % 2 == 1 and set(pads) == {d * (k - 1) // 2}


# --- inserting and removing ------------------------------------------------------------------


def insert_gene(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Insert a convolution and batch norm on an edge of a feature map (or a linear on a flat
    one), with as many channels as the edge carries; it starts as the identity."""
    if not genome.is_graph:
        return genome
    shapes, ids = _shapes(genome, space), set(genome.gene_ids())
    anchor = rng.choice(_anchors(genome, shapes))
    shape = shapes[anchor]
    if len(shape) >= 2:
        k = rng.choice(_odd(space.kernels))
        conv = _new_gene(ids, rng, "convolution", [anchor], channels=shape[0], kernel=k,
                         padding=k // 2, bias=False)  # fmt: skip
        new = [conv, _new_gene(ids, rng, "batch_norm", [conv.id])]
    else:
        new = [_new_gene(ids, rng, "linear", [anchor], features=shape[0])]
    return _finish(genome, _insert_after(genome.genes, anchor, new), space)


def _residual_block(ids: set[int], rng: random.Random, anchor: int, channels: int,
                    kernel: int) -> list[Gene]:  # fmt: skip
    conv = dict(channels=channels, kernel=kernel, padding=kernel // 2, bias=False)
    conv1 = _new_gene(ids, rng, "convolution", [anchor], **conv)
    bn1 = _new_gene(ids, rng, "batch_norm", [conv1.id])
    relu = _new_gene(ids, rng, "activation", [bn1.id], function="relu")
    conv2 = _new_gene(ids, rng, "convolution", [relu.id], **conv)
    bn2 = _new_gene(ids, rng, "batch_norm", [conv2.id])
    return [conv1, bn1, relu, conv2, bn2, _new_gene(ids, rng, "add", [anchor, bn2.id])]


def insert_block(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Insert a residual block (conv, bn, relu, conv, bn, added to its input) on an edge of a
    feature map; its last convolution starts at zero, so the block starts as the identity."""
    if not genome.is_graph:
        return genome
    shapes, ids = _shapes(genome, space), set(genome.gene_ids())
    anchors = _anchors(genome, shapes, spatial=True)
    if not anchors:
        return genome
    anchor = rng.choice(anchors)
    block = _residual_block(ids, rng, anchor, shapes[anchor][0], rng.choice(_odd(space.kernels)))
    return _finish(genome, _insert_after(genome.genes, anchor, block), space)


def remove_gene(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Remove a gene whose output has its input's shape; its readers read its input."""
    if not genome.is_graph:
        return genome
    shapes = _shapes(genome, space)
    candidates = [g for g in genome.genes[:-1]
                  if g.op in BYPASSABLE and shapes[g.id] == shapes[g.inputs[0]]]  # fmt: skip
    if not candidates:
        return genome
    gene = rng.choice(candidates)
    genes = _redirect(genome.genes, gene.id, gene.inputs[0], set())
    return _finish(genome, [g for g in genes if g.id != gene.id], space)


def _ancestors(genome: Genome) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {INPUT: set()}
    for gene in genome.genes:
        found[gene.id] = set(gene.inputs).union(*(found[i] for i in gene.inputs))
    return found


def _collapse_add(genome: Genome, space: GraphSpace, rng: random.Random, keep_deeper: bool):
    """Replace an add by one of its inputs: the one with the fewest ancestors (the skip path:
    the block is removed) or the most (the main path: the skip is removed); what no longer
    leads to the output goes too."""
    if not genome.is_graph:
        return genome
    adds = [g for g in genome.genes if g.op == "add"]
    if not adds:
        return genome
    gene = rng.choice(adds)
    ancestors = _ancestors(genome)
    depth = sorted(gene.inputs, key=lambda i: (len(ancestors[i]), gene.inputs.index(i)))
    keep = depth[-1] if keep_deeper else depth[0]
    if len(gene.inputs) > 2:  # drop one input and keep the add
        drop = depth[0] if keep_deeper else depth[-1]
        inputs = tuple(i for i in gene.inputs if i != drop)
        genes = [replace(g, inputs=inputs) if g.id == gene.id else g for g in genome.genes]
        return _finish(genome, genes, space)
    genes = _redirect(genome.genes, gene.id, keep, set())
    if gene.id == genome.genes[-1].id:
        return genome
    return _finish(genome, [g for g in genes if g.id != gene.id], space)


def remove_block(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Remove a residual block: its add is replaced by the shortcut (identity or projection)."""
    return _collapse_add(genome, space, rng, keep_deeper=False)


def remove_skip(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Remove a skip connection: an add is replaced by its deepest input."""
    return _collapse_add(genome, space, rng, keep_deeper=True)


def add_skip(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Add the output of an earlier tensor to a later one of the same spatial size, through a new
    1x1 convolution (a linear for flat tensors) that starts at zero."""
    if not genome.is_graph:
        return genome
    shapes, ids = _shapes(genome, space), set(genome.gene_ids())
    order = [INPUT, *genome.gene_ids()]
    target = rng.choice(genome.gene_ids()[:-1] or [INPUT])
    if target == INPUT:
        return genome
    direct = next(g for g in genome.genes if g.id == target).inputs
    sources = [s for s in order[: order.index(target)]
               if s not in direct and len(shapes[s]) == len(shapes[target])
               and shapes[s][1:] == shapes[target][1:]]  # fmt: skip
    if not sources:
        return genome
    source = rng.choice(sources)
    channels = shapes[target][0]
    if len(shapes[target]) >= 2:
        branch = _new_gene(ids, rng, "convolution", [source], channels=channels, kernel=1,
                           bias=False)  # fmt: skip
    else:
        branch = _new_gene(ids, rng, "linear", [source], features=channels)
    merge = _new_gene(ids, rng, "add", [target, branch.id])
    return _finish(genome, _insert_after(genome.genes, target, [branch, merge]), space)


# --- changing genes ------------------------------------------------------------------------------


def _resize_group(genome: Genome, space: GraphSpace, rng: random.Random, narrow: float | None):
    if not genome.is_graph:
        return genome
    # narrowing needs two channels or more; widening any group that can change
    groups = [g for g in channel_groups(genome.genes, space.input_shape).groups
              if g.fixed is None and (g.width > 1 or narrow is None)]  # fmt: skip
    if not groups:
        return genome
    group = rng.choice(groups)
    if narrow is not None:
        width = max(1, min(group.width - 1, round(group.width * (1 - narrow))))
    else:
        factors = [f for f in WIDTH_FACTORS if max(1, round(group.width * f)) != group.width]
        width = max(1, round(group.width * rng.choice(factors)))
    return _finish(genome, with_width(genome.genes, group, width), space)


def change_width(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Widen or narrow one channel group (every producer of its channels together)."""
    return _resize_group(genome, space, rng, narrow=None)


def prune(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Remove the least important `prune_fraction` of one channel group's channels."""
    return _resize_group(genome, space, rng, narrow=space.prune_fraction)


def cut(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Remove a random residual block, or a random `prune_fraction` of one group's channels."""
    if rng.random() < 0.5:
        child = remove_block(genome, space, rng)
        if child is not genome:
            return child
    return _resize_group(genome, space, rng, narrow=space.prune_fraction)


def _change_one(genome: Genome, space: GraphSpace, rng: random.Random, candidates, change):
    if not genome.is_graph or not candidates:
        return genome
    gene = rng.choice(candidates)
    genes = [change(g) if g.id == gene.id else g for g in genome.genes]
    return _finish(genome, genes, space)


def change_kernel(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Another kernel size for a convolution padded to keep its size (padding follows); a larger
    kernel starts as the old one zero-padded."""
    kernels = _odd(space.kernels)
    convs = [g for g in genome.genes if g.op == "convolution" and _same_padding(g)
             and any(k != g.params["kernel"] for k in kernels)]  # fmt: skip

    def change(gene: Gene) -> Gene:
        kernel = rng.choice([k for k in kernels if k != gene.params["kernel"]])
        dilation = gene.params["dilation"]
        dilation = dilation[0] if isinstance(dilation, list) else dilation
        padding = "same" if gene.params["padding"] == "same" else dilation * (kernel - 1) // 2
        return gene.with_params(kernel=kernel, padding=padding)

    return _change_one(genome, space, rng, convs, change)


def change_activation(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Another function for one activation (gates such as sigmoid are left alone)."""
    choices = [f for f in space.activations if f in SWAPPABLE_ACTIVATIONS]
    genes = [g for g in genome.genes if g.op == "activation"
             and g.params["function"] in SWAPPABLE_ACTIVATIONS
             and any(f != g.params["function"] for f in choices)]  # fmt: skip

    def change(gene: Gene) -> Gene:
        function = rng.choice([f for f in choices if f != gene.params["function"]])
        params, _ = parse_graph_params({"function": function}, "activation", "activation")
        return replace(gene, params=params)

    return _change_one(genome, space, rng, genes, change)


def change_groups(genome: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """A convolution with as many output as input channels made depthwise, or a depthwise one
    made dense (its filters on the diagonal, so it computes what it computed)."""
    if not genome.is_graph:
        return genome
    shapes = _shapes(genome, space)
    convs = [g for g in genome.genes if g.op == "convolution"
             and shapes[g.inputs[0]][0] == g.params["channels"] > 1
             and (g.params["groups"] == 1 or is_depthwise(g, shapes[g.inputs[0]][0]))]  # fmt: skip

    def change(gene: Gene) -> Gene:
        return gene.with_params(groups=1 if gene.params["groups"] > 1 else gene.params["channels"])

    return _change_one(genome, space, rng, convs, change)


# --- crossover -----------------------------------------------------------------------------------


def crossover(a: Genome, b: Genome, space: GraphSpace, rng: random.Random) -> Genome:
    """Homologous crossover, as NEAT aligns innovation numbers: the child has `a`'s wiring; each
    gene `b` also holds (same id, op and inputs) takes its kernel, activation or rate from either
    parent, and each channel group whose producers `b` also holds takes its width from either.
    The learning rate comes from either parent."""
    if not (a.is_graph and b.is_graph):
        return a
    in_b = {g.id: g for g in b.genes}
    genes = list(a.genes)
    for index, gene in enumerate(genes):
        other = in_b.get(gene.id)
        if other is None or other.op != gene.op or other.inputs != gene.inputs:
            continue
        if rng.random() < 0.5:
            keep = {"channels", "features", "groups"}  # widths follow their group, below
            taken = {k: v for k, v in other.params.items() if k not in keep}
            # b's parameters as b has them (an activation's extras belong to its function)
            params = {**{k: gene.params[k] for k in keep if k in gene.params}, **taken}
            genes[index] = replace(gene, params=parse_graph_params(params, gene.op, "b")[0])
    try:
        groups = channel_groups(genes, space.input_shape).groups
        b_groups = channel_groups(b.genes, space.input_shape)
    except GraphError:
        return a
    for group in groups:
        if group.fixed or not group.producers or rng.random() < 0.5:
            continue
        homologues = {b_groups.group_of(p) for p in group.producers if p in in_b}
        if len(homologues) == 1 and None not in homologues:
            genes = list(with_width(genes, group, homologues.pop().width))
    return _finish(a, genes, space, training=rng.choice((a, b)).training)
