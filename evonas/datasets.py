"""The built-in datasets, each a function of the task's `options` returning numpy arrays.

| name | data | options |
| --- | --- | --- |
| `digits` | scikit-learn's bundled 8x8 digits as 1x8x8 images | |
| `mnist1d` | MNIST-1D, generated offline and cached | |
| `synthetic` | noisy class templates, for tests | samples, length, classes, seed |
| `mnist`, `fashion_mnist` | IDX files (plain or .gz) | path, download, limit |
| `cifar10`, `cifar100` | the binary version's files | path, download, limit, labels (100) |
| `image_folder` | `path/<class>/<image>`, or train/ val/ test/ of those | path, size, channels |

A loader returns `x`, `y` (and `x_test`, `y_test`, `x_val`, `y_val` where the data have those
splits) and says how inputs are normalised: images stay uint8 here and are scaled to [0, 1] on the
device; CIFAR and image folders are then standardised per channel with the training split's mean
and standard deviation. `download: true` fetches the published files into `path` (default: the
evonas cache) and checks their MD5 first; nothing is ever downloaded unless asked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evonas.formats import (
    FormatError,
    download,
    extract,
    image_classes,
    read_cifar,
    read_idx,
    read_image_folder,
)

MAX_IMAGES = 2**31  # `limit` beyond any dataset: the whole training set


class TaskError(ValueError):
    """A task that cannot be loaded; the message says which and why."""


def cache_dir() -> Path:
    """Where generated and downloaded datasets are kept: $EVONAS_CACHE, else ~/.cache/evonas."""
    root = os.environ.get("EVONAS_CACHE") or Path.home() / ".cache" / "evonas"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_options(task: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TaskError(f"task.options.{unknown[0]}: unknown option of the {task} task "
                        f"(it takes {sorted(allowed)})")  # fmt: skip


def _whole(options: dict[str, Any], key: str, low: int, high: int, default: Any) -> Any:
    value = options.get(key, default)
    if value is default:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TaskError(f"task.options.{key}: expected a whole number in [{low}, {high}], "
                        f"got {value!r}")  # fmt: skip
    return value


def _flag(options: dict[str, Any], key: str) -> bool:
    value = options.get(key, False)
    if not isinstance(value, bool):
        raise TaskError(f"task.options.{key}: expected true or false, got {value!r}")
    return value


def _digits(options: dict[str, Any]) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    check_options("digits", options, set())
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    return {"x": x, "y": bunch.target}


def _mnist1d(options: dict[str, Any]) -> dict[str, Any]:
    check_options("mnist1d", options, set())
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


def _synthetic(options: dict[str, Any]) -> dict[str, Any]:
    """Noisy class templates: learnable in a few epochs, generated in milliseconds."""
    limits = {"samples": (600, 10, 1_000_000), "length": (16, 1, 100_000),
              "classes": (3, 2, 1_000), "seed": (0, 0, 2**32 - 1)}  # fmt: skip
    check_options("synthetic", options, set(limits))
    n, length, classes, seed = (_whole(options, k, low, high, default)
                                for k, (default, low, high) in limits.items())  # fmt: skip
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(classes, length))
    y = rng.integers(0, classes, size=n)
    x = templates[y] + rng.normal(scale=1.0, size=(n, length))
    return {"x": x.astype(np.float32)[:, None, :], "y": y}


# --- IDX: MNIST and Fashion-MNIST -------------------------------------------------------------

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")  # fmt: skip
# Where each dataset's authors publish the gzipped files, and their MD5s.
IDX_SOURCES = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
               "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                       "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")),
}  # fmt: skip
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def _idx_task(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def load(options: dict[str, Any]) -> dict[str, Any]:
        check_options(name, options, {"path", "download", "limit"})
        limit = _whole(options, "limit", 10, MAX_IMAGES, None)  # the files are shuffled
        root = _root(name, options)
        if _flag(options, "download"):
            url, md5s = IDX_SOURCES[name]
            for stem, md5 in zip(IDX_FILES, md5s):
                if _find_idx(root, stem) is None:
                    download(f"{url}{stem}.gz", root / f"{stem}.gz", md5)
        files = {}
        for stem in IDX_FILES:
            files[stem] = _find_idx(root, stem)
            if files[stem] is None:
                raise TaskError(f"{name}: {root / stem}[.gz] not found (set task.options.path "
                                "to the folder of the IDX files, or download: true)")  # fmt: skip
        images, labels, test_images, test_labels = (read_idx(files[s]) for s in IDX_FILES)
        if len(images) != len(labels) or len(test_images) != len(test_labels):
            raise TaskError(f"{name}: {root}: image and label files differ in length")
        return {"x": images[:limit, None], "y": labels[:limit],
                "x_test": test_images[:, None], "y_test": test_labels}  # fmt: skip

    return load


def _root(name: str, options: dict[str, Any]) -> Path:
    if "path" in options:
        if not isinstance(options["path"], str) or not options["path"]:
            raise TaskError(f"task.options.path: expected a folder, got {options['path']!r}")
        return Path(options["path"]).expanduser()
    if name == "fashion_mnist" and DEBIAN_FASHION_MNIST.is_dir():
        return DEBIAN_FASHION_MNIST
    return cache_dir() / name


def _find_idx(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


# --- CIFAR-10 and CIFAR-100, binary version ---------------------------------------------------

CIFAR = {  # archive, its MD5, folder inside it, training files, test file, label bytes
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                "c32a1d4ab5d03f1284b67883e8d87530", "cifar-10-batches-bin",
                [f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin", 1),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
                 "03b5dce01913d631647c71ecec9e9cb8", "cifar-100-binary", ["train.bin"],
                 "test.bin", 2),
}  # fmt: skip


def _cifar_task(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    url, md5, folder, train_files, test_file, label_bytes = CIFAR[name]
    allowed = {"path", "download", "limit"} | ({"labels"} if name == "cifar100" else set())

    def load(options: dict[str, Any]) -> dict[str, Any]:
        check_options(name, options, allowed)
        limit = _whole(options, "limit", 10, MAX_IMAGES, None)
        download_asked = _flag(options, "download")
        labels = options.get("labels", "fine")
        if labels not in ("fine", "coarse"):
            raise TaskError(f"task.options.labels: expected fine or coarse, got {labels!r}")
        index = 1 if labels == "fine" and label_bytes == 2 else 0
        root = _root(name, options)
        if not (root / test_file).is_file() and (root / folder / test_file).is_file():
            root = root / folder  # the parent of the unpacked archive's folder
        if download_asked and not all((root / f).is_file() for f in (*train_files, test_file)):
            archive = download(url, root / Path(url).name, md5)
            extract(archive, [*train_files, test_file], root)
        for file in (*train_files, test_file):
            if not (root / file).is_file():
                raise TaskError(f"{name}: {root / file} not found (set task.options.path to "
                                f"the {folder} folder of the binary version, or download: "
                                "true)")  # fmt: skip
        parts = [read_cifar(root / f, label_bytes, index) for f in train_files]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        x_test, y_test = read_cifar(root / test_file, label_bytes, index)
        return {"x": x[:limit], "y": y[:limit], "x_test": x_test, "y_test": y_test,
                "standardize": True}  # fmt: skip

    return load


# --- image folders ----------------------------------------------------------------------------

SPLIT_FOLDERS = ("train", "val", "test")


def _image_folder(options: dict[str, Any]) -> dict[str, Any]:
    check_options("image_folder", options, {"path", "size", "channels"})
    if not isinstance(options.get("path"), str):
        raise TaskError("task.options.path: the image_folder task needs the folder of class "
                        "folders (or of train/, val/, test/ folders of class folders)")  # fmt: skip
    root = Path(options["path"]).expanduser()
    size = options.get("size")
    if size is not None and not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 4096 for s in size)
    ):
        raise TaskError(f"task.options.size: expected [height, width] in pixels, got {size!r}")
    channels = options.get("channels", 3)
    if channels not in (1, 3):
        raise TaskError(f"task.options.channels: expected 1 (grey) or 3 (RGB), got {channels!r}")
    mode, shape = ("L" if channels == 1 else "RGB"), (tuple(size) if size else None)
    splits = {s: root / s for s in SPLIT_FOLDERS if (root / s).is_dir()}
    if "train" not in splits:
        classes = image_classes(root)
        x, y = read_image_folder(root, classes, shape, mode)
        return {"x": x, "y": y, "standardize": True, "classes": classes}
    classes = image_classes(splits["train"])
    raw: dict[str, Any] = {"standardize": True, "classes": classes}
    for split, folder in splits.items():
        extra = sorted(set(image_classes(folder)) - set(classes))
        if extra:
            raise TaskError(f"{folder}: class folder {extra[0]!r} is not in {splits['train']}")
        x, y = read_image_folder(folder, classes, shape, mode)
        prefix = "" if split == "train" else f"_{split}"
        raw[f"x{prefix}"], raw[f"y{prefix}"] = x, y
    return raw


BUILTIN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "digits": _digits,
    "mnist1d": _mnist1d,
    "synthetic": _synthetic,
    "mnist": _idx_task("mnist"),
    "fashion_mnist": _idx_task("fashion_mnist"),
    "cifar10": _cifar_task("cifar10"),
    "cifar100": _cifar_task("cifar100"),
    "image_folder": _image_folder,
}


def load_builtin(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The raw arrays of a built-in dataset; TaskError names the option or file at fault."""
    try:
        return BUILTIN[name](options)
    except FormatError as exc:
        raise TaskError(f"task {name}: {exc}") from None
