"""Worker side: `run_job(job) -> result`, both plain dicts (`Job.to_dict()` / `Result.to_dict()`).

A job carries everything an evaluation needs (uid, genome dict, seed, task spec, training
settings, an optional user evaluator, where weights come from and go to); the result carries the
uid back with a status, an error message and the metrics. Every exception becomes a failed result:
failure is data, the run goes on.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evonas.records import (
    FAILED,
    INFEASIBLE,
    OK,
    OOM,
    STOPPED,
    TIMEOUT,
    Job,
    Result,
    check_metric_name,
)

if TYPE_CHECKING:
    from evonas.fidelity import CurveRecorder

# The metrics the built-in trainer reports (test_accuracy when the task has a test split,
# inherited_share when a child inherits weights).
BUILTIN_METRICS = ("val_accuracy", "test_accuracy", "params", "flops", "size_bytes", "latency_ms",
                   "peak_memory_mb", "train_loss", "train_seconds", "epochs",
                   "inherited_share")  # fmt: skip
# The built-in metrics that are measured on the machine rather than computed, so they differ
# between two runs of the same evaluation; everything else is a function of the job.
MEASURED_METRICS = ("train_seconds", "latency_ms", "peak_memory_mb")


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation produced before it becomes a `Result`."""

    metrics: dict[str, float]
    curve: tuple[dict[str, float], ...] = ()
    status: str = OK  # or STOPPED, INFEASIBLE
    partial: bool = False
    error: str | None = None  # why an infeasible candidate was not trained
    arch: tuple[tuple[float, ...], ...] = ()  # a supernet epoch's architecture weights


class EvaluationTimeout(TimeoutError):
    """The evaluation ran past `training.timeout` seconds of wall clock."""


def run_job(job_data: dict[str, Any]) -> dict[str, Any]:
    """A worker process's entry point: plain data in, plain data out."""
    return evaluate(Job.from_dict(job_data)).to_dict()


def evaluate(job: Job) -> Result:
    """Evaluate one job; never raises for a failing evaluation (the status says what happened)."""
    from evonas.fidelity import CurveRecorder, MedianRule

    started = time.time()
    gpu, status, error, metrics, trace = None, OK, None, {}, None
    recorder = CurveRecorder(MedianRule.of(job.stop_rule) if job.stop_rule else None)
    evaluation = Evaluation({})
    try:
        if job.lease:
            from evonas.devices import lease

            gpu = lease(**job.lease)
        timeout = float(job.training.get("timeout") or 0)
        if timeout > 0:
            with _alarm(timeout):
                evaluation = _evaluate(job, recorder)
        else:
            evaluation = _evaluate(job, recorder)
        status, metrics, error = evaluation.status, evaluation.metrics, evaluation.error
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"metric {bad[0]!r} is {metrics[bad[0]]}")
    except Exception as exc:  # any failure of an evaluation is recorded, never raised
        status, error, metrics, trace = _failure(exc)
        evaluation = Evaluation({}, tuple(recorder.points))  # the epochs it did train
    try:
        device = _device_name(job, gpu)
    except Exception:  # e.g. torch cannot be imported any more: memory is exhausted
        device = "unknown"
    return Result(job.uid, status, error, metrics, worker=str(os.getpid()), device=device,
                  gpu=gpu, started_at=started, finished_at=time.time(), traceback=trace,
                  curve=evaluation.curve, partial=evaluation.partial,
                  arch=evaluation.arch)  # fmt: skip


def _failure(exc: BaseException) -> tuple[str, str, dict, str | None]:
    """Status, one-line message, no metrics and a short traceback of a failed evaluation. It
    imports nothing: when memory is exhausted, an import here would fail too (and escape)."""
    status = _status_of(exc)
    try:
        return status, _one_line(exc), {}, traceback.format_exc(limit=8)
    except BaseException:  # describing the failure failed too (no memory left for the text)
        return status, type(exc).__name__, {}, None


def _device_name(job: Job, gpu: str | None) -> str:
    """Where the evaluation ran: `cuda:<physical id>` (or `cuda` on a cluster worker), or cpu."""
    if job.device != "gpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return "cuda" if gpu is None else f"cuda:{gpu}"


