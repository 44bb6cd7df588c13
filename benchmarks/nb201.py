"""Search strategies on the NAS-Bench-201 CIFAR-10 table, against published results.

    .venv/bin/python benchmarks/nb201.py [--runs 100] [--jobs 2] [--strategies NAME ...]
        [--table CSV] [--signal COLUMN] [--report COLUMN] [--optimum VALUE] [--set KEY=VALUE]
        [--results DIR]

Strategies: local, regularized, random, tournament, nsga2 and the surrogate-assisted local+gp
(the default with a predictor: 20 initial cells), local+gp P=10 and local+trees. Each runs
`--runs` independent searches of 500 evaluations through the real loop and journal (table
lookups, inline backend). The search sees `c10valid_val_12ep`; the best cell found so far (by that
signal) is reported by its `c10_test_200ep` at 50, 100, 200 and 500 evaluations, with how often
it is the table's best cell by the signal.
The table defaults to the NAS-Bench-201 one shipped in the package; `--table`, `--signal` and
`--report` point at another table and its columns.
Evaluations are counted as journal rows, cache hits included. Writes nb201.csv and nb201.png to
--results (default benchmarks/results) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BUDGETS = (50, 100, 200, 500)
OPTIMUM = 94.3733
PUBLISHED = {  # NAS-Bench-201 (ICLR 2020) Table 5, about 100 evaluations, 500 runs
    "regularized": "93.92 ± 0.30",
    "random": "93.70 ± 0.36",
}
REFERENCE = {  # plain reference implementations on this table, 300 runs (@100 / @500)
    "random": "93.71 / 94.02",
    "regularized": "94.06 / 94.31",
    "local": "94.17 / 94.37",
}
# Strategy settings: population, generations (so that each run makes 500 evaluations), extras.
STRATEGIES = {
    "local": ["search.population=10", "search.generations=490"],
    "regularized": ["search.population=20", "search.tournament_size=5", "search.generations=480"],
    "random": ["search.population=10", "search.generations=49"],
    "tournament": ["search.population=20", "search.tournament_size=3", "search.generations=24"],
    "nsga2": ["search.population=20", "search.generations=24"],
}
# Surrogate-assisted variants: a strategy above, with a predictor (evonas.surrogate). The default
# starts from 20 random cells (an initial design for the predictor) rather than local's 10.
P20 = ["search.population=20", "search.generations=480"]
SURROGATES = {
    "local+gp": ("local", ["search.predictor=gp", *P20]),
    "local+gp P=10": ("local", ["search.predictor=gp"]),
    "local+trees": ("local", ["search.predictor=trees", *P20]),
}


def settings(name: str) -> tuple[str, list[str]]:
    """The strategy a benchmark entry runs and its settings."""
    if name in SURROGATES:
        strategy, extra = SURROGATES[name]
        return strategy, STRATEGIES[strategy] + extra
    return name, STRATEGIES[name]


def one_search(name: str, seed: int, table: str, signal: str, report: str, top: float,
               extra: list[str]) -> dict:  # fmt: skip
    from evonas.config import resolve
    from evonas.launch import run_search

    sets = [
        "task.name=table",
        f"task.options={{path: '{table}', fitness: {signal}, report: [{report}]}}",
        "space.kind=nb201",
        f"search.objectives=[{{name: {signal}, goal: max}}]",
        "search.plot_every=0",
        "parallel.backend=inline",
        f"search.strategy={settings(name)[0]}",
        f"seed={seed}",
        *settings(name)[1],
        *extra,
    ]
    config = resolve(sets=sets)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        people = run_search(config, Path(tmp) / "run", log=None).individuals
        seconds = time.perf_counter() - start
    people = people.sort_values("uid")
    seen, test = people[signal].to_numpy(), people[report].to_numpy()
    row = {"strategy": name, "seed": seed, "evaluations": len(people), "seconds": seconds}
    for budget in BUDGETS:
        best = int(np.argmax(seen[:budget]))
        row[f"test@{budget}"] = test[best]
        row[f"top@{budget}"] = bool(seen[best] >= top)  # the table's best cell by the signal
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--strategies", nargs="*", choices=[*STRATEGIES, *SURROGATES],
                        default=[*STRATEGIES, "local+gp", "local+gp P=10"])  # fmt: skip
    parser.add_argument("--table", default=None, help="CSV table (default: the packaged NB201)")
    parser.add_argument("--signal", default="c10valid_val_12ep", help="column the search sees")
    parser.add_argument("--report", default="c10_test_200ep", help="column reported")
    parser.add_argument("--optimum", type=float, default=OPTIMUM, help="best reported value")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for CSV and PNG")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every search (repeatable)")  # fmt: skip
    args = parser.parse_args()
    from evonas.tasks import nb201_table

    table = args.table or str(nb201_table())
    top = pd.read_csv(table)[args.signal].max()
    start = time.perf_counter()
    tasks = [(s, seed) for s in args.strategies for seed in range(args.runs)]
    rows = Parallel(n_jobs=args.jobs)(
        delayed(one_search)(s, seed, table, args.signal, args.report, top, args.set)
        for s, seed in tasks
    )
    wall = time.perf_counter() - start
    results = pd.DataFrame(rows)
    args.results.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.results / "nb201.csv", index=False)
    print(f"{len(results)} searches, {results['evaluations'].sum():,} evaluations in {wall:.0f} s "
          f"on {args.jobs} processes\n")  # fmt: skip
    header = "| strategy | " + " | ".join(f"@{b}" for b in BUDGETS)
    print(header + " | top cell @50 / @100 | optimum @500 | evals/s per process | published @100 "
          "| reference @100/@500 |")  # fmt: skip
    print("|---" * (len(BUDGETS) + 6) + "|")
    for strategy, part in results.groupby("strategy", sort=False):
        cells = [f"{part[f'test@{b}'].mean():.2f} ± {part[f'test@{b}'].std():.2f}" for b in BUDGETS]
        hits = (np.isclose(part["test@500"], args.optimum)).mean() * 100
        speed = part["evaluations"].sum() / part["seconds"].sum()
        found = f"{part['top@50'].mean() * 100:.0f} % / {part['top@100'].mean() * 100:.0f} %"
        print(f"| {strategy} | " + " | ".join(cells) + f" | {found} | {hits:.0f} % | {speed:,.0f} "
              f"| "
              f"{PUBLISHED.get(strategy, '-')} | {REFERENCE.get(strategy, '-')} |")  # fmt: skip
    plot(results, args.results)


def plot(results: pd.DataFrame, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, part in results.groupby("strategy", sort=False):
        means = [part[f"test@{b}"].mean() for b in BUDGETS]
        stds = [part[f"test@{b}"].std() for b in BUDGETS]
        ax.errorbar(BUDGETS, means, yerr=stds, marker="o", capsize=3, label=strategy)
    ax.axhline(OPTIMUM, color="grey", linestyle=":", label="optimum 94.37")
    ax.set_xscale("log")
    ax.set_xticks(BUDGETS, [str(b) for b in BUDGETS])
    ax.set_xlabel("evaluations")
    ax.set_ylabel("test accuracy (200 epochs) of the best found, %")
    ax.set_title(f"NAS-Bench-201 CIFAR-10, {results['seed'].nunique()} runs per strategy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "nb201.png", dpi=110)


if __name__ == "__main__":
    main()
