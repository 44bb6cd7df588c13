"""Graph genome -> `torch.fx.GraphModule`: one submodule `g<id>` per weighted or stateful gene, so
parameter names follow the genome's stable gene ids (`g12.weight`), and generated Python code that
calls them in the genome's order. A generated module traces, scripts and exports to ONNX like any
hand-written one, and `print(model.code)` shows what it computes.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn

from evonas.genome import Genome
from evonas.graph import INPUT, GraphError, graph_shapes, logits_problem


def _nd(classes: tuple[type, type], dims: int) -> type:
    return classes[0] if dims <= 1 else classes[1]


def _activation(p: dict[str, Any]) -> nn.Module:
    name = p["function"]
    if name == "leaky_relu":
        return nn.LeakyReLU(p["negative_slope"])
    if name == "elu":
        return nn.ELU(p["alpha"])
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU, "silu": nn.SiLU,
            "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid, "sigmoid": nn.Sigmoid,
            "tanh": nn.Tanh}[name]()  # fmt: skip


def gene_module(op: str, p: dict[str, Any], shape: tuple[int, ...]) -> nn.Module | None:
    """The module of a gene reading `shape`, or None for the ops that are plain functions."""
    dims = len(shape) - 1
    if op == "convolution":
        conv = _nd((nn.Conv1d, nn.Conv2d), dims)
        return conv(shape[0], p["channels"], p["kernel"], stride=p["stride"],
                    padding=p["padding"], dilation=p["dilation"], groups=p["groups"],
                    bias=p["bias"])  # fmt: skip
    if op == "batch_norm":
        return _nd((nn.BatchNorm1d, nn.BatchNorm2d), dims)(shape[0], p["eps"], p["momentum"])
    if op == "activation":
        return _activation(p)
    if op == "max_pool":
        pool = _nd((nn.MaxPool1d, nn.MaxPool2d), dims)
        return pool(p["kernel"], p["stride"], p["padding"], p["dilation"],
                    ceil_mode=p["ceil_mode"])  # fmt: skip
    if op == "avg_pool":
        pool = _nd((nn.AvgPool1d, nn.AvgPool2d), dims)
        return pool(p["kernel"], p["stride"], p["padding"], p["ceil_mode"],
                    p["count_include_pad"])  # fmt: skip
    if op == "adaptive_avg_pool":
        return _nd((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d), dims)(p["size"])
    if op == "adaptive_max_pool":
        return _nd((nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d), dims)(p["size"])
    if op == "linear":
        return nn.Linear(shape[0], p["features"], bias=p["bias"])
    if op == "dropout":
        return nn.Dropout(p["rate"])
    if op == "channel_dropout":
        return _nd((nn.Dropout1d, nn.Dropout2d), dims)(p["rate"])
    return None


def build_graph(genome: Genome, input_shape: tuple[int, ...], num_classes: int) -> fx.GraphModule:
    """The network of a graph genome for inputs of `input_shape` (no batch dimension);
    GraphError names the gene that does not fit."""
    inferred = graph_shapes(genome.genes, input_shape)
    problem = logits_problem(genome.genes, inferred, num_classes)
    if problem:
        raise GraphError(problem)
    shapes = dict(zip((g.id for g in genome.genes), inferred))
    shapes[INPUT] = tuple(input_shape)
    graph = fx.Graph()
    modules: dict[str, nn.Module] = {}
    values: dict[int, fx.Node] = {INPUT: graph.placeholder("x")}
    for gene in genome.genes:
        inputs = [values[i] for i in gene.inputs]
        name, p = f"g{gene.id}", gene.params
        module = gene_module(gene.op, p, shapes[gene.inputs[0]])
        if module is not None:
            modules[name] = module
            values[gene.id] = graph.call_module(name, (inputs[0],))
        elif gene.op in ("add", "multiply"):
            combine = operator.add if gene.op == "add" else operator.mul
            node = inputs[0]
            for other in inputs[1:]:
                node = graph.call_function(combine, (node, other))
            values[gene.id] = node
        elif gene.op == "concat":
            values[gene.id] = graph.call_function(torch.cat, (tuple(inputs), 1))
        elif gene.op == "global_avg_pool":
            spatial = tuple(range(2, len(shapes[gene.inputs[0]]) + 1))
            values[gene.id] = graph.call_function(torch.mean, (inputs[0], spatial))
        elif gene.op == "flatten":
            values[gene.id] = graph.call_function(torch.flatten, (inputs[0], 1))
        elif gene.op == "reshape":
            shape = (-1, *p["shape"])
            values[gene.id] = graph.call_function(torch.reshape, (inputs[0], shape))
        elif gene.op == "scale":
            node = inputs[0]
            if p["factor"] != 1.0:
                node = graph.call_function(operator.mul, (node, p["factor"]))
            if p["shift"] != 0.0:
                node = graph.call_function(operator.add, (node, p["shift"]))
            values[gene.id] = node
        else:  # identity
            values[gene.id] = inputs[0]
    graph.output(values[genome.genes[-1].id])
    root = nn.Module()
    for name, module in modules.items():
        root.add_module(name, module)
    return fx.GraphModule(root, graph, class_name="GraphNet")
