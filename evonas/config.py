"""Run configuration: typed sections (pydantic), presets, YAML files and dotted `--set` overrides.

Precedence: defaults < preset or config file < `--set key=value` < dedicated CLI flags. Unknown
keys, wrong types and impossible values raise ConfigError with a one-line message naming the key
(and the closest known key for a typo). This module is also the one place for the names a user
can write in a config: backends, layer ops, activations, optimizers, strategies, operators.
`Config.model_json_schema()` (`evonas config schema`) lets editors complete and check YAML files.
"""

from __future__ import annotations

import copy
import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from evonas.constraints import Constraint
from evonas.genome import ACTIVATIONS as GENOME_ACTIVATIONS
from evonas.graph import MAX_SIZE
from evonas.objectives import Objective


class ConfigError(ValueError):
    """A configuration problem; the message names the key and what was expected."""


# --- the names a config may use -----------------------------------------------------------------

Backend = Literal["loky", "dask", "ray", "inline"]
LayerOp = Literal["conv", "residual", "pool", "dense", "dropout"]
Activation = Literal[GENOME_ACTIVATIONS]  # the activations chain genomes take
OptimizerName = Literal["adam", "adamw", "sgd"]
StrategyName = Literal["auto", "nsga2", "tournament", "regularized", "local", "random", "gradient"]
SpaceKind = Literal["sequential", "nb201", "graph"]
BACKENDS: tuple[str, ...] = get_args(Backend)
LAYER_OPS: tuple[str, ...] = get_args(LayerOp)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
STRATEGIES: tuple[str, ...] = get_args(StrategyName)
SPACE_KINDS: tuple[str, ...] = get_args(SpaceKind)
SINGLE_OBJECTIVE = ("tournament", "regularized", "local")
REPORTERS = ("tensorboard", "mlflow")  # built-in reporters (evonas.trackers) beside plugins
EXPORT_FORMATS = ("state_dict", "torchscript", "onnx")  # `evonas export --format`
# Variation operators by the kind of space they work on; evonas.operators binds each name to its
# function (and refuses to register a name that is not listed here).
OPERATOR_NAMES: dict[str, tuple[str, ...]] = {
    "sequential": ("add_layer", "remove_layer", "change_op", "change_width", "change_kernel",
                   "change_activation", "change_lr", "crossover", "prune", "cut"),
    "nb201": ("mutate_edge", "crossover_edges"),
    "graph": ("insert_gene", "insert_block", "remove_gene", "remove_block", "add_skip",
              "remove_skip", "change_width", "change_kernel", "change_activation",
              "change_groups", "change_lr", "crossover", "prune", "cut"),
}  # fmt: skip
CROSSOVERS = ("crossover", "crossover_edges")  # the operators that take two parents
# Settings that may change when a run is resumed; anything else would break the replay. The
# parallel settings change where evaluations run, never their results.
RESUMABLE = (
    "search.generations", "search.max_time", "search.max_evaluations", "parallel.n_jobs",
    "parallel.backend", "parallel.address", "parallel.devices", "parallel.evaluations_per_gpu",
)  # fmt: skip


def is_plugin(name: str) -> bool:
    """A reference to user code (`pkg.module:name` or `path/file.py:name`, loaded by
    `evonas.plugins`) rather than a built-in name."""
    module, sep, attr = name.partition(":")
    return bool(sep and module.strip() and attr.isidentifier())


