"""Datasets as tasks with fixed, seeded train/validation/test splits (numpy only, no torch).

Built-in tasks: `digits` (scikit-learn's bundled 8x8 digits as 1x8x8 images), `mnist1d` (generated
offline by the `mnist1d` package, cached on disk), `synthetic` (tiny, learnable, for tests) and
`fashion_mnist` (IDX files, e.g. Debian's dataset-fashion-mnist; options `path`, and `limit`
to train on the first N training images). Any other name of the form
`pkg.module:function` is a user task: the function takes the task's `options` as keyword
arguments and returns a mapping with `x_train`, `y_train`, `x_val`, `y_val` and optionally `x_test`,
`y_test` (numpy arrays; x shaped (N, F), (N, C, L) or (N, C, H, W); integer labels).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from evonas.plugins import PluginError, load_callable


class TaskError(ValueError):
    """A task that cannot be loaded; the message says which and why."""


@dataclass(frozen=True)
class TaskData:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])


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
    chance = {"val_accuracy": _majority_share(data.y_val)}
    if data.y_test is not None:
        chance["test_accuracy"] = _majority_share(data.y_test)
    return TaskInfo(data.name, data.input_shape, data.num_classes, data.x_test is not None, chance)


def _majority_share(labels: np.ndarray) -> float:
    return float(np.bincount(labels).max() / max(1, len(labels)))


def cache_dir() -> Path:
    """Where generated datasets are cached: $EVONAS_CACHE, else ~/.cache/evonas."""
    root = os.environ.get("EVONAS_CACHE") or Path.home() / ".cache" / "evonas"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded shuffle, then (x_rest, y_rest, x_part, y_part) with `fraction` in the part."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_part = max(1, round(len(x) * fraction))
    part, rest = order[:n_part], order[n_part:]
    return x[rest], y[rest], x[part], y[part]


def _digits(options: dict[str, Any]) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    return {"x": x, "y": bunch.target}


def _mnist1d(options: dict[str, Any]) -> dict[str, np.ndarray]:
    path = cache_dir() / "mnist1d.npz"
    if not path.exists():
        from mnist1d.data import get_dataset_args, make_dataset

        data = make_dataset(get_dataset_args())
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(
            tmp, x=data["x"], y=data["y"], x_test=data["x_test"], y_test=data["y_test"]
        )
        os.replace(tmp, path)
    with np.load(path) as data:
        return {
            "x": data["x"].astype(np.float32)[:, None, :],
            "y": data["y"],
            "x_test": data["x_test"].astype(np.float32)[:, None, :],
            "y_test": data["y_test"],
        }


def _synthetic(options: dict[str, Any]) -> dict[str, np.ndarray]:
    """Noisy class templates: learnable in a few epochs, generated in milliseconds."""
    limits = {"samples": (600, 10, 1_000_000), "length": (16, 1, 100_000),
              "classes": (3, 2, 1_000), "seed": (0, 0, 2**32 - 1)}  # fmt: skip
    unknown = sorted(set(options) - set(limits))
    if unknown:
        raise TaskError(f"task.options.{unknown[0]}: unknown option of the synthetic task "
                        f"(it takes {sorted(limits)})")  # fmt: skip
    values = {}
    for key, (default, low, high) in limits.items():
        value = options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise TaskError(f"task.options.{key}: expected a whole number in [{low}, {high}], "
                            f"got {value!r}")  # fmt: skip
        values[key] = value
    n, length, classes, seed = (values[k] for k in ("samples", "length", "classes", "seed"))
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(classes, length))
    y = rng.integers(0, classes, size=n)
    x = templates[y] + rng.normal(scale=1.0, size=(n, length))
    return {"x": x.astype(np.float32)[:, None, :], "y": y}


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist(options: dict[str, Any]) -> dict[str, np.ndarray]:
    root = Path(options.get("path", "/usr/share/datasets/fashion-mnist"))

    def find(stem: str) -> Path:
        for name in (stem, stem + ".gz"):
            if (root / name).exists():
                return root / name
        raise TaskError(f"fashion_mnist: {root / stem}[.gz] not found (set task.options.path)")

    limit = options.get("limit")  # the first N training images (the files are shuffled)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 10):
        raise TaskError(f"task.options.limit: expected a whole number of images >= 10, got "
                        f"{limit!r}")  # fmt: skip
    x = _read_idx(find("train-images-idx3-ubyte"))[:limit].astype(np.float32)[:, None] / 255.0
    y = _read_idx(find("train-labels-idx1-ubyte"))[:limit]
    x_test = _read_idx(find("t10k-images-idx3-ubyte")).astype(np.float32)[:, None] / 255.0
    y_test = _read_idx(find("t10k-labels-idx1-ubyte"))
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}


BUILTIN: dict[str, Callable[[dict[str, Any]], dict[str, np.ndarray]]] = {
    "digits": _digits,
    "mnist1d": _mnist1d,
    "synthetic": _synthetic,
    "fashion_mnist": _fashion_mnist,
}


def load_task(spec: Mapping[str, Any]) -> TaskData:
    """Load the task described by the config's `task` section (cached per process)."""
    return _load_cached(json.dumps(dict(spec), sort_keys=True))


