"""A user evaluation function that misbehaves on purpose, chosen by the evaluation seed.

Used by the fault-injection tests by file path (`tests/faults.py:evaluate`), so worker processes
import it without any sys.path set-up.
"""

import ctypes
import math
import os
import time

BEHAVIOURS = ("ok", "raise", "nan", "sleep", "exit", "ok", "segfault", "ok")


def behaviour(seed: int) -> str:
    return BEHAVIOURS[seed % len(BEHAVIOURS)]


def evaluate(genome, seed, budget):
    kind = behaviour(seed)
    if kind == "raise":
        raise RuntimeError(f"injected failure for seed {seed}")
    if kind == "nan":
        return {"val_accuracy": math.nan, "params": 1.0}
    if kind == "sleep":
        time.sleep(60)
    if kind == "exit":
        os._exit(3)
    if kind == "segfault":
        ctypes.string_at(0)
    return {"val_accuracy": (seed % 97) / 97, "params": float(len(genome["layers"]) + 1)}


IN_PROCESS = ("ok", "raise", "nan", "sleep", "oom", "ok", "ok", "ok")


def in_process(genome, seed, budget):
    """The failures an evaluation can have without killing its process."""
    kind = IN_PROCESS[seed % len(IN_PROCESS)]
    if kind == "raise":
        raise RuntimeError(f"injected failure for seed {seed}")
    if kind == "nan":
        return {"val_accuracy": math.nan, "params": 1.0}
    if kind == "sleep":
        time.sleep(60)  # the in-process alarm of training.timeout ends it
    if kind == "oom":
        raise MemoryError("injected: out of memory")
    return {"val_accuracy": (seed % 97) / 97, "params": float(len(genome["layers"]) + 1)}


def slow(genome, seed, budget):
    """Deterministic metrics after a short pause, so a run can be killed mid-flight."""
    time.sleep(float(os.environ.get("EVONAS_TEST_SLEEP", "0")))
    log = os.environ.get("EVONAS_TEST_CALLS")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.environ.get('EVONAS_TEST_PHASE', '-')} {seed}\n")
    lr = genome["training"]["lr"]
    return {"val_accuracy": (seed % 1000) / 1000 + lr, "params": float(10 * len(genome["layers"]))}


def hang(genome, seed, budget):
    """Ignores the in-worker alarm: only the parent's hard timeout can end it."""
    import signal

    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    time.sleep(120)


def fail(genome, seed, budget):
    raise RuntimeError("every evaluation fails")


def visible_gpu(genome, seed, budget):
    """Reports the CUDA_VISIBLE_DEVICES its worker set (-1 when unset), after a short pause."""
    time.sleep(0.05)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return {"val_accuracy": (seed % 97) / 97, "visible": float(visible) if visible else -1.0}


def visible_gpu_or_exit(genome, seed, budget):
    """visible_gpu, but the worker dies where `behaviour(seed)` is 'exit'."""
    if behaviour(seed) == "exit":
        os._exit(3)
    return visible_gpu(genome, seed, budget)


def curve(genome, seed, budget):
    """A learning curve reported epoch by epoch (`evonas.report_epoch`): accuracy rises towards
    a level set by the seed, so candidates are told apart after their first epoch."""
    from evonas import report_epoch

    level = (seed % 1000) / 1000
    for epoch in range(1, int(budget["epochs"]) + 1):
        time.sleep(float(os.environ.get("EVONAS_TEST_SLEEP", "0")) / 4)
        report_epoch(epoch, val_accuracy=level * (1 - 0.5**epoch), train_loss=1 / epoch)
    return {"val_accuracy": level * (1 - 0.5 ** int(budget["epochs"])), "params": 1.0}
