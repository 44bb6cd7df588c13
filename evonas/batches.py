"""A task's splits as batches on the training device, turned into model inputs there.

Two sources behind one protocol (`Batches`), chosen by `training.loader`:

- `TensorBatches` (`device`): the split lives on the device, copied there once per worker
  process and kept for the next evaluation; a batch is one indexing of the whole tensor, with no
  per-sample Python. On the CPU the arrays are used in place (no copy at all).
- `LoaderBatches` (`workers`): a `DataLoader` with worker processes, pinned memory and
  non-blocking copies, for a user's Datasets and for arrays too large for the device.

Both take the batch order from the caller (the same seeded permutation), so a model trains on
the same batches whichever source serves them, and yield `(x, y, index)`: x scaled and
standardised on the device (uint8 stays uint8 until then), and the samples' indices (for a
teacher's logits).
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from evonas.tasks import DatasetTask, Scaling, Task, TaskData

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
SPLITS = ("train", "val", "test")
# `auto` keeps arrays on a GPU when all splits take at most this share of its free memory.
DEVICE_SHARE = 0.5
_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class Batches(Protocol):
    """A split of a task, served as batches of model inputs on `device`."""

    device: torch.device

    def __len__(self) -> int:
        """The number of samples."""

    def batches(self, batch_size: int, order: torch.Tensor | None = None) -> Iterator[Batch]:
        """Batches in `order` (a permutation of the samples; None: as stored)."""

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model inputs and labels of the samples at `index`."""


def model_input(x: torch.Tensor, scaling: Scaling) -> torch.Tensor:
    """Stored inputs as the model sees them (see `Scaling`); float inputs of a task that needs
    no scaling are passed through untouched."""
    if x.dtype != torch.float32:
        x = x.float()
    if scaling.divisor != 1.0:
        x = x / scaling.divisor  # division, as numpy's `/ 255.0` did: the same floats
    if scaling.mean:
        mean, std = _statistics(scaling, x.device, x.dim())
        x = (x - mean) / std
    return x


@lru_cache(maxsize=16)
def _statistics(scaling: Scaling, device: torch.device, dims: int) -> tuple[torch.Tensor, ...]:
    """The mean and std as tensors on the device, made once (not a host copy per batch)."""
    shape = (1, -1) + (1,) * (dims - 2)
    return tuple(torch.tensor(v, device=device).view(shape) for v in (scaling.mean, scaling.std))


class TensorBatches:
    """A split held as tensors on the device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, scaling: Scaling) -> None:
        self.x, self.y, self.scaling, self.device = x, y, scaling, x.device

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int, order: torch.Tensor | None = None) -> Iterator[Batch]:
        if order is None:
            order = torch.arange(len(self.x))
        order = order.to(self.device)
        for begin in range(0, len(order), batch_size):
            index = order[begin : begin + batch_size]
            yield model_input(self.x[index], self.scaling), self.y[index], index

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = index.to(self.device)
        return model_input(self.x[index], self.scaling), self.y[index]


class _Arrays(Dataset):
    """Arrays as a Dataset that fetches a whole batch at once (`__getitems__`)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> Batch:
        index = np.asarray(indices)
        return (torch.from_numpy(self.x[index]), torch.from_numpy(self.y[index]),
                torch.from_numpy(index))  # fmt: skip