@lru_cache(maxsize=4)
def _load_cached(spec_json: str) -> TaskData:
    spec = json.loads(spec_json)
    name, options = spec["name"], dict(spec.get("options") or {})
    if name in BUILTIN:
        raw = BUILTIN[name](options)
        return _split_builtin(name, raw, spec)
    if ":" not in name:
        raise TaskError(
            f"task.name: unknown task {name!r}; expected {sorted(BUILTIN)} or pkg.mod:fn"
        )
    return _user_task(name, options)


def _split_builtin(name: str, raw: dict[str, np.ndarray], spec: dict[str, Any]) -> TaskData:
    seed = int(spec.get("split_seed", 0))
    x, y = raw["x"], raw["y"].astype(np.int64)
    if "x_test" in raw:
        x_test, y_test = raw["x_test"], raw["y_test"].astype(np.int64)
    else:
        x, y, x_test, y_test = split(x, y, float(spec.get("test_fraction", 0.2)), seed + 1)
    x_train, y_train, x_val, y_val = split(x, y, float(spec.get("val_fraction", 0.2)), seed)
    classes = int(max(y.max(), y_test.max()) + 1)
    return TaskData(name, x_train, y_train, x_val, y_val, x_test, y_test, classes)


def _user_task(name: str, options: dict[str, Any]) -> TaskData:
    try:
        fn = load_callable(name, what="task.name")
    except PluginError as exc:
        raise TaskError(str(exc)) from None
    try:
        raw = fn(**options)
    except Exception as exc:  # user code: report, never crash with a traceback
        raise TaskError(f"task {name} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(raw, Mapping):
        raise TaskError(f"task {name}: must return a mapping with x_train, y_train, x_val, y_val")
    missing = [k for k in ("x_train", "y_train", "x_val", "y_val") if k not in raw]
    if missing:
        raise TaskError(f"task {name}: returned mapping lacks {', '.join(missing)}")
    arrays = {k: np.asarray(v) for k, v in raw.items()}
    for key in ("x_train", "x_val", "x_test"):
        if key in arrays:
            arrays[key] = arrays[key].astype(np.float32)
    for key in ("y_train", "y_val", "y_test"):
        if key in arrays:
            arrays[key] = arrays[key].astype(np.int64)
    ys = [arrays[k] for k in ("y_train", "y_val", "y_test") if k in arrays]
    classes = int(max(y.max() for y in ys) + 1)
    return TaskData(
        name,
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_val"],
        arrays["y_val"],
        arrays.get("x_test"),
        arrays.get("y_test"),
        classes,
    )


def task_fingerprint(data: TaskData) -> str:
    """A short hash of the split contents, to notice a task that changed under a run."""
    h = hashlib.sha256()
    for array in (data.x_train, data.y_train, data.x_val, data.y_val):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


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
