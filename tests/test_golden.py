"""Golden runs: the loop's exact history for fixed configs, in this process with a fake
evaluator (`tests/faults.py:slow`, a function of the evaluation seed and the genome).

Breeding, selection, the cache, the steady state, seeds and replay all draw on the run's one
random generator, so any change to what the loop does with it shows here. When a change of
history is deliberate, regenerate the files with `python -m tests.test_golden` and say why in the
commit message.
"""

import json
import sys
import tempfile
from pathlib import Path

import pytest

from evonas.config import resolve
from evonas.launch import run_search
from tests.conftest import ROOT

GOLDEN = Path(__file__).with_name("golden")
FAKE = [f"training.evaluator={ROOT / 'tests' / 'faults.py'}:slow", "parallel.backend=inline",
        "task.name=synthetic", "task.options={samples: 60, length: 12, classes: 3}",
        "space.max_layers=4", "space.widths=[4, 8]", "space.units=[8, 16]",
        "search.population=6", "search.plot_every=0", "seed=7"]  # fmt: skip
ONE = "search.objectives=[{name: val_accuracy, goal: max}]"
NB201 = ["task.name=table", "space.kind=nb201", "parallel.backend=inline", "search.plot_every=0",
         "search.objectives=[{name: c10valid_val_12ep, goal: max}]", "seed=7"]  # fmt: skip
CASES = {
    "nsga2": [*FAKE, "search.generations=6"],
    "tournament": [*FAKE, ONE, "search.strategy=tournament", "search.generations=6"],
    "regularized": [*FAKE, ONE, "search.strategy=regularized", "search.generations=30"],
    "steady": [
        *FAKE,
        ONE,
        "search.strategy=regularized",
        "search.generations=12",
        "search.offspring=2",
        "search.async_window=3",
    ],  # fmt: skip
    "random": [*FAKE, "search.strategy=random", "search.generations=4"],
    "local": [*FAKE, ONE, "search.strategy=local", "search.generations=30"],
    "seeds": [
        *FAKE,
        "search.generations=4",
        "search.seed_fill=mutate",
        f"search.seed_genomes=['{ROOT}/genomes/mlp.yaml', '{ROOT}/genomes/lenet5.yaml']",
    ],
    "cache": [
        *FAKE,
        "space.ops=[dense]",
        "space.units=[8]",
        "space.activations=[relu]",
        "space.max_layers=2",
        "space.lr_min=0.01",
        "space.lr_max=0.01",
        "search.generations=4",
    ],  # fmt: skip
    "nb201-local": [*NB201, "search.population=5", "search.generations=60"],
    "nb201-regularized": [
        *NB201,
        "search.strategy=regularized",
        "search.population=10",
        "search.tournament_size=3",
        "search.generations=50",
    ],  # fmt: skip
    "nb201-local-3": [
        *NB201,
        "search.population=5",
        "search.offspring=3",
        "search.generations=60",
        "search.max_evaluations=100",
    ],  # fmt: skip
    "local-3": [*FAKE, ONE, "search.strategy=local", "search.offspring=3", "search.generations=12"],
    "nb201-nsga2": [
        *NB201,
        "search.strategy=nsga2",
        "search.population=8",
        "search.generations=5",
        "search.objectives=[{name: c10valid_val_12ep, goal: max}, "
        "{name: c10_test_12ep, goal: min}]",
        "task.options={report: [c10_test_12ep]}",
    ],  # fmt: skip
}
COLUMNS = ["uid", "generation", "arch_key", "parents", "operator", "origin", "status", "seed",
           "cached_from"]  # fmt: skip


def journal(name: str, folder: Path) -> dict:
    result = run_search(resolve(sets=CASES[name]), folder / name, log=None)
    people = result.individuals
    metrics = [c for c in ("val_accuracy", "c10valid_val_12ep", "c10_test_12ep") if c in people]
    rows = people[COLUMNS + metrics].astype(object).where(people[COLUMNS + metrics].notna(), None)
    individuals = [
        {**row, "origin": str(row["origin"]).replace(str(ROOT), "<root>")}
        for row in rows.to_dict("records")
    ]
    generations = result.generations[["generation", "population"]].to_dict("records")
    return {"state": result.state, "individuals": individuals, "generations": generations}


@pytest.mark.parametrize("name", CASES)
def test_golden_run(name, tmp_path):
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    got = json.loads(json.dumps(journal(name, tmp_path)))
    assert got["state"] == expected["state"]
    assert got["generations"] == expected["generations"]
    for mine, theirs in zip(got["individuals"], expected["individuals"], strict=True):
        assert mine == theirs


if __name__ == "__main__":  # regenerate: python -m tests.test_golden [NAME ...]
    with tempfile.TemporaryDirectory() as tmp:
        for case in sys.argv[1:] or CASES:
            data = journal(case, Path(tmp))
            (GOLDEN / f"{case}.json").write_text(json.dumps(data, indent=0) + "\n")
            print(case, len(data["individuals"]), "individuals")