class _Indexed(Dataset):
    """A user's Dataset whose items also carry their index."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        x, y = self.dataset[i][:2]
        return torch.as_tensor(np.asarray(x)), int(y), i


def _already_batched(batch: Batch) -> Batch:
    return batch


class _Order:
    """The batch sampler: the batches of the epoch the trainer asks for next."""

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


class LoaderBatches:
    """A split served by a DataLoader with worker processes; copies overlap with compute."""

    def __init__(self, dataset: Dataset, scaling: Scaling, device: torch.device, workers: int):
        self.dataset, self.scaling, self.device = dataset, scaling, device
        self.order = _Order()
        batched = isinstance(dataset, _Arrays)
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.order,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,  # started once per evaluation, not per epoch
            # explicit: inside a loky worker the default context is loky's, which DataLoader
            # cannot start; fork is safe here because loader workers never touch CUDA
            multiprocessing_context=(_START_METHOD if workers > 0 else None),
            collate_fn=_already_batched if batched else None,
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, batch_size: int, order: torch.Tensor | None = None) -> Iterator[Batch]:
        indices = (order if order is not None else torch.arange(len(self))).tolist()
        starts = range(0, len(indices), batch_size)
        self.order.chunks = [indices[b : b + batch_size] for b in starts]
        for x, y, index in self.loader:
            x = x.to(self.device, non_blocking=True)
            yield model_input(x, self.scaling), y.to(self.device, non_blocking=True), index

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = next(self.batches(len(index), index))
        return x, y


# Per worker process: what was made for an object (a task's array, a user's Dataset, a task) on a
# device, kept for the next evaluations. The object is kept too, so its id stays unique.
_KEPT: dict[tuple[str, int, str], tuple[Any, Any]] = {}
KEPT_ENTRIES = 12  # beyond this, another task is running: the previous one's copies are freed


def _kept(what: str, obj: Any, device: torch.device, make: Callable[[], Any]) -> Any:
    key = (what, id(obj), str(device))
    if key not in _KEPT:
        if len(_KEPT) >= KEPT_ENTRIES:
            _KEPT.clear()
        _KEPT[key] = (obj, make())
    return _KEPT[key][1]


def _on_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """The array as a tensor on `device`: shared on the CPU, copied once per worker on a GPU."""
    tensor = torch.from_numpy(array)
    if device.type == "cpu":
        return tensor
    return _kept("array", array, device, lambda: tensor.to(device))


def fits_on_device(data: TaskData, device: torch.device) -> bool:
    """Whether all of a task's splits take at most DEVICE_SHARE of the device's free memory;
    decided once per task and device (later, its own copies would count against it)."""
    if device.type != "cuda":
        return True

    def decide() -> bool:
        free, _ = torch.cuda.mem_get_info(device)
        arrays = [data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test]
        return sum(a.nbytes for a in arrays if a is not None) <= DEVICE_SHARE * free

    return _kept("fits", data, device, decide)


def split_of(data: Task, split: str, device: torch.device, settings: dict[str, Any]) -> Batches:
    """One split of `data` ("train", "val" or "test") as batches on `device`, served as
    `settings['loader']` says (auto: arrays on the device when they fit, else workers)."""
    loader = settings.get("loader", "auto")
    workers = int(settings.get("loader_workers", 2))
    if isinstance(data, DatasetTask):
        dataset = getattr(data, split)
        if loader == "device":
            x, y = _materialised(dataset, device)
            return TensorBatches(x, y, data.scaling)
        return LoaderBatches(_Indexed(dataset), data.scaling, device, workers)
    x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    if loader == "workers" or (loader == "auto" and not fits_on_device(data, device)):
        return LoaderBatches(_Arrays(x, y), data.scaling, device, workers)
    return TensorBatches(_on_device(x, device), _on_device(y, device), data.scaling)


def arrays(x: np.ndarray, y: np.ndarray, device: str | torch.device = "cpu") -> TensorBatches:
    """Plain arrays (float inputs used as they are) as batches on `device`."""
    device = torch.device(device)
    return TensorBatches(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device), Scaling())


def _materialised(dataset: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A user's Dataset read into two tensors on `device` once per worker process
    (`training.loader: device`), kept for the next evaluations."""

    def read() -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for x, y, _ in DataLoader(_Indexed(dataset), batch_size=512):
            xs.append(x)
            ys.append(y)
        return torch.cat(xs).to(device), torch.cat(ys).to(device)

    return _kept("dataset", dataset, device, read)


def steps_per_epoch(samples: int, batch_size: int) -> int:
    return max(1, math.ceil(samples / batch_size))
