"""Graph genomes: genes wired into a DAG, their validation, shapes and canonical key (torch-free).

A graph gene names the genes it reads in `inputs` (`0` is the network's input); a gene without
`inputs` in a file reads the gene listed before it (the first one reads the input). Genes are
listed in a topological order (each reads only earlier genes) and the last gene is the network's
output: its logits, `(num_classes,)`. Every gene must lead to the output.

The ops are the primitives real CNNs are written in, for 1D `(C, L)` and 2D `(C, H, W)` inputs:
`kernel`, `stride`, `dilation` and `padding` take one integer or one per spatial dimension
(`padding` also `same` or `valid`), as in PyTorch.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

INPUT = 0  # the id by which genes read the network's input
# Limits on what a genome file or journal row may ask for, checked before anything is built:
# sizes beyond them are typos or crafted files, and would allocate or loop for ever.
MAX_SIZE = 65_536  # channels, units, kernel, stride, padding, dilation, groups, pooled size
MAX_GENES = 10_000
ACTIVATION_FUNCTIONS = ("relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "hardswish",
                        "hardsigmoid", "sigmoid", "tanh")  # fmt: skip
MERGES = frozenset({"add", "concat", "multiply"})
OUTPUT_FUNCTIONS = ("softmax", "log_softmax")  # recorded by the importer; the search trains logits

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


class GraphError(ValueError):
    """A graph genome that is not valid; the message names the gene."""


class Gene(Protocol):
    """What this module reads of a gene (`evonas.genome.Gene`)."""

    id: int
    op: str
    params: dict[str, Any]
    inputs: tuple[int, ...] | None
    canonical: str


# --- parameters ---------------------------------------------------------------------------------


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _tuple_or_int(lowest: int) -> Callable[[Any], Any]:
    """An integer >= lowest, or a list of them (one per spatial dimension); equal lists become
    one integer so that `[3, 3]` and `3` are the same gene."""

    def check(value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        if not items or len(items) > 3 or any(
                isinstance(v, bool) or not isinstance(v, int) or not lowest <= v <= MAX_SIZE
                for v in items):  # fmt: skip
            raise ValueError(f"expected an integer in [{lowest}, {MAX_SIZE}] or a list of them")
        return items[0] if len(set(items)) == 1 else list(items)

    return check


def _padding(value: Any) -> Any:
    if value in ("same", "valid"):
        return value
    return _tuple_or_int(0)(value)


def _count(value: Any) -> int:
    if not _positive(value) or value > MAX_SIZE:
        raise ValueError(f"expected an integer in [1, {MAX_SIZE}]")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError("expected a number in [0, 1)")
    return float(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("expected a finite number")
    return float(value)


def _positive_number(value: Any) -> float:
    if _number(value) <= 0:
        raise ValueError("expected a number > 0")
    return float(value)


def _function(value: Any) -> str:
    if value not in ACTIVATION_FUNCTIONS:
        raise ValueError(f"expected one of {list(ACTIVATION_FUNCTIONS)}")
    return value


def _shape(value: Any) -> list[int]:
    if not isinstance(value, list) or not 0 < len(value) <= 4 or not all(
            _positive(v) and v <= MAX_SIZE**2 for v in value):  # fmt: skip
        raise ValueError("expected a list of positive integers (the shape without the batch)")
    return list(value)


_POOL = {"kernel": (_tuple_or_int(1), None), "stride": (_tuple_or_int(1), None),
         "padding": (_tuple_or_int(0), 0), "ceil_mode": (_flag, False)}  # fmt: skip
_NO_DEFAULT = object()
# op -> {param: (check, default)}; a default of _NO_DEFAULT marks a required parameter, and a
# pooling stride of None means "the kernel" (as in PyTorch).
GRAPH_OPS: dict[str, dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "convolution": {
        "channels": (_count, _NO_DEFAULT), "kernel": (_tuple_or_int(1), _NO_DEFAULT),
        "stride": (_tuple_or_int(1), 1), "padding": (_padding, 0),
        "dilation": (_tuple_or_int(1), 1), "groups": (_count, 1), "bias": (_flag, True),
    },
    "batch_norm": {"eps": (_positive_number, 1e-5), "momentum": (_number, 0.1)},
    "activation": {"function": (_function, _NO_DEFAULT), "negative_slope": (_number, 0.01),
                   "alpha": (_number, 1.0)},
    "max_pool": {**_POOL, "dilation": (_tuple_or_int(1), 1)},
    "avg_pool": {**_POOL, "count_include_pad": (_flag, True)},
    "adaptive_avg_pool": {"size": (_tuple_or_int(1), _NO_DEFAULT)},
    "adaptive_max_pool": {"size": (_tuple_or_int(1), _NO_DEFAULT)},
    "global_avg_pool": {},
    "flatten": {},
    "reshape": {"shape": (_shape, _NO_DEFAULT)},
    "linear": {"features": (_count, _NO_DEFAULT), "bias": (_flag, True)},
    "dropout": {"rate": (_rate, _NO_DEFAULT)},
    "channel_dropout": {"rate": (_rate, _NO_DEFAULT)},
    "scale": {"factor": (_number, 1.0), "shift": (_number, 0.0)},
    "add": {}, "concat": {}, "multiply": {}, "identity": {},
}  # fmt: skip
# Parameters that only some activation functions take.
_ACTIVATION_EXTRAS = {"leaky_relu": "negative_slope", "elu": "alpha"}
GRAPH_ONLY_OPS = frozenset(GRAPH_OPS) - {"dropout"}  # dropout is also a chain layer


def parse_graph_params(
    item: dict[str, Any], op: str, where: str
) -> tuple[dict[str, Any], tuple[int, ...] | None]:
    """A graph gene's parameters (defaults filled in) and inputs from its plain dict."""
    spec = GRAPH_OPS[op]
    given = {k: v for k, v in item.items() if k not in ("id", "op", "inputs")}
    for key in given:
        if key not in spec:
            raise GraphError(f"{where}.{key}: unknown parameter for op '{op}' "
                             f"(it takes {sorted(spec) or 'none'})")  # fmt: skip
    params: dict[str, Any] = {}
    for key, (check, default) in spec.items():
        if key not in given:
            if default is _NO_DEFAULT:
                raise GraphError(f"{where}.{key}: missing (op '{op}' needs it)")
            params[key] = default
            continue
        try:
            params[key] = check(given[key])
        except ValueError as exc:
            raise GraphError(f"{where}.{key}: {exc}, got {given[key]!r}") from None
    if op == "activation":
        extra = _ACTIVATION_EXTRAS.get(params["function"])
        for key in ("negative_slope", "alpha"):
            if key != extra:
                if key in given:
                    raise GraphError(
                        f"{where}.{key}: only for "
                        f"{[f for f, k in _ACTIVATION_EXTRAS.items() if k == key][0]}"
                    )
                del params[key]
    if op in ("max_pool", "avg_pool") and params["stride"] is None:
        params["stride"] = params["kernel"]
    inputs = item.get("inputs")
    if inputs is not None:
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in inputs)
        ):
            raise GraphError(f"{where}.inputs: expected a list of gene ids (0 is the input)")
        inputs = tuple(inputs)
    return params, inputs


