"""Lamarckian inheritance against training every child from scratch, at equal total epochs.

    .venv/bin/python benchmarks/inheritance.py [--seeds 3] [--budget 640] [--population 8]

MNIST-1D, the `mnist1d` preset's space made smaller so that a run takes minutes (widths 8-32,
at most 5 layers), one objective (validation accuracy), tournament selection, 2 workers. Both
variants train generation 0 from scratch for `--epochs` epochs; then `scratch` trains every child
`--epochs` epochs and `inherit` fine-tunes every child for `--finetune` epochs from its parents'
weights (with `prune` and `cut` among the operators). Generations are chosen so that both spend
the same total number of training epochs.

Prints a table (best validation accuracy, its test accuracy, and the epochs each variant
needed to reach the scratch run's final best) and writes benchmarks/results/inheritance.{csv,png}.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from evonas.config import resolve  # noqa: E402
from evonas.launch import run_search  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def search(variant: str, seed: int, args, out: Path) -> pd.DataFrame:
    children_epochs = args.finetune if variant == "inherit" else args.epochs
    first = args.population * args.epochs
    generations = (args.budget - first) // (args.population * children_epochs)
    overrides = {
        "seed": seed,
        "training.epochs": args.epochs,
        "training.finetune_epochs": args.finetune,
        "training.inherit_weights": variant == "inherit",
        "search.strategy": "tournament",
        "search.objectives": [{"name": "val_accuracy", "goal": "max"}],
        "search.population": args.population,
        "search.generations": generations,
        "search.plot_every": 0,
        "space.max_layers": 5,
        "space.widths": [8, 16, 32],
        "space.units": [32, 64, 128],
    }
    config = resolve(preset="mnist1d", overrides=overrides)
    started = time.monotonic()
    result = run_search(config, out / f"{variant}-{seed}", log=lambda line: None)
    people = result.individuals.sort_values("uid")
    trained = people["cached_from"].isna() & (people["status"] == "ok")
    people["epochs_spent"] = people["epochs"].where(trained, 0).fillna(0).cumsum()
    people["best_val"] = people["val_accuracy"].fillna(0).cummax()
    people["variant"], people["seed"] = variant, seed
    people["wall_seconds"] = time.monotonic() - started
    return people


def epochs_to_reach(curve: pd.DataFrame, target: float) -> float:
    reached = curve[curve["best_val"] >= target]
    return float(reached["epochs_spent"].iloc[0]) if len(reached) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=640, help="total training epochs per run")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--finetune", type=int, default=2)
    args = parser.parse_args()
    curves, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            runs = {v: search(v, seed, args, Path(tmp)) for v in ("scratch", "inherit")}
            target = runs["scratch"]["best_val"].iloc[-1]
            for variant, people in runs.items():
                best = people.loc[people["val_accuracy"].idxmax()]
                rows.append({
                    "variant": variant, "seed": seed, "evaluations": len(people),
                    "epochs": int(people["epochs_spent"].iloc[-1]),
                    "best_val": round(best["val_accuracy"], 4),
                    "test_of_best": round(best["test_accuracy"], 4),
                    "params_of_best": int(best["params"]),
                    "epochs_to_scratch_best": epochs_to_reach(people, target),
                    "wall_s": round(people["wall_seconds"].iloc[0]),
                })  # fmt: skip
                curves.append(people[["variant", "seed", "epochs_spent", "best_val"]])
    table = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "inheritance.csv", index=False)
    figure, axes = plt.subplots(figsize=(6, 4))
    colors = {"scratch": "tab:gray", "inherit": "tab:blue"}
    for (variant, seed), curve in pd.concat(curves).groupby(["variant", "seed"]):
        axes.step(curve["epochs_spent"], curve["best_val"], where="post", color=colors[variant],
                  label=variant if seed == 0 else None)  # fmt: skip
    axes.set(xlabel="training epochs spent", ylabel="best validation accuracy so far",
             title="MNIST-1D: inheritance vs from scratch")  # fmt: skip
    axes.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "inheritance.png", dpi=120)
    print(table.to_string(index=False))
    means = table.groupby("variant")[["best_val", "test_of_best", "epochs_to_scratch_best"]].mean()
    print()
    print(means.round(4).to_string())


if __name__ == "__main__":
    main()