def _evaluate(job: Job, recorder: CurveRecorder) -> Evaluation:
    if job.supernet:
        from evonas.supernet import train_epoch

        metrics, arch = train_epoch(job)
        return Evaluation(metrics, arch=tuple(tuple(row) for row in arch))
    if job.evaluator:
        return _run_user_evaluator(job, recorder)
    if job.task["name"] == "table":
        from evonas.tasks import table_lookup

        return Evaluation(table_lookup(job.task.get("options") or {}, job.key))
    return _train_builtin(job, recorder)


def _status_of(exc: BaseException) -> str:
    # by class name: evonas.train and torch are not imported here (see _failure)
    name = type(exc).__name__
    if isinstance(exc, EvaluationTimeout) or name == "TimeBudgetExceeded":
        return TIMEOUT
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError":
        return OOM  # torch.cuda.OutOfMemoryError too
    if isinstance(exc, ImportError) and "failed to map segment" in str(exc):
        return OOM  # a library could not be loaded: the address space is exhausted
    return FAILED


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise EvaluationTimeout in this (main) thread after `seconds`; 0 means no limit."""
    usable = seconds > 0 and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise EvaluationTimeout(f"evaluation exceeded its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def init_worker() -> None:
    """Worker initializer. Ctrl-C reaches the whole process group, but only the parent handles
    it; and a worker whose parent died (kill -9) exits instead of idling as an orphan."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def exit_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=exit_with_parent, name="evonas-parent-watch", daemon=True).start()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def _run_user_evaluator(job: Job, recorder: CurveRecorder) -> Evaluation:
    from evonas.fidelity import Stopped, recording
    from evonas.plugins import load_callable

    fn = load_callable(job.evaluator, what="training.evaluator")
    with recording(recorder):
        try:
            # copies: the user's function may change what it is given
            metrics = fn(copy.deepcopy(job.genome), int(job.seed), dict(job.training))
        except Stopped:
            last = {k: v for k, v in recorder.points[-1].items() if k != "epoch"}
            epochs = recorder.points[-1]["epoch"]
            return Evaluation({**last, "epochs": epochs}, tuple(recorder.points), STOPPED)
    return Evaluation(_checked(metrics), tuple(recorder.points))


def _checked(metrics: Any) -> dict[str, float]:
    """A user evaluator's metrics, or TypeError/MetricNameError saying what is wrong."""
    if not isinstance(metrics, dict):
        raise TypeError(f"evaluator must return dict[str, float], got {type(metrics).__name__}")
    for name in metrics:
        check_metric_name(str(name))
    try:
        return {str(k): float(v) for k, v in metrics.items()}
    except (TypeError, ValueError) as exc:
        raise TypeError(f"evaluator returned a non-numeric metric ({exc})") from None