def link(genes: Sequence[Gene], where: str) -> tuple[Gene, ...]:
    """Fill in implicit inputs (the gene before) and check the wiring: inputs are earlier genes,
    merges read two or more, other ops one, and every gene leads to the output (the last)."""
    linked: list[Gene] = []
    seen = {INPUT}
    for index, gene in enumerate(genes):
        if gene.id == INPUT:
            raise GraphError(f"{where}.layers[{index}].id: 0 is the network's input in a graph")
        inputs = gene.inputs if gene.inputs is not None else (linked[-1].id if linked else INPUT,)
        for source in inputs:
            if source not in seen:
                raise GraphError(f"{where}: gene {gene.id} ({gene.op}) reads {source}, which is "
                                 "not an earlier gene (list genes so that each reads only "
                                 "earlier ones; 0 is the input)")  # fmt: skip
        if gene.op in MERGES and len(inputs) < 2:
            raise GraphError(f"{where}: gene {gene.id} ({gene.op}) needs two or more inputs")
        if gene.op not in MERGES and len(inputs) != 1:
            raise GraphError(f"{where}: gene {gene.id} ({gene.op}) takes one input, "
                             f"got {len(inputs)}")  # fmt: skip
        linked.append(replace(gene, inputs=tuple(inputs)))
        seen.add(gene.id)
    if not linked:
        raise GraphError(f"{where}.layers: a graph needs at least one gene (its output)")
    needed = {linked[-1].id}
    for gene in reversed(linked):
        if gene.id in needed:
            needed.update(gene.inputs)
        else:
            raise GraphError(f"{where}: gene {gene.id} ({gene.op}) does not lead to the output "
                             f"(gene {linked[-1].id}, the last); remove it")  # fmt: skip
    return tuple(linked)


