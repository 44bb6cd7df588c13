"""Run configuration: defaults, presets, YAML files and dotted `--set` overrides, validated.

Precedence: defaults < preset or config file < `--set key=value` < dedicated CLI flags. Unknown
keys, wrong types and impossible values raise ConfigError with a one-line message naming the key.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from evonas.operators import OPERATORS


class ConfigError(ValueError):
    """A configuration problem; the message names the key and what was expected."""


DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "task": {
        "name": "mnist1d",
        "options": {},
        "split_seed": 0,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
    },
    "space": {
        "kind": "sequential",
        "min_layers": 1,
        "max_layers": 6,
        "ops": ["conv", "residual", "pool", "dense", "dropout"],
        "widths": [8, 16, 32, 64],
        "kernels": [3, 5, 7],
        "strides": [1, 2],
        "dilations": [1],
        "units": [32, 64, 128, 256],
        "activations": ["relu", "gelu", "silu"],
        "dropout_rates": [0.1, 0.25, 0.5],
        "lr_min": 0.0001,
        "lr_max": 0.03,
        "prune_fraction": 0.25,
    },
    "training": {
        "evaluator": "builtin",
        "optimizer": "adam",
        "epochs": 5,
        "batch_size": 64,
        "weight_decay": 0.0,
        "threads": 1,
        "timeout": 0.0,
        "save_weights": True,
        "finetune_epochs": 1,
        "inherit_weights": False,
        "prune_importance": "l1",
        "distill_from": "",
        "distill_alpha": 0.5,
        "distill_temperature": 4.0,
    },
    "search": {
        "strategy": "auto",
        "population": 12,
        "offspring": 0,
        "generations": 5,
        "objectives": [
            {"name": "val_accuracy", "goal": "max"},
            {"name": "params", "goal": "min"},
        ],
        "tournament_size": 3,
        "max_evaluations": 0,
        "max_time": 0.0,
        "plot_every": 1,
        "operators": {},
        "seed_genomes": [],
        "seed_run": "",
        "seed_top": 0,
        "seed_fill": "sample",
        "async_window": 0,
    },
    "parallel": {
        "backend": "loky",
        "n_jobs": 1,
        "crash_retries": 1,
        "address": "",
        "devices": "auto",
        "evaluations_per_gpu": 1,
    },
}

STRATEGIES = ("auto", "nsga2", "tournament", "regularized", "local", "random")
SINGLE_OBJECTIVE = ("tournament", "regularized", "local")
SPACES = ("sequential", "nb201")
BACKENDS = ("loky", "dask", "ray", "inline")
OPTIMIZERS = ("adam", "adamw", "sgd")
PRUNE_IMPORTANCE = ("l1", "bn")
DISTILL_FROM = ("", "seed", "best")
OPS = ("conv", "residual", "pool", "dense", "dropout")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "elu")
# Keys whose value is a free-form mapping (passed to user code) or a list of records.
FREE_FORM = {"task.options", "search.operators", "search.objectives"}


def preset_names() -> list[str]:
    folder = resources.files("evonas") / "presets"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings at the top level")
    return data


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
    return _read_yaml(text, str(path))


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value parsed as YAML)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. search.population=16")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _merge(base: dict[str, Any], override: dict[str, Any], prefix: str = "") -> None:
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in base:
            raise ConfigError(f"{dotted}: unknown setting")
        if dotted in FREE_FORM or not isinstance(base[key], dict):
            base[key] = copy.deepcopy(value)
        elif isinstance(value, dict):
            _merge(base[key], value, prefix=f"{dotted}.")
        else:
            raise ConfigError(f"{dotted}: expected a mapping of settings, got {value!r}")


def _set_path(config: dict[str, Any], path: list[str], value: Any) -> None:
    node = config
    for i, key in enumerate(path[:-1]):
        dotted = ".".join(path[: i + 1])
        if dotted in FREE_FORM:
            node = node.setdefault(key, {})
            continue
        if key not in node or not isinstance(node[key], dict):
            raise ConfigError(f"{dotted}: unknown setting")
        node = node[key]
    dotted = ".".join(path)
    parent = ".".join(path[:-1])
    if path[-1] not in node and parent not in FREE_FORM:
        raise ConfigError(f"{dotted}: unknown setting")
    if isinstance(node.get(path[-1]), dict) and dotted not in FREE_FORM:
        if not isinstance(value, dict):
            raise ConfigError(f"{dotted}: expected a mapping of settings, got {value!r}")
        _merge(node[path[-1]], value, prefix=f"{dotted}.")
        return
    node[path[-1]] = value


def resolve(
    preset: str | None = None,
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build and validate the full config; `base` is a dict of settings merged over the
    defaults, `overrides` maps dotted keys to values."""
    config = copy.deepcopy(DEFAULTS)
    if base:
        _merge(config, base)
    if preset and config_file:
        raise ConfigError("--config and --preset: give one, not both")
    if preset:
        _merge(config, load_preset(preset))
    if config_file:
        _merge(config, load_file(config_file))
    for assignment in sets or []:
        _set_path(config, *parse_set(assignment))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(config, dotted.split("."), value)
    validate(config)
    return config


