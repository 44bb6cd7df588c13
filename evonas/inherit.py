"""Lamarckian weight inheritance, worker side: a child starts from its parents' trained weights.

The parent decides which parent each gene inherits from (`evonas.weights.plan`, plain data in the
child's job); `inherit(model, genome, input_shape, plan, seed)` copies the parents' tensors into
the freshly initialised child. Channels are tracked by *provenance* (which parent gene and channel
produced them), so every layer reads the right input channels even after pruning, widening,
insertion or removal of layers and crossover:

- an inherited layer copies every matching tensor; where its width shrank it keeps the parent's
  most important channels (L1 norm of filters, batch-norm scale, or at random for `cut`); where it
  grew, the old units keep their weights and the new ones start fresh;
- inputs that the parent layer did not see (new channels) get zero weights, so a widened layer's
  consumer computes what it computed before; a kernel that grew is zero-padded around the old one;
- a new layer starts as the identity where its shape allows (same-padded stride-1 convolution with
  a Dirac kernel, dense with an identity matrix, residual block with its last scale at zero), so
  inserting it leaves the parent's function unchanged for ReLU networks in eval mode;
- the head comes from the parent that provides the child's last weighted layer.
"""

from __future__ import annotations

from typing import Any

from evonas.genome import Genome, parse_genome
from evonas.importance import saliencies
from evonas.spaces import chain_shapes
from evonas.weights import WEIGHTED, load_state_dict

SELECT = ("l1", "bn", "taylor", "random")


# Roles of each tensor's leading dimensions inside a layer: `out` channels, `in` channels, `mid`
# (a residual block's inner channels, which follow its output channels); the rest are kernel taps.
_ROLES = {
    "conv": {"0.weight": ("out", "in"), "0.bias": ("out",), "1.": ("out",)},
    "dense": {"1.weight": ("out", "in"), "1.bias": ("out",)},
    "residual": {
        "conv1.weight": ("out", "in"),
        "conv1.bias": ("out",),
        "norm1.": ("out",),
        "conv2.weight": ("out", "mid"),
        "conv2.bias": ("out",),
        "norm2.": ("out",),
        "skip.weight": ("out", "in"),
    },  # fmt: skip
    "head": {"linear.weight": ("keep", "in"), "linear.bias": ("keep",)},
}
_IMPORTANCE = {  # (weight whose filters' L1 norm ranks channels, batch-norm scale)
    "conv": ("0.weight", "1.weight"),
    "dense": ("1.weight", None),
    "residual": ("conv2.weight", "norm2.weight"),
}
BN_EPS = 1e-5


def inherit(
    model: Any,
    genome: Genome | dict[str, Any],
    input_shape: tuple[int, ...],
    plan: dict[str, Any],
    seed: int,
    data: Any = None,
) -> float:
    """Copy the parents' weights into `model` (built from `genome`) as `plan` says; returns the
    fraction of the model's parameters that were inherited. `data` (the task's `TaskData`) is
    needed when `plan["select"]` is taylor."""
    import torch

    genome = parse_genome(genome) if isinstance(genome, dict) else genome
    parents = [(parse_genome(p["genome"]), load_state_dict(p["weights"])) for p in plan["parents"]]
    scores = [saliencies(g, state, plan["select"], data, seed) for g, state in parents]
    natural = [_natural_inputs(g, input_shape) for g, _ in parents]
    state = model.state_dict()
    params = dict(model.named_parameters())
    copied = 0
    generator = torch.Generator().manual_seed(int(seed))
    tokens = [("input", c) for c in range(input_shape[0])]
    shapes = chain_shapes(genome, input_shape)
    in_shape = tuple(input_shape)
    with torch.no_grad():
        for gene, out_shape in zip(genome.genes, shapes):
            if gene.op == "dense" and len(in_shape) >= 2:
                tokens = _flatten(tokens, in_shape)
            prefix = f"body.g{gene.id}."
            source = plan["genes"].get(str(gene.id))
            if gene.op not in WEIGHTED:
                pass  # pooling and dropout keep the channels they are given
            elif source is not None:
                parent_genome, parent_state = parents[source]
                kept = _kept(gene, scores[source], prefix, out_shape[0], plan["select"], generator)
                maps = {
                    "out": kept + [-1] * (out_shape[0] - len(kept)),
                    "in": input_map(tokens, natural[source][gene.id]),
                }
                maps["mid"] = maps["out"]
                copied += _copy_layer(state, params, parent_state, prefix, gene.op, maps)
                skip = prefix + "skip.weight"
                if skip in state and skip not in parent_state:  # the parent's skip was identity
                    _selection(state[skip], maps["out"], maps["in"])
                tokens = [(gene.id, c) for c in kept] + [None] * (out_shape[0] - len(kept))
            else:
                tokens = _identity_init(state, prefix, gene, tokens, out_shape[0])
            in_shape = out_shape
        head_parent, head_state = parents[plan["head"]]
        maps = {"in": input_map(tokens, _natural_inputs(head_parent, input_shape)["head"])}
        copied += _copy_layer(state, params, head_state, "head.", "head", maps)
    total = sum(p.numel() for p in params.values())
    return copied / max(1, total)