def _builtin_or_plugin(builtin: tuple[str, ...]) -> Any:
    """A validator: one of `builtin`, or a plugin reference."""

    def check(name: Any) -> Any:
        if isinstance(name, str) and (name in builtin or is_plugin(name)):
            return name
        close = difflib.get_close_matches(str(name), builtin, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        names = f"one of [{', '.join(builtin)}] or " if builtin else ""
        raise ValueError(
            f"expected {names}a plugin (pkg.module:name or path/file.py:name), got {name!r}{hint}"
        )

    return check


def _fraction(value: float) -> float:
    if not 0 < value < 1:
        raise ValueError(f"must be between 0 and 1, got {value}")
    return value


def _not_empty(values: list) -> list:
    if not values:
        raise ValueError("must not be empty")
    return values


def _number(value: Any) -> Any:
    """Numbers written as text count (YAML 1.1 reads `1e3` as a string); anything else is left
    for the type check to name."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


Number = Annotated[float, BeforeValidator(_number)]
Fraction = Annotated[float, BeforeValidator(_number), AfterValidator(_fraction)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
# Bounds on sizes with no sane use beyond them: a typo (an extra zero or three) must not
# allocate terabytes or run for a century.
MAX_CHANNELS = MAX_SIZE  # channels of a layer, units of a dense layer
MAX_POPULATION = 100_000
MAX_EPOCHS = 100_000
MAX_BATCH = 1_048_576
MAX_LAYERS = 1_000
Choices = Annotated[list[Annotated[int, Field(gt=0, le=MAX_CHANNELS)]], AfterValidator(_not_empty)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class Task(Section):
    name: str = Field("mnist1d", description="digits | mnist1d | synthetic | mnist | "
                      "fashion_mnist | cifar10 | cifar100 | image_folder | table | "
                      "pkg.module:function (your own arrays or Datasets)")  # fmt: skip
    options: dict[str, Any] = Field(default_factory=dict, description="passed to the task")
    split_seed: Count = 0
    val_fraction: Fraction = 0.2
    test_fraction: Fraction = 0.2

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        if not name:
            raise ValueError("must not be empty")
        return name


class Space(Section):
    kind: Annotated[str, AfterValidator(_builtin_or_plugin(SPACE_KINDS))] = Field(
        "sequential",
        description="sequential (macro space) | nb201 (cell) | graph (around seed graphs) | a "
        "plugin: pkg.module:factory, called with (config, task info), returning a Space",
    )
    min_layers: Count = 1
    max_layers: Annotated[int, Field(ge=1, le=MAX_LAYERS)] = 6
    ops: Annotated[list[LayerOp], AfterValidator(_not_empty)] = list(LAYER_OPS)
    widths: Choices = [8, 16, 32, 64]
    kernels: Choices = [3, 5, 7]
    strides: Choices = [1, 2]
    dilations: Choices = [1]
    units: Choices = [32, 64, 128, 256]
    activations: Annotated[list[Activation], AfterValidator(_not_empty)] = ["relu", "gelu", "silu"]
    dropout_rates: Annotated[list[Number], AfterValidator(_not_empty)] = [0.1, 0.25, 0.5]
    lr_min: Number = Field(0.0001, gt=0, le=10, description="the learning rate gene's lower bound")
    lr_max: Number = Field(0.03, gt=0, le=10)
    prune_fraction: Fraction = Field(0.25, description="share of channels prune and cut remove")
    max_depth: Positive = Field(256, description="graph space: most convolutions and linears "
                                "on a path")  # fmt: skip
    max_width: Positive = Field(4096, description="graph space: most channels of a layer")
    max_params: Positive | None = Field(None, description="graph space: most parameters")

    @model_validator(mode="after")
    def _consistent(self) -> Space:
        if self.max_layers < max(1, self.min_layers):
            raise ValueError(
                f"space.max_layers: must be >= max(1, space.min_layers), got {self.max_layers}"
            )
        if not self.lr_min <= self.lr_max:
            raise ValueError(
                f"space.lr_min/lr_max: need 0 < lr_min <= lr_max, got {self.lr_min}, {self.lr_max}"
            )
        graph_only = [name for name in ("max_depth", "max_width", "max_params")
                      if getattr(self, name) != type(self).model_fields[name].default]  # fmt: skip
        if graph_only and self.kind != "graph":
            raise ValueError(f"space.{graph_only[0]}: only for space.kind: graph (the "
                             f"{self.kind} space is bounded by its own choices)")  # fmt: skip
        if not all(0 <= r < 1 for r in self.dropout_rates):
            raise ValueError("space.dropout_rates: values must be in [0, 1)")
        return self


class Augment(Section):
    crop: Annotated[int, Field(ge=0, le=64)] = Field(
        0, description="random crop: pad each side by this many pixels, crop back; 0 = off"
    )
    flip: bool = Field(False, description="mirror half the samples along the last axis")
    cutout: Annotated[int, Field(ge=0, le=MAX_SIZE)] = Field(
        0, description="zero a square (a segment for signals) this wide per sample; 0 = off"
    )


Auto = Literal["auto"]


class Training(Section):
    evaluator: str = Field("builtin", description="builtin | pkg.module:function | file.py:fn")
    optimizer: OptimizerName = "adam"
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = Field(
        5, description="epochs of a model trained from scratch"
    )
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 64
    weight_decay: Number = Field(0.0, ge=0)
    threads: Positive = Field(1, description="torch threads per evaluation")
    timeout: Number = Field(0.0, ge=0, description="seconds per evaluation; 0 = none")
    save_weights: bool = True
    finetune_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = Field(
        1, description="epochs of an inherited child or a seed"
    )
    inherit_weights: bool = False
    prune_importance: Literal["l1", "bn", "taylor"] = Field(
        "l1",
        description="which channels pruning keeps: l1 (filter norm), bn (batch-norm "
        "scale) or taylor (first-order Taylor score on a few training batches)",
    )
    momentum: Number = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(True, description="SGD with Nesterov momentum")
    schedule: Literal["cosine", "onecycle", "constant"] = Field(
        "cosine",
        description="learning rate per step after warm-up: cosine decay to 0, "
        "one-cycle, or constant",
    )
    warmup_epochs: Number = Field(0.0, ge=0, description="linear learning-rate warm-up")
    label_smoothing: Number = Field(0.0, ge=0, lt=1)
    augment: Augment = Field(default_factory=Augment)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="autocast dtype; auto: bf16 on GPUs that have it, else fp16 with a "
        "grad scaler; fp32 on the CPU",
    )
    channels_last: bool | Auto = Field("auto", description="auto: on for images on a GPU")
    cudnn_benchmark: bool | Auto = Field("auto", description="auto: on for a GPU")
    compile: bool = Field(False, description="torch.compile the model before training")
    loader: Literal["auto", "device", "workers"] = Field(
        "auto",
        description="device: the data live on the device, batched there; workers: a "
        "DataLoader with worker processes; auto: device for arrays that fit, else workers",
    )
    loader_workers: Annotated[int, Field(ge=0, le=64)] = Field(
        2, description="DataLoader worker processes per evaluation (loader: workers)"
    )
    zero_cost: list[Literal["synflow", "naswot"]] = Field(
        default_factory=list, description="zero-cost proxies measured on the untrained model "
        "(one batch) and journaled as metrics: synflow, naswot")  # fmt: skip
    distill_from: Literal["", "seed", "best"] = ""
    distill_alpha: Number = Field(0.5, ge=0, le=1)
    distill_temperature: Number = Field(4.0, gt=0)

    @model_validator(mode="after")
    def _warmup_within_training(self) -> Training:
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            raise ValueError(f"training.warmup_epochs: must be less than training.epochs "
                             f"({self.epochs}), got {self.warmup_epochs:g}")  # fmt: skip
        return self

    @field_validator("evaluator")
    @classmethod
    def _reference(cls, evaluator: str) -> str:
        if evaluator != "builtin" and ":" not in evaluator:
            raise ValueError(f"expected 'builtin' or pkg.module:function, got {evaluator!r}")
        return evaluator


class EarlyStop(Section):
    """Stopping weak candidates before their whole training budget (evonas.fidelity)."""

    kind: Literal["none", "halving", "median"] = Field(
        "none", description="none | halving (successive halving within each generation) | median "
        "(stop a candidate worse than the median of completed ones at the same epoch)")  # fmt: skip
    min_epochs: Positive = Field(1, description="epochs before a candidate may be stopped")
    reduction_factor: int = Field(3, ge=2, le=100, description="halving: continue the best 1/eta "
                                  "at each rung (rungs at min_epochs x eta^k)")  # fmt: skip
    min_curves: Positive = Field(5, description="median: completed curves needed at an epoch "
                                 "before it stops anyone there")  # fmt: skip


class Surrogate(Section):
    """How a predictor screens the strategy's children (search.predictor; evonas.surrogate)."""

    acquisition: Literal["ei", "ucb"] = Field(
        "ei", description="ei (expected improvement) | ucb (mean + beta x std)"
    )
    beta: Number = Field(2.0, ge=0, description="ucb: weight of the uncertainty; with several "
                         "objectives, of the optimistic prediction too")  # fmt: skip
    candidates: Positive = Field(24, le=1000, description="children the strategy proposes for "
                                 "each one evaluated")  # fmt: skip
    samples: Positive = Field(1000, le=100_000, description="fresh samples scored when no "
                              "proposal is promising")  # fmt: skip
    min_observations: Positive = Field(5, description="results before the predictor is used")


class Gradient(Section):
    """Gradient-based search (search.strategy: gradient; evonas.gradient, evonas.supernet)."""

    method: Literal["darts", "gdas"] = Field(
        "gdas",
        description="darts (softmax mixing of every op, first order) | gdas (one op per edge "
        "drawn by hard Gumbel-softmax: cheaper, avoids the collapse to skips)",
    )
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = Field(
        10, description="epochs of supernet training"
    )
    batch_size: Annotated[int, Field(ge=2, le=MAX_BATCH)] = 64
    lr: Number = Field(0.025, gt=0, le=10, description="network weights: SGD, cosine decay")
    weight_decay: Number = Field(3e-4, ge=0)
    arch_lr: Number = Field(3e-3, gt=0, le=10, description="architecture weights: Adam")
    arch_weight_decay: Number = Field(1e-3, ge=0)
    tau_max: Number = Field(10.0, gt=0, description="gdas: Gumbel temperature at the start")
    tau_min: Number = Field(0.1, gt=0, description="gdas: temperature in the last epoch")
    channels: Annotated[int, Field(ge=1, le=MAX_CHANNELS)] = Field(
        16, description="supernet: channels of the first stage (NAS-Bench-201: 16)"
    )
    cells_per_stage: Annotated[int, Field(ge=1, le=MAX_LAYERS)] = Field(
        5, description="supernet: cells per stage (NAS-Bench-201: 5)"
    )
    top: Annotated[int, Field(ge=1, le=MAX_POPULATION)] = Field(
        1, description="derived genomes evaluated: the strongest cell, then the next most "
        "probable ones (each differing from it on one edge)")  # fmt: skip
    task: Task | None = Field(
        None, description="the dataset the supernet trains on, when it is not the run's task "
        "(needed when task.name is table: a lookup has no data to train on)")  # fmt: skip

    @model_validator(mode="after")
    def _temperatures(self) -> Gradient:
        if self.tau_min > self.tau_max:
            raise ValueError(f"search.gradient.tau_min: must be <= tau_max ({self.tau_max:g}), "
                             f"got {self.tau_min:g}")  # fmt: skip
        return self


class Search(Section):
    strategy: Annotated[str, AfterValidator(_builtin_or_plugin(STRATEGIES))] = Field(
        "auto",
        description="auto: nsga2 for several objectives, else local; gradient (DARTS/GDAS "
        "supernet, cell spaces; see search.gradient); or a plugin: "
        "pkg.module:factory, called with (search, variation, seen), returning a Strategy",
    )
    population: int = Field(12, ge=2, le=MAX_POPULATION)
    offspring: Count = Field(0, description="children per generation; 0 = the strategy's default")
    generations: Count = Field(5, description="generations after generation 0")
    objectives: Annotated[list[Objective], AfterValidator(_not_empty)] = [
        Objective("val_accuracy", "max"),
        Objective("params", "min"),
    ]
    tournament_size: Positive = 3
    max_evaluations: Count = 0
    max_time: Number = Field(0.0, ge=0, description="seconds of run time; 0 = no limit")
    plot_every: Count = Field(1, description="redraw plots every N generations; 0 = never")
    operators: dict[str, Any] = Field(default_factory=dict, description="name -> weight")
    seed_genomes: list[str] = []
    seed_run: str = ""
    seed_top: Count = 0
    seed_fill: Literal["sample", "mutate"] = "sample"
    async_window: Count = Field(0, description="regularized: children in flight, no barrier")
    early_stop: EarlyStop = Field(default_factory=EarlyStop)
    predictor: Literal["none", "trees", "gp"] = Field(
        "none", description="none | trees (extra-trees ensemble) | gp (Gaussian process): learn "
        "the objectives from the journal; evaluate the children it rates best")  # fmt: skip
    surrogate: Surrogate = Field(default_factory=Surrogate)
    gradient: Gradient = Field(default_factory=Gradient)
    constraints: list[Constraint] = Field(
        default_factory=list, description="hard limits: [{metric: params, max: 50000}, ...]"
    )

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, objectives: list[Objective]) -> list[Objective]:
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise ValueError("each metric may appear once")
        return objectives