def _train_builtin(job: Job, recorder: CurveRecorder) -> Evaluation:
    import torch

    from evonas.batches import SPLITS, split_of
    from evonas.builder import build, count_flops, count_params, latency_ms, size_bytes
    from evonas.tasks import load_task
    from evonas.train import Trainer, accuracy, peak_memory_mb, reset_peak_memory
    from evonas.weights import load_state_dict, save_state, save_state_dict

    settings = job.training
    torch.set_num_threads(int(settings.get("threads", 1)))
    device = torch.device("cuda" if job.device == "gpu" and torch.cuda.is_available() else "cpu")
    data = load_task(job.task)
    splits = {s: split_of(data, s, device, settings) for s in SPLITS
              if s != "test" or data.has_test}  # fmt: skip
    reset_peak_memory(device)  # the model's own: not the data this worker loaded once
    seed = int(job.seed)
    torch.manual_seed(seed)
    model = build(job.genome, data.input_shape, data.num_classes)
    # the sizes, known before training (and what search.constraints may limit there)
    sizes = {"params": float(count_params(model)),
             "flops": float(count_flops(model, data.input_shape))}  # fmt: skip
    if job.limits:
        rejected = _over_limits({**sizes, "size_bytes": float(size_bytes(model))}, job.limits)
        if rejected is not None:
            return rejected
    metrics: dict[str, float] = {}
    checkpoint = load_state_dict(job.resume_from) if job.resume_from else None
    if checkpoint is not None:  # a candidate continued from a rung: its weights come from there
        metrics.update(checkpoint["metrics"])
    elif job.init_weights:
        model.load_state_dict(load_state_dict(job.init_weights))
    elif job.inherit:
        from evonas.genome import parse_genome
        from evonas.graph_inherit import inherit_graph
        from evonas.inherit import inherit

        genome = parse_genome(job.genome)
        share = (inherit_graph if genome.is_graph else inherit)(
            model, genome, data.input_shape, job.inherit, seed, data
        )
        metrics["inherited_share"] = share
    settings = {**settings, "epochs": job_budget(job)}  # the schedule spans the whole budget
    model = model.to(device)
    metrics.update(sizes)
    if settings.get("zero_cost") and checkpoint is None:  # a continued one has them already
        from evonas.proxies import zero_cost_metrics

        metrics.update(zero_cost_metrics(settings["zero_cost"], model, splits["train"]))
    lr = float(job.genome["training"]["lr"])
    teacher_logits = _teacher_logits(job.teacher, splits["train"], data) if job.teacher else None
    trainer = Trainer(model, splits["train"], settings, lr, seed, teacher_logits)
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint["trainer"])
    recipe = trainer.recipe
    stop_at = min(job.epochs_to or settings["epochs"], settings["epochs"])
    stopped = False
    while trainer.epoch < stop_at and not stopped:
        loss = trainer.run_epoch()
        point = {"train_loss": loss, "val_accuracy": accuracy(model, splits["val"], recipe)}
        stopped = recorder.add(trainer.epoch, point, known=metrics)
        stopped = stopped and trainer.epoch < settings["epochs"]  # the last epoch ends anyway
    partial = not stopped and trainer.epoch < settings["epochs"]
    if partial and job.checkpoint:
        state = {"trainer": trainer.state_dict(), "metrics": dict(metrics)}
        save_state(state, job.checkpoint)  # before anything else draws random numbers
    metrics["epochs"] = float(trainer.epoch)
    if trainer.epoch:
        metrics.update(trainer.stats())
    curve = tuple(recorder.points)
    metrics["val_accuracy"] = (
        curve[-1]["val_accuracy"] if curve else accuracy(model, splits["val"], recipe)
    )
    if "test" in splits and trainer.epoch >= settings["epochs"]:
        # only for a model trained to its budget: a rung's or a stopped candidate's would cost a
        # pass over the whole test split (10,000 images for Fashion-MNIST) and decide nothing
        metrics["test_accuracy"] = accuracy(model, splits["test"], recipe)
    metrics["peak_memory_mb"] = peak_memory_mb(device)
    model = model.to(memory_format=torch.contiguous_format)  # weights saved in the usual layout
    metrics["size_bytes"] = float(size_bytes(model))
    metrics["latency_ms"] = latency_ms(model, data.input_shape)
    if job.weights_path:
        save_state_dict(model, job.weights_path)
    return Evaluation(metrics, curve, STOPPED if stopped else OK, partial)


def _over_limits(metrics: dict[str, float], limits: Any) -> Evaluation | None:
    """The candidate rejected before training when its sizes (`metrics`) break a pre-training
    constraint (`evonas.constraints`): what was measured, and which limits it is over."""
    from evonas.constraints import Constraint, broken

    problem = broken(metrics, [Constraint(**limit) for limit in limits])
    if problem is None:
        return None
    return Evaluation(metrics, status=INFEASIBLE, error=f"not trained: {problem}")


def job_budget(job: Job) -> int:
    """The epochs a job's candidate trains in all: a fine-tune of inherited or seeded weights,
    or training from scratch."""
    training = job.training
    finetune = job.init_weights or job.inherit
    return int(training.get("finetune_epochs", 1) if finetune else training.get("epochs", 1))


_TEACHER_LOGITS: dict[str, Any] = {}  # per worker: a teacher's outputs, computed once


def _teacher_logits(teacher: dict[str, Any], source: Any, data: Any) -> Any:
    """The teacher's outputs for every training sample, in order (the split as the student
    gets it: the same device and loader settings)."""
    from evonas.builder import build
    from evonas.train import logits_of
    from evonas.weights import load_state_dict

    key = f"{teacher['weights']}@{id(data)}@{source.device}"  # one data object per task
    if key not in _TEACHER_LOGITS:
        model = build(teacher["genome"], data.input_shape, data.num_classes)
        model.load_state_dict(load_state_dict(teacher["weights"]))
        _TEACHER_LOGITS.clear()
        _TEACHER_LOGITS[key] = logits_of(model.to(source.device), source)
    return _TEACHER_LOGITS[key]
