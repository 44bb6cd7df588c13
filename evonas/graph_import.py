"""A PyTorch model -> graph genome and the weights of each gene, by tracing it with torch.fx.

The model is traced to a graph of module calls, functions and tensor methods, each node's shape is
recorded by running one random batch through it (fx's ShapeProp), and every node becomes a gene
(`evonas.graph`), an alias of its input (`nn.Identity`, `x.contiguous()`, a reshape that changes
nothing) or, at the very end, the recorded output function (softmax, log-softmax: the search
trains logits, the import check re-applies it). What cannot be mapped is collected, so that one
error lists every module or function with its path and the reason.
"""

from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from evonas.graph import INPUT

ACTIVATION_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu",
                      nn.ELU: "elu", nn.GELU: "gelu", nn.SiLU: "silu", nn.Hardswish: "hardswish",
                      nn.Hardsigmoid: "hardsigmoid", nn.Sigmoid: "sigmoid",
                      nn.Tanh: "tanh"}  # fmt: skip
ACTIVATION_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu",
                        F.relu6: "relu6", F.leaky_relu: "leaky_relu", F.elu: "elu",
                        F.gelu: "gelu", F.silu: "silu", F.hardswish: "hardswish",
                        F.hardsigmoid: "hardsigmoid", torch.sigmoid: "sigmoid",
                        F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh"}  # fmt: skip
ACTIVATION_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid",
                      "sigmoid_": "sigmoid", "tanh": "tanh", "tanh_": "tanh"}  # fmt: skip
ADDS = (operator.add, operator.iadd, torch.add, "add", "add_")
MULTIPLIES = (operator.mul, operator.imul, torch.mul, "mul", "mul_")
SUBTRACTS = (operator.sub, operator.isub, torch.sub, "sub")
DIVIDES = (operator.truediv, operator.itruediv, torch.div, "div")
CONCATS = (torch.cat, torch.concat, torch.concatenate)
RESHAPES = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, "flatten", "view",
            "reshape", "squeeze", "unsqueeze")  # fmt: skip
ALIASES = ("contiguous", "clone", "detach")
OUTPUT_FUNCTIONS = {F.softmax: "softmax", torch.softmax: "softmax", "softmax": "softmax",
                    F.log_softmax: "log_softmax", torch.log_softmax: "log_softmax",
                    "log_softmax": "log_softmax"}  # fmt: skip
OUTPUT_MODULES = {nn.Softmax: "softmax", nn.LogSoftmax: "log_softmax"}
# Functional pooling: argument names after the input, with defaults (their signatures are not
# all introspectable).
_MAX_POOL = (("kernel_size", None), ("stride", None), ("padding", 0), ("dilation", 1),
             ("ceil_mode", False), ("return_indices", False))  # fmt: skip
_AVG_POOL = (("kernel_size", None), ("stride", None), ("padding", 0), ("ceil_mode", False),
             ("count_include_pad", True), ("divisor_override", None))  # fmt: skip
POOL_FUNCTIONS = {F.max_pool1d: ("max_pool", _MAX_POOL), F.max_pool2d: ("max_pool", _MAX_POOL),
                  F.avg_pool1d: ("avg_pool", _AVG_POOL), F.avg_pool2d: ("avg_pool", _AVG_POOL),
                  torch.max_pool1d: ("max_pool", _MAX_POOL),
                  torch.max_pool2d: ("max_pool", _MAX_POOL),
                  torch.avg_pool1d: ("avg_pool", _AVG_POOL)}  # fmt: skip
ADAPTIVE_FUNCTIONS = {F.adaptive_avg_pool1d: "adaptive_avg_pool",
                      F.adaptive_avg_pool2d: "adaptive_avg_pool",
                      F.adaptive_max_pool1d: "adaptive_max_pool",
                      F.adaptive_max_pool2d: "adaptive_max_pool"}  # fmt: skip
DROPOUT_FUNCTIONS = {F.dropout: "dropout", F.dropout1d: "channel_dropout",
                     F.dropout2d: "channel_dropout"}  # fmt: skip


class TraceError(ValueError):
    """The model could not be traced or run; the message says why."""


