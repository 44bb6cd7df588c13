"""Data augmentation of whole batches on the device: random crop with padding, flip, cutout.

Each works on images (N, C, H, W) and signals (N, C, L) alike, draws from the generator it is
given (so a seed fixes every crop, flip and hole), and runs as a few tensor operations per batch:
no per-sample Python, no copy to the host. Inputs are already normalised, so padding and holes
are zeros, the mean of the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional


@dataclass(frozen=True)
class Augment:
    """`training.augment`: crop = padding in pixels (0: none), flip = mirror half of the batch
    along the last axis, cutout = side of the zeroed square (or segment) per sample (0: none)."""

    crop: int = 0
    flip: bool = False
    cutout: int = 0

    @classmethod
    def of(cls, settings: dict[str, Any] | None) -> Augment:
        return cls(**(settings or {}))

    @property
    def active(self) -> bool:
        return bool(self.crop or self.flip or self.cutout)


def augment(x: torch.Tensor, how: Augment, generator: torch.Generator) -> torch.Tensor:
    """An augmented copy of the batch `x` (spatial axes after the channel axis)."""
    if how.crop:
        x = random_crop(x, how.crop, generator)
    if how.flip:
        x = random_flip(x, generator)
    if how.cutout:
        x = cutout(x, how.cutout, generator)
    return x


def _spatial(x: torch.Tensor) -> int:
    if x.dim() not in (3, 4):
        shape = tuple(x.shape)
        raise ValueError(f"augmentation needs (N, C, L) or (N, C, H, W) inputs, got {shape}")
    return x.dim() - 2


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad every spatial side by `padding`, then cut each sample back to its size at a
    random offset (a shift of up to `padding` in each direction)."""
    dims = _spatial(x)
    n, sizes = len(x), x.shape[2:]
    padded = functional.pad(x, [padding] * (2 * dims))
    offsets = torch.randint(0, 2 * padding + 1, (n, dims), generator=generator, device=x.device)
    batch = torch.arange(n, device=x.device)
    channel = torch.arange(x.shape[1], device=x.device)
    if dims == 1:
        cols = offsets[:, 0, None] + torch.arange(sizes[0], device=x.device)
        return padded[batch[:, None, None], channel[None, :, None], cols[:, None, :]]
    rows = offsets[:, 0, None] + torch.arange(sizes[0], device=x.device)
    cols = offsets[:, 1, None] + torch.arange(sizes[1], device=x.device)
    return padded[batch[:, None, None, None], channel[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]  # fmt: skip


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each sample along its last axis with probability 1/2."""
    _spatial(x)
    flip = torch.rand(len(x), generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a `size`-wide square (a segment for signals) at a random centre in each sample
    (DeVries & Taylor 2017); near an edge the hole is cut off by it."""
    dims = _spatial(x)
    keep = torch.ones((len(x), *x.shape[2:]), dtype=torch.bool, device=x.device)
    inside = None
    for axis, length in enumerate(x.shape[2:]):
        centre = torch.randint(0, length, (len(x), 1), generator=generator, device=x.device)
        start = centre - size // 2
        position = torch.arange(length, device=x.device)[None, :]
        hit = (position >= start) & (position < start + size)  # (N, length)
        hit = hit.view(len(x), *[length if a == axis else 1 for a in range(dims)])
        inside = hit if inside is None else inside & hit
    keep &= ~inside
    return x * keep.unsqueeze(1).to(x.dtype)
