"""Channel groups of a graph: the tensors whose channel counts must change together (torch-free).

A residual add ties the channels of everything it adds; a depthwise convolution ties its input and
output; batch norms, activations and pools pass their input's channels on. Each class of tied
tensors is a *group*: narrowing or widening it means changing the `channels` (or `features`) of
every gene that produces it, together, and slicing every gene that reads it. A concatenation is no
group of its own: its channels are its inputs' groups side by side, so its consumers are sliced by
producer; a flatten repeats each channel once per spatial position.

This is the analysis Torch-Pruning's DepGraph makes of a live `nn.Module`. evonas makes it from
the genome, which is plain data and the source of truth: operators run in the torch-free parent
process, where no model exists (see docs/ARCHITECTURE.md for the comparison).

A group's width is fixed (it cannot change) when it holds the network's input or its logits, a
reshape, or a grouped (not depthwise) convolution; the reason is kept for messages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from evonas.graph import INPUT, Gene, graph_shapes

PASS_THROUGH = frozenset({
    "batch_norm", "activation", "max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool",
    "global_avg_pool", "dropout", "channel_dropout", "scale", "identity",
})  # fmt: skip
# One run of channels in a tensor's channel dimension: (group index, repeat), where `repeat` > 1
# after a flatten (each channel of the group then spans `repeat` consecutive features).
Segment = tuple[int, int]


@dataclass(frozen=True)
class ChannelGroup:
    index: int
    width: int
    producers: tuple[int, ...]  # convolutions and linears whose output width is this group's
    depthwise: tuple[int, ...]  # depthwise convolutions inside the group (channels = groups)
    members: tuple[int, ...]  # tensors (gene ids, 0 the input) that carry exactly this group
    fixed: str | None  # why its width cannot change; None when it can

    @property
    def prunable(self) -> bool:
        return self.fixed is None and self.width > 1


@dataclass(frozen=True)
class Channels:
    """The channel groups of a graph and the layout of every tensor's channel dimension."""

    groups: tuple[ChannelGroup, ...]
    layouts: dict[int, tuple[Segment, ...]]  # tensor id -> its channel segments, in order

    def group_of(self, tensor: int) -> ChannelGroup | None:
        """The group a tensor carries, when it carries exactly one (not a concat or flatten)."""
        layout = self.layouts.get(tensor)
        if layout is None or len(layout) != 1 or layout[0][1] != 1:
            return None
        return self.groups[layout[0][0]]

    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]


def is_depthwise(gene: Gene, in_channels: int) -> bool:
    """A convolution with one filter per input channel (groups = input = output channels)."""
    p = gene.params
    return gene.op == "convolution" and p["groups"] > 1 and p["groups"] == in_channels == p[
        "channels"]  # fmt: skip


