"""Genomes: frozen plain data that describe an architecture and its training genes.

A genome is an ordered tuple of genes. Each gene has a stable id (kept by mutation, crossover and
pruning, like NEAT's innovation numbers), an op name and its parameters. Training genes (the
learning rate) travel with the architecture. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from evonas.graph import (
    GRAPH_ONLY_OPS,
    GRAPH_OPS,
    INPUT,
    MAX_GENES,
    MAX_SIZE,
    OUTPUT_FUNCTIONS,
    GraphError,
    canonical,
    gene_summary,
    link,
    parse_graph_params,
)

# op -> {param: type(s)}; the search space decides which values are allowed.
OP_PARAMS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "conv": {
        "width": int,
        "kernel": int,
        "stride": int,
        "dilation": int,
        "activation": str,
        "batch_norm": bool,
    },
    "residual": {"width": int, "kernel": int, "activation": str, "batch_norm": bool},
    "pool": {"kind": str, "size": int},
    "dense": {"units": int, "activation": str},
    "dropout": {"rate": (float, int)},
    # NAS-Bench-201 cell space: one gene per edge target <- source of the 4-node cell
    "edge": {"target": int, "source": int, "operation": str},
}
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "elu")  # of chain layers (config.Activation)
ZERO_ALLOWED = frozenset({"source"})  # integer parameters that may be 0
OPTIONAL = {"conv": {"dilation": 1}}  # parameters a genome file may leave out: their defaults
SPATIAL_OPS = frozenset({"conv", "residual", "pool"})
# What a genome file may say about where it came from (written by `evonas import`).
HEADER_KEYS = ("source", "input_shape", "num_classes", "output_function")
TRAINING_PARAMS: dict[str, type | tuple[type, ...]] = {"lr": (float, int)}


# Sorted keys, no spaces: the form arch keys are hashed from (one encoder, made once).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


class GenomeError(ValueError):
    """A genome file or dict that is not a valid genome; the message names the bad field."""


@dataclass(frozen=True)
class Gene:
    id: int
    op: str
    params: dict[str, Any]
    inputs: tuple[int, ...] | None = None  # graph genes: the ids they read (0: the input)

    def with_params(self, **changes: Any) -> Gene:
        return replace(self, params={**self.params, **changes})

    def to_dict(self) -> dict[str, Any]:
        data = {"id": self.id, "op": self.op, **self.params}
        if self.inputs is not None:
            data["inputs"] = list(self.inputs)
        return data

    @cached_property
    def json(self) -> str:
        """This gene in the genome's JSON (made once: genes are shared by many genomes)."""
        return _CANONICAL.encode(self.to_dict())

    @cached_property
    def canonical(self) -> str:
        """This gene in the architecture key's canonical form (op and parameters, no id)."""
        return _CANONICAL.encode([self.op, sorted(self.params.items())])

    def summary(self) -> str:
        p = self.params
        if self.inputs is not None:
            return gene_summary(self)
        if self.op in ("conv", "residual"):
            parts = [self.op, str(p["width"]), f"k{p['kernel']}"]
            parts += [f"s{p['stride']}"] if p.get("stride", 1) != 1 else []
            parts += [f"d{p['dilation']}"] if p.get("dilation", 1) != 1 else []
            parts += [p["activation"]] + (["bn"] if p.get("batch_norm") else [])
            return " ".join(parts)
        if self.op == "pool":
            return f"pool {p['kind']}{p['size']}"
        if self.op == "dense":
            return f"dense {p['units']} {p['activation']}"
        if self.op == "dropout":
            return f"dropout {p['rate']:g}"
        if self.op == "edge":
            return f"{p['source']}->{p['target']} {p['operation']}"
        return self.op


