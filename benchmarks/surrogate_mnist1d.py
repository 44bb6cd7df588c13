"""Surrogate-assisted local search against plain local search with real training on MNIST-1D, at
equal evaluations, several seeds; and how well the zero-cost proxies rank the trained models.

    .venv/bin/python benchmarks/surrogate_mnist1d.py [--seeds 3] [--evaluations 40]
        [--predictors none gp] [--epochs 6] [--jobs 2] [--results DIR]

Each search: the `mnist1d` preset's space and data, one objective (val_accuracy), local search
from the best of 8 random models, 2 children at a time on --jobs loky workers, --epochs epochs
from scratch (no inheritance: each evaluation costs the same in every variant), stopped after
--evaluations evaluations; synflow and NASWOT are measured on every model. Reported per
predictor (mean ± std over seeds): the best val_accuracy found, the test_accuracy of that model,
the predictor's rank correlation with what was measured, and each proxy's rank correlation with
val_accuracy over all evaluations. Writes benchmarks/results/surrogate_mnist1d.csv.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/mnist1d.py would shadow the mnist1d package that generates the data
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def one_search(predictor: str, seed: int, evaluations: int, epochs: int, jobs: int) -> dict:
    from evonas.analysis import load_run
    from evonas.config import resolve
    from evonas.launch import run_search

    population = 8
    sets = [
        "search.objectives=[{name: val_accuracy, goal: max}]",
        "search.strategy=local",
        f"search.population={population}",
        "search.offspring=2",
        f"search.generations={(evaluations - population) // 2}",
        f"search.predictor={predictor}",
        "search.plot_every=0",
        f"training.epochs={epochs}",
        "training.inherit_weights=false",
        "training.zero_cost=[synflow, naswot]",
        f"parallel.n_jobs={jobs}",
        f"seed={seed}",
    ]
    config = resolve(preset="mnist1d", sets=sets)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        people = run_search(config, Path(tmp) / "run", log=None).individuals
        seconds = time.perf_counter() - start
        predictions = load_run(Path(tmp) / "run").predictions
    ok = people[people["status"] == "ok"]
    best = ok.loc[ok["val_accuracy"].idxmax()]
    row = {"predictor": predictor, "seed": seed, "evaluations": len(people),
           "failed": int((people["status"] != "ok").sum()), "seconds": seconds,
           "best_val": best["val_accuracy"], "test_of_best": best["test_accuracy"]}  # fmt: skip
    for proxy in ("synflow", "naswot"):
        row[f"{proxy}_rho"] = ok[proxy].corr(ok["val_accuracy"], method="spearman")
    row["predictor_rho"] = (
        predictions["predicted"].corr(predictions["measured"], method="spearman")
        if len(predictions) > 2
        else np.nan
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=40)
    parser.add_argument("--predictors", nargs="*", default=["none", "gp"],
                        choices=["none", "trees", "gp"])  # fmt: skip
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=2, help="loky workers per search")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the CSV")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = [
        one_search(predictor, seed, args.evaluations, args.epochs, args.jobs)
        for seed in range(args.seeds)
        for predictor in args.predictors
    ]
    results = pd.DataFrame(rows)
    args.results.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.results / "surrogate_mnist1d.csv", index=False)
    print(f"{len(results)} searches of {args.evaluations} evaluations ({args.epochs} epochs each) "
          f"in {time.perf_counter() - start:.0f} s\n")  # fmt: skip
    columns = ["best_val", "test_of_best", "predictor_rho", "synflow_rho", "naswot_rho"]
    print(
        "| predictor | best val_accuracy | its test_accuracy | predictor rank corr. "
        "| synflow rank corr. | NASWOT rank corr. | s per search |"
    )
    print("|---" * 7 + "|")
    for predictor, part in results.groupby("predictor", sort=False):
        cells = [f"{part[c].mean():.3f} ± {part[c].std():.3f}" if part[c].notna().any() else "-"
                 for c in columns]  # fmt: skip
        print(f"| {predictor} | " + " | ".join(cells) + f" | {part['seconds'].mean():.0f} |")


if __name__ == "__main__":
    main()
