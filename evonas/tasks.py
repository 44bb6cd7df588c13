"""Datasets as tasks with fixed, seeded train/validation/test splits (no torch imported here).

The built-in datasets are listed in `evonas.datasets`. Any other name of the form
`pkg.module:function` (or `file.py:function`) is a user task: the function takes the task's
`options` as keyword arguments and returns a mapping, either of numpy arrays (`x_train`,
`y_train`, `x_val`, `y_val`, optionally `x_test`, `y_test`; x shaped (N, F), (N, C, L) or
(N, C, H, W), uint8 or float; integer labels), or of `torch.utils.data.Dataset`s (`train`,
`val`, optionally `test`; each item an (input, label) pair; optionally `num_classes`, `mean`
and `std`). Arrays stay in memory as they are (uint8 images stay uint8); `Scaling` says how they
become model inputs, which happens on the device, batch by batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from evonas.datasets import BUILTIN, TaskError, cache_dir, load_builtin
from evonas.plugins import PluginError, load_callable

__all__ = ["TaskError", "TaskData", "DatasetTask", "Scaling", "cache_dir", "load_task"]


@dataclass(frozen=True)
class Scaling:
    """How stored inputs become model inputs: `x / divisor` (255 for uint8 images), then
    `(x - mean) / std` per channel (no standardisation when `mean` is empty)."""

    divisor: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


@dataclass(frozen=True)
class TaskData:
    """A task held as arrays (any built-in dataset, or a user function returning arrays)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int
    scaling: Scaling = Scaling()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def has_test(self) -> bool:
        return self.x_test is not None


@dataclass(frozen=True)
class DatasetTask:
    """A task held as a user's torch Datasets; batches come through a DataLoader."""

    name: str
    train: Any
    val: Any
    test: Any | None
    num_classes: int
    input_shape: tuple[int, ...]
    scaling: Scaling = Scaling()

    @property
    def has_test(self) -> bool:
        return self.test is not None


Task = TaskData | DatasetTask


@dataclass(frozen=True)
class TaskInfo:
    """What the parent needs to know of a task: shapes, classes and chance levels."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    has_test: bool
    # accuracy of always predicting the most frequent class, per accuracy metric
    chance: dict[str, float] = field(default_factory=dict)


def task_info(spec: Mapping[str, Any]) -> TaskInfo:
    data = load_task(spec)
    if isinstance(data, DatasetTask):
        val, test = _labels_of(data.val), _labels_of(data.test) if data.test else None
    else:
        val, test = data.y_val, data.y_test
    chance = {"val_accuracy": _majority_share(val)}
    if test is not None:
        chance["test_accuracy"] = _majority_share(test)
    return TaskInfo(data.name, data.input_shape, data.num_classes, data.has_test, chance)


def _majority_share(labels: np.ndarray) -> float:
    return float(np.bincount(labels).max() / max(1, len(labels)))


def split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded shuffle, then (x_rest, y_rest, x_part, y_part) with `fraction` in the part."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_part = max(1, round(len(x) * fraction))
    part, rest = order[:n_part], order[n_part:]
    return x[rest], y[rest], x[part], y[part]


def load_task(spec: Mapping[str, Any]) -> Task:
    """Load the task described by the config's `task` section (cached per process)."""
    return _load_cached(json.dumps(dict(spec), sort_keys=True))


@lru_cache(maxsize=4)
def _load_cached(spec_json: str) -> Task:
    spec = json.loads(spec_json)
    name, options = spec["name"], dict(spec.get("options") or {})
    if name in BUILTIN:
        return _split_builtin(name, load_builtin(name, options), spec)
    if ":" not in name:
        raise TaskError(f"task.name: unknown task {name!r}; expected one of "
                        f"{', '.join(sorted(BUILTIN))}, table, or pkg.module:function")  # fmt: skip
    return _user_task(name, options)


def _split_builtin(name: str, raw: dict[str, Any], spec: dict[str, Any]) -> TaskData:
    seed = int(spec.get("split_seed", 0))
    x, y = raw["x"], np.asarray(raw["y"]).astype(np.int64)
    if "x_test" in raw:
        x_test, y_test = raw["x_test"], np.asarray(raw["y_test"]).astype(np.int64)
    else:
        x, y, x_test, y_test = split(x, y, float(spec.get("test_fraction", 0.2)), seed + 1)
    if "x_val" in raw:
        x_train, y_train, x_val, y_val = x, y, raw["x_val"], raw["y_val"].astype(np.int64)
    else:
        x_train, y_train, x_val, y_val = split(x, y, float(spec.get("val_fraction", 0.2)), seed)
    classes = int(max(y.max(), y_test.max(), y_val.max()) + 1)
    scaling = scaling_of(x_train, bool(raw.get("standardize")))
    return TaskData(name, x_train, y_train, x_val, y_val, x_test, y_test, classes, scaling)