class Parallel(Section):
    backend: Backend = Field("loky", description="loky | dask | ray | inline (table lookups)")
    n_jobs: Positive = Field(1, description="evaluations at a time")
    crash_retries: Count = 1
    address: str = Field("", description="an existing Dask scheduler or Ray cluster")
    devices: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)] = Field(
        "auto", description="auto | cpu | GPU ids such as '0,1'"
    )
    evaluations_per_gpu: Positive = 1

    @field_validator("devices")
    @classmethod
    def _devices(cls, devices: str) -> str:
        if devices not in ("auto", "cpu") and not all(p.strip() for p in devices.split(",")):
            raise ValueError(f"expected 'auto', 'cpu' or GPUs such as '0,1', got {devices!r}")
        return devices


class Config(Section):
    seed: Count = 0
    task: Task = Field(default_factory=Task)
    space: Space = Field(default_factory=Space)
    training: Training = Field(default_factory=Training)
    search: Search = Field(default_factory=Search)
    parallel: Parallel = Field(default_factory=Parallel)
    reporters: list[Annotated[str, AfterValidator(_builtin_or_plugin(REPORTERS))]] = Field(
        default_factory=list,
        description="further reporters: tensorboard, mlflow, or plugins (pkg.module:factory, "
        "called with (run directory, config), returning a Reporter)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        search = self.search
        if search.strategy in SINGLE_OBJECTIVE and len(search.objectives) != 1:
            raise ValueError(
                f"search.objectives: strategy '{search.strategy}' needs exactly one objective "
                "(use nsga2 or random for several)"
            )
        if search.async_window and self.strategy != "regularized":
            raise ValueError(
                "search.async_window: the steady-state mode is for search.strategy: regularized"
            )
        if search.early_stop.kind == "halving" and search.async_window:
            raise ValueError(
                "search.early_stop.kind: halving ranks the children of a generation together; "
                "the steady state (async_window) has none: use median"
            )
        _check_early_stop(search.early_stop, self)
        if self.strategy == "gradient":
            _check_gradient(self)
        if search.max_evaluations and search.max_evaluations < search.population:
            raise ValueError("search.max_evaluations: must be 0 (no limit) or >= search.population")
        if self.parallel.address and self.parallel.backend not in ("dask", "ray"):
            raise ValueError("parallel.address: only for backend dask or ray")
        _check_operators(search.operators, self.space.kind)
        mutates_only = self.strategy in ("regularized", "local") or search.seed_fill == "mutate"
        weights = search.operators
        if (
            weights
            and mutates_only
            and not any(w > 0 for name, w in weights.items() if name not in CROSSOVERS)
        ):
            raise ValueError(
                "search.operators: this search breeds by mutation (strategy "
                f"{self.strategy!r}, or seed_fill: mutate); give a mutation a weight > 0"
            )
        return self

    @property
    def evaluation(self) -> str:
        """Who evaluates a genome: "evaluator" (the user's function, `training.evaluator`),
        "table" (a lookup, `task.name: table`) or "trainer" (evonas's own training)."""
        if self.training.evaluator != "builtin":
            return "evaluator"
        return "table" if self.task.name == "table" else "trainer"

    @property
    def strategy(self) -> str:
        """The strategy to run: `auto` is nsga2 with several objectives, else local search."""
        if self.search.strategy != "auto":
            return self.search.strategy
        return "nsga2" if len(self.search.objectives) > 1 else "local"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for config.yaml, the journal's meta and workers)."""
        return self.model_dump(mode="json")


def _check_gradient(config: Config) -> None:
    search = config.search
    if config.space.kind != "nb201":
        raise ValueError(f"search.strategy: gradient needs a cell space whose genes choose one "
                         f"op per edge (space.kind: nb201), not space.kind: "
                         f"{config.space.kind}")  # fmt: skip
    if config.task.name == "table" and search.gradient.task is None:
        raise ValueError(
            "search.gradient.task: a table lookup has no data to train a supernet on; name a "
            "dataset, e.g. --set search.gradient.task.name=digits"
        )
    if search.gradient.task is not None and search.gradient.task.name == "table":
        raise ValueError("search.gradient.task.name: the supernet trains on real data, not a "
                         "table; name a dataset such as digits")  # fmt: skip
    if search.predictor != "none":
        raise ValueError("search.predictor: screens the children of an evolutionary strategy; "
                         "a gradient search breeds none (use none)")  # fmt: skip
    if search.seed_genomes or search.seed_run:
        raise ValueError("search.seed_genomes/seed_run: a gradient search starts from the "
                         "supernet, not from seeds; seed an evolutionary search from a gradient "
                         "run instead (--seed-run)")  # fmt: skip
    if search.async_window or search.early_stop.kind != "none":
        raise ValueError("search.async_window/early_stop: not for a gradient search (it "
                         "evaluates only its derived cells)")  # fmt: skip


def _check_early_stop(early: EarlyStop, config: Config) -> None:
    if early.kind == "none":
        return
    if config.evaluation == "table":
        raise ValueError("search.early_stop.kind: a table lookup has no epochs to stop early; "
                         "use none")  # fmt: skip
    if early.kind == "halving" and config.evaluation == "evaluator":
        raise ValueError("search.early_stop.kind: halving continues candidates from the built-in "
                         "trainer's checkpoints; a training.evaluator can use median (it reports "
                         "epochs with evonas.report_epoch)")  # fmt: skip
    epochs = config.training.epochs
    if config.evaluation == "trainer" and early.min_epochs >= epochs:
        raise ValueError(f"search.early_stop.min_epochs: must be below training.epochs "
                         f"({epochs}), or no candidate can be stopped")  # fmt: skip


def _check_operators(weights: dict[str, Any], space_kind: str) -> None:
    if not weights:
        return  # the space's default operators
    known = sorted(OPERATOR_NAMES.get(space_kind, ()))  # a plugin space's are checked on loading
    for name, weight in weights.items():
        if name not in known and not is_plugin(name) and not is_plugin(space_kind):
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(
                f"search.operators.{name}: unknown operator for a {space_kind} space{hint}; "
                f"expected one of {known}"
            )
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ValueError(
                f"search.operators.{name}: weight must be a number >= 0, got {weight!r}"
            )
    if sum(weights.values()) <= 0:
        raise ValueError("search.operators: at least one weight must be > 0")


DEFAULTS: dict[str, Any] = Config().to_dict()


# --- reading settings -----------------------------------------------------------------------


def preset_names() -> list[str]:
    folder = resources.files("evonas") / "presets"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


MAX_CONFIG_VALUES = 100_000  # a config is a few hundred values; YAML aliases can make billions


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if _too_many_values(data):
        raise ConfigError(f"{where}: expands to more than {MAX_CONFIG_VALUES:,} values (YAML "
                          "aliases repeated within each other?); refusing it")  # fmt: skip
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings at the top level")
    return data


def _too_many_values(data: Any) -> bool:
    """More than MAX_CONFIG_VALUES values, counting every use of an alias (stops early)."""
    stack, seen = [data], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def load_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise ConfigError(f"--preset: unknown preset {name!r}; expected one of {preset_names()}")
    text = (resources.files("evonas") / "presets" / f"{name}.yaml").read_text()
    return _read_yaml(text, f"preset {name}")


def load_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a UTF-8 YAML config expected)") from None
    return _read_yaml(text, str(path))


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value parsed as YAML)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. search.population=16")
    if "[" in key:
        raise ConfigError(
            f"--set {key.strip()}: a list is set as a whole, e.g. --set "
            "'search.objectives=[{name: val_accuracy, goal: max}]'"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _is_section(dotted: str) -> bool:
    return dotted in Config.model_fields and dotted != "seed"


def _merge(base: dict[str, Any], override: dict[str, Any], prefix: str = "") -> None:
    """Deep-merge settings: sections merge key by key, any other value (a free-form mapping such
    as task.options included) is replaced. Unknown keys are kept for validation to name."""
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if _is_section(dotted) and isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, prefix=f"{dotted}.")
        else:
            base[key] = copy.deepcopy(value)


