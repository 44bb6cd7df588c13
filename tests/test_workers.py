"""The loop with real worker processes (slow): failures of every kind isolated in workers, and
histories that do not depend on the number of workers or the order results arrive in."""

import pytest

from tests.test_evolve import FAULTS, INHERIT, MEASURED, STEADY, TINY, same_journal, search

pytestmark = pytest.mark.slow
LOKY = [s for s in TINY if s != "parallel.backend=inline"] + ["parallel.backend=loky"]


def workers(tmp_path, *sets, name="run"):
    return search(tmp_path, *LOKY, *sets, name=name)


def test_fault_injection_each_failure_has_its_status(tmp_path):
    from tests.faults import behaviour

    result = workers(
        tmp_path,
        f"training.evaluator={FAULTS}:evaluate",
        "training.timeout=1",
        "search.population=8",
        "search.generations=1",
        "parallel.n_jobs=2",
    )
    people = result.individuals
    assert len(people) == 16 and result.state == "finished"
    expected = {"ok": "ok", "raise": "failed", "nan": "failed", "sleep": "timeout",
                "exit": "crashed", "segfault": "crashed"}  # fmt: skip
    fresh = people[people["cached_from"].isna()]
    for _, row in fresh.iterrows():
        assert row["status"] == expected[behaviour(row["seed"])], row["error"]
    messages = dict(zip(fresh["status"], fresh["error"]))
    assert "timeout" in messages and "crashed" in messages and "failed" in messages
    assert messages["timeout"].startswith("EvaluationTimeout")
    assert messages["crashed"].startswith("WorkerDied")


def test_steady_state_history_does_not_depend_on_workers_or_arrival_order(tmp_path):
    one = workers(tmp_path, *STEADY, "parallel.n_jobs=1", name="one")
    three = workers(tmp_path, *STEADY, "parallel.n_jobs=3", name="three")
    same_journal(one.individuals, three.individuals)
    same_journal(one.generations, three.generations, drop=["finished_at"])
    assert three.individuals["worker"].nunique() >= 1


def test_steady_state_with_inheritance_keeps_every_weight_a_child_needs(tmp_path):
    steady = [*INHERIT, "search.strategy=regularized", "search.population=5",
              "search.objectives=[{name: val_accuracy, goal: max}]", "search.generations=14",
              "search.async_window=3"]  # fmt: skip
    one = workers(tmp_path, *steady, "parallel.n_jobs=1", name="one").individuals
    two = workers(tmp_path, *steady, "parallel.n_jobs=2", name="two").individuals
    assert (two["status"] == "ok").all(), two["error"].dropna().tolist()
    assert two["inherited_from"].notna().sum() >= 10
    same_journal(one, two, drop=MEASURED)


def test_workers_and_inline_give_the_same_journal(tmp_path):
    local = workers(tmp_path, "parallel.n_jobs=2", name="loky").individuals
    inline = search(tmp_path, name="inline").individuals
    same_journal(local, inline, drop=MEASURED)
    assert not (local["worker"] == inline["worker"]).any()
