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


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    model.eval()
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
) -> dict[str, float]:
    """Train `model` in place with mini-batch gradient descent; returns loss and timing.

    Shuffling and initialisation-independent randomness (dropout) come from `seed`. Raises
    TrainingDiverged on a non-finite loss and TimeBudgetExceeded past `settings['timeout']` seconds.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
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
        order = torch.randperm(len(xt), generator=generator)
        for begin in range(0, len(xt), batch_size):
            index = order[begin : begin + batch_size]
            if len(index) < 2 and len(xt) >= 2:
                continue  # batch norm cannot train on a single sample
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[index]), yt[index])
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
