"""Channel groups: evonas's analysis of the genome against Torch-Pruning's DepGraph of the module.

    pip install torch-pruning   # not an evonas dependency; only this comparison needs it
    .venv/bin/python benchmarks/channel_groups.py [--width 0.25] [--models a,b]

For each model of the coverage set (tests/model_zoo.py), evonas imports it and computes its channel
groups from the genome (`evonas.channels`); DepGraph traces the module itself (the classifier
ignored, as usual). Groups are compared by the set of convolutions and linears in them (evonas's
gene ids mapped back to module names), then by width and by which layers produce the channels and
which are depthwise. Prints one line per model; exits 1 if a group differs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evonas.channels import channel_groups  # noqa: E402
from evonas.genome import parse_genome  # noqa: E402
from evonas.graph_import import map_graph, to_graph_genome, trace  # noqa: E402
from tests.model_zoo import ZOO  # noqa: E402

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def ours(model: nn.Module, shape) -> tuple[dict[frozenset, tuple], float]:
    """{layer names: (width, producers, depthwise)} of evonas's prunable groups, and the seconds
    the analysis of the genome took (the import not counted)."""
    genes, names = _genes_and_names(model, shape)
    found = {}
    started = time.perf_counter()
    groups = channel_groups(genes, shape).prunable()
    seconds = time.perf_counter() - started
    for group in groups:
        producers = frozenset(names[i] for i in group.producers)
        depthwise = frozenset(names[i] for i in group.depthwise)
        found[producers | depthwise] = (group.width, producers, depthwise)
    return found, seconds


def _genes_and_names(model, shape):
    """The graph genes of a model (as `evonas import` makes them) and each weighted gene's
    module name."""
    names = {module: name for name, module in model.named_modules()}
    data, modules = to_graph_genome(map_graph(trace(model, torch.randn(2, *shape))))
    genes = parse_genome(data).genes
    return genes, {gene_id: names[module] for gene_id, module in modules.items()}


def depgraph(model: nn.Module, shape) -> tuple[dict[frozenset, tuple], float]:
    import torch_pruning as tp

    names = {module: name for name, module in model.named_modules()}
    final = [m for m in model.modules() if isinstance(m, LAYERS)][-1]
    started = time.perf_counter()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, *shape))
    groups = list(graph.get_all_groups(ignored_layers=[final], root_module_types=list(LAYERS)))
    seconds = time.perf_counter() - started
    found = {}
    for group in groups:
        producers, depthwise = set(), set()
        for dependency, _ in group:
            module = dependency.target.module
            if not isinstance(module, LAYERS):
                continue
            convolution = isinstance(module, nn.Conv1d | nn.Conv2d)
            is_depthwise = (
                convolution
                and module.groups > 1
                and (module.groups == module.in_channels == module.out_channels)
            )
            if is_depthwise:
                depthwise.add(names[module])
            elif graph.is_out_channel_pruning_fn(dependency.handler):
                producers.add(names[module])
        width = len(group[0].idxs)
        if width > 1:  # evonas does not count a group of one channel as prunable
            found[frozenset(producers | depthwise)] = (width, frozenset(producers),
                                                       frozenset(depthwise))  # fmt: skip
    return found, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier")
    parser.add_argument("--models", default=",".join(ZOO), help="comma-separated names")
    args = parser.parse_args()
    try:
        import torch_pruning
    except ImportError:
        print("skipped: torch-pruning is not installed (pip install torch-pruning)")
        return 0
    print(f"torch-pruning {getattr(torch_pruning, '__version__', '?')}, torch {torch.__version__}")
    torch.set_num_threads(1)
    differ = 0
    for name in args.models.split(","):
        factory, shape = ZOO[name]
        if name == "vgg11_bn":  # imports as a chain: no graph, no groups to compare
            continue
        torch.manual_seed(0)
        model = factory(classes=10, channels=shape[0], width=args.width).eval()
        mine, analysis = ours(model, shape)
        theirs, seconds = depgraph(model, shape)
        same = sum(mine[k] == theirs[k] for k in mine.keys() & theirs.keys())
        differ += len(mine) + len(theirs) - 2 * same
        print(f"{name:20s} evonas {len(mine):3d} groups, DepGraph {len(theirs):3d}, "
              f"identical {same:3d}  (evonas {analysis * 1000:.1f} ms from the genome, "
              f"DepGraph {seconds * 1000:.0f} ms from the module)")  # fmt: skip
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
