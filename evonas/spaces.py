"""Search spaces: the `Space` protocol, the sequential macro space and the NAS-Bench-201 cell.

A space samples genomes, says what keeps a genome out of it, and repairs the output of variation
deterministically. What a space can do beyond that is told by attributes (never probed):

- `kind`: the config's `space.kind`;
- `inherits_weights`: genes map to layers, so a child can start from its parents' weights;
- `enumerates_neighbours`: `neighbors(genome)` lists every genome one step away (local search
  walks them; otherwise it mutates);
- `has_shapes`: `shapes(genome)` gives each gene's output shape;
- `default_operators`, `pruning_operators`: operator weights when the config names none (the
  pruning ones are added when children inherit weights).

`make_space(config)` builds the configured space for its task.

The sequential space: a genome is a chain of layers. Spatial layers (conv, residual, pool) come
first, then flat layers (dense); dropout fits anywhere. The first dense layer flattens the feature
map; a fixed head (global average pooling when the features are still spatial, then a linear
layer to the classes) follows the last gene. The same genome builds Conv1d for (C, L) inputs,
Conv2d for (C, H, W) inputs, and only its dense and dropout layers for flat (F,) inputs. Shapes
are computed here without torch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from evonas.config import LAYER_OPS, SPACE_KINDS, ConfigError
from evonas.genome import SPATIAL_OPS, Gene, Genome
from evonas.graph import graph_depth, graph_params, graph_shapes, output_problem

if TYPE_CHECKING:
    from evonas.config import Config
    from evonas.tasks import TaskInfo


@runtime_checkable
class Space(Protocol):
    kind: str
    inherits_weights: bool
    enumerates_neighbours: bool
    has_shapes: bool
    default_operators: Mapping[str, float]
    pruning_operators: Mapping[str, float]

    def sample(self, rng: random.Random) -> Genome:
        """A random genome of the space."""

    def repair(self, genome: Genome) -> Genome:
        """The genome made feasible, deterministically (operators end with it)."""

    def problems(self, genome: Genome) -> list[str]:
        """Everything that keeps `genome` out of this space; empty when it is in it."""

    def infeasible(self, genome: Genome) -> str | None:
        """Why `genome` cannot be evaluated here (None when it can). Unlike `problems`, values
        outside the space's choices are allowed: a seed may be bigger than what is sampled."""

    def neighbors(self, genome: Genome) -> list[Genome]:
        """Every genome one step away (only when `enumerates_neighbours`)."""

    def shapes(self, genome: Genome) -> list[tuple[int, ...]]:
        """Each gene's output shape (only when `has_shapes`); ValueError if infeasible."""

    def key(self, genome: Genome) -> str | None:
        """The genome's key in a lookup table (None: the space has none)."""


SEQUENTIAL_OPERATORS = {
    "add_layer": 1.0, "remove_layer": 1.0, "change_op": 1.0, "change_width": 1.0,
    "change_kernel": 1.0, "change_activation": 0.5, "change_lr": 1.0, "crossover": 1.0,
}  # fmt: skip
PRUNING_OPERATORS = {"prune": 1.0, "cut": 0.5}
GRAPH_OPERATORS = {
    "insert_gene": 0.5, "insert_block": 0.5, "remove_gene": 0.5, "remove_block": 0.5,
    "add_skip": 0.5, "remove_skip": 0.25, "change_width": 1.0, "change_kernel": 0.5,
    "change_activation": 0.25, "change_groups": 0.25, "change_lr": 1.0, "crossover": 0.5,
}  # fmt: skip


