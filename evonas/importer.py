"""An existing PyTorch model -> genome (+ weights) that rebuilds to the same outputs.

`import_model` first reads the model as a chain of evonas's layers (nn.Sequential or an
fx-traceable chain of Conv1d/Conv2d with same padding, BatchNorm, activations, size-2 pooling,
Dropout, Flatten, Linear, global pooling before the last Linear, and BasicBlock-shaped residual
blocks): such a model becomes a chain genome, which every operator of the sequential space can
vary. Any other model is traced into a graph genome (`evonas.graph_import`). Either way the
rebuilt model's outputs are checked against the original's; what cannot be represented is one
error listing each module or function with its path.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import fx, nn

from evonas.builder import build
from evonas.genome import Gene, Genome

ACTIVATIONS = {nn.ReLU: "relu", nn.GELU: "gelu", nn.SiLU: "silu", nn.Tanh: "tanh", nn.ELU: "elu"}
FUNCTIONAL_ACTIVATIONS = {torch.relu: "relu", nn.functional.relu: "relu", torch.tanh: "tanh",
                          nn.functional.gelu: "gelu", nn.functional.silu: "silu"}  # fmt: skip
CONVS = (nn.Conv1d, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
GLOBAL_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)


class UnsupportedModelError(ValueError):
    """A model evonas cannot represent; the message lists what and where."""


@dataclass
class Step:
    path: str
    kind: str  # module | activation | flatten | unsupported
    module: nn.Module | None = None
    activation: str | None = None
    note: str = ""  # why an unsupported step is unsupported


def is_basic_block(module: nn.Module) -> bool:
    names = {name for name, _ in module.named_children()}
    return {"conv1", "bn1", "conv2", "bn2"} <= names


class _Tracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return is_basic_block(module) or super().is_leaf_module(module, qualified_name)


def chain(model: nn.Module) -> list[Step]:
    """The model as a flat list of steps, in the order its forward applies them."""
    if isinstance(model, nn.Sequential):
        steps = []
        for name, child in model.named_children():
            for step in chain(child) if isinstance(child, nn.Sequential) else [_leaf(name, child)]:
                if isinstance(child, nn.Sequential):
                    step.path = f"{name}.{step.path}"
                steps.append(step)
        return steps
    if is_basic_block(model) or not list(model.children()):
        return [_leaf("", model)]
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # any tracing failure of user code
        raise UnsupportedModelError(
            f"cannot trace the model with torch.fx ({exc}); use nn.Sequential"
        ) from None
    modules = dict(model.named_modules())
    steps = []
    previous = None
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "get_attr") or _shape_query(node):
            if node.op == "placeholder":
                previous = node
            continue
        inputs = [a for a in node.all_input_nodes if not _shape_query(a)]
        if inputs != [previous]:
            steps.append(Step(node.name, "unsupported", note="not a chain (several inputs)"))
        previous = node
        if node.op == "call_module":
            steps.append(_leaf(str(node.target), modules[str(node.target)]))
        elif node.op in ("call_function", "call_method"):
            name = node.target if isinstance(node.target, str) else node.target
            if name in FUNCTIONAL_ACTIVATIONS or name in ("relu", "tanh"):
                act = FUNCTIONAL_ACTIVATIONS.get(name, name)
                steps.append(Step(node.name, "activation", activation=act))
            elif name in (torch.flatten, "flatten", "view", "reshape"):
                steps.append(Step(node.name, "flatten"))
            else:
                steps.append(Step(node.name, "unsupported", note=getattr(name, "__name__", name)))
    return steps


def _shape_query(node: fx.Node) -> bool:
    """x.size(), x.shape and indexing into them: arguments of a reshape, not data."""
    if node.op == "call_method" and node.target == "size":
        return True
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] == "shape"
    if node.op == "call_function" and node.target is operator.getitem:
        return isinstance(node.args[0], fx.Node) and _shape_query(node.args[0])
    return False


def _leaf(path: str, module: nn.Module) -> Step:
    for cls, name in ACTIVATIONS.items():
        if isinstance(module, cls):
            return Step(path, "activation", module, name)
    if isinstance(module, nn.Flatten):
        return Step(path, "flatten", module)
    return Step(path, "module", module)


def to_genome(
    model: nn.Module, input_shape: tuple[int, ...], num_classes: int | None = None
) -> tuple[Genome, list[tuple[nn.Module, ...]]]:
    """Genes for the model's steps, and for each gene the source modules whose weights it takes
    (the last entry is the head's Linear)."""
    steps = chain(model)
    genes: list[Gene] = []
    sources: list[tuple[nn.Module, ...]] = []
    unsupported: list[str] = []
    spatial = len(input_shape) >= 2
    i = 0

    def activation_at(j: int) -> str | None:
        return steps[j].activation if j < len(steps) and steps[j].kind == "activation" else None

    head: nn.Linear | None = None
    while i < len(steps):
        step, m = steps[i], steps[i].module
        where = step.path or type(m).__name__
        if step.kind == "unsupported":
            unsupported.append(f"{step.path}: {step.note}")
            i += 1
        elif step.kind == "flatten" or isinstance(m, nn.Identity):
            i += 1
        elif isinstance(m, CONVS):
            norm = steps[i + 1].module if i + 1 < len(steps) else None
            has_norm = isinstance(norm, NORMS)
            act = activation_at(i + 1 + has_norm)
            kernel, stride, dilation = m.kernel_size[0], m.stride[0], m.dilation[0]
            same = dilation * (kernel // 2)
            problems = []
            if len(set(m.kernel_size)) > 1 or len(set(m.stride)) > 1 or m.groups != 1:
                problems.append("non-square kernel/stride or groups")
            if m.padding != (same,) * len(m.padding):
                problems.append(f"padding {m.padding} (evonas pads {same} for kernel {kernel})")
            if act is None:
                problems.append("no activation after it")
            if problems:
                unsupported.append(f"{where} ({type(m).__name__}): {', '.join(problems)}")
            params = {
                "width": m.out_channels,
                "kernel": kernel,
                "stride": stride,
                "dilation": dilation,
                "activation": act or "relu",
                "batch_norm": has_norm,
            }
            genes.append(Gene(len(genes) + 1, "conv", params))
            sources.append((m, norm) if has_norm else (m,))
            i += 1 + has_norm + (act is not None)
        elif is_basic_block(m):
            block_problems = _basic_block_problems(m)
            if block_problems:
                unsupported.append(f"{where} ({type(m).__name__}): {block_problems}")
            params = {"width": m.conv1.out_channels, "kernel": m.conv1.kernel_size[0],
                      "activation": "relu", "batch_norm": True}  # fmt: skip
            genes.append(Gene(len(genes) + 1, "residual", params))
            sources.append((m,))
            i += 1
        elif isinstance(m, POOLS):
            size = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            stride = m.stride if isinstance(m.stride, int) else m.stride[0]
            if size != 2 or stride != 2 or _padding(m) != 0:
                unsupported.append(f"{where} ({type(m).__name__}): only size 2, stride 2 pooling")
            kind = "max" if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)) else "avg"
            genes.append(Gene(len(genes) + 1, "pool", {"kind": kind, "size": 2}))
            sources.append(())
            i += 1
        elif isinstance(m, nn.Dropout):
            genes.append(Gene(len(genes) + 1, "dropout", {"rate": float(m.p)}))
            sources.append(())
            i += 1
        elif isinstance(m, GLOBAL_POOLS):
            rest = [s for s in steps[i + 1 :] if s.kind != "flatten"]
            if len(rest) != 1 or not isinstance(rest[0].module, nn.Linear):
                unsupported.append(f"{where}: global pooling only right before the last Linear")
            i += 1
        elif isinstance(m, nn.Linear):
            act = activation_at(i + 1)
            last = all(s.kind in ("flatten", "activation") for s in steps[i + 1 :]) and act is None
            if last:
                head = m
                i += 1
                continue
            if act is None:
                unsupported.append(f"{where} (Linear): no activation after it")
            genes.append(Gene(len(genes) + 1, "dense", {"units": m.out_features,
                                                        "activation": act or "relu"}))  # fmt: skip
            sources.append((m,))
            spatial = False
            i += 1 + (act is not None)
        else:
            unsupported.append(f"{where}: {type(m).__name__}")
            i += 1
    if head is None:
        unsupported.append("the model must end in a Linear layer to the classes")
    elif num_classes is not None and head.out_features != num_classes:
        unsupported.append(f"last Linear has {head.out_features} outputs, not {num_classes}")
    if unsupported:
        raise UnsupportedModelError("unsupported: " + "; ".join(unsupported))
    del spatial
    sources.append((head,))
    return Genome(genes=tuple(genes)), sources


