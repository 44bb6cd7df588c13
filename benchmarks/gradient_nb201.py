"""Gradient-based search against evolution, and gradient search followed by evolution, in the
NAS-Bench-201 cell space on a small real dataset, at equal search compute; several seeds.

    .venv/bin/python benchmarks/gradient_nb201.py [--seeds 3] [--first-seed 0] [--task digits]
        [--darts-epochs 6] [--gdas-epochs 18] [--epochs 4] [--final-epochs 10] [--results DIR]

Arms (every search evaluates candidates the same way: the NB201 network, 16 channels and 5
cells per stage, trained --epochs from scratch on --task; one worker, so a run's wall-clock is
its compute):

- darts: supernet (the same skeleton) trained --darts-epochs; the derived cell evaluated;
- gdas: the same with hard Gumbel-softmax sampling, --gdas-epochs;
- evolution: regularized evolution (population 8, samples of 3), stopped at the darts arm's
  search time (search.max_time);
- darts+evolution: darts for half its epochs, its 3 most probable cells seed regularized
  evolution, which runs until the two together took the darts arm's time.

The budget is the darts arm's wall-clock time (the `seconds` column says what each arm took).
Each arm's best cell (highest val_accuracy in its run) is then trained again from scratch for
--final-epochs with 3 seeds, and reported by its test accuracy on --task (the split no search
saw) and by its CIFAR-10 test accuracy in the NAS-Bench-201 table (c10_test_200ep: how well the
cell found on a small dataset transfers). Writes benchmarks/results/gradient_nb201.csv.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
OBJECTIVE = "search.objectives=[{name: val_accuracy, goal: max}]"


def common(task: str, epochs: int, seed: int) -> list[str]:
    return [f"task.name={task}", "space.kind=nb201", OBJECTIVE, f"training.epochs={epochs}",
            "search.plot_every=0", "parallel.n_jobs=1", f"seed={seed}"]  # fmt: skip


def run(sets: list[str], run_dir: Path) -> tuple[pd.DataFrame, float]:
    from evonas.config import resolve
    from evonas.launch import run_search

    start = time.perf_counter()
    result = run_search(resolve(sets=sets), run_dir, log=None)
    if result.state != "finished" and "max_time" not in result.reason:
        raise RuntimeError(f"{run_dir}: {result.state}: {result.reason}")
    return result.individuals, time.perf_counter() - start


def gradient(method: str, epochs: int, top: int, base: list[str], run_dir: Path):
    sets = [*base, "search.strategy=gradient", f"search.gradient.method={method}",
            f"search.gradient.epochs={epochs}", f"search.gradient.top={top}"]  # fmt: skip
    return run(sets, run_dir)


def evolution(budget: float, base: list[str], run_dir: Path, seed_run: Path | None = None):
    sets = [*base, "search.strategy=regularized", "search.population=8",
            "search.tournament_size=3", "search.generations=100000",
            f"search.max_time={max(1.0, budget):.1f}"]  # fmt: skip
    if seed_run is not None:
        sets += [f"search.seed_run={seed_run}", "search.seed_top=3"]
    return run(sets, run_dir)


def best_cell(people: pd.DataFrame) -> tuple[str, float]:
    from evonas.genome import parse_genome
    from evonas.spaces import Nb201Space

    ok = people[people["status"] == "ok"]
    row = ok.loc[ok["val_accuracy"].idxmax()]
    return Nb201Space().to_string(parse_genome(json.loads(row["genome"]))), float(
        row["val_accuracy"]
    )


def retrain(cell: str, task: str, epochs: int, repeats: int = 3) -> float:
    """Mean test accuracy of `cell` trained from scratch `repeats` times (seeds 0..)."""
    from evonas.config import resolve
    from evonas.evaluate import evaluate
    from evonas.records import Job
    from evonas.spaces import Nb201Space

    config = resolve(sets=[f"task.name={task}", "space.kind=nb201", f"training.epochs={epochs}"])
    space = Nb201Space(lr=config.space.lr_max)
    genome = space.from_string(cell)
    scores = []
    for seed in range(repeats):
        job = Job(uid=seed, genome=genome.to_dict(), seed=1000 + seed,
                  task=config.task.model_dump(), training=config.training.model_dump())  # fmt: skip
        result = evaluate(job)
        if result.status != "ok":
            raise RuntimeError(f"retraining {cell}: {result.error}")
        scores.append(result.metrics["test_accuracy"])
    return float(np.mean(scores))


def one_seed(seed: int, args: argparse.Namespace, tmp: Path) -> list[dict]:
    from evonas.tasks import table_lookup

    base = common(args.task, args.epochs, seed)
    found: dict[str, tuple[pd.DataFrame, float]] = {}
    found["darts"] = gradient("darts", args.darts_epochs, 1, base, tmp / f"darts-{seed}")
    budget = found["darts"][1]
    found["gdas"] = gradient("gdas", args.gdas_epochs, 1, base, tmp / f"gdas-{seed}")
    found["evolution"] = evolution(budget, base, tmp / f"evolution-{seed}")
    half = max(1, args.darts_epochs // 2)
    first, spent = gradient("darts", half, 3, base, tmp / f"half-{seed}")
    people, rest = evolution(budget - spent, base, tmp / f"then-{seed}", tmp / f"half-{seed}")
    found["darts+evolution"] = (pd.concat([first, people], ignore_index=True), spent + rest)
    rows = []
    for arm, (people, seconds) in found.items():
        cell, val = best_cell(people)
        table = table_lookup({"report": ["c10_test_200ep"]}, cell)
        rows.append({"arm": arm, "seed": seed, "seconds": seconds,
                     "evaluations": int((people["status"] == "ok").sum()), "cell": cell,
                     "search_val_accuracy": val,
                     "test_accuracy": retrain(cell, args.task, args.final_epochs),
                     "c10_test_200ep": table["c10_test_200ep"]})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds from this one on")
    parser.add_argument("--task", default="digits", help="a built-in image task (default digits)")
    parser.add_argument("--darts-epochs", type=int, default=6)
    parser.add_argument("--gdas-epochs", type=int, default=18)
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each evaluation")
    parser.add_argument("--final-epochs", type=int, default=10, help="epochs of the retraining")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows += one_seed(seed, args, Path(tmp))
            frame = pd.DataFrame(rows)  # written after each seed: a long run keeps what it did
            args.results.mkdir(parents=True, exist_ok=True)
            frame.to_csv(args.results / "gradient_nb201.csv", index=False)
    columns = ["seconds", "evaluations", "search_val_accuracy", "test_accuracy", "c10_test_200ep"]
    summary = frame.groupby("arm", sort=False)[columns].agg(["mean", "std"])
    with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
        print(summary)


if __name__ == "__main__":
    main()
