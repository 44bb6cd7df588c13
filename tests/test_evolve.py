import json
import sys
import textwrap

import pytest

from evonas.config import resolve
from evonas.evolve import run_search
from evonas.operators import OPERATORS

TINY = [
    "task.name=synthetic",
    "task.options={samples: 240, length: 12, classes: 3}",
    "space.max_layers=4",
    "space.widths=[4, 8]",
    "space.units=[8, 16]",
    "training.epochs=2",
    "training.batch_size=32",
    "search.population=4",
    "search.generations=2",
]


def search(tmp_path, *sets, name="run"):
    config = resolve(sets=[*TINY, *sets])
    return run_search(config, tmp_path / name, log=lambda line: None)


def test_a_real_search_journals_everything(tmp_path):
    result = search(tmp_path)
    people = result.individuals
    assert len(people) == 4 * 3
    assert people["generation"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert (people["status"] == "ok").all()
    assert people["val_accuracy"].between(0, 1).all() and (people["params"] > 0).all()
    children = people[people["generation"] > 0]
    assert set(children["operator"]) <= set(OPERATORS)
    for parents in children["parents"]:
        assert all(uid < 12 for uid in json.loads(parents)) and json.loads(parents)
    generations = result.generations
    assert generations["generation"].tolist() == [0, 1, 2]
    for _, row in generations.iterrows():
        population = json.loads(row["population"])
        assert len(population) == 4
        assert set(population) <= set(people.loc[people["generation"] <= row["generation"], "uid"])
    assert generations["best_val_accuracy"].is_monotonic_increasing  # elitist: never lost
    assert (tmp_path / "run" / "plots" / "progress.png").stat().st_size > 1000
    assert (tmp_path / "run" / "plots" / "pareto.png").stat().st_size > 1000
    assert not result.pareto.empty


def test_search_learns_something(tmp_path):
    result = search(tmp_path, "training.epochs=4", "search.generations=1")
    assert result.individuals["val_accuracy"].max() > 0.6  # 3 classes: chance is 1/3


@pytest.fixture
def evaluators(tmp_path, monkeypatch):
    (tmp_path / "fake_eval.py").write_text(
        textwrap.dedent(f"""
        import math
        CALLS = {str(tmp_path / "calls.txt")!r}
        def score(genome, seed, budget):
            with open(CALLS, "a") as f:
                f.write("x")
            n = len(genome["layers"])
            if n >= 3:
                raise RuntimeError(f"too deep: {{n}} layers")
            if n == 0:
                return {{"val_accuracy": math.nan, "params": 1.0}}
            return {{"val_accuracy": genome["training"]["lr"] * 10 + n, "params": 10.0 * n}}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_eval", raising=False)
    return tmp_path / "calls.txt"


def test_failures_are_data_and_the_run_goes_on(tmp_path, evaluators):
    result = search(
        tmp_path,
        "training.evaluator=fake_eval:score",
        "search.generations=3",
        "search.population=6",
    )
    people = result.individuals
    failed = people[people["status"] == "failed"]
    assert len(people) == 24 and len(failed) > 0
    assert failed["error"].str.match(r"RuntimeError: too deep|ValueError: metric").all()
    assert failed["val_accuracy"].isna().all()
    assert not set(failed["uid"]) & set(result.pareto["uid"])
    assert (result.generations["failed"] >= 0).all()


def test_identical_work_is_evaluated_once(tmp_path, evaluators):
    result = search(
        tmp_path,
        "training.evaluator=fake_eval:score",
        "space.ops=[dense]",
        "space.units=[8]",
        "space.activations=[relu]",
        "space.max_layers=2",
        "space.lr_min=0.01",
        "space.lr_max=0.01",
        "search.population=6",
    )
    people = result.individuals
    cached = people[people["cached_from"].notna()]
    assert len(cached) > 0
    assert evaluators.read_text().count("x") == len(people) - len(cached)
    for _, row in cached.iterrows():
        original = people.set_index("uid").loc[int(row["cached_from"])]
        assert original["arch_key"] == row["arch_key"]
        assert original["val_accuracy"] == row["val_accuracy"]


def test_tournament_strategy_single_objective(tmp_path, evaluators):
    result = search(
        tmp_path,
        "training.evaluator=fake_eval:score",
        "search.strategy=tournament",
        "search.objectives=[{name: val_accuracy, goal: max}]",
    )
    best = result.generations["best_val_accuracy"].tolist()
    assert best == sorted(best)
    assert len(result.pareto) >= 1


def test_same_seed_same_history_different_seed_different(tmp_path, evaluators):
    a = search(tmp_path, "training.evaluator=fake_eval:score", name="a").individuals
    b = search(tmp_path, "training.evaluator=fake_eval:score", name="b").individuals
    c = search(tmp_path, "training.evaluator=fake_eval:score", "seed=1", name="c").individuals
    timing = ["worker", "started_at", "finished_at", "eval_seconds"]
    assert a.drop(columns=timing).equals(b.drop(columns=timing))
    assert not a["genome"].equals(c["genome"])
