"""GPUs on one node: which exist (parent side) and one lease per worker (worker side).

A lease is an exclusive `flock` on `LEASE_DIR/gpu<id>-<slot>.lock`: the OS releases it when the
worker process dies, so a crashed or killed worker never strands a GPU, and separate evonas runs
on the same node share the same slots. A worker keeps its lease for its lifetime (CUDA binds a
process to the devices it saw when it started), and sets `CUDA_VISIBLE_DEVICES` to the leased id
before CUDA initialises. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from evonas.config import Parallel

_LEASE: tuple[tuple, str | None, IO | None] | None = None  # (settings, GPU, its lock file)


def gpu_ids(setting: str) -> list[str]:
    """GPUs from `parallel.devices`, as CUDA_VISIBLE_DEVICES entries: 'cpu' -> none, '0,1' ->
    those, 'auto' -> the GPUs this process may use (CUDA_VISIBLE_DEVICES as given, indices, UUIDs
    or MIG names; else one per `GPU n:` line of `nvidia-smi -L`)."""
    if setting == "cpu":
        return []
    if setting != "auto":
        return [part.strip() for part in str(setting).split(",") if part.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [p.strip() for p in visible.split(",") if p.strip() and p.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    count = sum(line.startswith("GPU ") for line in listing.stdout.splitlines())
    return [str(i) for i in range(count)]


def lease_dir() -> str:
    return os.environ.get("EVONAS_LEASE_DIR") or str(
        Path(tempfile.gettempdir()) / f"evonas-gpu-leases-{os.getuid()}"
    )


class LeaseDirError(ValueError):
    """A lease folder that another user could tamper with; the message says why."""


def private_folder(folder: str | Path) -> Path:
    """The lease folder, created with mode 0700 if new; refused when it is a symlink or not a
    folder, belongs to another user, or others may write into it (they could plant lock files
    or links there)."""
    path = Path(folder)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    where = f"GPU lease folder {path} (EVONAS_LEASE_DIR)"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise LeaseDirError(f"{where}: a symlink or not a folder; refusing to use it")
    if info.st_uid != os.getuid():
        raise LeaseDirError(f"{where}: owned by uid {info.st_uid}, not by you ({os.getuid()})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise LeaseDirError(f"{where}: others may write into it (mode {info.st_mode & 0o777:o})")
    return path


def _lock_file(path: Path) -> IO:
    """A lock file opened for appending, never through a symlink someone planted."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "a")


def lease(gpus: list[str], per_gpu: int, folder: str) -> str | None:
    """This worker's GPU: the one it already leased, else the first free slot. None when every
    slot is taken: the worker then sees no GPU and stays on the CPU for its lifetime (it may have
    asked CUDA already, which binds a process to what it saw). A lease changes only between runs,
    and a new CUDA_VISIBLE_DEVICES reaches CUDA only in a process that has not initialised it."""
    global _LEASE
    settings = (tuple(gpus), per_gpu, folder)
    if _LEASE is not None:
        if _LEASE[0] == settings:
            return _LEASE[1]
        if _LEASE[2] is not None:
            _LEASE[2].close()  # a warm worker serving another run: give its slot back
        _LEASE = None
    folder_path = private_folder(folder)
    for slot in range(per_gpu):
        for gpu in gpus:
            name = "".join(c if c.isalnum() or c in "-_" else "_" for c in gpu)
            handle = _lock_file(folder_path / f"gpu{name}-{slot}.lock")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _LEASE = (settings, gpu, handle)
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            return gpu
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # no free slot: this worker sees no GPU
    _LEASE = (settings, None, None)
    return None


@dataclass(frozen=True)
class Placement:
    """Where a run's evaluations go: GPUs (if any), whether evaluations ask for one, the lease
    settings of local workers, and what each task needs from a cluster worker."""

    gpus: tuple[str, ...]
    device: str  # gpu | cpu
    lease: dict | None
    resources: dict | None


def placement(parallel: Parallel) -> Placement:
    """Where the evaluations of a config's `parallel` section go."""
    gpus = tuple(gpu_ids(parallel.devices))
    # Workers on this node lease GPUs; an existing cluster places GPU work itself.
    local = parallel.backend in ("loky", "inline") or not parallel.address
    settings = {"gpus": list(gpus), "per_gpu": parallel.evaluations_per_gpu, "folder": lease_dir()}
    lease = settings if gpus and local else None
    if lease:  # checked in the parent, before the run exists, as well as in each worker
        private_folder(settings["folder"])
    return Placement(gpus, "gpu" if gpus else "cpu", lease, {"GPU": 1} if gpus else None)