@dataclass(frozen=True)
class Genome:
    genes: tuple[Gene, ...]
    training: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3})

    def to_dict(self) -> dict[str, Any]:
        """Plain data; treat it as read-only (it is made once per genome)."""
        return self._dict

    @property
    def is_graph(self) -> bool:
        """Genes wired by `inputs` (a chain's genes follow each other into a fixed head)."""
        return bool(self.genes) and self.genes[0].inputs is not None

    @cached_property
    def _dict(self) -> dict[str, Any]:
        layers = [g.to_dict() for g in self.genes]
        if self.is_graph:  # a gene that reads the one before says nothing about its inputs
            previous = INPUT
            for layer, gene in zip(layers, self.genes):
                if gene.inputs == (previous,):
                    del layer["inputs"]
                previous = gene.id
        return {"layers": layers, "training": dict(self.training)}

    def to_json(self) -> str:
        return self._json

    @cached_property
    def _json(self) -> str:
        if self.is_graph:
            return _CANONICAL.encode(self._dict)
        # json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")), from the genes' parts
        training = _CANONICAL.encode(self.training)
        return f'{{"layers":[{",".join(g.json for g in self.genes)}],"training":{training}}}'

    def arch_key(self) -> str:
        """Canonical hash of the architecture and training genes, ignoring gene ids."""
        cached = self.__dict__.get("_arch_key")  # faster than the descriptor on hot paths
        return cached if cached is not None else self._arch_key

    @cached_property
    def _arch_key(self) -> str:
        # the sha256 of {"layers": [[op, sorted(params)], ...], "training": sorted(training)} in
        # canonical JSON, assembled from the genes' cached parts
        layers = ",".join(g.canonical for g in self.genes)
        if self.is_graph:
            layers = "graph:" + canonical(self.genes)
        training = _CANONICAL.encode(sorted(self.training.items()))
        blob = f'{{"layers":[{layers}],"training":{training}}}'
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def gene_ids(self) -> list[int]:
        return [g.id for g in self.genes]

    def summary(self) -> str:
        """One readable line: `conv 16 k3 -> pool max -> dense 64 (lr 0.003)`."""
        if self.is_graph and len(self.genes) > 8:  # too long for one line: count the ops
            counts = Counter(g.op for g in self.genes)
            ops = ", ".join(f"{n} {op}" for op, n in counts.most_common())
            layers = f"graph of {len(self.genes)} genes ({ops})"
        else:
            layers = " -> ".join(gene.summary() for gene in self.genes) or "(head only)"
        return f"{layers} (lr {self.training.get('lr', 0):.3g})"

    @staticmethod
    def from_dict(data: Any, where: str = "genome") -> Genome:
        return parse_genome(data, where)


def parse_genome(data: Any, where: str = "genome") -> Genome:
    """Validate a plain dict (from JSON/YAML) and return a Genome; errors name the field."""
    if not isinstance(data, dict):
        raise GenomeError(f"{where}: expected a mapping with 'layers' and 'training'")
    unknown = set(data) - {"layers", "training", *HEADER_KEYS}
    if unknown:
        raise GenomeError(f"{where}: unknown key '{sorted(unknown)[0]}'")
    output = data.get("output_function")
    if output is not None and output not in OUTPUT_FUNCTIONS:
        raise GenomeError(f"{where}.output_function: expected one of {list(OUTPUT_FUNCTIONS)}")
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise GenomeError(f"{where}.layers: expected a list of layers")
    if len(layers) > MAX_GENES:
        raise GenomeError(f"{where}.layers: {len(layers)} genes; evonas takes at most {MAX_GENES}")
    graph = any(
        isinstance(item, dict) and ("inputs" in item or item.get("op") in GRAPH_ONLY_OPS)
        for item in layers
    )
    genes = tuple(_parse_gene(item, f"{where}.layers[{i}]", graph) for i, item in enumerate(layers))
    ids = [g.id for g in genes]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise GenomeError(f"{where}.layers: gene id {duplicate} appears twice")
    if graph:
        try:
            genes = link(genes, where)
        except GraphError as exc:
            raise GenomeError(str(exc)) from None
    training = data.get("training", {"lr": 1e-3})
    if not isinstance(training, dict):
        raise GenomeError(f"{where}.training: expected a mapping such as {{lr: 0.001}}")
    for key, value in training.items():
        expected = TRAINING_PARAMS.get(key)
        if expected is None:
            raise GenomeError(f"{where}.training.{key}: unknown training gene")
        if isinstance(value, bool) or not isinstance(value, expected):
            raise GenomeError(f"{where}.training.{key}: expected a number, got {value!r}")
        if not value > 0:
            raise GenomeError(f"{where}.training.{key}: must be > 0, got {value!r}")
    training = {"lr": 1e-3, **{k: float(v) for k, v in training.items()}}
    return Genome(genes=genes, training=training)


