"""The training and evaluation loop: a pure function of model, batches, settings and seed.

`Recipe` is the typed form of the `training` settings the loop uses, with each `auto` resolved
for the device: mixed precision (bf16 where the GPU has it, fp16 with a gradient scaler
otherwise; fp32 on the CPU, where autocast is rarely faster), channels-last and cudnn autotuning
on CUDA. Everything runs on the device: batches arrive there (`evonas.batches`), are augmented
there (`evonas.augment`), and the loss is read back once per `SYNC_STEPS` steps, not per step,
so a GPU never waits for the host.
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evonas.augment import Augment, augment
from evonas.batches import Batches, steps_per_epoch

SYNC_STEPS = 64  # steps between reads of the loss (each read makes the host wait for the GPU)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TimeBudgetExceeded(RuntimeError):
    """Training ran past its wall-clock budget."""


@dataclass(frozen=True)
class Recipe:
    """How to train, resolved for one device (see the module docstring)."""

    optimizer: str = "adam"
    epochs: int = 1
    batch_size: int = 64
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    schedule: str = "cosine"  # cosine | onecycle | constant
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: Augment = Augment()
    precision: str = "fp32"  # fp32 | bf16 | fp16
    channels_last: bool = False
    cudnn_benchmark: bool = False
    compile: bool = False
    timeout: float = 0.0

    @classmethod
    def of(cls, settings: dict[str, Any], device: torch.device) -> Recipe:
        """The recipe of the `training` settings (a plain dict) on `device`."""
        cuda = device.type == "cuda"
        precision = settings.get("precision", "auto")
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
        channels_last = settings.get("channels_last", "auto")
        cudnn = settings.get("cudnn_benchmark", "auto")
        return cls(
            optimizer=settings.get("optimizer", "adam"),
            epochs=int(settings.get("epochs", 1)),
            batch_size=int(settings.get("batch_size", 64)),
            weight_decay=float(settings.get("weight_decay", 0.0)),
            momentum=float(settings.get("momentum", 0.9)),
            nesterov=bool(settings.get("nesterov", True)),
            schedule=settings.get("schedule", "cosine"),
            warmup_epochs=float(settings.get("warmup_epochs", 0.0)),
            label_smoothing=float(settings.get("label_smoothing", 0.0)),
            augment=Augment.of(settings.get("augment")),
            precision=precision,
            channels_last=cuda if channels_last == "auto" else bool(channels_last),
            cudnn_benchmark=cuda if cudnn == "auto" else bool(cudnn),
            compile=bool(settings.get("compile", False)),
            timeout=float(settings.get("timeout") or 0.0),
        )

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=DTYPES[self.precision])

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def device_of(model: nn.Module) -> torch.device:
    """Where the model lives (the CPU for a model without float parameters, e.g. quantized)."""
    return next(model.parameters(), torch.zeros(0)).device


def prepare(model: nn.Module, recipe: Recipe) -> nn.Module:
    """The model in the recipe's memory layout, and cudnn set to autotune if asked."""
    if recipe.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(model: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    params, decay = model.parameters(), recipe.weight_decay
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0,
                               weight_decay=decay)  # fmt: skip
    raise ValueError(f"training.optimizer: unknown optimizer {recipe.optimizer!r}")


def make_schedule(
    optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int, lr: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule, stepped once per batch: linear warm-up over `warmup_epochs`,
    then cosine decay to 0, one-cycle (Smith 2018), or constant."""
    total = max(1, recipe.epochs * steps_per_epoch)
    warm = min(total - 1, round(recipe.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler
    if recipe.schedule == "onecycle" and total >= 4:
        # the rise takes `warm` steps (default: torch's 30 %), at least 2 and leaving 2 to fall:
        # OneCycleLR divides by zero on a one-step phase
        rise = min(max(warm or round(0.3 * total), 2), total - 2)
        return sched.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total, pct_start=rise / total, cycle_momentum=False
        )  # momentum stays the configured one
    if recipe.schedule == "cosine" and not warm:
        return sched.CosineAnnealingLR(optimizer, T_max=total)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)  # the full rate comes with the first step after
        if recipe.schedule != "cosine":
            return 1.0  # constant, or one-cycle on too few steps to cycle
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return sched.LambdaLR(optimizer, factor)


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
def logits_of(model: nn.Module, source: Batches, recipe: Recipe | None = None) -> torch.Tensor:
    """The model's outputs (float32) for every sample of `source`, in order, in eval mode."""
    recipe = recipe or Recipe()
    model.eval()
    outputs = []
    with recipe.autocast(source.device):
        for x, _, _ in source.batches(1024):
            outputs.append(model(recipe.layout(x)).float())
    return torch.cat(outputs)


@torch.no_grad()
def accuracy(model: nn.Module, source: Batches, recipe: Recipe | None = None) -> float:
    """The share of samples of `source` whose largest output is their label, in eval mode."""
    recipe = recipe or Recipe()
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=source.device)
    with recipe.autocast(source.device):
        for x, y, _ in source.batches(1024):
            correct += (model(recipe.layout(x)).argmax(dim=1) == y).sum()
    return int(correct) / max(1, len(source))


