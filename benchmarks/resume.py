"""Resume cost: replaying a fully journaled 100-generation run against running it.

    .venv/bin/python benchmarks/resume.py [--generations 100] [--population 10] [--sleep 0.05]

The evaluator stands in for training with a fixed sleep per evaluation, so the original run's
time is "training" plus the engine; the resume of the finished run should cost only the replay
(no evaluation, no plots). Prints both times and their ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

EVALUATOR = textwrap.dedent("""
    import time
    def evaluate(genome, seed, budget):
        time.sleep(budget["sleep"])
        return {"val_accuracy": (seed % 1000) / 1000 + genome["training"]["lr"],
                "params": float(10 * len(genome["layers"]) + 1)}
""")


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "evonas", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "evaluator.py").write_text(EVALUATOR.replace('budget["sleep"]', str(args.sleep)))
        sets = [
            "task.name=synthetic",
            f"training.evaluator={tmp / 'evaluator.py'}:evaluate",
            f"search.population={args.population}",
            f"search.generations={args.generations}",
        ]
        set_args = [part for s in sets for part in ("--set", s)]
        run = timed(["search", *set_args, "--name", "r", "--runs-dir", str(tmp)], tmp)
        resume = timed(["resume", str(tmp / "r")], tmp)
    evaluations = args.population * (args.generations + 1)
    print(f"{args.generations} generations x {args.population} = {evaluations} evaluations, "
          f"{args.sleep} s each")  # fmt: skip
    print(f"original run: {run:.1f} s; resume of the finished run: {resume:.1f} s; "
          f"ratio {run / resume:.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