def _padding(module: nn.Module) -> int:
    padding = module.padding
    return padding if isinstance(padding, int) else padding[0]


def _basic_block_problems(block: nn.Module) -> str:
    problems = []
    convs = (block.conv1, block.conv2)
    if not all(isinstance(c, CONVS) for c in convs):
        return "conv1 and conv2 are not convolutions (only BasicBlock-shaped blocks import)"
    if any(c.groups != 1 for c in convs):
        groups = [c.groups for c in convs]
        return f"grouped or depthwise convolutions (groups {groups}) are not supported yet"
    if block.conv1.stride[0] != 1:
        problems.append("stride 2 (evonas residual blocks keep the resolution)")
    downsample = getattr(block, "downsample", None)
    if downsample is not None:
        layers = list(downsample) if isinstance(downsample, nn.Sequential) else [downsample]
        if len(layers) != 1 or not isinstance(layers[0], CONVS) or layers[0].kernel_size[0] != 1:
            problems.append("a downsample other than one 1x1 convolution")
    return ", ".join(problems)


def copy_weights(target: nn.Module, genome: Genome, sources: list[tuple[nn.Module, ...]]) -> None:
    """Load the source modules' tensors into the rebuilt model, layer by layer. A convolution's
    bias before batch norm is folded into the norm's running mean (batch norm removes a constant
    shift, so the function is the same); a convolution with neither gets a zero bias."""
    body = target[0]
    for gene, source in zip(genome.genes, sources):
        layer = getattr(body, f"g{gene.id}")
        if gene.op == "conv":
            conv, norm = source[0], source[1] if gene.params["batch_norm"] else None
            layer[0].weight.data.copy_(conv.weight.data)
            if norm is not None:
                layer[1].load_state_dict(norm.state_dict())
                if conv.bias is not None:
                    layer[1].running_mean.data -= conv.bias.data
            else:
                bias = conv.bias.data if conv.bias is not None else torch.zeros_like(layer[0].bias)
                layer[0].bias.data.copy_(bias)
        elif gene.op == "residual":
            block = source[0]
            for mine, theirs in (("conv1", "conv1"), ("norm1", "bn1"), ("conv2", "conv2"),
                                 ("norm2", "bn2")):  # fmt: skip
                getattr(layer, mine).load_state_dict(getattr(block, theirs).state_dict())
            downsample = getattr(block, "downsample", None)
            if downsample is not None:
                conv = downsample[0] if isinstance(downsample, nn.Sequential) else downsample
                layer.skip.load_state_dict(conv.state_dict())
        elif gene.op == "dense":
            layer[1].load_state_dict(source[0].state_dict())
    target[1].linear.load_state_dict(sources[-1][0].state_dict())