class Trainer:
    """One training run, epoch by epoch: `run_epoch()` trains the next epoch; between epochs
    `state_dict()` captures everything the rest depends on (weights, optimizer, schedule, grad
    scaler, and the random streams of shuffling, augmentation and dropout), so a run restored
    with `load_state_dict` continues exactly as if it had never stopped. The schedule spans
    `settings['epochs']`, however many epochs a caller actually runs.

    Shuffling, augmentation and dropout come from `seed`. With `teacher_logits` (one row per
    training sample) the loss is knowledge distillation: `distill_alpha` x T^2 x KL(teacher ||
    student at temperature T) + (1 - alpha) x cross-entropy, with T = `distill_temperature`.
    Raises TrainingDiverged on a non-finite loss and TimeBudgetExceeded past
    `settings['timeout']` seconds of this object's training.
    """

    def __init__(
        self,
        model: nn.Module,
        source: Batches,
        settings: dict[str, Any],
        lr: float,
        seed: int,
        teacher_logits: torch.Tensor | None = None,
    ) -> None:
        self.source, self.settings, self.device = source, settings, source.device
        self.recipe = recipe = Recipe.of(settings, self.device)
        torch.manual_seed(seed)
        self.order_generator = torch.Generator().manual_seed(seed)
        self.augment_generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.teacher_logits = None if teacher_logits is None else teacher_logits.to(self.device)
        self.model = prepare(model, recipe)
        self.stepper = torch.compile(self.model) if recipe.compile else self.model
        self.optimizer = make_optimizer(self.model, recipe, lr)
        steps = steps_per_epoch(len(source), recipe.batch_size)
        self.schedule = make_schedule(self.optimizer, recipe, steps, lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=recipe.precision == "fp16")
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.epoch, self.seconds, self.last_loss = 0, 0.0, float("nan")

    def run_epoch(self) -> float:
        """Train one epoch; returns its mean loss."""
        started = time.perf_counter()
        recipe, device, model = self.recipe, self.device, self.model
        model.train()
        order = torch.randperm(len(self.source), generator=self.order_generator)
        total = torch.zeros((), device=device)
        seen = 0
        for step, (x, y, index) in enumerate(self.source.batches(recipe.batch_size, order)):
            if len(y) < 2 <= recipe.batch_size and len(self.source) >= 2:
                continue  # a trailing batch of one: batch norm cannot train on one sample
            if recipe.augment.active:
                x = augment(x, recipe.augment, self.augment_generator)
            self.optimizer.zero_grad(set_to_none=True)
            with recipe.autocast(device):
                logits = self.stepper(recipe.layout(x)).float()  # the loss in float32
                loss = self.loss_fn(logits, y)
                if self.teacher_logits is not None:
                    teacher = self.teacher_logits[index.to(device)]
                    loss = distillation_loss(logits, teacher, loss, self.settings)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.schedule.step()
            total += loss.detach() * len(y)
            seen += len(y)
            if step % SYNC_STEPS == SYNC_STEPS - 1:
                _check_finite(float(total), self.epoch)
        self.last_loss = float(total) / max(1, seen)
        _check_finite(self.last_loss, self.epoch)
        self.epoch += 1
        self.seconds += time.perf_counter() - started
        if recipe.timeout and self.seconds > recipe.timeout:
            raise TimeBudgetExceeded(
                f"training exceeded its budget of {recipe.timeout:g} s in epoch {self.epoch}"
            )
        return self.last_loss

    def stats(self) -> dict[str, float]:
        """The last epoch's mean loss and the seconds trained (over every session of a run
        continued from a `state_dict`)."""
        return {"train_loss": self.last_loss, "train_seconds": self.seconds}

    def state_dict(self) -> dict[str, Any]:
        state = {
            "epoch": self.epoch,
            "seconds": self.seconds,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "order": self.order_generator.get_state(),
            "augment": self.augment_generator.get_state(),
            "torch": torch.get_rng_state(),  # dropout draws from the global generator
        }
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.seconds = int(state["epoch"]), float(state["seconds"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.order_generator.set_state(state["order"])
        self.augment_generator.set_state(state["augment"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)


def train(
    model: nn.Module,
    source: Batches,
    settings: dict[str, Any],
    lr: float,
    seed: int,
    teacher_logits: torch.Tensor | None = None,
) -> dict[str, float]:
    """Train `model` in place for `settings['epochs']` on the batches of `source` (see
    `Trainer`); returns the last epoch's mean loss and the time taken."""
    trainer = Trainer(model, source, settings, lr, seed, teacher_logits)
    for _ in range(trainer.recipe.epochs):
        trainer.run_epoch()
    return trainer.stats()


def _check_finite(loss: float, epoch: int) -> None:
    if not math.isfinite(loss):
        raise TrainingDiverged(f"loss became {loss} in epoch {epoch + 1}")


# --- peak memory ------------------------------------------------------------------------------

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring the peak memory of what follows (see `peak_memory_mb`)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")  # Linux: reset this process's peak resident size


def peak_memory_mb(device: torch.device) -> float:
    """On a GPU, the most device memory torch held since `reset_peak_memory`; on the CPU, the
    process's peak resident size since then (Linux; elsewhere since the process started),
    which includes the data and libraries the worker holds."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError, ValueError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