def scaling_of(x_train: np.ndarray, standardize: bool) -> Scaling:
    """uint8 inputs are scaled to [0, 1]; with `standardize`, then to zero mean and unit
    variance per channel, as measured on the training split."""
    divisor = 255.0 if x_train.dtype == np.uint8 else 1.0
    if not standardize or x_train.ndim < 3:
        return Scaling(divisor)
    axes = (0, *range(2, x_train.ndim))
    mean = np.zeros(x_train.shape[1])
    square = np.zeros(x_train.shape[1])
    for begin in range(0, len(x_train), 4096):  # in chunks: no float copy of a large set
        chunk = x_train[begin : begin + 4096].astype(np.float64) / divisor
        mean += chunk.sum(axis=axes)
        square += (chunk * chunk).sum(axis=axes)
    count = x_train.size / x_train.shape[1]
    mean /= count
    std = np.sqrt(np.maximum(square / count - mean * mean, 1e-12))
    return Scaling(divisor, tuple(float(m) for m in mean), tuple(float(s) for s in std))


def _user_task(name: str, options: dict[str, Any]) -> Task:
    try:
        fn = load_callable(name, what="task.name")
    except PluginError as exc:
        raise TaskError(str(exc)) from None
    try:
        raw = fn(**options)
    except Exception as exc:  # user code: report, never crash with a traceback
        raise TaskError(f"task {name} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(raw, Mapping):
        raise TaskError(f"task {name}: must return a mapping with x_train, y_train, x_val, y_val "
                        "(arrays) or train, val (torch Datasets)")  # fmt: skip
    if "train" in raw:
        return _dataset_task(name, raw)
    missing = [k for k in ("x_train", "y_train", "x_val", "y_val") if k not in raw]
    if missing:
        raise TaskError(f"task {name}: returned mapping lacks {', '.join(missing)}")
    # contiguous (torch cannot take negative strides), uint8 kept as uint8
    arrays = {k: np.ascontiguousarray(v) for k, v in raw.items()}
    for key in ("x_train", "x_val", "x_test"):
        if key in arrays and arrays[key].dtype != np.uint8:
            arrays[key] = arrays[key].astype(np.float32)
    for key in ("y_train", "y_val", "y_test"):
        if key in arrays:
            arrays[key] = arrays[key].astype(np.int64)
    ys = [arrays[k] for k in ("y_train", "y_val", "y_test") if k in arrays]
    classes = int(max(y.max() for y in ys) + 1)
    return TaskData(name, arrays["x_train"], arrays["y_train"], arrays["x_val"], arrays["y_val"],
                    arrays.get("x_test"), arrays.get("y_test"), classes,
                    scaling_of(arrays["x_train"], False))  # fmt: skip


def _dataset_task(name: str, raw: Mapping[str, Any]) -> DatasetTask:
    """A user's torch Datasets: shapes from the first training item, classes from
    `num_classes`, else from the labels (a Dataset's `targets` when it has them)."""
    if "val" not in raw:
        raise TaskError(f"task {name}: returned 'train' but no 'val' Dataset")
    unknown = sorted(set(raw) - {"train", "val", "test", "num_classes", "mean", "std"})
    if unknown:
        raise TaskError(f"task {name}: returned an unknown entry {unknown[0]!r} (expected train, "
                        "val, test, num_classes, mean, std)")  # fmt: skip
    for key in ("train", "val", "test"):
        if key in raw and not (hasattr(raw[key], "__getitem__") and hasattr(raw[key], "__len__")):
            raise TaskError(f"task {name}: {key!r} must be a map-style Dataset (with __len__ and "
                            f"__getitem__), got {type(raw[key]).__name__}")  # fmt: skip
        if key in raw and len(raw[key]) == 0:
            raise TaskError(f"task {name}: the {key!r} Dataset is empty")
    try:
        item = raw["train"][0][0]
    except Exception as exc:
        raise TaskError(f"task {name}: train[0] must be an (input, label) pair ({exc})") from None
    if type(item).__module__.startswith("PIL"):
        raise TaskError(f"task {name}: items must be tensors or arrays shaped (C, H, W) or (C, L), "
                        "not PIL images (convert them in the Dataset)")  # fmt: skip
    first = np.asarray(item)
    if first.ndim not in (1, 2, 3):
        raise TaskError(f"task {name}: train[0]'s input has shape {first.shape}; expected "
                        "(C, H, W), (C, L) or (F,)")  # fmt: skip
    classes = raw.get("num_classes")
    if classes is None:
        classes = max(int(_labels_of(raw[k]).max()) for k in ("train", "val", "test") if k in raw)
        classes += 1
    divisor = 255.0 if first.dtype == np.uint8 else 1.0
    mean, std = tuple(raw.get("mean") or ()), tuple(raw.get("std") or ())
    if len(mean) != len(std) or (mean and len(mean) != first.shape[0]):
        raise TaskError(f"task {name}: mean and std need one value per input channel "
                        f"({first.shape[0]})")  # fmt: skip
    return DatasetTask(name, raw["train"], raw["val"], raw.get("test"), int(classes),
                       tuple(int(d) for d in first.shape), Scaling(divisor, mean, std))  # fmt: skip


def _labels_of(dataset: Any) -> np.ndarray:
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return np.asarray(targets).astype(np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


# --- table lookup: fitness read from a CSV table (e.g. NAS-Bench-201) ------------------------


NB201_FILE = "nb201_cifar10.csv.gz"


@lru_cache(maxsize=1)
def nb201_table() -> Path:
    """The NAS-Bench-201 CIFAR-10 table shipped with evonas (see evonas/data/README.md)."""
    packaged = resources.files("evonas") / "data" / NB201_FILE
    if isinstance(packaged, Path):
        return packaged
    copy = cache_dir() / NB201_FILE  # an install that is not a plain folder (a zip)
    if not copy.exists():
        copy.write_bytes(packaged.read_bytes())
    return copy


def table_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validated options of the `table` task: path (default: the packaged NAS-Bench-201
    table), key, fitness and report columns."""
    path = str(options.get("path") or nb201_table())
    unknown = set(options) - {"path", "key", "fitness", "report"}
    if unknown:
        raise TaskError(f"task.options.{sorted(unknown)[0]}: unknown option of the table task")
    report = options.get("report", [])
    if isinstance(report, str):
        report = [report]
    return {
        "path": str(path),
        "key": options.get("key", "arch_str"),
        "fitness": options.get("fitness", "c10valid_val_12ep"),
        "report": list(report),
    }


def table_columns(options: Mapping[str, Any]) -> list[str]:
    """The columns of the table file (its header only); TaskError if it cannot be read."""
    import pandas as pd

    path = table_options(options)["path"]
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError) as exc:
        raise TaskError(f"task.options.path: cannot read table {path} ({exc})") from None


def table_metrics(options: Mapping[str, Any]) -> list[str]:
    """The metrics a lookup returns: the fitness column, then the report columns."""
    opts = table_options(options)
    return list(dict.fromkeys([opts["fitness"], *opts["report"]]))


@lru_cache(maxsize=2)
def _load_table(path: str, key: str, columns: tuple[str, ...]) -> dict[str, dict[str, float]]:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise TaskError(f"task.options.path: cannot read table {path} ({exc})") from None
    missing = [c for c in (key, *columns) if c not in frame.columns]
    if missing:
        raise TaskError(f"{path}: no column {missing[0]!r} (columns: {list(frame.columns)})")
    values = frame[list(columns)].astype(float).to_dict("records")
    return dict(zip(frame[key].astype(str), values))


def load_table(options: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The table as {key: {column: value}} for the fitness and report columns (cached)."""
    opts = table_options(options)
    return _load_table(opts["path"], opts["key"], tuple(table_metrics(options)))


def table_lookup(options: Mapping[str, Any], key: str) -> dict[str, float]:
    report = options.get("report", ())
    frozen = (options.get("path"), options.get("key"), options.get("fitness"),
              tuple([report] if isinstance(report, str) else report), tuple(options))  # fmt: skip
    table = _table_of(frozen, options)
    if key not in table:
        raise KeyError(f"{key!r} is not in the table {table_options(options)['path']}")
    return dict(table[key])


_TABLES: dict[tuple, dict[str, dict[str, float]]] = {}  # per process: options -> loaded table


def _table_of(frozen: tuple, options: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The table for these options, validated and loaded once per process (lookups are hot)."""
    if frozen not in _TABLES:
        _TABLES[frozen] = load_table(options)
    return _TABLES[frozen]
