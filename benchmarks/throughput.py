"""Evaluation throughput: evonas against a plain PyTorch loop, 1 and 2 workers, and the engine
alone on the NAS-Bench-201 table.

    .venv/bin/python benchmarks/throughput.py [--models 24] [--epochs 3]

1. `--models` architectures are sampled from the demo space (MNIST-1D, widths 8-32, at most 5
   layers) and written as genome files.
2. `plain`: a plain PyTorch script builds and trains them one after another in this process
   (one thread, Adam, the same epochs and batch size) and computes validation accuracy.
3. `evonas`: `evonas search` seeded with exactly those genomes (generation 0 only, so every model
   is trained once from scratch), with 1 and then 2 loky workers of one thread each, cold (fresh
   workers: torch import and data loading included) and warm (the workers of the previous run).
   It includes everything the engine does per evaluation: the job, the worker, FLOP counting,
   the latency measurement, saving weights and the journal.
4. `table`: local search on the NAS-Bench-201 table (inline backend, 2,000 evaluations): the
   engine alone, journal included.

Prints evaluations per minute (per second for the table) and the ratios; writes
benchmarks/results/throughput.csv.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from evonas.batches import arrays
from evonas.builder import build
from evonas.config import resolve
from evonas.genome import save_genome
from evonas.launch import run_search
from evonas.spaces import SequentialSpace
from evonas.tasks import load_task
from evonas.train import accuracy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TASK = {"name": "mnist1d", "options": {}, "split_seed": 0, "val_fraction": 0.2,
        "test_fraction": 0.2}  # fmt: skip
BATCH = 100


def sample_genomes(count: int, folder: Path) -> list[Path]:
    data = load_task(TASK)
    space = SequentialSpace(data.input_shape, data.num_classes, max_layers=5,
                            widths=(8, 16, 32), units=(32, 64, 128))  # fmt: skip
    rng = random.Random(0)
    paths = []
    for i in range(count):
        path = folder / f"g{i:03d}.yaml"
        save_genome(space.sample(rng), path)
        paths.append(path)
    return paths


def plain(paths: list[Path], epochs: int) -> float:
    """The same models trained by a minimal PyTorch loop, one after another; returns seconds."""
    from evonas.genome import load_genome

    torch.set_num_threads(1)
    data = load_task(TASK)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    start = time.perf_counter()
    for seed, path in enumerate(paths):
        genome = load_genome(path)
        torch.manual_seed(seed)
        model = build(genome, data.input_shape, data.num_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=genome.training["lr"])
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(x), generator=generator)
            for begin in range(0, len(x), BATCH):
                index = order[begin : begin + BATCH]
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x[index]), y[index]).backward()
                optimizer.step()
        accuracy(model, arrays(data.x_val, data.y_val))
    return time.perf_counter() - start


def engine(paths: list[Path], epochs: int, n_jobs: int, folder: Path, name: str) -> float:
    overrides = {
        "task.name": "mnist1d",
        "space.max_layers": 5, "space.widths": [8, 16, 32], "space.units": [32, 64, 128],
        "training.epochs": epochs, "training.batch_size": BATCH, "training.threads": 1,
        "search.strategy": "random", "search.population": len(paths), "search.generations": 0,
        "search.seed_genomes": [str(p) for p in paths], "search.plot_every": 0,
        "parallel.n_jobs": n_jobs,
    }  # fmt: skip
    config = resolve(overrides=overrides)
    start = time.perf_counter()
    result = run_search(config, folder / name, log=lambda line: None)
    seconds = time.perf_counter() - start
    assert (result.individuals["status"] == "ok").all() and len(result.individuals) == len(paths)
    return seconds


def table_speed(evaluations: int, folder: Path) -> float:
    """NAS-Bench-201 lookups per second through the loop and journal (the packaged table;
    `benchmarks/engine.py` measures this against a plain loop)."""
    config = resolve(preset="nb201", overrides={
        "search.generations": evaluations - 10, "search.plot_every": 0})  # fmt: skip
    start = time.perf_counter()
    result = run_search(config, folder / "table", log=lambda line: None)
    return len(result.individuals) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = sample_genomes(args.models, folder)
        runs = [("plain", lambda: plain(paths, args.epochs))]
        for n_jobs in (1, 2):
            for state in ("cold", "warm"):
                name = f"evonas-{n_jobs}-{state}"
                runs.append(
                    (name, lambda n=n_jobs, s=name: engine(paths, args.epochs, n, folder, s))
                )
        for name, measure in runs:
            seconds = measure()
            per_minute = round(60 * args.models / seconds, 1)
            rows.append({"variant": name, "seconds": round(seconds, 2),
                         "evaluations_per_minute": per_minute})  # fmt: skip
            print(rows[-1], flush=True)
        speed = table_speed(2000, folder)
    table = pd.DataFrame(rows).set_index("variant")
    rate = table["evaluations_per_minute"]
    table["vs_plain"] = (rate / rate["plain"]).round(3)
    table["vs_1_worker"] = (rate / rate["evonas-1-warm"]).round(3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "throughput.csv")
    print(table.to_string())
    if speed is not None:
        print(f"\nNAS-Bench-201 table, local search, 2,000 evaluations: {speed:,.0f} evaluations/s "
              "(journal included)")  # fmt: skip


if __name__ == "__main__":
    main()
