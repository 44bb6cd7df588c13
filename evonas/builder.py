"""Genome -> `nn.Module` for a given input shape, plus parameter and FLOP counts.

Layers are named by gene id (`g<id>`) so that state_dict keys follow the genome's stable ids.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from evonas.genome import Genome, GenomeError, parse_genome
from evonas.graph_module import build_graph
from evonas.train import device_of

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


def _layers_for(dims: int) -> tuple[type, type, type, type, type]:
    if dims == 1:
        return nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d
    raise ValueError(f"inputs with {dims} spatial dimensions are not supported (1 or 2)")


def activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class ConvLayer(nn.Sequential):
    def __init__(self, dims: int, c_in: int, p: dict[str, Any]) -> None:
        conv, norm, *_ = _layers_for(dims)
        k, bn, d = p["kernel"], p["batch_norm"], p.get("dilation", 1)
        layers = [
            conv(
                c_in,
                p["width"],
                k,
                stride=p["stride"],
                padding=d * (k // 2),
                dilation=d,
                bias=not bn,
            )
        ]
        if bn:
            layers.append(norm(p["width"]))
        layers.append(activation(p["activation"]))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two same-padded convolutions with a skip (1x1 projection when the width changes)."""

    def __init__(self, dims: int, c_in: int, p: dict[str, Any]) -> None:
        super().__init__()
        conv, norm, *_ = _layers_for(dims)
        k, width, bn = p["kernel"], p["width"], p["batch_norm"]

        def norm_or_identity() -> nn.Module:
            return norm(width) if bn else nn.Identity()

        self.conv1 = conv(c_in, width, k, padding=k // 2, bias=not bn)
        self.norm1 = norm_or_identity()
        self.conv2 = conv(width, width, k, padding=k // 2, bias=not bn)
        self.norm2 = norm_or_identity()
        self.act = activation(p["activation"])
        self.skip = nn.Identity() if c_in == width else conv(c_in, width, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.skip(x))


class Dense(nn.Sequential):
    """Flatten (a no-op for flat inputs), linear, activation."""

    def __init__(self, features_in: int, p: dict[str, Any]) -> None:
        super().__init__(
            nn.Flatten(), nn.Linear(features_in, p["units"]), activation(p["activation"])
        )


class Head(nn.Module):
    """Global average pooling when the features are still spatial, then linear to the classes."""

    def __init__(self, shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        spatial = len(shape) >= 2
        self.pool = _layers_for(len(shape) - 1)[4](1) if spatial else nn.Identity()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(shape[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(self.pool(x)))


MAX_PARAMS = 2**31  # 8 GiB of float32 weights: beyond it a genome is a typo or a crafted file


def _check_size(genome: Genome, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Refuse, before allocating anything, a network of more than MAX_PARAMS parameters."""
    from evonas.graph import graph_params
    from evonas.spaces import param_count

    try:
        if genome.is_graph:
            params = graph_params(genome.genes, input_shape)
        else:
            params = param_count(genome, input_shape, num_classes)
    except ValueError:
        return  # shape errors are reported by the build itself, naming the gene
    if params > MAX_PARAMS:
        raise GenomeError(f"genome: {params:,} parameters; evonas builds at most {MAX_PARAMS:,}")


def build(
    genome: Genome | dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Build the network a genome describes for inputs of `input_shape` (no batch dimension)."""
    if isinstance(genome, dict):
        genome = parse_genome(genome)
    if genome.genes and genome.genes[0].op == "edge":
        return build_nb201(genome, input_shape, num_classes)
    _check_size(genome, tuple(input_shape), num_classes)
    if genome.is_graph:
        return build_graph(genome, tuple(input_shape), num_classes)
    shape = tuple(input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for gene in genome.genes:
        p = gene.params
        dims = len(shape) - 1
        if gene.op == "conv":
            layer = ConvLayer(dims, shape[0], p)
        elif gene.op == "residual":
            layer = ResidualBlock(dims, shape[0], p)
        elif gene.op == "pool":
            pool_cls = _layers_for(dims)[2 if p["kind"] == "max" else 3]
            layer = pool_cls(p["size"])
        elif gene.op == "dense":
            features = 1
            for d in shape:
                features *= d
            layer = Dense(features, p)
        else:
            layer = nn.Dropout(p["rate"])
        layers[f"g{gene.id}"] = layer
        shape = _output_shape(layer, shape)
    return nn.Sequential(OrderedDict(body=nn.Sequential(layers), head=Head(shape, num_classes)))


@torch.no_grad()
def _output_shape(layer: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    layer.eval()
    return tuple(layer(torch.zeros(1, *shape)).shape[1:])


def describe(genome: Genome, space, input_shape: tuple[int, ...], num_classes: int) -> list[str]:
    """`evonas genome`: each layer with its output shape, then lr, parameters and FLOPs, and
    what keeps the genome outside the configured space (`space` None: no space to check against;
    ValueError if it cannot be built)."""
    if genome.is_graph:
        lines = describe_graph(genome, input_shape, num_classes)
        problems = space.problems(genome) if space is not None and space.kind == "graph" else []
        return lines + [f"  note: outside the configured space: {p}" for p in problems]
    lines = []
    if space.has_shapes:
        for gene, shape in zip(genome.genes, space.shapes(genome)):
            params = " ".join(f"{k}={v}" for k, v in gene.params.items())
            lines.append(f"  g{gene.id:<11} {gene.op:<9} {params:<60} -> {shape}")
    else:
        lines += [f"  g{gene.id:<11} {gene.summary()}" for gene in genome.genes]
    model = build(genome, input_shape, num_classes)
    flops = count_flops(model, input_shape)
    lines.append(
        f"  lr {genome.training['lr']:g}; {count_params(model):,} parameters; {flops:,} FLOPs"
    )
    problems = space.problems(genome) if space is not None else []
    lines += [f"  note: outside the configured space: {p}" for p in problems]
    return lines


def describe_graph(genome: Genome, input_shape: tuple[int, ...], num_classes: int) -> list[str]:
    """One line per gene: id, op, inputs where they are not the gene before (`x` is the
    input), output shape, parameters and FLOPs; then the totals."""
    from evonas.graph import graph_shapes

    model = build(genome, input_shape, num_classes)
    shapes = graph_shapes(genome.genes, input_shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    flops = {name.rsplit(".", 1)[-1]: sum(c.values())
             for name, c in counter.get_flop_counts().items()}  # fmt: skip
    modules = dict(model.named_children())
    lines, previous = [], 0
    for gene, shape in zip(genome.genes, shapes):
        name = f"g{gene.id}"
        reads = "" if gene.inputs == (previous,) else "<- " + ", ".join(
            "x" if i == 0 else f"g{i}" for i in gene.inputs)  # fmt: skip
        params = count_params(modules[name]) if name in modules else 0
        lines.append(f"  {name:<6} {gene.summary():<30} {reads:<16} -> {str(shape):<16} "
                     f"{params:>11,} params {flops.get(name, 0):>14,} FLOPs")  # fmt: skip
        previous = gene.id
    total = int(counter.get_total_flops())
    lines.append(f"  {len(genome.genes)} genes; lr {genome.training['lr']:g}; "
                 f"{count_params(model):,} parameters; {total:,} FLOPs")  # fmt: skip
    return lines


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one sample, by torch's own flop counter."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_shape, device=device_of(model)))
    model.train(was_training)
    return int(counter.get_total_flops())


# --- NAS-Bench-201 network: the benchmark's macro skeleton around a searched cell ---------------


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _nb201_op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 operation {name!r}")


class Nb201Cell(nn.Module):
    """Node j is the sum of op(i -> j)(node i) over i < j; the cell's output is node 3.
    Edges with `none` are left out, as in the benchmark's inference cell."""

    def __init__(self, edges: list[tuple[int, int, str]], channels: int) -> None:
        super().__init__()
        self.edges = [(t, s) for t, s, op in edges if op != "none"]
        self.ops = nn.ModuleList(_nb201_op(op, channels) for _, _, op in edges if op != "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for target in (1, 2, 3):
            inputs = [op(nodes[s]) for (t, s), op in zip(self.edges, self.ops) if t == target]
            nodes.append(sum(inputs) if inputs else torch.zeros_like(x))
        return nodes[3]


class Nb201Reduction(nn.Module):
    """The benchmark's residual reduction block between stages (stride 2, channels doubled)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def build_nb201(
    genome: Genome, input_shape: tuple[int, ...], num_classes: int, channels: int = 16,
    cells_per_stage: int = 5,
) -> nn.Module:  # fmt: skip
    """The NAS-Bench-201 network: stem, three stages of `cells_per_stage` cells (C, 2C, 4C)
    joined by residual reduction blocks, then BN-ReLU, global pooling and a linear classifier."""
    edges = [(g.params["target"], g.params["source"], g.params["operation"]) for g in genome.genes]
    layers: list[nn.Module] = [
        nn.Conv2d(input_shape[0], channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
    ]
    c = channels
    for stage in range(3):
        if stage:
            layers.append(Nb201Reduction(c, 2 * c))
            c *= 2
        layers += [Nb201Cell(edges, c) for _ in range(cells_per_stage)]
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(c, num_classes)]  # fmt: skip
    return nn.Sequential(*layers)


def size_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (its state_dict's tensors)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@torch.no_grad()
def latency_ms(
    model: nn.Module, input_shape: tuple[int, ...], warmup: int = 3, repeats: int = 15
) -> float:
    """Median wall time of one forward pass of a single sample, in milliseconds, on this
    process's device and threads (after `warmup` untimed passes)."""
    import time

    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape, device=device_of(model))
    cuda = x.is_cuda
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    model.train(was_training)
    return sorted(times)[len(times) // 2]
