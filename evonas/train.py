"""The training and evaluation loop: a pure function of model, data, settings and seed."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TimeBudgetExceeded(RuntimeError):
    """Training ran past its wall-clock budget."""


def device_of(model: nn.Module) -> torch.device:
    """Where the model lives (the CPU for a model without float parameters, e.g. quantized)."""
    return next(model.parameters(), torch.zeros(0)).device


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float):
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
        )
    raise ValueError(f"training.optimizer: unknown optimizer {name!r}")


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, hard_loss: torch.Tensor, settings: dict[str, Any]
) -> torch.Tensor:
    """Hinton et al. (2015): soft targets at temperature T, scaled by T^2, mixed with the hard
    cross-entropy."""
    alpha = float(settings.get("distill_alpha", 0.5))
    t = float(settings.get("distill_temperature", 4.0))
    soft = nn.functional.kl_div(
        nn.functional.log_softmax(student / t, dim=1),
        nn.functional.log_softmax(teacher / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * t * t * soft + (1 - alpha) * hard_loss


@torch.no_grad()
def logits_of(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
    """The model's outputs for every row of `x`, in eval mode."""
    model.eval()
    xt = torch.from_numpy(x).to(device_of(model))
    return torch.cat([model(xt[i : i + batch_size]) for i in range(0, len(xt), batch_size)])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    model.eval()
    device = device_of(model)
    x, y = x.to(device), y.to(device)
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
    return correct / max(1, len(x))


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    settings: dict[str, Any],
    lr: float,
    seed: int,
    teacher_logits: torch.Tensor | None = None,
) -> dict[str, float]:
    """Train `model` in place with mini-batch gradient descent; returns loss and timing.

    Shuffling and initialisation-independent randomness (dropout) come from `seed`. With
    `teacher_logits` (one row per training sample) the loss is knowledge distillation:
    `distill_alpha` x T^2 x KL(teacher || student at temperature T) + (1 - alpha) x cross-entropy,
    with T = `distill_temperature`. Raises TrainingDiverged on a non-finite loss and
    TimeBudgetExceeded past `settings['timeout']` seconds.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = device_of(model)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    if teacher_logits is not None:
        teacher_logits = teacher_logits.to(device)
    optimizer = make_optimizer(model, settings["optimizer"], lr, settings["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    batch_size, epochs = settings["batch_size"], settings["epochs"]
    budget = settings.get("timeout")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, epochs * math.ceil(len(xt) / batch_size))
    )
    start = time.perf_counter()
    loss_value = float("nan")
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=generator).to(device)
        for begin in range(0, len(xt), batch_size):
            index = order[begin : begin + batch_size]
            if len(index) < 2 and len(xt) >= 2:
                continue  # batch norm cannot train on a single sample
            optimizer.zero_grad(set_to_none=True)
            logits = model(xt[index])
            loss = loss_fn(logits, yt[index])
            if teacher_logits is not None:
                loss = distillation_loss(logits, teacher_logits[index], loss, settings)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingDiverged(f"loss became {loss_value} in epoch {epoch + 1}")
            loss.backward()
            optimizer.step()
            scheduler.step()
        if budget and time.perf_counter() - start > budget:
            raise TimeBudgetExceeded(
                f"training exceeded its budget of {budget} s in epoch {epoch + 1}"
            )
    return {"train_loss": loss_value, "train_seconds": time.perf_counter() - start}
