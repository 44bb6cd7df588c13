"""Lamarckian inheritance for graph genomes, worker side: a child starts from its parents' weights.

As for chains (`evonas.inherit`), the parent side says which parent each gene inherits from (a
plain `plan`), and channels are tracked by *provenance*: every channel of every tensor is known
as "channel c of the parent's channel group g" (or as new). Channel groups (`evonas.channels`)
make this consistent across tied layers:

- a child group takes the parent group of its first inherited member; where the child's group is
  narrower it keeps the parent group's most important channels, ranked over *all* its tied layers
  (the summed L1 norms of every producer's filters, the summed batch-norm scales, a Taylor score,
  or at random for `cut`), so every producer, batch norm, depthwise convolution and consumer of
  the group is sliced to the same channels;
- inherited genes copy every tensor along those channels; inputs the parent did not see are read
  with zero weights; a kernel that grew is the old one zero-padded; a depthwise convolution made
  dense keeps its filters on the diagonal;
- new genes start neutral where the shape allows: a convolution or linear that is the only
  producer of a new group of as many channels as it reads starts as the identity (its channels
  then carry its input's provenance), one that adds into an inherited group (the last layer of
  an inserted block, a new skip branch) starts at zero, and a new batch norm passes its input on.
"""

from __future__ import annotations

from typing import Any

from evonas.channels import PASS_THROUGH, ChannelGroup, Channels, channel_groups
from evonas.genome import Genome, parse_genome
from evonas.graph import INPUT, graph_shapes
from evonas.importance import saliencies
from evonas.inherit import copy_along, dirac, input_map, neutral_norm, tap_pairs
from evonas.weights import load_state_dict

WEIGHTED = ("convolution", "linear", "batch_norm")


class _Parent:
    """A parent genome, its trained state, its channel groups, and its channels' provenance."""

    def __init__(self, index: int, genome: Genome, state: dict, shape, scores: dict) -> None:
        self.index, self.genome, self.state, self.scores = index, genome, state, scores
        self.genes = {g.id: g for g in genome.genes}
        self.channels = channel_groups(genome.genes, shape)
        self._groups = {g.index: [self.token(g, c) for c in range(g.width)]
                        for g in self.channels.groups}  # fmt: skip
        self._tensors: dict[int, list] = {}

    def token(self, group: ChannelGroup, channel: int) -> tuple:
        return ("input", channel) if INPUT in group.members else (self.index, group.index, channel)

    def tokens(self, tensor: int) -> list:
        """The provenance of each channel (feature) of one of the parent's tensors."""
        if tensor not in self._tensors:
            self._tensors[tensor] = _expand(self.channels.layouts[tensor], self._groups)
        return self._tensors[tensor]

    def ranked(self, group: ChannelGroup, select: str, generator) -> Any:
        """A score per channel of `group`: its tied layers' importance summed."""
        import torch

        if select == "random":
            return torch.rand(group.width, generator=generator)
        score = torch.zeros(group.width)
        norms = [m for m in group.members if m in self.genes and self.genes[m].op == "batch_norm"]
        if select == "bn" and norms:
            for m in norms:
                score += self.state[f"g{m}.weight"].abs().float()
            return score
        for gene_id in (*group.producers, *group.depthwise):
            rows = self.scores[f"g{gene_id}.weight"].abs().float().flatten(1).sum(1)
            score += rows / rows.mean().clamp_min(1e-12)  # each layer counts alike
        return score


def _expand(layout, group_tokens: dict[int, list]) -> list:
    """Tokens of a tensor from its layout: a flattened group repeats each channel's token, and a
    channel concatenated more than once is told apart by its occurrence (a concat-pool head)."""
    out: list = []
    seen: dict = {}
    for group, repeat in layout:
        for token in group_tokens[group]:
            if token is not None:
                again = seen.get(token, 0)
                seen[token] = again + 1
                token = (token, "again", again) if again else token
            if repeat == 1:
                out.append(token)
            else:
                out.extend((token, s, repeat) if token is not None else None
                           for s in range(repeat))  # fmt: skip
    return out