def _flatten(tokens: list, shape: tuple[int, ...]) -> list:
    """Channel provenance -> feature provenance for a dense layer reading a feature map."""
    size = 1
    for d in shape[1:]:
        size *= d
    return [(t, s, size) if t is not None else None for t in tokens for s in range(size)]


def _natural_inputs(genome: Genome, input_shape: tuple[int, ...]) -> dict[int | str, list]:
    """What each gene of a trained genome reads: gene id (and "head") -> provenance of its
    inputs, where every weighted gene's outputs are its own channels."""
    tokens: list = [("input", c) for c in range(input_shape[0])]
    in_shape = tuple(input_shape)
    inputs = {}
    for gene, out_shape in zip(genome.genes, chain_shapes(genome, input_shape)):
        if gene.op == "dense" and len(in_shape) >= 2:
            tokens = _flatten(tokens, in_shape)
        inputs[gene.id] = tokens
        if gene.op in WEIGHTED:
            tokens = [(gene.id, c) for c in range(out_shape[0])]
        in_shape = out_shape
    return inputs | {"head": tokens}


def input_map(tokens: list, parent_inputs: list) -> list[int]:
    """For each input of the child's layer, the parent layer's input index that carried the same
    channel, or -1 (a new channel: its weights start at zero). Inputs that share no provenance
    with the parent's (a crossover seam, a removed layer) are matched by position."""
    where = {t: i for i, t in enumerate(parent_inputs)}
    found = [where.get(t, -1) if t is not None else -1 for t in tokens]
    if any(i >= 0 for i in found) or not parent_inputs:
        return found
    return [i if i < len(parent_inputs) else -1 for i in range(len(tokens))]


def _kept(gene, parent_state, prefix: str, width: int, select: str, generator) -> list[int]:
    """The parent's channels the child keeps, in their original order; `parent_state` holds the
    parent's weights, or their Taylor saliencies (`evonas.importance`)."""
    import torch

    weight_key, scale_key = _IMPORTANCE[gene.op]
    parent_width = parent_state[prefix + weight_key].shape[0]
    if width >= parent_width:
        return list(range(parent_width))
    if select == "random":
        chosen = torch.randperm(parent_width, generator=generator)[:width]
    else:
        if select == "bn" and scale_key and prefix + scale_key in parent_state:
            score = parent_state[prefix + scale_key].abs()
        else:
            score = parent_state[prefix + weight_key].abs().flatten(1).sum(1)
        chosen = torch.topk(score, width).indices
    return sorted(int(i) for i in chosen)


def _roles(op: str, name: str, ndim: int) -> tuple[str, ...] | None:
    for key, roles in _ROLES[op].items():
        if name == key or (key.endswith(".") and name.startswith(key)):
            return roles[:ndim] + ("tap",) * (ndim - len(roles))
    return None


def _copy_layer(state, params, parent_state, prefix: str, op: str, maps) -> int:
    """Copy one layer's tensors from the parent; returns the number of parameters copied."""
    copied = 0
    for name, tensor in state.items():
        if not name.startswith(prefix) or name not in parent_state:
            continue
        source = parent_state[name]
        roles = _roles(op, name[len(prefix) :], tensor.dim())
        if roles is None or source.dim() != tensor.dim():
            continue  # e.g. num_batches_tracked
        n = copy_along(tensor, source, roles, maps)
        copied += n if name in params else 0
    return copied