@dataclass(frozen=True)
class SequentialSpace:
    """Bounds of the sequential space; `input_shape` excludes the batch dimension."""

    input_shape: tuple[int, ...]
    num_classes: int
    min_layers: int = 1
    max_layers: int = 6
    ops: tuple[str, ...] = LAYER_OPS
    widths: tuple[int, ...] = (8, 16, 32, 64)
    kernels: tuple[int, ...] = (3, 5, 7)
    strides: tuple[int, ...] = (1, 2)
    dilations: tuple[int, ...] = (1,)
    units: tuple[int, ...] = (32, 64, 128, 256)
    activations: tuple[str, ...] = ("relu", "gelu", "silu")
    dropout_rates: tuple[float, ...] = (0.1, 0.25, 0.5)
    pool_kinds: tuple[str, ...] = ("max", "avg")
    lr_min: float = 1e-4
    lr_max: float = 3e-2
    batch_norm: tuple[bool, ...] = field(default=(True, False))
    prune_fraction: float = 0.25  # share of a layer's channels that `prune` and `cut` remove

    kind = "sequential"
    inherits_weights = True
    enumerates_neighbours = False
    has_shapes = True
    default_operators = SEQUENTIAL_OPERATORS
    pruning_operators = PRUNING_OPERATORS

    @property
    def spatial(self) -> bool:
        return len(self.input_shape) >= 2

    # --- gene ids and genes -------------------------------------------------------------------

    @staticmethod
    def new_gene_id(rng: random.Random) -> int:
        """A fresh stable gene id; random 31-bit ids make collisions across lineages negligible."""
        return rng.randrange(1, 2**31)

    def allowed_ops(self, flat: bool) -> list[str]:
        """Ops allowed at a position whose input is flat (after a dense layer) or spatial."""
        if flat or not self.spatial:
            return [op for op in self.ops if op not in SPATIAL_OPS]
        return list(self.ops)

    def sample_gene(self, op: str, rng: random.Random) -> Gene:
        choice = rng.choice
        if op == "conv":
            params = {
                "width": choice(self.widths),
                "kernel": choice(self.kernels),
                "stride": choice(self.strides),
                "dilation": choice(self.dilations),
                "activation": choice(self.activations),
                "batch_norm": choice(self.batch_norm),
            }
        elif op == "residual":
            params = {
                "width": choice(self.widths),
                "kernel": choice(self.kernels),
                "activation": choice(self.activations),
                "batch_norm": choice(self.batch_norm),
            }
        elif op == "pool":
            params = {"kind": choice(self.pool_kinds), "size": 2}
        elif op == "dense":
            params = {"units": choice(self.units), "activation": choice(self.activations)}
        elif op == "dropout":
            params = {"rate": choice(self.dropout_rates)}
        else:
            raise ValueError(f"unknown op {op!r}")
        return Gene(id=self.new_gene_id(rng), op=op, params=params)

    def sample_lr(self, rng: random.Random) -> float:
        log_lr = rng.uniform(math.log(self.lr_min), math.log(self.lr_max))
        return float(f"{math.exp(log_lr):.3g}")

    def sample(self, rng: random.Random) -> Genome:
        """A random feasible genome: spatial layers first, then flat ones."""
        n_layers = rng.randint(self.min_layers, self.max_layers)
        spatial_ops = [op for op in self.allowed_ops(flat=False) if op in SPATIAL_OPS]
        flat_ops = self.allowed_ops(flat=True)
        n_spatial = rng.randint(0, n_layers) if spatial_ops else 0
        if not flat_ops:
            n_spatial = n_layers
        ops = [rng.choice(spatial_ops) for _ in range(n_spatial)]
        ops += [rng.choice(flat_ops) for _ in range(n_layers - n_spatial)]
        genes = tuple(self.sample_gene(op, rng) for op in ops)
        return self.repair(Genome(genes=genes, training={"lr": self.sample_lr(rng)}))

    # --- shapes, validation, repair -----------------------------------------------------------

    def shapes(self, genome: Genome) -> list[tuple[int, ...]]:
        """Output shape after each gene (channel-first, no batch); ValueError if infeasible."""
        return chain_shapes(genome, self.input_shape)

    def infeasible(self, genome: Genome) -> str | None:
        try:
            self.shapes(genome)
        except ValueError as exc:
            return str(exc)
        return None

    def neighbors(self, genome: Genome) -> list[Genome]:
        raise NotImplementedError("the sequential space does not enumerate neighbours")

    def key(self, genome: Genome) -> str | None:
        return None

    def problems(self, genome: Genome) -> list[str]:
        found = []
        n = len(genome.genes)
        if n > self.max_layers:
            found.append(f"{n} layers, space allows at most {self.max_layers}")
        for index, gene in enumerate(genome.genes):
            found += [f"layer {index}: {p}" for p in self._gene_problems(gene)]
        try:
            self.shapes(genome)
        except ValueError as exc:
            found.append(str(exc))
        lr = genome.training.get("lr", 0)
        if not self.lr_min <= lr <= self.lr_max:
            found.append(f"training.lr {lr} outside [{self.lr_min}, {self.lr_max}]")
        return found

    def _gene_problems(self, gene: Gene) -> list[str]:
        if gene.op not in self.ops:
            return [f"op '{gene.op}' is not in the space's ops {list(self.ops)}"]
        choices = {
            "width": self.widths,
            "kernel": self.kernels,
            "stride": self.strides,
            "dilation": self.dilations,
            "activation": self.activations,
            "units": self.units,
            "rate": self.dropout_rates,
            "kind": self.pool_kinds,
            "batch_norm": self.batch_norm,
        }
        found = []
        for key, value in gene.params.items():
            if key in ("width", "units"):
                # the list holds the sampling choices; pruning makes any size up to the largest
                if not (isinstance(value, int) and 1 <= value <= max(choices[key])):
                    found.append(f"{key}={value!r} not in 1..{max(choices[key])}")
            elif key in choices and value not in choices[key]:
                found.append(f"{key}={value!r} not in {list(choices[key])}")
        return found

    def repair(self, genome: Genome) -> Genome:
        """Deterministically make a genome feasible for this input shape.

        Drops spatial layers that come after the features were flattened (or for flat inputs) and
        pooling that would shrink a dimension below 1, turns strides that cannot apply into 1,
        drops repeated gene ids, clips the learning rate, and truncates to `max_layers`.
        """
        shape = tuple(self.input_shape)
        flat = not self.spatial
        kept: list[Gene] = []
        seen: set[int] = set()
        for gene in genome.genes:
            if gene.id in seen or (flat and gene.op in SPATIAL_OPS):
                continue
            if gene.op == "pool" and min(shape[1:]) < gene.params["size"]:
                continue
            if gene.op == "conv" and min(shape[1:] or (1,)) < gene.params["stride"]:
                gene = gene.with_params(stride=1)
            shape, flat = _next_shape(gene, shape, flat, where=gene.op)
            kept.append(gene)
            seen.add(gene.id)
        lr = min(max(genome.training.get("lr", 1e-3), self.lr_min), self.lr_max)
        return Genome(genes=tuple(kept[: self.max_layers]), training={**genome.training, "lr": lr})


