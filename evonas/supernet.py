"""Worker side of gradient-based search: a supernet and its bi-level training (imports torch).

The supernet is the space's network with every candidate operation on every edge of the cell
(`MixedOp`), mixed by one matrix of architecture weights shared by all cells (edges x ops):

- `darts` (Liu et al. 2019, first order): each edge's output is the softmax-weighted sum of all
  its candidates;
- `gdas` (Dong & Yang 2019): each edge runs one candidate, drawn by hard Gumbel-softmax at
  temperature tau (annealed from `tau_max` to `tau_min` over the epochs); the straight-through
  estimator passes gradients to every weight of the edge. Cheaper per step, and it does not
  collapse to parameter-free skip connections the way DARTS is known to.

Each training step takes one step on the architecture weights (Adam, on a batch of the
validation split) and then one on the network weights (SGD with momentum and cosine decay, on a
batch of the training split). `train_epoch(job)` trains one epoch, continuing from the previous
epoch's checkpoint, so a supernet search survives a kill at epoch granularity and a resumed one
is identical to an uninterrupted one. The derived genome takes the strongest op of each edge.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from evonas.builder import Nb201Reduction, _nb201_op
from evonas.spaces import NB201_EDGES

GRAD_CLIP = 5.0  # DARTS clips the network weights' gradient norm at 5


class MixedOp(nn.Module):
    """Every candidate op of one edge; `forward(x, weights, chosen)` mixes them by `weights`
    (one per op), or, with `chosen`, runs only that op (hard sampling: the other weights are 0
    in value but added, so that their gradients flow)."""

    def __init__(self, ops: tuple[str, ...], channels: int) -> None:
        super().__init__()
        self.candidates = nn.ModuleList(_nb201_op(op, channels) for op in ops)

    def forward(
        self, x: torch.Tensor, weights: torch.Tensor, chosen: int | None = None
    ) -> torch.Tensor:
        if chosen is None:
            return sum(w * op(x) for w, op in zip(weights, self.candidates))
        return sum(
            weights[i] * op(x) if i == chosen else weights[i]
            for i, op in enumerate(self.candidates)
        )


class SuperCell(nn.Module):
    """The NAS-Bench-201 cell with a MixedOp on each of its six edges."""

    def __init__(self, ops: tuple[str, ...], channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(MixedOp(ops, channels) for _ in NB201_EDGES)

    def forward(
        self, x: torch.Tensor, weights: torch.Tensor, chosen: list[int] | None
    ) -> torch.Tensor:
        nodes = [x]
        for target in (1, 2, 3):
            inputs = [
                edge(nodes[source], weights[e], None if chosen is None else chosen[e])
                for e, ((t, source), edge) in enumerate(zip(NB201_EDGES, self.edges))
                if t == target
            ]
            nodes.append(sum(inputs))
        return nodes[3]


class Supernet(nn.Module):
    """The NAS-Bench-201 skeleton (as `builder.build_nb201`) around SuperCells. `arch` holds the
    architecture weights; `mixing(training)` says how they mix the candidates."""

    def __init__(
        self,
        ops: tuple[str, ...],
        input_shape: tuple[int, ...],
        num_classes: int,
        channels: int = 16,
        cells_per_stage: int = 5,
        method: str = "darts",
    ) -> None:
        super().__init__()
        self.ops, self.method, self.tau = tuple(ops), method, 1.0
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        blocks: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage:
                blocks.append(Nb201Reduction(c, 2 * c))
                c *= 2
            blocks += [SuperCell(self.ops, c) for _ in range(cells_per_stage)]
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(c, num_classes))  # fmt: skip
        self.arch = nn.Parameter(1e-3 * torch.randn(len(NB201_EDGES), len(self.ops)))
        self.fixed: tuple[torch.Tensor, list[int] | None] | None = None  # set by `use`

    def network_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "arch"]

    def probabilities(self) -> torch.Tensor:
        """The architecture weights as a distribution over ops per edge (softmax)."""
        return torch.softmax(self.arch.detach().float(), dim=-1)

    def derived(self) -> list[str]:
        """The strongest op of each edge."""
        return [self.ops[i] for i in self.arch.detach().argmax(dim=-1).tolist()]

    def mixing(self) -> tuple[torch.Tensor, list[int] | None]:
        """Weights per edge and op, and the op each edge runs (None: all of them). Training:
        softmax (darts) or a hard Gumbel-softmax sample (gdas); evaluation: softmax (darts) or
        the derived cell (gdas)."""
        if self.fixed is not None:
            return self.fixed
        if self.method == "darts":
            return torch.softmax(self.arch, dim=-1), None
        if not self.training:
            chosen = self.arch.argmax(dim=-1)
            return nn.functional.one_hot(chosen, len(self.ops)).to(self.arch.dtype), chosen.tolist()
        while True:  # a draw with an infinite or NaN weight is drawn again (as GDAS does)
            gumbel = -torch.empty_like(self.arch).exponential_().log()
            soft = torch.softmax((self.arch + gumbel) / self.tau, dim=-1)
            if torch.isfinite(soft).all():
                break
        chosen = soft.argmax(dim=-1)
        hard = nn.functional.one_hot(chosen, len(self.ops)).to(soft.dtype)
        return hard - soft.detach() + soft, chosen.tolist()

    def use(self, weights: torch.Tensor | None, chosen: list[int] | None = None) -> None:
        """Mix by these weights (e.g. one-hot) instead of the architecture weights; None undoes."""
        self.fixed = None if weights is None else (weights, chosen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = self.mixing()
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, weights, chosen) if isinstance(block, SuperCell) else block(x)
        return self.head(x)


class SupernetSearch:
    """The bi-level training of a supernet, epoch by epoch (see the module docstring);
    `state_dict()` between epochs holds everything the rest depends on."""

    def __init__(self, net: Supernet, train: Any, val: Any, settings: dict[str, Any],
                 seed: int) -> None:  # fmt: skip
        self.net, self.train, self.val, self.settings = net, train, val, settings
        self.device = train.device
        self.epochs = int(settings["epochs"])
        self.batch_size = int(settings["batch_size"])
        weights = net.network_parameters()
        self.optimizer = torch.optim.SGD(weights, lr=settings["lr"], momentum=0.9,
                                         weight_decay=settings["weight_decay"])  # fmt: skip
        steps = max(1, math.ceil(len(train) / self.batch_size))
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=self.epochs * steps, eta_min=settings["lr"] * 0.04
        )
        self.arch_optimizer = torch.optim.Adam(
            [net.arch], lr=settings["arch_lr"], betas=(0.5, 0.999),
            weight_decay=settings["arch_weight_decay"],
        )  # fmt: skip
        self.train_order = torch.Generator().manual_seed(seed)
        self.val_order = torch.Generator().manual_seed(seed + 1)
        self.loss_fn = nn.CrossEntropyLoss()
        self.epoch = 0

    def temperature(self) -> float:
        """GDAS's tau for the current epoch: linear from tau_max to tau_min."""
        high, low = self.settings["tau_max"], self.settings["tau_min"]
        return high - (high - low) * self.epoch / max(1, self.epochs - 1)

    def _val_batches(self):
        while True:  # the validation split is usually the smaller: it cycles
            order = torch.randperm(len(self.val), generator=self.val_order)
            yield from self.val.batches(self.batch_size, order)

    def run_epoch(self) -> dict[str, float]:
        """One epoch of alternating architecture and network steps; its mean losses."""
        net, loss_fn = self.net, self.loss_fn
        net.tau = self.temperature()
        net.train()
        order = torch.randperm(len(self.train), generator=self.train_order)
        val = self._val_batches()
        totals = torch.zeros(2, device=self.device)
        seen = 0
        for x, y, _ in self.train.batches(self.batch_size, order):
            if len(y) < 2:
                continue  # batch norm cannot train on one sample
            x_val, y_val, _ = next(val)
            # architecture step: first order, on the validation split at the current weights
            self.arch_optimizer.zero_grad(set_to_none=True)
            arch_loss = loss_fn(net(x_val), y_val)
            arch_loss.backward()
            self.arch_optimizer.step()
            # network step, on the training split
            self.optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(net.network_parameters(), GRAD_CLIP)
            self.optimizer.step()
            self.schedule.step()
            totals += torch.stack([loss.detach(), arch_loss.detach()]) * len(y)
            seen += len(y)
        self.epoch += 1
        train_loss, arch_loss = (totals / max(1, seen)).tolist()
        if not (math.isfinite(train_loss) and math.isfinite(arch_loss)):
            raise FloatingPointError(f"supernet loss became {train_loss} in epoch {self.epoch}")
        return {"train_loss": train_loss, "arch_loss": arch_loss, "tau": net.tau}

    def state_dict(self) -> dict[str, Any]:
        state = {
            "epoch": self.epoch,
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "train_order": self.train_order.get_state(),
            "val_order": self.val_order.get_state(),
            "torch": torch.get_rng_state(),  # Gumbel noise draws from the global generator
        }
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.train_order.set_state(state["train_order"])
        self.val_order.set_state(state["val_order"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)


def train_epoch(job: Any) -> tuple[dict[str, float], list[list[float]]]:
    """Train the supernet of `job` (a `records.Job` with `supernet` settings) one epoch, from
    `job.resume_from` (None: a new supernet), and save the state to `job.checkpoint`. Returns
    the epoch's metrics and the architecture weights after it (edges x ops, raw)."""
    from evonas.batches import split_of
    from evonas.tasks import load_task
    from evonas.train import accuracy
    from evonas.weights import load_state_dict, save_state

    settings = job.supernet
    torch.set_num_threads(int(job.training.get("threads", 1)))
    device = torch.device("cuda" if job.device == "gpu" and torch.cuda.is_available() else "cpu")
    data = load_task(job.task)
    if len(data.input_shape) != 3:
        raise ValueError(f"the supernet needs images (C, H, W); task {job.task['name']} has "
                         f"inputs of shape {tuple(data.input_shape)}")  # fmt: skip
    loader = {"loader": job.training.get("loader", "auto"),
              "loader_workers": job.training.get("loader_workers", 2)}  # fmt: skip
    train, val = (split_of(data, s, device, loader) for s in ("train", "val"))
    started = time.perf_counter()
    torch.manual_seed(int(job.seed))
    net = Supernet(
        tuple(settings["ops"]), tuple(data.input_shape), data.num_classes,
        settings["channels"], settings["cells_per_stage"], settings["method"],
    )  # fmt: skip
    search = SupernetSearch(net.to(device), train, val, settings, int(job.seed))
    if job.resume_from:
        search.load_state_dict(load_state_dict(job.resume_from))
    metrics = search.run_epoch()
    metrics["val_accuracy"] = accuracy(net, val)  # in eval mode: see `Supernet.mixing`
    metrics["epoch_seconds"] = time.perf_counter() - started
    save_state(search.state_dict(), job.checkpoint)
    return metrics, net.arch.detach().float().cpu().tolist()
