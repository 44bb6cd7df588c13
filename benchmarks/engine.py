"""The engine's own cost: NAS-Bench-201 table searches through the real loop and journal, side by
side with a plain Python loop doing the same lookups in the same process.

    .venv/bin/python benchmarks/engine.py [--evaluations 20000] [--repeats 3] [--cli-runs 3]

For each strategy, a search of `--evaluations` table lookups (inline backend, plots off, the
journal on) is timed end to end in a fresh process (best of `--repeats`), and so is a plain
loop: local search (neighbours in random order, first improvement, restarts) on a dict, with no
journal, no bookkeeping and no selection library. Then `evonas search --preset nb201` runs
through the CLI with its default plots and with plots off (`--cli-runs` each, median), to check
that plotting does not dominate a fast search. Writes benchmarks/results/engine.csv and prints
Markdown tables.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# population, children per generation (None: the population)
STRATEGIES = {"local": (10, 1), "regularized": (20, 1), "random": (10, None),
              "tournament": (20, None), "nsga2": (20, None)}  # fmt: skip


def engine(strategy: str, evaluations: int, folder: Path) -> float:
    """Evaluations per second of a whole search (set-up, loop, journal, final tables), in a new
    process so that no cache of an earlier search helps."""
    command = [sys.executable, __file__, "--one", strategy, "--evaluations", str(evaluations),
               "--folder", str(folder)]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def one_search(strategy: str, evaluations: int, folder: Path) -> float:
    from evonas.config import resolve
    from evonas.launch import run_search

    population, per_generation = STRATEGIES[strategy]
    generations = (evaluations - population) // (per_generation or population)
    config = resolve(preset="nb201", sets=[
        f"search.strategy={strategy}", f"search.population={population}",
        f"search.generations={generations}", "search.plot_every=0"])  # fmt: skip
    start = time.perf_counter()
    result = run_search(config, folder / f"{strategy}-{time.time_ns()}", log=None)
    return len(result.individuals) / (time.perf_counter() - start)


def cell_string(ops: tuple[str, ...]) -> str:
    return f"|{ops[0]}~0|+|{ops[1]}~0|{ops[2]}~1|+|{ops[3]}~0|{ops[4]}~1|{ops[5]}~2|"


def plain(evaluations: int, table: dict[str, float], seed: int = 0) -> float:
    """A plain local search over the table (what a hand-written script would do)."""
    rng = random.Random(seed)
    start = time.perf_counter()
    seen: set[tuple[str, ...]] = set()
    best, best_value, done = None, float("-inf"), 0
    while done < evaluations:
        if best is None:
            best = tuple(rng.choice(OPS) for _ in range(6))
            best_value, done = table[cell_string(best)], done + 1
            seen.add(best)
        neighbours = [best[:i] + (op,) + best[i + 1 :] for i in range(6) for op in OPS
                      if op != best[i]]  # fmt: skip
        rng.shuffle(neighbours)
        unseen = next((n for n in neighbours if n not in seen), None)
        if unseen is None:
            best = None  # a local optimum: restart
            continue
        seen.add(unseen)
        value, done = table[cell_string(unseen)], done + 1
        if value > best_value:
            best, best_value = unseen, value
    return evaluations / (time.perf_counter() - start)


def cli_seconds(runs: int, plots: bool, folder: Path) -> float:
    """Median wall time of `evonas search --preset nb201` (500 evaluations) in a new process."""
    times = []
    for run in range(runs):
        command = [sys.executable, "-m", "evonas", "search", "--preset", "nb201",
                   "--runs-dir", str(folder), "--name", f"cli-{plots}-{run}"]  # fmt: skip
        if not plots:
            command += ["--set", "search.plot_every=0"]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=folder)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cli-runs", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one search, print its rate
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(one_search(args.one, args.evaluations, Path(args.folder)))
        return
    from evonas.tasks import load_table

    table = {k: v["c10valid_val_12ep"] for k, v in load_table({}).items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for strategy in STRATEGIES:
            for _ in range(args.repeats):  # interleaved, so load changes touch both alike
                rows.append({"strategy": strategy, "what": "evonas",
                             "per_second": engine(strategy, args.evaluations, folder)})  # fmt: skip
                rows.append({"strategy": strategy, "what": "plain loop",
                             "per_second": plain(args.evaluations, table)})  # fmt: skip
        with_plots = cli_seconds(args.cli_runs, True, folder)
        without = cli_seconds(args.cli_runs, False, folder)
    results = pd.DataFrame(rows).groupby(["strategy", "what"], sort=False)["per_second"].max()
    table_rows = []
    for strategy in STRATEGIES:
        mine, theirs = results[(strategy, "evonas")], results[(strategy, "plain loop")]
        table_rows.append({"strategy": strategy, "evonas_per_s": round(mine),
                           "plain_loop_per_s": round(theirs),
                           "ratio": round(mine / theirs, 3)})  # fmt: skip
    frame = pd.DataFrame(table_rows)
    frame.attrs["cli"] = (with_plots, without)
    RESULTS.mkdir(parents=True, exist_ok=True)
    frame.to_csv(RESULTS / "engine.csv", index=False)
    print(f"{args.evaluations:,} evaluations per search, best of {args.repeats}\n")
    print("| strategy | evonas (journal) evals/s | plain loop evals/s | ratio |\n|---|---|---|---|")
    for row in table_rows:
        print(f"| {row['strategy']} | {row['evonas_per_s']:,} | {row['plain_loop_per_s']:,} | "
              f"{row['ratio']:.3f} |")  # fmt: skip
    print(f"\n`evonas search --preset nb201` (500 evaluations, median of {args.cli_runs}): "
          f"{with_plots:.2f} s with plots, {without:.2f} s without, "
          f"ratio {with_plots / without:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
