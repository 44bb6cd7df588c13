"""Zero-cost proxies: scores of an untrained network from one batch, before any training.

- `synflow` (Tanaka et al. 2020; as a NAS proxy, Abdelfattah et al. 2021): with every weight
  replaced by its absolute value and an all-ones input, the sum over parameters of
  |theta * dR/dtheta| where R is the sum of the outputs. Data-free; reported as log10(1 + score)
  because raw scores span hundreds of orders of magnitude.
- `naswot` (Mellor et al. 2021, "NAS without training"): the log-determinant of the kernel of
  binary activation codes (which units are positive after each activation) of a batch: networks
  that tell the inputs apart at initialisation tend to train well.

Both work on a copy of the model, in double precision for synflow, so the model that is then
trained, its batch-norm statistics and the random streams of training are untouched. They are
journaled as metrics (`training.zero_cost`), beside what training measures.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

SATURATED = 308.0  # log10 of the largest double: a score that overflowed
ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.LeakyReLU, nn.ReLU6)


def synflow(model: nn.Module, x: torch.Tensor) -> float:
    """log10(1 + synflow score) of `model` for inputs shaped like `x` (its values are unused)."""
    net = copy.deepcopy(model).double().eval()  # eval: batch norm uses its (initial) statistics
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.abs_()
    net.zero_grad()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    net(ones).sum().backward()
    score = sum((p * p.grad).abs().sum().item() for p in net.parameters() if p.grad is not None)
    return math.log10(1.0 + score) if math.isfinite(score) else SATURATED


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """The NASWOT score of `model` on the batch `x` (at least two samples)."""
    net = copy.deepcopy(model).train()
    codes: list[torch.Tensor] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        codes.append((output.detach().flatten(1) > 0).double())

    for module in net.modules():
        if isinstance(module, ACTIVATIONS):
            module.register_forward_hook(record)
    with torch.no_grad():
        net(x)
    if not codes:  # no activation to read (a linear model): every input looks the same
        return 0.0
    code = torch.cat(codes, dim=1)
    kernel = code @ code.T + (1 - code) @ (1 - code).T  # units on which two inputs agree
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else 0.0


PROXIES: dict[str, Callable[[nn.Module, torch.Tensor], float]] = {
    "synflow": synflow,
    "naswot": naswot,
}


BATCH = 64  # samples naswot sees (its kernel is BATCH x BATCH)


def zero_cost_metrics(names: list[str], model: nn.Module, train) -> dict[str, float]:
    """The proxies named (journaled under their own names) of `model` on the first BATCH
    samples of `train` (`evonas.batches.Batches`: no random draw)."""
    if not names:
        return {}
    x, _ = train.take(torch.arange(min(BATCH, len(train))))
    return {name: PROXIES[name](model, x) for name in names}