def infer_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return (module.in_features,)
        if isinstance(module, CONVS):
            return None  # channels are known, the length or size is not
    return None


def import_model(
    model: nn.Module,
    input_shape: tuple[int, ...] | None = None,
    source: str = "",
    atol: float = 1e-5,
) -> tuple[Genome, nn.Module, dict[str, Any]]:
    """Genome, rebuilt model with the original's weights, and the file's header fields.

    A model that is a chain of evonas's layers becomes a chain genome (every operator of the
    sequential space applies to it); any other becomes a graph genome. Either way the rebuilt
    model computes the original's outputs (max abs difference <= `atol`, eval mode, random
    inputs), or UnsupportedModelError says what cannot be represented."""
    model = model.eval()
    shape = tuple(input_shape) if input_shape else infer_input_shape(model)
    _materialise_lazy(model, shape)
    if shape is None:
        raise UnsupportedModelError("cannot infer the input shape of a convolutional model; "
                           "pass --input-shape, e.g. 1,40 or 3,32,32")  # fmt: skip
    try:
        return _import_chain(model, shape, source, atol)
    except Exception:  # noqa: BLE001 - the chain reading is a shortcut; the graph says why not
        return import_graph(model, shape, source, atol)


def _materialise_lazy(model: nn.Module, shape: tuple[int, ...] | None) -> None:
    """Lazy layers get their sizes from one forward pass of zeros of the input shape."""
    lazy = [
        f"{path} ({type(m).__name__})" if path else type(m).__name__
        for path, m in model.named_modules()
        if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params()
    ]
    if not lazy:
        return
    if shape is None:
        raise UnsupportedModelError(
            f"{', '.join(lazy)}: lazy layers have no shape until data goes through them; pass "
            "--input-shape (e.g. 1,40 or 3,32,32) so that evonas runs one batch through first"
        )
    try:
        with torch.no_grad():
            model(torch.zeros(2, *shape))
    except Exception as exc:  # user code on the given shape
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"running one batch of shape {shape} to size its lazy layers failed: {first}"
        ) from None


def _import_chain(
    model: nn.Module, shape: tuple[int, ...], source: str, atol: float
) -> tuple[Genome, nn.Module, dict[str, Any]]:
    genome, sources = to_genome(model, shape)
    classes = sources[-1][0].out_features
    rebuilt = build(genome, shape, classes).eval()
    if sources[-1][0].in_features != rebuilt[1].linear.in_features:
        raise UnsupportedModelError("a classifier on the flattened map")
    try:
        copy_weights(rebuilt, genome, sources)
    except RuntimeError as exc:  # a size evonas read differently from the model
        raise UnsupportedModelError(str(exc).strip().splitlines()[-1]) from None
    if _difference(model, rebuilt, shape, None) > atol:
        raise UnsupportedModelError("the chain does not compute the same outputs")
    return genome, rebuilt, {"source": source, "input_shape": list(shape), "num_classes": classes}