def copy_along(dst, src, roles: tuple[str, ...], maps: dict[str, list[int]]) -> int:
    """dst[...] = src[...] along each dimension's index pairs; in rows that are inherited, what
    is not copied (new inputs, padding of a larger kernel) is set to zero."""
    import torch

    if dst.dim() == 0:  # a counter such as num_batches_tracked
        dst.copy_(src)
        return 0
    dst_index, src_index = [], []
    for d, role in enumerate(roles):
        n_dst, n_src = dst.shape[d], src.shape[d]
        if role == "tap":  # kernel taps: centre the smaller kernel in the larger one
            pairs = tap_pairs(n_dst, n_src)
        elif role == "keep":
            pairs = [(i, i) for i in range(min(n_dst, n_src))]
        else:
            pairs = [(j, i) for j, i in enumerate(maps[role][:n_dst]) if 0 <= i < n_src]
        if not pairs:
            return 0
        dst_index.append(torch.tensor([j for j, _ in pairs]))
        src_index.append(torch.tensor([i for _, i in pairs]))
    block = src
    for d, index in enumerate(src_index):
        block = block.index_select(d, index)
    if dst.dim() >= 2:
        dst.index_fill_(0, dst_index[0], 0)
    grids = torch.meshgrid(*dst_index, indexing="ij")
    dst.index_put_(grids, block.to(dst.dtype))
    return block.numel()


def tap_pairs(n_dst: int, n_src: int) -> list[tuple[int, int]]:
    """(child tap, parent tap) pairs that read the same input position when a kernel of `n_src`
    taps becomes one of `n_dst`, both padded as PyTorch pads 'same' (the centre tap of an even
    kernel is the one left of the middle, as its left padding is the smaller)."""
    shift = (n_dst - 1) // 2 - (n_src - 1) // 2
    return [(i + shift, i) for i in range(n_src) if 0 <= i + shift < n_dst]


def _identity_init(state, prefix: str, gene, tokens: list, width: int) -> list:
    """Initialise a new layer as the identity where its shape allows; returns the provenance of
    its outputs (None for channels that carry something new)."""
    n = min(len(tokens), width)
    if gene.op == "conv" and gene.params["stride"] == 1:
        dirac(state[prefix + "0.weight"], n)
        if prefix + "0.bias" in state:
            state[prefix + "0.bias"][:n] = 0
        neutral_norm(state, prefix + "1.", n)
    elif gene.op == "dense":
        weight = state[prefix + "1.weight"]
        weight[:n] = 0
        weight[range(n), range(n)] = 1
        state[prefix + "1.bias"][:n] = 0
    elif gene.op == "residual":
        if prefix + "norm2.weight" in state:
            state[prefix + "norm2.weight"].zero_()
            state[prefix + "norm2.bias"].zero_()
        else:
            state[prefix + "conv2.weight"].zero_()
            state[prefix + "conv2.bias"].zero_()
        if prefix + "skip.weight" in state:
            dirac(state[prefix + "skip.weight"], n)
    else:
        return [None] * width
    return list(tokens[:n]) + [None] * (width - n)


def _selection(weight, outputs: list[int], inputs: list[int]) -> None:
    """A 1x1 projection that passes on, for each output channel, the input that carried the same
    parent channel (the parent's identity skip, after its channels were pruned or moved)."""
    weight.zero_()
    where = {parent: i for i, parent in enumerate(inputs) if parent >= 0}
    for j, parent in enumerate(outputs):
        if parent in where:
            weight[(j, where[parent], *(k // 2 for k in weight.shape[2:]))] = 1


def dirac(weight, n: int) -> None:
    """The first n output channels copy the first n input channels (centre tap = 1)."""
    weight[:n] = 0
    centre = tuple(k // 2 for k in weight.shape[2:])
    for i in range(n):
        weight[(i, i, *centre)] = 1


def neutral_norm(state, prefix: str, n: int) -> None:
    """A batch norm that passes its first n channels through unchanged in eval mode."""
    if prefix + "weight" not in state:
        return
    state[prefix + "weight"][:n] = 1
    state[prefix + "bias"][:n] = 0
    state[prefix + "running_mean"][:n] = 0
    state[prefix + "running_var"][:n] = 1 - BN_EPS