# --- shapes --------------------------------------------------------------------------------------


def _per_dim(value: Any, dims: int) -> list[int]:
    if isinstance(value, list):
        if len(value) != dims:
            raise ValueError(f"{len(value)} values for {dims} spatial dimension(s)")
        return value
    return [value] * dims


def _window(length: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    span = dilation * (kernel - 1) + 1
    room = length + 2 * pad - span
    if room < 0:
        return 0
    out = (-(-room // stride) if ceil else room // stride) + 1
    if ceil and (out - 1) * stride >= length + pad:
        out -= 1  # PyTorch: the last window must start inside the input or its left padding
    return out


def _conv_shape(p: dict[str, Any], shape: tuple[int, ...]) -> tuple[int, ...]:
    dims = len(shape) - 1
    if dims not in (1, 2):
        raise ValueError(f"needs a (C, L) or (C, H, W) input, got {shape}")
    kernel, stride = _per_dim(p["kernel"], dims), _per_dim(p["stride"], dims)
    dilation = _per_dim(p["dilation"], dims)
    groups, channels = p["groups"], p["channels"]
    if shape[0] % groups or channels % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({shape[0]}) and "
                         f"the output channels ({channels})")  # fmt: skip
    if p["padding"] == "same":
        if any(s != 1 for s in stride):
            raise ValueError("padding 'same' needs stride 1 (as in PyTorch)")
        return (channels, *shape[1:])
    pad = [0] * dims if p["padding"] == "valid" else _per_dim(p["padding"], dims)
    sizes = [_window(n, k, s, q, d, False)
             for n, k, s, q, d in zip(shape[1:], kernel, stride, pad, dilation)]  # fmt: skip
    return (channels, *sizes)


def _pool_shape(op: str, p: dict[str, Any], shape: tuple[int, ...]) -> tuple[int, ...]:
    dims = len(shape) - 1
    if dims not in (1, 2):
        raise ValueError(f"needs a (C, L) or (C, H, W) input, got {shape}")
    kernel, stride = _per_dim(p["kernel"], dims), _per_dim(p["stride"], dims)
    pad = _per_dim(p["padding"], dims)
    dilation = _per_dim(p.get("dilation", 1), dims)
    if any(2 * q > k for q, k in zip(pad, kernel)):
        raise ValueError(f"padding {p['padding']} is more than half the kernel {p['kernel']}")
    sizes = [_window(n, k, s, q, d, p["ceil_mode"])
             for n, k, s, q, d in zip(shape[1:], kernel, stride, pad, dilation)]  # fmt: skip
    return (shape[0], *sizes)


def _merge_shape(op: str, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    first = shapes[0]
    if op == "add":
        if any(s != first for s in shapes):
            raise ValueError(f"adds tensors of different shapes {', '.join(map(str, shapes))}")
        return first
    if op == "concat":
        if any(len(s) != len(first) or s[1:] != first[1:] for s in shapes):
            raise ValueError("concatenates (on channels) tensors whose other sizes differ: "
                             f"{', '.join(map(str, shapes))}")  # fmt: skip
        return (sum(s[0] for s in shapes), *first[1:])
    out = first  # multiply broadcasts, as PyTorch does (gating by a (C, 1, 1) scale)
    for s in shapes[1:]:
        if len(s) != len(out) or any(a != b and 1 not in (a, b) for a, b in zip(out, s)):
            raise ValueError(f"multiplies tensors that do not broadcast: "
                             f"{', '.join(map(str, shapes))}")  # fmt: skip
        out = tuple(max(a, b) for a, b in zip(out, s))
    return out


def output_shape(gene: Gene, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """A gene's output shape from its inputs' shapes; ValueError says what does not fit."""
    op, p, shape = gene.op, gene.params, shapes[0]
    if op in MERGES:
        return _merge_shape(op, shapes)
    if op == "convolution":
        return _conv_shape(p, shape)
    if op in ("max_pool", "avg_pool"):
        return _pool_shape(op, p, shape)
    if op in ("adaptive_avg_pool", "adaptive_max_pool"):
        if len(shape) < 2:
            raise ValueError(f"pools a flat input {shape}")
        return (shape[0], *_per_dim(p["size"], len(shape) - 1))
    if op == "global_avg_pool":
        if len(shape) < 2:
            raise ValueError(f"pools a flat input {shape}")
        return (shape[0],)
    if op == "flatten":
        return (math.prod(shape),)
    if op == "reshape":
        if math.prod(p["shape"]) != math.prod(shape):
            raise ValueError(f"reshapes {shape} ({math.prod(shape)} values) to {tuple(p['shape'])}")
        return tuple(p["shape"])
    if op == "linear":
        if len(shape) != 1:
            raise ValueError(f"reads a {shape} map; flatten or pool it first")
        return (p["features"],)
    if op == "batch_norm" and len(shape) > 3:
        raise ValueError(f"normalises a {shape} input (1D or 2D maps only)")
    if op == "channel_dropout" and len(shape) < 2:
        raise ValueError(f"drops channels of a flat input {shape}")
    return shape  # batch_norm, activation, dropout, scale, identity


def graph_shapes(genes: Sequence[Gene], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Each gene's output shape (channel-first, no batch); GraphError names the first gene that
    does not fit (mismatched merges, sizes that reach 0, ...)."""
    known: dict[int, tuple[int, ...]] = {INPUT: tuple(input_shape)}
    out = []
    for gene in genes:
        try:
            shape = output_shape(gene, [known[i] for i in gene.inputs])
        except ValueError as exc:
            raise GraphError(f"gene {gene.id} ({gene.op}): {exc}") from None
        if min(shape) < 1:
            inputs = ", ".join(str(known[i]) for i in gene.inputs)
            raise GraphError(f"gene {gene.id} ({gene.op}): output {shape} from input {inputs} "
                             "(a size reached 0: the input is too small for it)")  # fmt: skip
        known[gene.id] = shape
        out.append(shape)
    return out


def output_problem(genes: Sequence[Gene], input_shape: Sequence[int], classes: int) -> str | None:
    """Why the graph cannot classify `classes` classes from `input_shape` (None when it can)."""
    try:
        shapes = graph_shapes(genes, input_shape)
    except GraphError as exc:
        return str(exc)
    return logits_problem(genes, shapes, classes)


def logits_problem(
    genes: Sequence[Gene], shapes: list[tuple[int, ...]], classes: int
) -> str | None:
    """Why the output, of shape `shapes[-1]`, is not `classes` logits (None when it is)."""
    last = shapes[-1]
    if last != (classes,):
        return (f"the output (gene {genes[-1].id}, the last) has shape {last}; a classifier of "
                f"{classes} classes needs ({classes},)")  # fmt: skip
    return None


# --- canonical form -------------------------------------------------------------------------------


def canonical(genes: Sequence[Gene]) -> str:
    """The graph without gene ids, in a canonical order: each gene as [op, params, input
    positions] (0 is the input), ordered topologically with ties broken by the gene's structural
    label (a hash of its op, parameters and its inputs' labels), so that relabelling genes or
    listing them in another valid order gives the same text."""
    label: dict[int, str] = {INPUT: "input"}
    for gene in genes:
        inputs = [label[i] for i in gene.inputs]
        text = gene.canonical + "<" + ",".join(_ordered(gene.op, inputs))
        label[gene.id] = hashlib.sha1(text.encode()).hexdigest()
    waiting = {g.id: len(set(g.inputs) - {INPUT}) for g in genes}
    readers: dict[int, list[Gene]] = {}
    for gene in genes:
        for source in set(gene.inputs) - {INPUT}:
            readers.setdefault(source, []).append(gene)
    position = {INPUT: 0}
    index = {g.id: i for i, g in enumerate(genes)}
    ready = [(label[g.id], (0,) * len(g.inputs), index[g.id]) for g in genes
             if waiting[g.id] == 0]  # fmt: skip
    heapq.heapify(ready)
    parts = []
    while ready:
        _, inputs, at = heapq.heappop(ready)
        gene = genes[at]
        position[gene.id] = len(position)
        parts.append(_CANONICAL.encode([gene.op, sorted(gene.params.items()), list(inputs)]))
        for reader in readers.get(gene.id, []):
            waiting[reader.id] -= 1
            if waiting[reader.id] == 0:
                positions = tuple(_ordered(reader.op, [position[i] for i in reader.inputs]))
                heapq.heappush(ready, (label[reader.id], positions, index[reader.id]))
    return "[" + ",".join(parts) + "]"


def _ordered(op: str, items: list) -> list:
    """Inputs in the order that matters: any order for add and multiply, as given for concat."""
    return sorted(items) if op in ("add", "multiply") else items


def gene_summary(gene: Gene) -> str:
    """`convolution 64 k3 s2 p1 nobias`, `activation relu6`, `add`."""
    p, op = gene.params, gene.op
    if op == "convolution":
        parts = [f"conv {p['channels']}", f"k{_text(p['kernel'])}"]
        parts += [f"s{_text(p['stride'])}"] if p["stride"] != 1 else []
        parts += [f"p{_text(p['padding'])}"] if p["padding"] != 0 else []
        parts += [f"d{_text(p['dilation'])}"] if p["dilation"] != 1 else []
        parts += [f"g{p['groups']}"] if p["groups"] != 1 else []
        parts += [] if p["bias"] else ["nobias"]
        return " ".join(parts)
    if op == "activation":
        return p["function"]
    if op in ("max_pool", "avg_pool"):
        text = f"{op.split('_')[0]}pool k{_text(p['kernel'])} s{_text(p['stride'])}"
        text += f" p{_text(p['padding'])}" if p["padding"] != 0 else ""
        return text + (" ceil" if p["ceil_mode"] else "")
    if op in ("adaptive_avg_pool", "adaptive_max_pool"):
        return f"{op} {_text(p['size'])}"
    if op == "linear":
        return f"linear {p['features']}" + ("" if p["bias"] else " nobias")
    if op in ("dropout", "channel_dropout"):
        return f"{op} {p['rate']:g}"
    if op == "reshape":
        return f"reshape {tuple(p['shape'])}"
    if op == "scale":
        return f"scale x{p['factor']:g} {p['shift']:+g}"
    return op


def _text(value: Any) -> str:
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


# --- size ----------------------------------------------------------------------------------------


def graph_params(genes: Sequence[Gene], input_shape: Sequence[int]) -> int:
    """Trainable parameters of the network `evonas.build` makes from a graph (no torch)."""
    known: dict[int, tuple[int, ...]] = {INPUT: tuple(input_shape)}
    total = 0
    for gene, shape in zip(genes, graph_shapes(genes, input_shape)):
        p, c_in = gene.params, known[gene.inputs[0]][0]
        known[gene.id] = shape
        if gene.op == "convolution":
            kernel = _per_dim(p["kernel"], len(shape) - 1)
            total += c_in // p["groups"] * p["channels"] * math.prod(kernel)
            total += p["channels"] if p["bias"] else 0
        elif gene.op == "linear":
            total += c_in * p["features"] + (p["features"] if p["bias"] else 0)
        elif gene.op == "batch_norm":
            total += 2 * c_in
    return total


def graph_depth(genes: Sequence[Gene]) -> int:
    """The most convolutions and linears on one path from the input to the output."""
    depth = {INPUT: 0}
    for gene in genes:
        depth[gene.id] = max(depth[i] for i in gene.inputs) + (gene.op in ("convolution", "linear"))
    return depth[genes[-1].id]
