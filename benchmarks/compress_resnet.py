"""Compressing an imported ResNet-18 by search, against structured pruning alone (Fashion-MNIST).

    .venv/bin/python benchmarks/compress_resnet.py [--data DIR] [--limit 30000] [--epochs 10]
        [--generations 8] [--population 12] [--finetune 2] [--prune-finetune 6]

1. Train the original: a ResNet-18-shaped network (4 stages of 2 BasicBlocks with projection
   shortcuts; stage widths 16, 32, 64, 128, a quarter of the paper's) on the first `--limit`
   Fashion-MNIST training images (80 % train, 20 % validation), `--epochs` epochs.
2. Import it (`evonas import`: a graph genome and its weights) and seed a two-objective NSGA-II
   search around it (`space.kind: graph`; validation accuracy up, parameters down); operators
   prune, cut, change_width, remove_block (and learning-rate changes); every child inherits its
   parent's weights by gene id and channel group and fine-tunes `--finetune` epochs.
3. Structured pruning alone: `evonas optimize` on the imported seed, removing the shares of every
   channel group's channels given by `--fractions`, each fine-tuned `--prune-finetune` epochs.
4. Print both on the official 10k test set (params and FLOPs as shares of the original's) and
   write benchmarks/results/compress_resnet.{csv,png}. Aim: <= 25 % of the parameters and
   <= 50 % of the FLOPs within one point of the original's test accuracy.

Skips with a message where the Fashion-MNIST IDX files are absent (Debian: apt install
dataset-fashion-mnist).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evonas.batches import split_of
from evonas.builder import count_flops, count_params, latency_ms  # noqa: E402
from evonas.config import resolve  # noqa: E402
from evonas.importer import import_model, write_import  # noqa: E402
from evonas.tasks import TaskError, load_task  # noqa: E402
from evonas.train import accuracy, train  # noqa: E402
from tests.model_zoo import resnet18  # noqa: E402

CPU = torch.device("cpu")

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def task(data_dir: str, limit: int) -> dict:
    return {"name": "fashion_mnist", "options": {"path": data_dir, "limit": limit},
            "split_seed": 0, "val_fraction": 0.2, "test_fraction": 0.2}  # fmt: skip


def train_original(folder: Path, spec: dict, epochs: int, lr: float) -> dict[str, float]:
    torch.set_num_threads(2)
    data = load_task(spec)
    torch.manual_seed(0)
    model = resnet18(classes=10, channels=1, width=0.25)
    settings = {"optimizer": "adam", "epochs": epochs, "batch_size": 128, "weight_decay": 0.0}
    train(model, split_of(data, "train", CPU, settings), settings, lr, 0)
    model.eval()
    genome, rebuilt, header = import_model(model, data.input_shape, source="resnet18 (1/4 width)")
    write_import(genome, rebuilt, {**header, "training": {"lr": lr}}, folder / "resnet18.yaml")
    return {
        "params": count_params(rebuilt),
        "flops": count_flops(rebuilt, data.input_shape),
        "latency_ms": latency_ms(rebuilt, data.input_shape),
        "val_accuracy": accuracy(rebuilt, split_of(data, "val", CPU, settings)),
        "test_accuracy": accuracy(rebuilt, split_of(data, "test", CPU, settings)),
    }


def search(folder: Path, spec: dict, args, name: str = "run", **changes):
    from evonas.launch import run_search

    overrides = {
        "task": spec,
        "space.kind": "graph",
        "training.epochs": args.finetune,
        "training.batch_size": 128,
        "training.finetune_epochs": args.finetune,
        "training.inherit_weights": True,
        "search.strategy": "nsga2",
        "search.objectives": [{"name": "val_accuracy", "goal": "max"},
                              {"name": "params", "goal": "min"}],
        "search.population": args.population,
        "search.generations": args.generations,
        "search.seed_genomes": [str(folder / "resnet18.yaml")],
        "search.seed_fill": "mutate",
        "search.operators": {"prune": 3.0, "cut": 1.0, "change_width": 1.0,
                             "remove_block": 1.0, "change_lr": 0.5},
        "search.plot_every": 0,
        "parallel.n_jobs": 2,
        **changes,
    }  # fmt: skip
    config = resolve(overrides=overrides)
    return run_search(config, folder / name, log=print)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help="folder of the Fashion-MNIST IDX files"
    )
    parser.add_argument("--limit", type=int, default=30000, help="training images used")
    parser.add_argument("--epochs", type=int, default=10, help="training of the original")
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--population", type=int, default=12)
    parser.add_argument("--finetune", type=int, default=2, help="epochs of each child")
    parser.add_argument("--prune-finetune", type=int, default=6,
                        help="epochs after structured pruning alone")  # fmt: skip
    parser.add_argument("--fractions", default="0.5,0.6,0.7",
                        help="shares of channels structured pruning removes")  # fmt: skip
    parser.add_argument("--out", help="keep the run directories here (default: a temporary one)")
    args = parser.parse_args()
    from evonas.optimize import optimize

    spec = task(args.data, args.limit)
    try:
        load_task(spec)
    except TaskError as exc:
        print(f"skipped: {exc}")
        return
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        original = train_original(folder, spec, args.epochs, args.lr)
        print(f"original: {original} ({time.monotonic() - started:.0f} s)")
        result = search(folder, spec, args)
        searched = time.monotonic() - started
        people = result.individuals
        # structured pruning alone starts from the same seed, evaluated as the search did
        alone = search(
            folder, spec, args, "seed-only", **{"search.population": 2, "search.generations": 0}
        )
        seeds = alone.individuals
        seed_uid = int(seeds[seeds["operator"] == "seed"]["uid"].iloc[0])
        fractions = tuple(float(f) for f in args.fractions.split(","))
        pruned = optimize(
            folder / "seed-only",
            seed_uid,
            sparsities=(),
            distill_epochs=1,
            finetune_epochs=args.prune_finetune,
            channel_fractions=fractions,
        )
    front = result.pareto.sort_values("params")
    rows = [{"method": "original", "params": original["params"], "flops": original["flops"],
             "latency_ms": original["latency_ms"], "val_accuracy": original["val_accuracy"],
             "test_accuracy": original["test_accuracy"]}]  # fmt: skip
    for _, row in front.iterrows():
        rows.append({"method": f"search uid {int(row['uid'])} (gen {int(row['generation'])})",
                     **{k: row[k] for k in ("params", "flops", "latency_ms", "val_accuracy",
                                            "test_accuracy")}})  # fmt: skip
    for _, row in pruned[pruned["variant"].str.startswith("channels-")].iterrows():
        rows.append({"method": f"optimize {row['variant']}",
                     **{k: row[k] for k in ("params", "flops", "latency_ms", "val_accuracy",
                                            "test_accuracy")}})  # fmt: skip
    table = pd.DataFrame(rows)
    table["params_share"] = (table["params"] / original["params"]).round(3)
    table["flops_share"] = (table["flops"] / original["flops"]).round(3)
    table["test_vs_original"] = (table["test_accuracy"] - original["test_accuracy"]).round(4)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "compress_resnet.csv", index=False)
    _figure(people, front, table, original)
    print(table.to_string(index=False))
    ok = people[people["status"] == "ok"]
    print(f"\nevaluations {len(people)} ({len(ok)} ok), search {searched:.0f} s, "
          f"total {time.monotonic() - started:.0f} s")  # fmt: skip
    aim = (table["params_share"] <= 0.25) & (table["flops_share"] <= 0.5)
    aim &= table["test_vs_original"] >= -0.01
    for method in ("search", "optimize"):
        met = table[aim & table["method"].str.startswith(method)]
        print(f"aim (<= 25 % params, <= 50 % FLOPs, within 1 point of the original's test "
              f"accuracy) by {method}: {'met' if len(met) else 'not met'}")  # fmt: skip


def _figure(people, front, table, original) -> None:
    figure, axes = plt.subplots(figsize=(6.5, 4))
    ok = people[people["status"] == "ok"]
    axes.scatter(ok["params"], ok["test_accuracy"], s=8, color="lightgray", label="evaluated")
    axes.plot(front["params"], front["test_accuracy"], "o-", label="search: Pareto front (val)")
    pruned = table[table["method"].str.startswith("optimize")]
    axes.plot(pruned["params"], pruned["test_accuracy"], "s--", label="structured pruning alone")
    axes.axhline(original["test_accuracy"] - 0.01, color="tab:red", lw=1,
                 label="original - 1 point (test)")  # fmt: skip
    axes.axvline(original["params"] / 4, color="tab:red", ls=":", lw=1, label="1/4 parameters")
    axes.set(xscale="log", xlabel="parameters", ylabel="test accuracy",
             title="Fashion-MNIST: compressing an imported ResNet-18")  # fmt: skip
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "compress_resnet.png", dpi=120)


if __name__ == "__main__":
    main()
