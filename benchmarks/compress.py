"""Compression by search: prune and cut a trained ~20k-parameter MNIST-1D CNN.

    .venv/bin/python benchmarks/compress.py [--generations 15] [--population 12]

1. Train the original: a 4-layer dilated 1D CNN (about 20k parameters) for 40 epochs.
2. Seed a two-objective search (validation accuracy up, parameters down; NSGA-II) with it and its
   weights; operators: `prune` and `cut` (plus width and learning-rate changes); every child
   inherits its parent's weights and fine-tunes `--finetune` epochs.
3. Print the Pareto front with test accuracy and write benchmarks/results/compress.{csv,png}.
   Aim: a model with at most a quarter of the original's parameters within one point of its test
   accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from evonas.batches import split_of
from evonas.builder import build, count_params  # noqa: E402
from evonas.config import resolve  # noqa: E402
from evonas.genome import parse_genome, save_genome  # noqa: E402
from evonas.tasks import load_task  # noqa: E402
from evonas.train import accuracy, train  # noqa: E402
from evonas.weights import save_state_dict  # noqa: E402

CPU = torch.device("cpu")

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
TASK = {"name": "mnist1d", "options": {}, "split_seed": 0, "val_fraction": 0.2,
        "test_fraction": 0.2}  # fmt: skip
ORIGINAL = {
    "layers": [
        {"id": 1, "op": "conv", "width": 32, "kernel": 5, "stride": 1, "dilation": 1,
         "activation": "relu", "batch_norm": True},
        {"id": 2, "op": "conv", "width": 32, "kernel": 5, "stride": 1, "dilation": 2,
         "activation": "relu", "batch_norm": True},
        {"id": 3, "op": "pool", "kind": "max", "size": 2},
        {"id": 4, "op": "conv", "width": 48, "kernel": 5, "stride": 1, "dilation": 4,
         "activation": "relu", "batch_norm": True},
        {"id": 5, "op": "conv", "width": 32, "kernel": 3, "stride": 1, "dilation": 1,
         "activation": "relu", "batch_norm": True},
    ],
    "training": {"lr": 0.003},
}  # fmt: skip


def train_original(folder: Path, epochs: int) -> dict[str, float]:
    torch.set_num_threads(2)
    data = load_task(TASK)
    genome = parse_genome(ORIGINAL)
    torch.manual_seed(0)
    model = build(genome, data.input_shape, data.num_classes)
    settings = {"optimizer": "adam", "epochs": epochs, "batch_size": 100, "weight_decay": 0.0}
    train(model, split_of(data, "train", CPU, settings), settings, genome.training["lr"], 0)
    save_genome(genome, folder / "original.yaml")
    save_state_dict(model, str(folder / "original.pt"))
    return {
        "params": count_params(model),
        "val_accuracy": accuracy(model, split_of(data, "val", CPU, settings)),
        "test_accuracy": accuracy(model, split_of(data, "test", CPU, settings)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="training of the original")
    parser.add_argument("--generations", type=int, default=15)
    parser.add_argument("--population", type=int, default=12)
    parser.add_argument("--finetune", type=int, default=5)
    args = parser.parse_args()
    from evonas.launch import run_search

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.monotonic()
        original = train_original(folder, args.epochs)
        print(f"original: {original} ({time.monotonic() - started:.0f} s)")
        overrides = {
            "task.name": "mnist1d",
            "space.max_layers": 6,
            "space.widths": [8, 16, 32, 48],
            "space.kernels": [3, 5],
            "space.dilations": [1, 2, 4],
            "training.epochs": args.finetune,
            "training.batch_size": 100,
            "training.finetune_epochs": args.finetune,
            "training.inherit_weights": True,
            "search.strategy": "nsga2",
            "search.population": args.population,
            "search.generations": args.generations,
            "search.seed_genomes": [str(folder / "original.yaml")],
            "search.seed_fill": "mutate",
            "search.operators": {
                "prune": 3.0,
                "cut": 1.5,
                "change_width": 0.5,
                "change_lr": 0.5,
                "remove_layer": 0.5,
            },  # fmt: skip
            "search.plot_every": 0,
            "parallel.n_jobs": 2,
        }
        config = resolve(overrides=overrides)
        result = run_search(config, folder / "run", log=print)
    people = result.individuals
    front = result.pareto.sort_values("params")
    columns = ["uid", "generation", "operator", "params", "val_accuracy", "test_accuracy"]
    table = front[columns].copy()
    table["params_share"] = (table["params"] / original["params"]).round(3)
    table["test_vs_original"] = (table["test_accuracy"] - original["test_accuracy"]).round(4)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "compress.csv", index=False)
    small = table[(table["params_share"] <= 0.25) & (table["test_vs_original"] >= -0.01)]
    figure, axes = plt.subplots(figsize=(6, 4))
    ok = people[people["status"] == "ok"]
    axes.scatter(ok["params"], ok["test_accuracy"], s=8, color="lightgray", label="evaluated")
    axes.plot(front["params"], front["test_accuracy"], "o-", label="Pareto front (val)")
    axes.axhline(original["test_accuracy"], color="tab:red", lw=1, label="original (test)")
    axes.axvline(original["params"] / 4, color="tab:red", ls=":", lw=1, label="1/4 parameters")
    axes.set(xscale="log", xlabel="parameters", ylabel="test accuracy",
             title="MNIST-1D: compressing a trained CNN by search")  # fmt: skip
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "compress.png", dpi=120)
    print(table.to_string(index=False))
    print(f"\nevaluations {len(people)}, wall {time.monotonic() - started:.0f} s")
    verdict = "met" if len(small) else "not met"
    print(
        f"aim (<= 1/4 of the parameters within 1 point of the original's test accuracy): {verdict}"
    )


if __name__ == "__main__":
    main()