def _check_type(dotted: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{dotted}: expected {type(default).__name__}, got {value!r}")


def _check_types(config: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> None:
    for key, default in defaults.items():
        dotted = f"{prefix}{key}"
        value = config[key]
        if isinstance(default, dict) and dotted not in FREE_FORM:
            _check_types(value, default, prefix=f"{dotted}.")
        else:
            _check_type(dotted, value, default)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_choices(dotted: str, values: list[Any], allowed: tuple | None, kind: type) -> None:
    _require(len(values) > 0, f"{dotted}: must not be empty")
    for value in values:
        _require(
            isinstance(value, kind) and not isinstance(value, bool),
            f"{dotted}: expected a list of {kind.__name__}, found {value!r}",
        )
        if allowed is not None:
            _require(value in allowed, f"{dotted}: {value!r} is not one of {list(allowed)}")
        elif kind is int:
            _require(value > 0, f"{dotted}: values must be > 0, found {value!r}")


def validate(config: dict[str, Any]) -> None:
    """Raise ConfigError for the first problem found."""
    _check_types(config, DEFAULTS)
    _require(config["seed"] >= 0, f"seed: must be >= 0, got {config['seed']}")
    task = config["task"]
    _require(bool(task["name"]), "task.name: must not be empty")
    _require(isinstance(task["options"], dict), "task.options: expected a mapping")
    for key in ("val_fraction", "test_fraction"):
        _require(0 < task[key] < 1, f"task.{key}: must be between 0 and 1, got {task[key]}")

    space = config["space"]
    _require(
        space["kind"] in SPACES,
        f"space.kind: expected one of {list(SPACES)}, got {space['kind']!r}",
    )
    _require(space["min_layers"] >= 0, "space.min_layers: must be >= 0")
    _require(
        space["max_layers"] >= max(1, space["min_layers"]),
        f"space.max_layers: must be >= max(1, space.min_layers), got {space['max_layers']}",
    )
    _check_choices("space.ops", space["ops"], OPS, str)
    _check_choices("space.activations", space["activations"], ACTIVATIONS, str)
    for key in ("widths", "kernels", "strides", "dilations", "units"):
        _check_choices(f"space.{key}", space[key], None, int)
    _require(
        0 < space["prune_fraction"] < 1,
        f"space.prune_fraction: must be between 0 and 1, got {space['prune_fraction']}",
    )
    _check_choices("space.dropout_rates", space["dropout_rates"], None, float)
    _require(
        all(0 <= r < 1 for r in space["dropout_rates"]),
        "space.dropout_rates: values must be in [0, 1)",
    )
    _require(
        0 < space["lr_min"] <= space["lr_max"],
        f"space.lr_min/lr_max: need 0 < lr_min <= lr_max, got {space['lr_min']}, {space['lr_max']}",
    )

    training = config["training"]
    if training["evaluator"] != "builtin":
        _require(
            ":" in training["evaluator"],
            f"training.evaluator: expected 'builtin' or pkg.module:function, "
            f"got {training['evaluator']!r}",
        )
    _require(
        training["optimizer"] in OPTIMIZERS,
        f"training.optimizer: expected one of {list(OPTIMIZERS)}, got {training['optimizer']!r}",
    )
    for key in ("epochs", "batch_size", "threads"):
        _require(training[key] >= 1, f"training.{key}: must be >= 1, got {training[key]}")
    _require(training["weight_decay"] >= 0, "training.weight_decay: must be >= 0")
    _require(
        training["finetune_epochs"] >= 0, "training.finetune_epochs: must be >= 0 (0 = no training)"
    )
    _require(
        training["prune_importance"] in PRUNE_IMPORTANCE,
        f"training.prune_importance: expected one of {list(PRUNE_IMPORTANCE)}, "
        f"got {training['prune_importance']!r}",
    )
    _require(
        training["distill_from"] in DISTILL_FROM,
        f"training.distill_from: expected '' (off), 'seed' or 'best', "
        f"got {training['distill_from']!r}",
    )
    _require(0 <= training["distill_alpha"] <= 1, "training.distill_alpha: must be in [0, 1]")
    _require(training["distill_temperature"] > 0, "training.distill_temperature: must be > 0")
    _require(training["timeout"] >= 0, "training.timeout: must be >= 0 seconds (0 = no limit)")

    search = config["search"]
    _require(
        search["strategy"] in STRATEGIES,
        f"search.strategy: expected one of {list(STRATEGIES)}, got {search['strategy']!r}",
    )
    _require(
        search["population"] >= 2, f"search.population: must be >= 2, got {search['population']}"
    )
    _require(search["generations"] >= 0, "search.generations: must be >= 0")
    _require(search["tournament_size"] >= 1, "search.tournament_size: must be >= 1")
    _validate_objectives(search["objectives"])
    if search["strategy"] in SINGLE_OBJECTIVE:
        _require(
            len(search["objectives"]) == 1,
            f"search.objectives: strategy '{search['strategy']}' needs exactly one objective "
            "(use nsga2 or random for several)",
        )
    _require(
        search["offspring"] >= 0, "search.offspring: must be >= 0 (0 = the strategy's default)"
    )
    _require(search["async_window"] >= 0, "search.async_window: must be >= 0 (0 = off)")
    _require(
        search["async_window"] == 0 or strategy_name(config) == "regularized",
        "search.async_window: the steady-state mode is for search.strategy: regularized",
    )
    _require(search["plot_every"] >= 0, "search.plot_every: must be >= 0 (0 = no plots)")
    _validate_operators(search["operators"], space["kind"])
    parallel = config["parallel"]
    _require(
        parallel["backend"] in BACKENDS,
        f"parallel.backend: expected one of {list(BACKENDS)}, got {parallel['backend']!r}",
    )
    _require(parallel["n_jobs"] >= 1, "parallel.n_jobs: must be >= 1")
    _require(config["parallel"]["crash_retries"] >= 0, "parallel.crash_retries: must be >= 0")
    _require(parallel["evaluations_per_gpu"] >= 1, "parallel.evaluations_per_gpu: must be >= 1")
    devices = parallel["devices"]
    _require(
        devices in ("auto", "cpu") or all(part.strip() for part in str(devices).split(",")),
        f"parallel.devices: expected 'auto', 'cpu' or GPUs such as '0,1', got {devices!r}",
    )
    _require(
        not parallel["address"] or parallel["backend"] in ("dask", "ray"),
        "parallel.address: only for backend dask or ray",
    )
    _require(search["max_time"] >= 0, "search.max_time: must be >= 0 seconds (0 = no limit)")
    _require(
        search["max_evaluations"] == 0 or search["max_evaluations"] >= search["population"],
        "search.max_evaluations: must be 0 (no limit) or >= search.population",
    )


def _validate_objectives(objectives: Any) -> None:
    _require(
        isinstance(objectives, list) and len(objectives) > 0,
        "search.objectives: expected a non-empty list of {name, goal}",
    )
    names = []
    for i, objective in enumerate(objectives):
        where = f"search.objectives[{i}]"
        _require(isinstance(objective, dict), f"{where}: expected a mapping {{name, goal}}")
        extra = set(objective) - {"name", "goal"}
        _require(not extra, f"{where}.{sorted(extra)[0] if extra else ''}: unknown setting")
        name, goal = objective.get("name"), objective.get("goal")
        _require(
            isinstance(name, str) and name.isidentifier(),
            f"{where}.name: expected a metric name, got {name!r}",
        )
        _require(goal in ("max", "min"), f"{where}.goal: expected 'max' or 'min', got {goal!r}")
        names.append(name)
    _require(len(set(names)) == len(names), "search.objectives: each metric may appear once")


def _validate_operators(weights: Any, space_kind: str) -> None:
    _require(isinstance(weights, dict), "search.operators: expected a mapping name -> weight")
    if not weights:
        return  # the space's default operators
    known = sorted(name for name, op in OPERATORS.items() if op.space == space_kind)
    for name, weight in weights.items():
        _require(
            name in known,
            f"search.operators.{name}: unknown operator for a {space_kind} space; "
            f"expected one of {known}",
        )
        _require(
            isinstance(weight, int | float) and not isinstance(weight, bool) and weight >= 0,
            f"search.operators.{name}: weight must be a number >= 0, got {weight!r}",
        )
    _require(sum(weights.values()) > 0, "search.operators: at least one weight must be > 0")


def space_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The `space` section as keyword arguments of SequentialSpace."""
    space = config["space"]
    return {k: tuple(v) if isinstance(v, list) else v for k, v in space.items() if k != "kind"}


def strategy_name(config: dict[str, Any]) -> str:
    """The strategy to run: `auto` is nsga2 with several objectives, else local search."""
    search = config["search"]
    if search["strategy"] != "auto":
        return search["strategy"]
    return "nsga2" if len(search["objectives"]) > 1 else "local"


def operator_weights(config: dict[str, Any]) -> dict[str, float]:
    from evonas.operators import DEFAULT_WEIGHTS, PRUNING_WEIGHTS

    if config["search"]["operators"]:
        return config["search"]["operators"]
    kind = config["space"]["kind"]
    if config["training"]["inherit_weights"] and kind == "sequential":
        return {**DEFAULT_WEIGHTS[kind], **PRUNING_WEIGHTS}
    return DEFAULT_WEIGHTS[kind]