def _set_path(config: dict[str, Any], path: list[str], value: Any) -> None:
    node = config
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            if key in node:  # a dotted key through a plain value
                raise ConfigError(f"{'.'.join(path)}: unknown setting")
            node[key] = {}
        node = node[key]
    _merge(node, {path[-1]: value}, prefix=".".join(path[:-1]) + "." if path[:-1] else "")


def resolve(
    preset: str | None = None,
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> Config:
    """Build and validate the full config; `base` is a dict of settings merged over the
    defaults, `overrides` maps dotted keys to values (None = not given)."""
    if preset and config_file:
        raise ConfigError("--config and --preset: give one, not both")
    settings = copy.deepcopy(DEFAULTS)
    for layer in (base, load_preset(preset) if preset else None,
                  load_file(config_file) if config_file else None):  # fmt: skip
        if layer:
            _merge(settings, layer)
    for assignment in sets or []:
        _set_path(settings, *parse_set(assignment))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(settings, dotted.split("."), value)
    return validate(settings)


def validate(settings: dict[str, Any]) -> Config:
    """A Config from plain settings; ConfigError names the first problem."""
    try:
        return Config.model_validate(settings)
    except ValidationError as exc:
        raise ConfigError(_message(exc.errors()[0])) from None


def _message(error: dict[str, Any]) -> str:
    """One line for pydantic's first error: `dotted.key: what was expected, got what`."""
    loc = list(error["loc"])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    item = bool(loc) and isinstance(loc[-1], int) and not _is_record_list(loc)
    while loc and isinstance(loc[-1], int) and item:
        loc.pop()
    dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if kind == "value_error":
        text = str(ctx.get("error", error["msg"]))
        return text if _QUALIFIED.match(text) else f"{dotted}: {text}"
    if kind == "extra_forbidden":
        known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return f"{dotted}: unknown setting" + (f"; did you mean {close[0]}?" if close else "")
    if kind in ("model_type", "dict_type", "dataclass_type", "model_attributes_type"):
        return f"{dotted}: expected a mapping of settings, got {value!r}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        if item:
            return f"{dotted}: {value!r} is not one of [{expected}]"
        return f"{dotted}: expected one of [{expected}], got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = {
            "greater_than": "> {gt}",
            "greater_than_equal": ">= {ge}",
            "less_than": "< {lt}",
            "less_than_equal": "<= {le}",
        }[kind].format(**ctx)
        if item:
            return f"{dotted}: values must be {bound}, found {value!r}"
        return f"{dotted}: must be {bound}, got {value!r}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        expected = kind.removesuffix("_type").removesuffix("_parsing").replace("string", "str")
        expected = {"list": "a list", "float": "a number"}.get(expected, expected)
        where = "a list of " if item else ""
        return f"{dotted}: expected {where}{expected}, got {value!r}"
    if kind == "missing":
        return f"{dotted}: missing"
    return f"{dotted}: {error['msg']}"


# A validator's message that already names its key (`search.operators.x: ...`).
_QUALIFIED = re.compile(r"^(task|space|training|search|parallel)\.[^:\s]+:")


def _is_record_list(loc: list) -> bool:
    """True for an index into a list of records (search.objectives[0], search.constraints[0]),
    not of values."""
    return loc[:2] in (["search", "objectives"], ["search", "constraints"]) and len(loc) >= 3


def _fields_at(loc: list) -> list[str]:
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