class _Union:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.fixed: list[str | None] = []
        self.width: list[int] = []

    def new(self, width: int, fixed: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.fixed.append(fixed)
        self.width.append(width)
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.fixed[a] = self.fixed[a] or self.fixed[b]

    def fix(self, a: int, why: str) -> None:
        a = self.find(a)
        self.fixed[a] = self.fixed[a] or why


def channel_groups(genes: Sequence[Gene], input_shape: Sequence[int]) -> Channels:
    """The channel groups of a linked, valid graph (GraphError from `graph_shapes` otherwise)."""
    shapes = dict(zip((g.id for g in genes), graph_shapes(genes, input_shape)))
    shapes[INPUT] = tuple(input_shape)
    sets = _Union()
    layouts: dict[int, tuple[Segment, ...]] = {
        INPUT: ((sets.new(input_shape[0], "the network's input"), 1),)
    }
    producers: dict[int, str] = {}  # gene id -> "producer" | "depthwise"
    for gene in genes:
        inputs = [layouts[i] for i in gene.inputs]
        layouts[gene.id] = _layout(gene, inputs, shapes, sets, producers)
    for segment, _ in layouts[genes[-1].id]:
        sets.fix(segment, "the network's output (its logits)")
    return _collect(genes, layouts, shapes, sets, producers)


def _layout(gene, inputs, shapes, sets: _Union, producers) -> tuple[Segment, ...]:
    op, first = gene.op, inputs[0]
    in_shape, width = shapes[gene.inputs[0]], shapes[gene.id][0]
    if op == "convolution":
        if gene.params["groups"] == 1:
            producers[gene.id] = "producer"
            return ((sets.new(width), 1),)
        if is_depthwise(gene, in_shape[0]) and _plain(first):
            producers[gene.id] = "depthwise"
            return first
        producers[gene.id] = "producer"
        why = f"grouped convolution {gene.id} (groups={gene.params['groups']})"
        _fix_all(sets, inputs, why)
        return ((sets.new(width, why), 1),)
    if op == "linear":
        producers[gene.id] = "producer"
        return ((sets.new(width), 1),)
    if op in PASS_THROUGH:
        return first
    if op == "flatten":
        spatial = math.prod(in_shape[1:])
        return tuple((group, repeat * spatial) for group, repeat in first)
    if op == "concat":
        return tuple(segment for layout in inputs for segment in layout)
    if op in ("add", "multiply"):
        # multiply broadcasts: a one-channel gate (a spatial attention map) ties nothing
        tied = [lay for lay, i in zip(inputs, gene.inputs) if op == "add" or shapes[i][0] > 1]
        _tie(sets, tied, f"{op} {gene.id} of differently composed tensors")
        return tied[0] if tied else first
    why = f"{op} {gene.id}"  # reshape: the layout of its output is not followed
    _fix_all(sets, inputs, why)
    return ((sets.new(width, why), 1),)


def _plain(layout: tuple[Segment, ...]) -> bool:
    return len(layout) == 1 and layout[0][1] == 1


def _fix_all(sets: _Union, layouts, why: str) -> None:
    for layout in layouts:
        for group, _ in layout:
            sets.fix(group, why)


def _tie(sets: _Union, layouts, why: str) -> None:
    """Tie tensors that are added: segment by segment where they are laid out alike (the same
    widths and repeats in the same order); otherwise their groups are fixed."""
    first = layouts[0] if layouts else ()

    def same(a: Segment, b: Segment) -> bool:
        return a[1] == b[1] and sets.width[sets.find(a[0])] == sets.width[sets.find(b[0])]

    alike = all(len(lay) == len(first) and all(same(a, b) for a, b in zip(lay, first))
                for lay in layouts)  # fmt: skip
    if not alike:
        _fix_all(sets, layouts, why)
        return
    for layout in layouts[1:]:
        for (a, _), (b, _) in zip(first, layout):
            sets.union(a, b)


def _collect(genes, layouts, shapes, sets: _Union, producers) -> Channels:
    roots: dict[int, int] = {}
    for tensor in [INPUT, *(g.id for g in genes)]:
        for group, _ in layouts[tensor]:
            roots.setdefault(sets.find(group), len(roots))
    members: dict[int, list[int]] = {i: [] for i in roots.values()}
    width: dict[int, int] = {}
    made: dict[int, dict[str, list[int]]] = {i: {"producer": [], "depthwise": []} for i in
                                             roots.values()}  # fmt: skip
    for tensor in [INPUT, *(g.id for g in genes)]:
        layout = tuple((roots[sets.find(g)], r) for g, r in layouts[tensor])
        layouts[tensor] = layout
        if _plain(layout):
            index = layout[0][0]
            members[index].append(tensor)
            width[index] = shapes[tensor][0]
            if tensor in producers:
                made[index][producers[tensor]].append(tensor)
    fixed = {roots[root]: sets.fixed[root] for root in roots}
    groups = tuple(
        ChannelGroup(index, width[index], tuple(made[index]["producer"]),
                     tuple(made[index]["depthwise"]), tuple(members[index]), fixed[index])
        for index in range(len(roots))
    )  # fmt: skip
    return Channels(groups, layouts)


def with_width(genes: Sequence[Gene], group: ChannelGroup, width: int) -> tuple[Gene, ...]:
    """The genes with `group` set to `width` channels: its producers' output sizes and its
    depthwise convolutions' channels and groups change together."""
    changed = set(group.producers) | set(group.depthwise)
    out = []
    for gene in genes:
        if gene.id in changed:
            p = dict(gene.params)
            if gene.op == "linear":
                p["features"] = width
            else:
                p["channels"] = width
                if gene.id in group.depthwise:
                    p["groups"] = width
            gene = replace(gene, params=p)
        out.append(gene)
    return tuple(out)