def inherit_graph(
    model: Any,
    genome: Genome | dict[str, Any],
    input_shape: tuple[int, ...],
    plan: dict[str, Any],
    seed: int,
    data: Any = None,
) -> float:
    """Copy the parents' weights into `model` (built from the graph `genome`) as `plan` says;
    returns the fraction of the model's parameters that were inherited."""
    import torch

    genome = parse_genome(genome) if isinstance(genome, dict) else genome
    parents = []
    for index, entry in enumerate(plan["parents"]):
        parent = parse_genome(entry["genome"])
        if parent.is_graph:  # a chain parent (a crossover partner from a chain seed) gives none
            state = load_state_dict(entry["weights"])
            scores = saliencies(parent, state, plan["select"], data, seed)
            parents.append(_Parent(index, parent, state, input_shape, scores))
    by_index = {p.index: p for p in parents}
    source = {int(k): by_index[v] for k, v in plan["genes"].items() if v in by_index}
    generator = torch.Generator().manual_seed(int(seed))
    child = channel_groups(genome.genes, input_shape)
    group_tokens = _inherited_groups(genome, child, source, plan["select"], generator)
    shapes = dict(zip(genome.gene_ids(), graph_shapes(genome.genes, input_shape)))
    shapes[INPUT] = tuple(input_shape)
    state, params = model.state_dict(), dict(model.named_parameters())
    tokens = {INPUT: _expand(child.layouts[INPUT], group_tokens)}
    copied, zero = 0, _new_branches(genome, source)
    with torch.no_grad():
        for gene in genome.genes:
            start = gene.id not in zero and _starts_as_identity(gene, shapes, source, child)
            if start and child.group_of(gene.id).index not in group_tokens:
                # a new group that starts as a copy of its input carries its input's channels
                group_tokens[child.layouts[gene.id][0][0]] = list(tokens[gene.inputs[0]])
            for group, _ in child.layouts[gene.id]:
                group_tokens.setdefault(group, [None] * child.groups[group].width)
            tokens[gene.id] = _expand(child.layouts[gene.id], group_tokens)
            if gene.op not in WEIGHTED:
                continue
            prefix = f"g{gene.id}."
            parent = source.get(gene.id)
            theirs = parent.genes.get(gene.id) if parent else None
            if theirs is not None and theirs.op == gene.op:
                maps = {
                    "out": input_map(tokens[gene.id], parent.tokens(gene.id)),
                    "in": input_map(tokens[gene.inputs[0]], parent.tokens(theirs.inputs[0])),
                }
                copied += _copy_gene(state, params, parent.state, prefix, gene, theirs, maps)
            else:
                _init_new(state, prefix, gene, identity=start, zero=gene.id in zero)
    total = sum(p.numel() for p in params.values())
    return copied / max(1, total)


def _inherited_groups(genome: Genome, child: Channels, source, select, generator) -> dict:
    """Tokens of each child group that has a counterpart in a parent (the input's group too)."""
    ops = {g.id: g.op for g in genome.genes}
    found: dict[int, list] = {}
    for group in child.groups:
        if INPUT in group.members:
            found[group.index] = [("input", c) for c in range(group.width)]
            continue
        for member in group.members:
            parent = source.get(member)
            theirs = parent.genes.get(member) if parent else None
            if theirs is None or theirs.op != ops[member]:
                continue
            mine = parent.channels.group_of(member)
            if mine is None:
                continue
            kept = list(range(mine.width))
            if group.width < mine.width:
                score = parent.ranked(mine, select, generator)
                kept = sorted(int(i) for i in score.topk(group.width).indices)
            found[group.index] = [parent.token(mine, c) for c in kept]
            found[group.index] += [None] * (group.width - len(kept))
            break
    return found


def _starts_as_identity(gene, shapes, source, child: Channels) -> bool:
    """A new convolution or linear that reads as many channels as it makes, at the same size:
    it can start as the identity (then its channels carry its input's provenance)."""
    if gene.op not in ("convolution", "linear") or gene.id in source:
        return False
    group = child.group_of(gene.id)
    if group is None or shapes[gene.id] != shapes[gene.inputs[0]]:
        return False
    if gene.op == "convolution":
        stride = gene.params["stride"]
        if any(s != 1 for s in (stride if isinstance(stride, list) else [stride])):
            return False
    return True


