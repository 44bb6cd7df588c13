"""Searches with and without early stopping of weak candidates, at equal total training epochs.

    .venv/bin/python benchmarks/early_stop.py [--tasks mnist1d,fashion_mnist] [--seeds 3]
        [--budget 540] [--population 9] [--epochs 9] [--min-epochs 1] [--eta 3]
        [--kinds none,halving,median] [--limit 6000] [--n-jobs 2] [--results DIR] [--name NAME]

Each task is searched with one objective (validation accuracy), tournament selection and no
weight inheritance, every model trained from scratch for `--epochs`, by each `--kinds` of
`search.early_stop` (none; successive halving with rungs at `--min-epochs` x `--eta`^k; the
median rule), `--seeds` seeds each. Every run may spend `--budget` training epochs in all: it
runs enough generations to spend them, and its history is cut where the epochs spent (in
breeding order) reach the budget.

Reports, per task and kind: the best validation accuracy of a fully trained model within the
budget, and the epochs each kind needed to reach the final best of the run without early
stopping (same seed) as a share of that run's epochs (aim: <= 0.5 with the same best). Writes
benchmarks/results/NAME.{csv,png} (NAME: `--name`, early_stop by default; the figure: best so
far against epochs spent).
Fashion-MNIST (Debian's IDX files, the first `--limit` training images) is skipped with a
message where absent.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evonas.config import resolve  # noqa: E402
from evonas.halving import Halving  # noqa: E402
from evonas.launch import run_search  # noqa: E402
from evonas.tasks import TaskError, load_task  # noqa: E402

RESULTS = Path(__file__).with_name("results")
TASKS = {
    "mnist1d": {"name": "mnist1d"},
    "fashion_mnist": {"name": "fashion_mnist", "options": {"limit": 6000}},
}
SPACES = {
    "mnist1d": {"space.max_layers": 5, "space.widths": [8, 16, 32], "space.units": [32, 64, 128]},
    "fashion_mnist": {
        "space.max_layers": 4,
        "space.widths": [8, 16, 32],
        "space.units": [32, 64, 128],
    },  # fmt: skip
}


def epochs_per_generation(kind: str, args: argparse.Namespace) -> float:
    """What a generation spends with no failures or copies (to choose how many to run)."""
    if kind != "halving":
        return args.population * args.epochs * (0.6 if kind == "median" else 1.0)
    alive, spent, trained = args.population, 0, 0
    for rung in [*Halving(args.min_epochs, args.eta, []).rungs(args.epochs), args.epochs]:
        spent += alive * (rung - trained)
        trained, alive = rung, math.ceil(alive / args.eta)
    return spent


def search(task: str, kind: str, seed: int, args: argparse.Namespace, out: Path) -> pd.DataFrame:
    generations = math.ceil(args.budget / epochs_per_generation(kind, args)) + 1
    early = {"kind": kind, "min_epochs": args.min_epochs, "reduction_factor": args.eta,
             "min_curves": 5}  # fmt: skip
    spec = dict(TASKS[task])
    if task == "fashion_mnist":
        spec["options"] = {"limit": args.limit}
    overrides = {
        "seed": seed,
        "task": {**spec, "split_seed": 0, "val_fraction": 0.2, "test_fraction": 0.2},
        "training.epochs": args.epochs,
        "training.inherit_weights": False,
        "training.batch_size": 64,
        "search.strategy": "tournament",
        "search.objectives": [{"name": "val_accuracy", "goal": "max"}],
        "search.population": args.population,
        "search.generations": generations,
        "search.plot_every": 0,
        "search.early_stop": early,
        "parallel.n_jobs": args.n_jobs,
        **SPACES[task],
    }
    config = resolve(overrides=overrides)
    started = time.monotonic()
    result = run_search(config, out / f"{task}-{kind}-{seed}", log=lambda line: None)
    people = result.individuals.sort_values("uid")
    own = people["cached_from"].isna() & people["epochs"].notna()
    people["epochs_spent"] = people["epochs"].where(own, 0).fillna(0).cumsum()
    people = people[people["epochs_spent"] <= args.budget]
    complete = people["val_accuracy"].where(people["status"] == "ok")  # fully trained only
    people["best_val"] = complete.fillna(0).cummax()
    people["task"], people["kind"], people["seed"] = task, kind, seed
    people["wall_seconds"] = time.monotonic() - started
    return people


def epochs_to_reach(curve: pd.DataFrame, target: float) -> float:
    reached = curve[curve["best_val"] >= target - 1e-12]
    return float(reached["epochs_spent"].iloc[0]) if len(reached) else float("nan")


def summarise(curves: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (task, seed), runs in curves.groupby(["task", "seed"]):
        plain = runs[runs["kind"] == "none"]
        target, spent = plain["best_val"].max(), plain["epochs_spent"].max()
        for kind, curve in runs.groupby("kind", sort=False):
            needed = epochs_to_reach(curve, target)
            rows.append({"task": task, "kind": kind, "seed": seed,
                         "best_val": curve["best_val"].max(),
                         "epochs_spent": curve["epochs_spent"].max(),
                         "evaluations": len(curve),
                         "stopped": int((curve["status"] == "stopped").sum()),
                         "epochs_to_plain_best": needed,
                         "share_of_plain_epochs": needed / spent,
                         "wall_seconds": curve["wall_seconds"].iloc[0]})  # fmt: skip
    return pd.DataFrame(rows)


def draw(curves: pd.DataFrame, path: Path) -> None:
    tasks = list(dict.fromkeys(curves["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
    colours = {"none": "tab:gray", "halving": "tab:blue", "median": "tab:orange"}
    for ax, task in zip(axes[0], tasks):
        for (kind, seed), curve in curves[curves["task"] == task].groupby(["kind", "seed"]):
            ax.step(curve["epochs_spent"], curve["best_val"], where="post", alpha=0.7,
                    color=colours.get(kind), label=kind if seed == 0 else None)  # fmt: skip
        ax.set_xlabel("training epochs spent")
        ax.set_ylabel("best validation accuracy (fully trained)")
        ax.set_title(task)
        ax.set_ylim(bottom=max(0.0, curves.loc[curves["task"] == task, "best_val"].max() - 0.3))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mnist1d,fashion_mnist")
    parser.add_argument("--kinds", default="none,halving,median")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=540, help="training epochs per run")
    parser.add_argument("--population", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=9, help="a full training budget")
    parser.add_argument("--min-epochs", type=int, default=1)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--limit", type=int, default=6000, help="Fashion-MNIST training images")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--results", default=str(RESULTS), help="folder of the CSV and figure")
    parser.add_argument("--name", default="early_stop", help="file name of the CSV and figure")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if "none" not in kinds:
        parser.error("--kinds: must include none (the reference)")
    tasks = []
    for task in args.tasks.split(","):
        if task not in TASKS:
            parser.error(f"--tasks: unknown task {task!r}; expected mnist1d, fashion_mnist")
        try:
            load_task({**TASKS[task], "options": {"limit": args.limit}}
                      if task == "fashion_mnist" else TASKS[task])  # fmt: skip
        except TaskError as exc:
            print(f"{task} skipped: {exc}")
            continue
        tasks.append(task)
    curves = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            for seed in range(args.seeds):
                for kind in kinds:
                    curve = search(task, kind, seed, args, Path(tmp))
                    curves.append(curve)
                    print(f"{task} {kind} seed {seed}: best {curve['best_val'].max():.4f} in "
                          f"{curve['epochs_spent'].max():.0f} epochs, "
                          f"{curve['wall_seconds'].iloc[0]:.0f} s", flush=True)  # fmt: skip
    if not curves:
        return
    curves = pd.concat(curves, ignore_index=True)
    table = summarise(curves)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    table.to_csv(results / f"{args.name}.csv", index=False)
    draw(curves, results / f"{args.name}.png")
    print(table.to_string(index=False))
    means = table.groupby(["task", "kind"], sort=False)[
        ["best_val", "epochs_spent", "share_of_plain_epochs", "wall_seconds"]
    ].agg(["mean", "median"])
    print(means.to_string())
    print("aim: the same best at share_of_plain_epochs <= 0.5 (nan: never reached)")


if __name__ == "__main__":
    main()