@dataclass
class Pending:
    """A gene before ids are given: its op, parameters, the nodes it reads and its module."""

    name: str
    op: str
    params: dict[str, Any]
    inputs: list[str]
    module: nn.Module | None = None


@dataclass(frozen=True)
class Unsupported:
    what: str  # the layer's class, or `function getitem`
    where: str  # its path in the model
    reason: str


def describe_unsupported(items: list[Unsupported]) -> str:
    """One line: each layer or function with its path and reason; repeats of one kind grouped
    (`function getitem x24 in layer1.0 (node getitem), layer1.1 (...), ...: reason`)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for item in items:
        groups.setdefault((item.what, item.reason), []).append(item.where)
    parts = []
    for (what, reason), places in groups.items():
        if len(places) == 1 and not what.startswith(("function", "method")):
            parts.append(f"{places[0]} ({what}): {reason}")
        elif len(places) == 1:
            parts.append(f"{what} in {places[0]}: {reason}")
        else:
            more = ", ..." if len(places) > 3 else ""
            parts.append(f"{what} x{len(places)} in {', '.join(places[:3])}{more}: {reason}")
    return "; ".join(parts)


@dataclass
class TracedGraph:
    """What the trace maps to: genes in order, the output, and what cannot be mapped."""

    genes: list[Pending] = field(default_factory=list)
    output: str = ""
    output_function: str | None = None
    unsupported: list[Unsupported] = field(default_factory=list)


def trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """The model's fx graph with each node's output shape; forward arguments after the first
    keep their defaults."""
    signature = inspect.signature(model.forward)
    extra = list(signature.parameters.values())[1:]
    concrete = {p.name: p.default for p in extra if p.default is not inspect.Parameter.empty}
    required = [p.name for p in extra if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]  # fmt: skip
    if required:
        raise TraceError(f"forward takes more than the input ({', '.join(required)} without "
                         "defaults); evonas imports models called as model(x)")  # fmt: skip
    tracer = fx.Tracer()
    try:
        graph = tracer.trace(model, concrete_args=concrete or None)
    except Exception as exc:  # any failure of tracing user code
        raise TraceError(f"torch.fx cannot trace the model's forward "
                         f"({type(exc).__name__}: {_first_line(exc)})") from None  # fmt: skip
    traced = fx.GraphModule(tracer.root, graph)
    try:
        with torch.no_grad():
            _ShapeProp(traced).propagate(example)
    except Exception as exc:  # the traced code failed on a batch of the input shape
        cause = exc.__cause__ or exc  # ShapeProp wraps the error of the node that failed
        failed = next((n for n in graph.nodes if not {"tensor_meta", "value"} & set(n.meta)
                       and n.op not in ("placeholder", "output")), None)  # fmt: skip
        where = (
            f" at {failed.target if failed.op == 'call_module' else failed.name}" if failed else ""
        )
        raise TraceError(f"the model fails on inputs of shape {tuple(example.shape[1:])}{where} "
                         f"({type(cause).__name__}: {_first_line(cause)})") from None  # fmt: skip
    return traced


class _ShapeProp(ShapeProp):
    """Also keeps the values of shape queries (`x.shape[-1]` as a pooling kernel)."""

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if not isinstance(result, torch.Tensor):
            n.meta["value"] = result
        return result


def _concrete(arg: Any) -> Any:
    """A shape query's value at the import's input shape; anything else unchanged."""
    if isinstance(arg, fx.Node) and _is_shape_query(arg) and "value" in arg.meta:
        return arg.meta["value"]
    if isinstance(arg, list | tuple) and any(isinstance(a, fx.Node) for a in arg):
        return type(arg)(_concrete(a) for a in arg)
    return arg


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _is_shape_query(node: Any) -> bool:
    """x.size(), x.shape, x.dim() and what is computed from them (integers at the import's input
    shape, recorded by the shape pass): arguments of other calls, not data."""
    if not isinstance(node, fx.Node) or node.op in ("call_module", "output", "placeholder"):
        return False
    value = node.meta.get("value", _MISSING)
    return isinstance(value, int | torch.Size) or (
        isinstance(value, tuple) and all(isinstance(v, int) for v in value)
    )


_MISSING = object()


def _live(nodes: list[fx.Node]) -> set[fx.Node]:
    """The nodes the output depends on."""
    live = {n for n in nodes if n.op == "output"}
    for node in reversed(nodes):
        if node in live:
            live.update(node.all_input_nodes)
    return live


def _bind(node: fx.Node, names: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    values = {name: default for name, default in names}
    for (name, _), value in zip(names, node.args[1:]):
        values[name] = _concrete(value)
    values.update({k: _concrete(v) for k, v in node.kwargs.items() if k in values})
    return values


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


class _Mapper:
    """Walks the traced graph once, node by node."""

    def __init__(self, traced: fx.GraphModule) -> None:
        self.modules = dict(traced.named_modules())
        self.result = TracedGraph()
        self.value: dict[str, str] = {}  # node name -> the gene (or "input") holding its value
        self.consumers = {node.name: list(node.users) for node in traced.graph.nodes}
        self.nodes = list(traced.graph.nodes)

    def run(self) -> TracedGraph:
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if placeholders:
            self.value[placeholders[0].name] = "input"
        live = _live(self.nodes)
        for node in self.nodes:
            if node not in live:
                continue  # dead code, guards fx adds for forward's default arguments
            if node.op in ("placeholder", "get_attr") or _is_shape_query(node):
                if node.op == "get_attr" and node.users:
                    reason = f"reads a parameter or buffer directly ({node.target})"
                    self._unsupported(node, reason + "; only layers' own weights import")
                continue
            if node.op == "output":
                self._output(node)
            elif node.op == "call_module":
                self._module(node, self.modules[str(node.target)])
            else:
                self._function(node)
        return self.result

    # --- helpers ----------------------------------------------------------------------------

    def _what_and_where(self, node: fx.Node) -> tuple[str, str]:
        """(`Conv3d`, `features.0`) for a layer; (`function getitem`, `layer1.0 (node
        getitem_2)`) for a function or method."""
        if node.op == "call_module":
            return type(self.modules[str(node.target)]).__name__, str(node.target)
        name = node.target if isinstance(node.target, str) else getattr(
            node.target, "__name__", str(node.target))  # fmt: skip
        trail = node.meta.get("nn_module_stack")
        kind = "method" if node.op == "call_method" else "function"
        where = f"{list(trail)[-1]} (node {node.name})" if trail else f"node {node.name}"
        return f"{kind} {name}", where

    def _unsupported(self, node: fx.Node, reason: str) -> None:
        what, where = self._what_and_where(node)
        self.result.unsupported.append(Unsupported(what, where, reason))
        self.value[node.name] = "?"  # keeps later nodes from failing on it

    def _source(self, arg: Any) -> str | None:
        return self.value.get(arg.name) if isinstance(arg, fx.Node) else None

    def _gene(self, node: fx.Node, op: str, params: dict[str, Any], inputs: list[Any],
              module: nn.Module | None = None) -> None:  # fmt: skip
        sources = [self._source(a) for a in inputs]
        if any(s is None for s in sources):
            self._unsupported(node, "reads something that is not a tensor of the network")
            return
        self.result.genes.append(Pending(node.name, op, params, sources, module))  # type: ignore[arg-type]
        self.value[node.name] = node.name

    def _alias(self, node: fx.Node, arg: Any) -> None:
        source = self._source(arg)
        if source is None:
            self._unsupported(node, "reads something that is not a tensor of the network")
        else:
            self.value[node.name] = source

    # --- nodes ------------------------------------------------------------------------------

    def _output(self, node: fx.Node) -> None:
        value = node.args[0]
        if not isinstance(value, fx.Node):
            self._unsupported(node, "the model returns several outputs; evonas models return "
                                    "one tensor of logits")  # fmt: skip
            return
        producer = next((g for g in self.result.genes if g.name == self._source(value)), None)
        if producer is not None and producer.op == "output_function":
            self.result.genes.remove(producer)
            self.result.output_function = producer.params["function"]
            self.result.output = producer.inputs[0]
        else:
            self.result.output = self._source(value) or "?"

    def _output_function(self, node: fx.Node, function: str, dim: Any) -> None:
        shape = _shape(node)
        final = [u.op for u in node.users] == ["output"]
        if not final or shape is None or len(shape) != 2 or dim not in (1, -1):
            self._unsupported(node, f"{function} other than over the classes at the very end")
            return
        self._gene(node, "output_function", {"function": function}, [node.args[0]])

    def _module(self, node: fx.Node, m: nn.Module) -> None:
        x = node.args[0] if node.args else None
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            if m.padding_mode != "zeros":
                return self._unsupported(node, f"padding_mode {m.padding_mode!r} (zeros only)")
            params = {"channels": m.out_channels, "kernel": list(m.kernel_size),
                      "stride": list(m.stride), "padding": _listed(m.padding),
                      "dilation": list(m.dilation), "groups": m.groups,
                      "bias": m.bias is not None}  # fmt: skip
            return self._gene(node, "convolution", params, [x], m)
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            if not (m.affine and m.track_running_stats) or m.momentum is None:
                return self._unsupported(node, "batch norm without affine weights, running "
                                               "statistics or a momentum")  # fmt: skip
            return self._gene(node, "batch_norm", {"eps": m.eps, "momentum": m.momentum}, [x], m)
        for cls, function in ACTIVATION_MODULES.items():
            if type(m) is cls:  # the settings of GELU, LeakyReLU and ELU
                return self._activation(node, function, x, getattr(m, "approximate", "none"),
                                        getattr(m, "negative_slope", 0.01),
                                        getattr(m, "alpha", 1.0))  # fmt: skip
        if isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0):
            return self._activation(node, "relu6", x)
        if isinstance(m, nn.MaxPool1d | nn.MaxPool2d):
            if m.return_indices:
                return self._unsupported(node, "pooling that returns indices")
            values = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                      "dilation": m.dilation, "ceil_mode": m.ceil_mode}  # fmt: skip
            return self._pool(node, "max_pool", values, x)
        if isinstance(m, nn.AvgPool1d | nn.AvgPool2d):
            if getattr(m, "divisor_override", None) is not None:
                return self._unsupported(node, "average pooling with divisor_override")
            values = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                      "ceil_mode": m.ceil_mode,
                      "count_include_pad": m.count_include_pad}  # fmt: skip
            return self._pool(node, "avg_pool", values, x)
        if isinstance(m, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d):
            return self._adaptive(node, "adaptive_avg_pool", x)
        if isinstance(m, nn.AdaptiveMaxPool1d | nn.AdaptiveMaxPool2d):
            if m.return_indices:
                return self._unsupported(node, "pooling that returns indices")
            return self._adaptive(node, "adaptive_max_pool", x)
        if isinstance(m, nn.Flatten | nn.Unflatten):
            return self._reshape(node, x)
        if isinstance(m, nn.Linear):
            if _shape(x) is None or len(_shape(x)) != 2:
                return self._unsupported(node, f"Linear on a {_shape(x)} tensor; evonas's linear "
                                               "reads flat features (batch, features)")  # fmt: skip
            params = {"features": m.out_features, "bias": m.bias is not None}
            return self._gene(node, "linear", params, [x], m)
        if type(m) is nn.Dropout:
            return self._gene(node, "dropout", {"rate": float(m.p)}, [x])
        if isinstance(m, nn.Dropout1d | nn.Dropout2d):
            return self._gene(node, "channel_dropout", {"rate": float(m.p)}, [x])
        if isinstance(m, nn.Identity):
            return self._alias(node, x)
        for cls, function in OUTPUT_MODULES.items():
            if isinstance(m, cls):
                return self._output_function(node, function, m.dim)
        self._unsupported(node, "no evonas gene for this layer")

    def _activation(self, node: fx.Node, function: str, x: Any, approximate: str = "none",
                    negative_slope: float = 0.01, alpha: float = 1.0) -> None:  # fmt: skip
        params: dict[str, Any] = {"function": function}
        if function == "gelu" and approximate != "none":
            return self._unsupported(node, "GELU with the tanh approximation")
        if function == "leaky_relu":
            params["negative_slope"] = float(negative_slope)
        if function == "elu":
            params["alpha"] = float(alpha)
        self._gene(node, "activation", params, [x])

    def _pool(self, node: fx.Node, op: str, v: dict[str, Any], x: Any) -> None:
        stride = v["stride"] if v["stride"] not in (None, [], ()) else v["kernel_size"]
        params = {"kernel": _listed(v["kernel_size"]), "stride": _listed(stride),
                  "padding": _listed(v["padding"]), "ceil_mode": bool(v["ceil_mode"])}  # fmt: skip
        if op == "max_pool":
            params["dilation"] = _listed(v["dilation"])
        else:
            params["count_include_pad"] = bool(v["count_include_pad"])
        self._gene(node, op, params, [x])

    def _adaptive(self, node: fx.Node, op: str, x: Any) -> None:
        shape = _shape(node)
        if shape is None:
            return self._unsupported(node, "pooling that does not return one tensor")
        self._gene(node, op, {"size": list(shape[2:])}, [x])

    def _reshape(self, node: fx.Node, x: Any) -> None:
        before, after = _shape(x), _shape(node)
        if before is None or after is None or before[0] != after[0]:
            return self._unsupported(node, "a reshape that mixes the batch with the features")
        if after == before:
            return self._alias(node, x)
        if len(after) == 2:
            return self._gene(node, "flatten", {}, [x])
        self._gene(node, "reshape", {"shape": list(after[1:])}, [x])

    def _function(self, node: fx.Node) -> None:
        target = node.target
        args = tuple(_concrete(a) if i else a for i, a in enumerate(node.args))
        x = args[0] if args else next(iter(node.kwargs.values()), None)
        method = target if node.op == "call_method" else None
        key = method or target
        if key in ACTIVATION_FUNCTIONS or key in ACTIVATION_METHODS:
            function = ACTIVATION_FUNCTIONS.get(key) or ACTIVATION_METHODS[key]
            extra = {"leaky_relu": ("negative_slope", 0.01), "elu": ("alpha", 1.0)}.get(function)
            setting = {}
            if extra:  # the slope of leaky_relu(x, 0.1), the alpha of elu(x, 2.0)
                name, default = extra
                setting[name] = args[1] if len(args) > 1 else node.kwargs.get(name, default)
            approximate = node.kwargs.get("approximate", "none")
            return self._activation(node, function, x, approximate, **setting)
        if key is F.hardtanh:
            low = args[1] if len(args) > 1 else node.kwargs.get("min_val", -1.0)
            high = args[2] if len(args) > 2 else node.kwargs.get("max_val", 1.0)
            if (low, high) == (0.0, 6.0):
                return self._activation(node, "relu6", x)
            return self._unsupported(node, "hardtanh other than relu6 (0, 6)")
        if key in OUTPUT_FUNCTIONS:
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim")
            return self._output_function(node, OUTPUT_FUNCTIONS[key], dim)
        if key in POOL_FUNCTIONS:
            op, names = POOL_FUNCTIONS[key]
            values = _bind(node, names)
            if values.get("return_indices") or values.get("divisor_override") is not None:
                return self._unsupported(node, "pooling with indices or a divisor override")
            return self._pool(node, op, values, x)
        if key in ADAPTIVE_FUNCTIONS:
            return self._adaptive(node, ADAPTIVE_FUNCTIONS[key], x)
        if key in DROPOUT_FUNCTIONS:
            rate = args[1] if len(args) > 1 else node.kwargs.get("p", 0.5)
            return self._gene(node, DROPOUT_FUNCTIONS[key], {"rate": float(rate)}, [x])
        if key in RESHAPES:
            return self._reshape(node, x)
        if key in ALIASES:
            return self._alias(node, x)
        if getattr(target, "__name__", "") == "stochastic_depth":
            # torchvision's stochastic depth: the identity in eval mode, as dropout is; the
            # search trains without it (there is no gene for dropping whole residual branches)
            return self._alias(node, x)
        if key in CONCATS:
            return self._concat(node)
        if key in ("mean",) or target is torch.mean:
            return self._mean(node, x)
        if key in ADDS + MULTIPLIES + SUBTRACTS + DIVIDES:
            return self._arithmetic(node, key)
        self._unsupported(node, "no evonas gene for this operation")

    def _concat(self, node: fx.Node) -> None:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        shape = _shape(node)
        if not isinstance(tensors, list | tuple) or shape is None or dim not in (1, 1 - len(shape)):
            return self._unsupported(node, "concatenation other than along the channels")
        if len(tensors) == 1:  # torch.cat([x], 1) is x (DenseNet's first layer of a block)
            return self._alias(node, tensors[0])
        self._gene(node, "concat", {}, list(tensors))

    def _mean(self, node: fx.Node, x: Any) -> None:
        before, after = _shape(x), _shape(node)
        if before is None or after is None or len(before) < 3 or after[:2] != before[:2]:
            return self._unsupported(node, "a mean other than over all spatial positions")
        if len(after) == 2:
            return self._gene(node, "global_avg_pool", {}, [x])
        if all(d == 1 for d in after[2:]) and len(after) == len(before):
            return self._gene(node, "adaptive_avg_pool", {"size": 1}, [x])
        self._unsupported(node, "a mean other than over all spatial positions")

    def _arithmetic(self, node: fx.Node, key: Any) -> None:
        a, b = (list(node.args) + [node.kwargs.get("other")])[:2]
        if node.kwargs.get("alpha", 1) != 1 or node.kwargs.get("rounding_mode") is not None:
            return self._unsupported(node, "add/sub with alpha or division with rounding")
        if isinstance(a, fx.Node) and isinstance(b, fx.Node):
            if key in ADDS:
                return self._gene(node, "add", {}, [a, b])
            if key in MULTIPLIES:
                return self._gene(node, "multiply", {}, [a, b])
            return self._unsupported(node, "subtracting or dividing two tensors")
        tensor, number = (a, b) if isinstance(a, fx.Node) else (b, a)
        if not isinstance(number, int | float) or isinstance(number, bool):
            return self._unsupported(node, "arithmetic with something that is not a number")
        number = float(number)
        if key in ADDS:
            factor, shift = 1.0, number
        elif key in MULTIPLIES:
            factor, shift = number, 0.0
        elif key in SUBTRACTS:
            factor, shift = (1.0, -number) if tensor is a else (-1.0, number)
        elif tensor is a and number != 0:
            factor, shift = 1.0 / number, 0.0
        else:
            return self._unsupported(node, "dividing a number by a tensor")
        if not math.isfinite(factor):
            return self._unsupported(node, "a scale that is not finite")
        self._gene(node, "scale", {"factor": factor, "shift": shift}, [tensor])


def map_graph(traced: fx.GraphModule) -> TracedGraph:
    """The traced model as pending genes, with only those that lead to the output."""
    result = _Mapper(traced).run()
    needed = {result.output}
    kept = []
    for gene in reversed(result.genes):
        if gene.name in needed:
            needed.update(gene.inputs)
            kept.append(gene)
    result.genes = kept[::-1]
    if result.output == "input":
        result.unsupported.append(Unsupported("output", "the model", "returns its input unchanged"))
    return result


def to_graph_genome(result: TracedGraph) -> tuple[dict[str, Any], dict[int, nn.Module]]:
    """The genome's plain dict (ids 1, 2, ... in traced order) and each weighted gene's module."""
    ids = {"input": INPUT} | {g.name: i for i, g in enumerate(result.genes, start=1)}
    layers, modules = [], {}
    for gene in result.genes:
        gene_id = ids[gene.name]
        layers.append({"id": gene_id, "op": gene.op, **gene.params,
                       "inputs": [ids[i] for i in gene.inputs]})  # fmt: skip
        if gene.module is not None:
            modules[gene_id] = gene.module
    return {"layers": layers}, modules


def copy_gene_weights(rebuilt: nn.Module, modules: dict[int, nn.Module]) -> None:
    """Each gene's module takes the state of the layer it came from (same tensors, same names)."""
    for gene_id, module in modules.items():
        rebuilt.get_submodule(f"g{gene_id}").load_state_dict(module.state_dict())
