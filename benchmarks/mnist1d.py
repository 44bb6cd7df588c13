"""MNIST-1D: a real search, then the best models retrained with the paper's protocol, side by side
with the paper's CNN retrained the same way.

    .venv/bin/python benchmarks/mnist1d.py [--max-time 30m] [--seeds 3] [--run-dir DIR]

1. `evonas search --preset mnist1d` (2 workers) for at most --max-time (or reuse --run-dir).
2. From its Pareto front: the most accurate model (validation) with at most the paper CNN's 5,210
   parameters, and the most accurate model overall.
3. Those and the paper's ConvBase (3 conv layers of 25 channels + linear, 5,210 parameters) are
   retrained with the protocol of the mnist1d repository (Adam, lr 1e-2, no weight decay, batch
   100, 6,000 steps, on all 4,000 training signals) for --seeds seeds each and tested on the
   1,000 test signals. Prints a Markdown table and writes benchmarks/results/mnist1d.csv.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAPER_PARAMS = 5210
STEPS, BATCH, LR = 6000, 100, 1e-2


class ConvBase(nn.Module):
    """The MNIST-1D paper's CNN (github.com/greydanus/mnist1d, ConvBase)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 25, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.linear = nn.Linear(125, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv3(self.conv2(self.conv1(x).relu()).relu()).relu()
        return self.linear(h.flatten(1))


def protocol(name: str, genome: dict | None, seed: int) -> dict:
    """Retrain from scratch with the paper's protocol; returns test accuracy."""
    from evonas.builder import build
    from evonas.tasks import load_task

    torch.set_num_threads(1)
    data = load_task({"name": "mnist1d", "options": {}, "split_seed": 0, "val_fraction": 0.2,
                      "test_fraction": 0.2})  # fmt: skip
    x = torch.from_numpy(np.concatenate([data.x_train, data.x_val]))
    y = torch.from_numpy(np.concatenate([data.y_train, data.y_val]))
    torch.manual_seed(seed)
    model = ConvBase() if genome is None else build(genome, data.input_shape, data.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for _ in range(STEPS):
        index = torch.randint(len(x), (BATCH,), generator=generator)
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = model(torch.from_numpy(data.x_test)).argmax(1).numpy()
    return {
        "model": name,
        "seed": seed,
        "params": sum(p.numel() for p in model.parameters()),
        "test_accuracy": float((predictions == data.y_test).mean()),
        "seconds": time.perf_counter() - start,
    }


def search(max_time: float, run_dir: Path | None) -> Path:
    from evonas.config import resolve
    from evonas.launch import run_search

    if run_dir is not None:
        return run_dir
    run_dir = ROOT / "runs" / time.strftime("bench-mnist1d-%Y%m%d-%H%M%S")
    config = resolve(preset="mnist1d", overrides={"search.max_time": max_time})
    start = time.perf_counter()
    run_search(config, run_dir, log=lambda line: print(line, flush=True))
    print(f"search: {(time.perf_counter() - start) / 60:.1f} min into {run_dir}")
    return run_dir


def main() -> None:
    from evonas.analysis import load_run
    from evonas.cli import _duration

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=_duration, default=1800.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--run-dir", type=Path)
    args = parser.parse_args()
    run = load_run(search(args.max_time, args.run_dir))
    front = run.pareto()
    small = front[front["params"] <= PAPER_PARAMS].sort_values("val_accuracy").iloc[-1]
    best = front.sort_values("val_accuracy").iloc[-1]
    candidates = {"paper ConvBase": None}
    candidates[f"evonas small (uid {small['uid']})"] = run.genome(int(small["uid"])).to_dict()
    candidates[f"evonas best (uid {best['uid']})"] = run.genome(int(best["uid"])).to_dict()
    tasks = [
        (name, genome, seed) for name, genome in candidates.items() for seed in range(args.seeds)
    ]
    rows = Parallel(n_jobs=2)(delayed(protocol)(*task) for task in tasks)
    results = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results.to_csv(RESULTS / "mnist1d.csv", index=False)
    people = run.individuals
    minutes = run.meta.get("elapsed_seconds", 0) / 60
    print(f"\nsearch: {len(people)} evaluations, {minutes:.1f} min, {run.path}")
    print("\n| model | parameters | search val acc | protocol test acc (mean ± std) | s/seed |")
    print("|---|---|---|---|---|")
    for name, part in results.groupby("model", sort=False):
        uid = None if candidates[name] is None else int(name.split("uid ")[1].rstrip(")"))
        val = "-" if uid is None else f"{people.set_index('uid').loc[uid, 'val_accuracy']:.4f}"
        acc = part["test_accuracy"]
        print(f"| {name} | {part['params'].iloc[0]:,} | {val} | {acc.mean():.4f} ± {acc.std():.4f} "
              f"| {part['seconds'].mean():.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