def chain_shapes(genome: Genome, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Output shape after each gene of a sequential genome; ValueError if infeasible."""
    shape, flat = tuple(input_shape), len(input_shape) < 2
    shapes = []
    for index, gene in enumerate(genome.genes):
        shape, flat = _next_shape(gene, shape, flat, where=f"layer {index} ({gene.op})")
        shapes.append(shape)
    return shapes


def param_count(genome: Genome, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Parameters of the network `evonas.build` makes from a sequential genome, without torch."""
    total = 0
    shape = tuple(input_shape)
    for gene, out_shape in zip(genome.genes, chain_shapes(genome, input_shape)):
        p, c_in = gene.params, shape[0]
        if gene.op == "conv":
            width, taps = p["width"], p["kernel"] ** (len(shape) - 1)
            total += c_in * width * taps + (2 * width if p["batch_norm"] else width)
        elif gene.op == "residual":
            width, taps = p["width"], p["kernel"] ** (len(shape) - 1)
            extra = 4 * width if p["batch_norm"] else 2 * width
            total += (c_in + width) * width * taps + extra + (c_in * width if c_in != width else 0)
        elif gene.op == "dense":
            total += math.prod(shape) * p["units"] + p["units"]
        shape = out_shape
    return total + shape[0] * num_classes + num_classes


def _conv_length(length: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Output length of a 'same'-padded convolution (padding dilation * (kernel // 2))."""
    span = dilation * (kernel - 1) + 1
    return (length + 2 * dilation * (kernel // 2) - span) // stride + 1


def _next_shape(
    gene: Gene, shape: tuple[int, ...], flat: bool, where: str
) -> tuple[tuple[int, ...], bool]:
    p = gene.params
    if gene.op in SPATIAL_OPS and flat:
        raise ValueError(f"{where}: spatial layer after the features were flattened")
    if gene.op == "conv":
        dims = tuple(
            _conv_length(d, p["kernel"], p["stride"], p.get("dilation", 1)) for d in shape[1:]
        )
        return (p["width"], *dims), False
    if gene.op == "residual":
        dims = tuple(_conv_length(d, p["kernel"], 1) for d in shape[1:])
        return (p["width"], *dims), False
    if gene.op == "pool":
        if min(shape[1:]) < p["size"]:
            raise ValueError(
                f"{where}: pooling size {p['size']} on a length-{min(shape[1:])} signal"
            )
        return (shape[0], *(d // p["size"] for d in shape[1:])), False
    if gene.op == "dense":
        return (p["units"],), True
    return shape, flat  # dropout


# --- graphs around seeds ----------------------------------------------------------------------


@dataclass(frozen=True)
class GraphSpace:
    """Graph genomes (imported models; imported chains too) searched around their seeds: there
    is no random prior over arbitrary graphs, so generation 0 is the seeds and their mutants,
    and every child comes from a parent (`evonas.graph_operators`). Limits on depth (convolutions
    and linears on the longest path), width (channels of any layer) and parameters are checked
    before anything is trained. Chain seeds (an imported VGG) take only the learning-rate
    operator here."""

    input_shape: tuple[int, ...]
    num_classes: int
    lr_min: float = 1e-4
    lr_max: float = 3e-2
    prune_fraction: float = 0.25
    kernels: tuple[int, ...] = (3, 5, 7)
    activations: tuple[str, ...] = ("relu", "gelu", "silu")
    max_depth: int = 256
    max_width: int = 4096
    max_params: int | None = None

    kind = "graph"
    inherits_weights = True
    enumerates_neighbours = False
    has_shapes = True
    default_operators = GRAPH_OPERATORS
    pruning_operators = PRUNING_OPERATORS

    def sample(self, rng: random.Random) -> Genome:
        raise ConfigError(
            "space.kind: graph has no random graphs; it starts from search.seed_genomes or "
            "search.seed_run with search.seed_fill: mutate"
        )

    def repair(self, genome: Genome) -> Genome:
        lr = min(max(genome.training.get("lr", 1e-3), self.lr_min), self.lr_max)
        return Genome(genes=genome.genes, training={**genome.training, "lr": lr})

    def limits_problem(self, genome: Genome) -> str | None:
        """Which of the space's limits a valid graph exceeds (None when none)."""
        depth = graph_depth(genome.genes)
        if depth > self.max_depth:
            return (f"depth {depth} (convolutions and linears on the longest path) is over "
                    f"space.max_depth {self.max_depth}")  # fmt: skip
        widths = [g.params.get("channels", g.params.get("features", 0)) for g in genome.genes[:-1]]
        if widths and max(widths) > self.max_width:
            return f"a layer of {max(widths)} channels is over space.max_width {self.max_width}"
        if self.max_params is not None:
            params = graph_params(genome.genes, self.input_shape)
            if params > self.max_params:
                return f"{params} parameters is over space.max_params {self.max_params}"
        return None

    def infeasible(self, genome: Genome) -> str | None:
        if not genome.is_graph:  # an imported chain (VGG) searched beside graphs
            try:
                chain_shapes(genome, self.input_shape)
            except ValueError as exc:
                return str(exc)
            return None
        return output_problem(genome.genes, self.input_shape, self.num_classes) or (
            self.limits_problem(genome)
        )

    def problems(self, genome: Genome) -> list[str]:
        found = [p for p in [self.infeasible(genome)] if p]
        lr = genome.training.get("lr", 0)
        if not self.lr_min <= lr <= self.lr_max:
            found.append(f"training.lr {lr} outside [{self.lr_min}, {self.lr_max}]")
        return found

    def shapes(self, genome: Genome) -> list[tuple[int, ...]]:
        if not genome.is_graph:
            return chain_shapes(genome, self.input_shape)
        return graph_shapes(genome.genes, self.input_shape)

    def neighbors(self, genome: Genome) -> list[Genome]:
        raise NotImplementedError("the graph space does not enumerate neighbours")

    def key(self, genome: Genome) -> str | None:
        return None


# --- NAS-Bench-201 cell space ----------------------------------------------------------------

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (target, source), string order


class Nb201Space:
    """The NAS-Bench-201 cell: 4 nodes, 6 edges (gene ids 1..6), one of 5 ops on each edge.

    String format as in the benchmark: `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (node j lists its
    incoming edges `op~i`). The learning rate is a training gene kept at `lr` (a table lookup
    ignores it; a real training of the cell uses it).
    """

    kind = "nb201"
    inherits_weights = False
    enumerates_neighbours = True
    has_shapes = False
    default_operators = {"mutate_edge": 1.0, "crossover_edges": 0.5}
    pruning_operators: Mapping[str, float] = {}

    def __init__(self, ops: tuple[str, ...] = NB201_OPS, lr: float = 0.1) -> None:
        unknown = [op for op in ops if op not in NB201_OPS]
        if unknown:
            raise ValueError(f"unknown NAS-Bench-201 ops {unknown}; expected {list(NB201_OPS)}")
        self.ops = tuple(ops)
        self.lr = lr
        self._strings: dict[str, str] = {}

    def genome(self, operations: list[str]) -> Genome:
        return _nb201_genome(tuple(operations), self.lr)

    def sample(self, rng: random.Random) -> Genome:
        return self.genome([rng.choice(self.ops) for _ in NB201_EDGES])

    def repair(self, genome: Genome) -> Genome:
        return genome

    def problems(self, genome: Genome) -> list[str]:
        found = []
        if len(genome.genes) != len(NB201_EDGES):
            return [f"{len(genome.genes)} genes; a NAS-Bench-201 cell has {len(NB201_EDGES)} edges"]
        for gene, (target, source) in zip(genome.genes, NB201_EDGES):
            p = gene.params
            if gene.op != "edge" or (p.get("target"), p.get("source")) != (target, source):
                found.append(f"gene {gene.id}: expected edge {target}<-{source}")
            elif p["operation"] not in self.ops:
                found.append(
                    f"gene {gene.id}: operation {p['operation']!r} not in {list(self.ops)}"
                )
        return found

    def infeasible(self, genome: Genome) -> str | None:
        structural = [p for p in self.problems(genome) if "not in" not in p]
        return structural[0] if structural else None

    def shapes(self, genome: Genome) -> list[tuple[int, ...]]:
        raise NotImplementedError("a NAS-Bench-201 cell has no per-gene shapes")

    def key(self, genome: Genome) -> str | None:
        key = genome.arch_key()
        if key not in self._strings:  # a table search asks for every cell's string
            self._strings[key] = self.to_string(genome)
        return self._strings[key]

    def operations(self, genome: Genome) -> list[str]:
        return [gene.params["operation"] for gene in genome.genes]

    def to_string(self, genome: Genome) -> str:
        ops = self.operations(genome)
        nodes, index = [], 0
        for target in (1, 2, 3):
            nodes.append("|" + "|".join(f"{ops[index + s]}~{s}" for s in range(target)) + "|")
            index += target
        return "+".join(nodes)

    def from_string(self, text: str) -> Genome:
        operations = []
        nodes = text.split("+")
        if len(nodes) != 3:
            raise ValueError(f"not a NAS-Bench-201 cell string: {text!r}")
        for target, node in enumerate(nodes, start=1):
            edges = [e for e in node.strip("|").split("|") if e]
            if len(edges) != target:
                raise ValueError(f"node {target} of {text!r} must list {target} edges")
            for source, edge in enumerate(edges):
                op, _, index = edge.partition("~")
                if index != str(source) or op not in NB201_OPS:
                    raise ValueError(f"bad edge {edge!r} in {text!r}")
                operations.append(op)
        return self.genome(operations)

    def neighbors(self, genome: Genome) -> list[Genome]:
        """Every cell that differs in exactly one edge (gene ids kept)."""
        return list(_nb201_neighbors(tuple(self.operations(genome)), self.ops, self.lr))


@lru_cache(maxsize=16384)
def _nb201_genome(operations: tuple[str, ...], lr: float) -> Genome:
    """Shared immutable genomes: the cell space is small; cached arch keys make lookups cheap."""
    genes = tuple(_nb201_edge(i, op) for i, op in enumerate(operations))
    return Genome(genes=genes, training={"lr": lr})


@lru_cache(maxsize=64)
def _nb201_edge(index: int, operation: str) -> Gene:
    target, source = NB201_EDGES[index]
    return Gene(index + 1, "edge", {"target": target, "source": source, "operation": operation})


@lru_cache(maxsize=4096)
def _nb201_neighbors(ops: tuple[str, ...], choices: tuple[str, ...], lr: float) -> tuple:
    return tuple(
        _nb201_genome(ops[:i] + (op,) + ops[i + 1 :], lr)
        for i, current in enumerate(ops)
        for op in choices
        if op != current
    )


def make_space(config: Config) -> tuple[Space, TaskInfo | None]:
    """The configured search space, and what it knows of its task (None for table lookups).
    Loads the task's data: a missing dataset or user module is an error here."""
    from evonas.tasks import task_info

    kind, task_name = config.space.kind, config.task.name
    if kind == "nb201":
        if task_name == "table":
            return Nb201Space(), None
        return Nb201Space(lr=config.space.lr_max), task_info(config.task.model_dump())
    if task_name == "table":
        raise ConfigError("task.name: the table task looks up cells; use space.kind: nb201")
    info = task_info(config.task.model_dump())
    if kind not in SPACE_KINDS:
        return _plugin_space(kind, config, info), info
    if kind == "graph":
        s = config.space
        return GraphSpace(info.input_shape, info.num_classes, s.lr_min, s.lr_max,
                          s.prune_fraction, tuple(s.kernels), tuple(s.activations), s.max_depth,
                          s.max_width, s.max_params), info  # fmt: skip
    return sequential_space(config, info), info


def sequential_space(config: Config, info: TaskInfo) -> SequentialSpace:
    """The sequential space of `config.space`'s choices for a task (a plugin space may build on
    it)."""
    graph_only = {"max_depth", "max_width", "max_params"}
    settings = config.space.model_dump(exclude={"kind", *graph_only})
    return SequentialSpace(
        info.input_shape, info.num_classes,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()},
    )  # fmt: skip


def _plugin_space(ref: str, config: Config, info: TaskInfo) -> Space:
    """A user's space: `factory(config, task info)` returns an object of the `Space` protocol,
    whose genomes the built-in trainer can build (chains or graphs)."""
    from evonas.plugins import PluginError, load_callable

    space = load_callable(ref, what="space.kind")(config, info)
    if not isinstance(space, Space):
        raise PluginError(f"space.kind: {ref} made a {type(space).__name__}, not a Space (the "
                          "protocol in evonas.spaces)")  # fmt: skip
    return space