def import_graph(
    model: nn.Module, shape: tuple[int, ...], source: str = "", atol: float = 1e-5
) -> tuple[Genome, nn.Module, dict[str, Any]]:
    """The model as a graph genome (`evonas.graph_import` traces it)."""
    from evonas.genome import GenomeError, parse_genome
    from evonas.graph_import import (
        TraceError,
        copy_gene_weights,
        describe_unsupported,
        map_graph,
        to_graph_genome,
        trace,
    )

    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    try:
        traced = trace(model, example)
    except TraceError as exc:
        raise UnsupportedModelError(str(exc)) from None
    result = map_graph(traced)
    if result.unsupported:
        raise UnsupportedModelError("cannot represent " + describe_unsupported(result.unsupported))
    data, modules = to_graph_genome(result)
    try:
        genome = parse_genome(data, where="the imported graph")
        out = _graph_output(genome, shape)
        rebuilt = build(genome, shape, out).eval()
        copy_gene_weights(rebuilt, modules)
    except UnsupportedModelError:
        raise
    except (GenomeError, ValueError, RuntimeError) as exc:  # a bug of the mapping, said plainly
        first = str(exc).strip().splitlines()[0]
        raise UnsupportedModelError(f"the traced graph does not rebuild ({first})") from None
    difference = _difference(model, rebuilt, shape, result.output_function)
    if difference > atol:
        raise UnsupportedModelError(
            f"the rebuilt model's outputs differ from the original's by up to {difference:.3g} "
            f"(allowed {atol:g}); an operation was read differently than it runs"
        )
    header = {"source": source, "input_shape": list(shape), "num_classes": out}
    if result.output_function:
        header["output_function"] = result.output_function
    return genome, rebuilt, header


def _graph_output(genome: Genome, shape: tuple[int, ...]) -> int:
    from evonas.graph import graph_shapes

    last = graph_shapes(genome.genes, shape)[-1]
    if len(last) != 1:
        raise UnsupportedModelError(
            f"the model's output has shape {last} per sample; a classifier returns "
            "(batch, classes) logits"
        )
    return last[0]


def _difference(
    model: nn.Module, rebuilt: nn.Module, shape: tuple[int, ...], output_function: str | None
) -> float:
    """Max abs difference of the two models' outputs on random inputs, in eval mode (the
    rebuilt model's logits go through the original's output function first)."""
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = model(x), rebuilt(x)
    if output_function == "softmax":
        got = torch.softmax(got, dim=1)
    elif output_function == "log_softmax":
        got = torch.log_softmax(got, dim=1)
    if not isinstance(expected, torch.Tensor) or expected.shape != got.shape:
        return math.inf
    return float((expected - got).abs().max())


def import_from_source(
    source: str, out: Path, weights: str | None = None, input_shape: str | None = None
) -> tuple[Genome, dict[str, Any], Path]:
    """`evonas import`: build the model a factory (`file.py:function` or `pkg.module:function`)
    returns, load `weights`, import it and write the genome and its weights; returns the
    genome, its header and the weights file."""
    from evonas.config import ConfigError
    from evonas.plugins import PluginError, load_callable
    from evonas.weights import UnsafeFileError, load_state_dict

    shape = None
    if input_shape:
        try:
            shape = tuple(int(d) for d in input_shape.split(","))
        except ValueError:
            raise ConfigError(
                f"--input-shape: expected integers like 1,40, got {input_shape!r}"
            ) from None
    factory = load_callable(source, what="SOURCE")
    try:
        model = factory()
    except Exception as exc:  # user code
        raise PluginError(f"SOURCE: {source} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise PluginError(f"SOURCE: {source} returned {type(model).__name__}, not an nn.Module")
    if weights:
        try:
            model.load_state_dict(load_state_dict(weights))
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise UnsafeFileError(
                f"--weights {weights}: does not fit the model ({first})"
            ) from None
    try:
        genome, rebuilt, header = import_model(model, shape, source=source)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{source}: {exc}") from None
    return genome, header, write_import(genome, rebuilt, header, out)


def write_import(genome: Genome, rebuilt: nn.Module, header: dict[str, Any], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {**header, **genome.to_dict()}
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    weights = out.with_suffix(".pt")
    torch.save(rebuilt.state_dict(), weights)
    return weights