def _parse_gene(item: Any, where: str, graph: bool) -> Gene:
    if not isinstance(item, dict):
        raise GenomeError(f"{where}: expected a mapping with 'id' and 'op'")
    gene_id, op = item.get("id"), item.get("op")
    if isinstance(gene_id, bool) or not isinstance(gene_id, int) or gene_id < 0:
        raise GenomeError(f"{where}.id: expected a non-negative integer, got {gene_id!r}")
    if graph:
        if op not in GRAPH_OPS:
            raise GenomeError(
                f"{where}.op: expected a graph op, one of {sorted(GRAPH_OPS)}, got {op!r} "
                "(a genome is either a chain of layers or a graph of primitive ops)"
            )
        try:
            params, inputs = parse_graph_params(item, op, where)
        except GraphError as exc:
            raise GenomeError(str(exc)) from None
        return Gene(id=gene_id, op=op, params=params, inputs=inputs)
    if op not in OP_PARAMS:
        raise GenomeError(
            f"{where}.op: expected one of {sorted(OP_PARAMS)} (chain layers) or "
            f"{sorted(GRAPH_OPS)} (graph ops), got {op!r}"
        )
    spec = OP_PARAMS[op]
    params = {**OPTIONAL.get(op, {}), **{k: v for k, v in item.items() if k not in ("id", "op")}}
    for key in params:
        if key not in spec:
            raise GenomeError(f"{where}.{key}: unknown parameter for op '{op}'")
    for key, expected in spec.items():
        if key not in params:
            raise GenomeError(f"{where}.{key}: missing (op '{op}' needs {sorted(spec)})")
        value = params[key]
        wrong_bool = isinstance(value, bool) and expected is not bool
        if wrong_bool or not isinstance(value, expected):
            name = expected.__name__ if isinstance(expected, type) else "number"
            raise GenomeError(f"{where}.{key}: expected {name}, got {value!r}")
        lowest = 0 if key in ZERO_ALLOWED else 1
        if isinstance(value, int) and not isinstance(value, bool) and value < lowest:
            raise GenomeError(f"{where}.{key}: must be >= {lowest}, got {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_SIZE:
            raise GenomeError(f"{where}.{key}: must be <= {MAX_SIZE}, got {value!r}")
    if op == "dropout":
        if not 0 <= params["rate"] < 1:
            raise GenomeError(f"{where}.rate: must be in [0, 1), got {params['rate']!r}")
        params["rate"] = float(params["rate"])
    if "activation" in params and params["activation"] not in ACTIVATIONS:
        raise GenomeError(f"{where}.activation: expected one of {list(ACTIVATIONS)}, got "
                          f"{params['activation']!r}")  # fmt: skip
    if op == "pool" and params["kind"] not in ("max", "avg"):
        raise GenomeError(f"{where}.kind: expected 'max' or 'avg', got {params['kind']!r}")
    return Gene(id=gene_id, op=op, params=params)


def load_genome(path: str | Path) -> Genome:
    """Read a genome from a .yaml/.yml/.json file (safe loaders only)."""
    return parse_genome(_read(Path(path)), where=str(path))


def genome_header(path: str | Path) -> dict[str, Any]:
    """What a genome file says it was made for (`HEADER_KEYS`: input shape, classes, ...);
    call after `load_genome` has checked the file."""
    data = _read(Path(path))
    header = {key: data[key] for key in HEADER_KEYS if key in data}
    shape = header.get("input_shape")
    valid = isinstance(shape, list) and shape and all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)  # fmt: skip
    classes = header.get("num_classes")
    if not valid or isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        header.pop("input_shape", None)
        header.pop("num_classes", None)
    return header


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise GenomeError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise GenomeError(f"{path}: not a text file (a YAML or JSON genome expected)") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first_line = str(exc).splitlines()[0]
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise GenomeError(f"{path}: not valid {kind} ({first_line})") from None
    return data


def save_genome(genome: Genome, path: str | Path) -> None:
    path = Path(path)
    data = genome.to_dict()
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data)
    path.write_text(text)