def _new_branches(genome: Genome, source) -> set[int]:
    """New convolutions and linears that end a new branch into a new add (an inserted block's
    last convolution, a new skip's projection): they start at zero, so the add passes its
    other input on unchanged."""
    genes = {g.id: g for g in genome.genes}
    found = set()
    for merge in genome.genes:
        if merge.op != "add" or merge.id in source:
            continue
        ends = [_producer_of(genes, i) for i in merge.inputs]
        new = {e for e in ends if e is not None and e not in source}
        if len(new) < len(merge.inputs):  # something inherited (or the input) stays
            found |= new
    return found


def _producer_of(genes, tensor: int) -> int | None:
    """The convolution or linear a tensor comes from through ops that pass channels on."""
    while tensor in genes and genes[tensor].op in PASS_THROUGH:
        tensor = genes[tensor].inputs[0]
    gene = genes.get(tensor)
    return tensor if gene is not None and gene.op in ("convolution", "linear") else None


def _copy_gene(state, params, parent_state, prefix: str, gene, theirs, maps) -> int:
    """Copy one inherited gene's tensors; returns the number of parameters copied."""
    copied = 0
    if gene.op == "convolution" and (gene.params["groups"] == 1) != (theirs.params["groups"] == 1):
        copied += _regroup(state[prefix + "weight"], parent_state[prefix + "weight"], maps,
                           to_depthwise=gene.params["groups"] > 1)  # fmt: skip
        names = [n for n in state if n.startswith(prefix) and not n.endswith("weight")]
    else:
        names = [n for n in state if n.startswith(prefix)]
    for name in names:
        if name not in parent_state:
            continue
        dst, src = state[name], parent_state[name]
        if dst.dim() != src.dim():
            continue
        roles = ("out",) if dst.dim() <= 1 else ("out", "in") + ("tap",) * (dst.dim() - 2)
        if gene.op == "convolution" and gene.params["groups"] > 1 and dst.dim() > 1:
            roles = ("out", "keep") + roles[2:]
        n = copy_along(dst, src, roles, maps)
        copied += n if name in params else 0
    return copied


def _regroup(dst, src, maps, to_depthwise: bool) -> int:
    """Weights of a convolution whose groups changed between dense (groups 1) and depthwise:
    a depthwise filter is the dense filter's diagonal, a dense one has the depthwise filters on
    its diagonal and zeros elsewhere (the same function)."""
    pairs = [tap_pairs(a, b) for a, b in zip(dst.shape[2:], src.shape[2:])]
    taps = [slice(p[0][0], p[-1][0] + 1) for p in pairs]
    src_taps = [slice(p[0][1], p[-1][1] + 1) for p in pairs]
    copied = 0
    for j, i in enumerate(maps["out"][: dst.shape[0]]):
        if i < 0 or i >= src.shape[0]:
            continue
        dst[j].zero_()
        if to_depthwise:
            c = maps["in"][j] if j < len(maps["in"]) else -1
            if 0 <= c < src.shape[1]:
                dst[(j, 0, *taps)] = src[(i, c, *src_taps)]
                copied += dst[j].numel()
        else:
            for c, parent_in in enumerate(maps["in"][: dst.shape[1]]):
                if parent_in == i:
                    dst[(j, c, *taps)] = src[(i, 0, *src_taps)]
                    copied += src[i].numel()
    return copied


def _init_new(state, prefix: str, gene, identity: bool, zero: bool) -> None:
    if gene.op == "batch_norm":
        neutral_norm(state, prefix, state[prefix + "weight"].shape[0])
        return
    weight = state[prefix + "weight"]
    if identity:
        if gene.op == "linear":
            weight.zero_()
            weight[range(weight.shape[0]), range(weight.shape[0])] = 1
        elif gene.params["groups"] > 1:  # depthwise: each filter a centre tap of 1
            weight.zero_()
            weight[(slice(None), 0, *(k // 2 for k in weight.shape[2:]))] = 1
        else:
            dirac(weight, weight.shape[0])
    if zero:
        weight.zero_()
    if (identity or zero) and prefix + "bias" in state:
        state[prefix + "bias"].zero_()
