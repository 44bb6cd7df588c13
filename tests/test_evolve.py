"""The evolution loop in this process (inline backend): real tiny searches, failures, the cache,
replay and resume, run limits, strategies, inheritance, distillation and the steady state.
The same loop with real worker processes is tested in test_workers.py (slow)."""

import json
import shutil
import signal
import sqlite3
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from evonas.config import ConfigError, resolve
from evonas.evaluate import MEASURED_METRICS
from evonas.launch import resume_search, run_search, run_to_end, start_search
from evonas.operators import OPERATORS, operator_weights
from evonas.reporters import Reporter
from evonas.spaces import make_space
from evonas.store import RunDirError
from tests.conftest import NB201_TABLE

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
    "search.plot_every=0",
    "parallel.backend=inline",
]
FAULTS = Path(__file__).with_name("faults.py")
TIMING = ["worker", "started_at", "finished_at", "eval_seconds"]
MEASURED = [*TIMING, *MEASURED_METRICS]  # measured, not computed


def search(tmp_path, *sets, name="run"):
    config = resolve(sets=[*TINY, *sets])
    return run_search(config, tmp_path / name, log=None)


def same_journal(a, b, drop=TIMING):
    pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop))


def test_a_real_search_journals_everything(tmp_path):
    result = search(tmp_path, "search.plot_every=1")
    people = result.individuals
    assert len(people) == 4 * 3
    assert people["generation"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert (people["status"] == "ok").all()
    assert people["val_accuracy"].between(0, 1).all() and (people["params"] > 0).all()
    children = people[people["generation"] > 0]
    assert set(children["operator"]) <= {op.name for op in OPERATORS.values()}
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
    assert "generation 2/2" in (tmp_path / "run" / "log.txt").read_text()
    assert not result.pareto.empty


def test_search_learns_something(tmp_path):
    result = search(tmp_path, "training.epochs=4", "search.generations=1")
    assert result.individuals["val_accuracy"].max() > 0.6  # 3 classes: chance is 1/3


@pytest.fixture
def evaluators(tmp_path):
    """A user evaluator given by file path."""
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
    return f"training.evaluator={tmp_path / 'fake_eval.py'}:score"


def test_failures_are_data_and_the_run_goes_on(tmp_path, evaluators):
    result = search(tmp_path, evaluators, "search.generations=3", "search.population=6")
    people = result.individuals
    failed = people[people["status"] == "failed"]
    assert len(people) == 24 and len(failed) > 0
    assert failed["error"].str.match(r"RuntimeError: too deep|ValueError: metric").all()
    assert failed["val_accuracy"].isna().all()
    assert not set(failed["uid"]) & set(result.pareto["uid"])
    assert (result.generations["failed"] >= 0).all()
    log = (tmp_path / "run" / "log.txt").read_text()  # where it failed, for whoever debugs it
    assert "Traceback (most recent call last)" in log and "fake_eval.py" in log


def test_identical_work_is_evaluated_once(tmp_path, evaluators):
    result = search(
        tmp_path, evaluators, "space.ops=[dense]", "space.units=[8]", "space.activations=[relu]",
        "space.max_layers=2", "space.lr_min=0.01", "space.lr_max=0.01", "search.population=6",
    )  # fmt: skip
    people = result.individuals
    cached = people[people["cached_from"].notna()]
    assert len(cached) > 0
    assert (tmp_path / "calls.txt").read_text().count("x") == len(people) - len(cached)
    for _, row in cached.iterrows():
        original = people.set_index("uid").loc[int(row["cached_from"])]
        assert original["arch_key"] == row["arch_key"] and pd.isna(original["cached_from"])
        assert original["val_accuracy"] == row["val_accuracy"]


def test_tournament_strategy_single_objective(tmp_path, evaluators):
    result = search(tmp_path, evaluators, "search.strategy=tournament",
                    "search.objectives=[{name: val_accuracy, goal: max}]")  # fmt: skip
    best = result.generations["best_val_accuracy"].tolist()
    assert best == sorted(best)
    assert len(result.pareto) >= 1


def test_same_seed_same_history_different_seed_different(tmp_path, evaluators):
    a = search(tmp_path, evaluators, name="a").individuals
    b = search(tmp_path, evaluators, name="b").individuals
    c = search(tmp_path, evaluators, "seed=1", name="c").individuals
    same_journal(a, b)
    assert not a["genome"].equals(c["genome"])


def copy_run(source, target, keep_evaluations):
    """A copy of a finished run as if it had died after `keep_evaluations` journaled results."""
    shutil.copytree(source, target)
    with sqlite3.connect(target / "history.sqlite") as db:
        order = "ORDER BY finished_at, uid"
        rows = list(db.execute(f"SELECT uid, generation FROM individuals {order}"))
        dropped = rows[keep_evaluations:]
        db.executemany("DELETE FROM individuals WHERE uid = ?", [(u,) for u, _ in dropped])
        if dropped:
            first_incomplete = min(generation for _, generation in dropped)
            db.execute("DELETE FROM generations WHERE generation >= ?", (first_incomplete,))
        db.execute("UPDATE meta SET value = '\"running\"' WHERE key = 'state'")


def resume_to_end(run_dir, **changes):
    return run_to_end(resume_search(run_dir, changes, log=None))


SLOW = [f"training.evaluator={FAULTS}:slow"]


def test_resume_from_any_point_equals_uninterrupted(tmp_path):
    sets = [*SLOW, "search.population=5", "search.generations=4"]
    reference = search(tmp_path, *sets, name="reference")
    total = len(reference.individuals)
    for keep in (0, 1, 7, 13, total - 1, total):
        run_dir = tmp_path / f"resumed-{keep}"
        copy_run(tmp_path / "reference", run_dir, keep)
        result = resume_to_end(run_dir, **{"parallel.n_jobs": 2})
        assert result.state == "finished"
        same_journal(result.individuals, reference.individuals)
        same_journal(result.generations, reference.generations, drop=["finished_at"])


def test_run_limits_stop_at_a_generation_boundary_and_resume_extends(tmp_path):
    sets = [*SLOW, "search.population=4", "search.generations=4"]
    reference = search(tmp_path, *sets, name="reference")
    limited = search(tmp_path, *sets, "search.max_evaluations=10", name="limited")
    assert limited.state == "stopped" and "max_evaluations 10" in limited.reason
    assert len(limited.individuals) == 8 and len(limited.generations) == 2
    extended = resume_to_end(tmp_path / "limited", **{"search.max_evaluations": 0})
    assert extended.state == "finished"
    same_journal(extended.individuals, reference.individuals)
    timed = search(tmp_path, *sets, "search.max_time=0.001", name="timed")
    assert timed.state == "stopped" and "max_time" in timed.reason
    assert len(timed.generations) == 1
    more = resume_to_end(tmp_path / "limited", **{"search.generations": 6})
    assert more.generations["generation"].max() == 6


def test_resume_refuses_other_config_changes(tmp_path):
    search(tmp_path, *SLOW, "search.generations=1")
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="search.population: cannot change on resume"):
        resume_search(run_dir, {"search.population": 9})
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 5"))
    with pytest.raises(RunDirError, match="config.yaml: changed since the run started"):
        resume_search(run_dir)
    with pytest.raises(RunDirError, match="no config.yaml here"):
        resume_search(tmp_path / "absent")


def test_resuming_a_finished_run_says_so(tmp_path):
    search(tmp_path, *SLOW, "search.generations=1")
    lines = []
    assert run_to_end(resume_search(tmp_path / "run", log=lines.append)).state == "finished"
    assert any("already finished" in line for line in lines)


NB201 = [
    "task.name=table",
    f"task.options={{path: {NB201_TABLE}, fitness: c10valid_val_12ep, report: [c10_test_200ep]}}",
    "space.kind=nb201",
    "search.objectives=[{name: c10valid_val_12ep, goal: max}]",
    "search.plot_every=0",
]


@pytest.mark.parametrize("strategy", ["local", "regularized", "random", "tournament", "nsga2"])
def test_every_strategy_searches_the_nb201_table(tmp_path, strategy):
    result = search(tmp_path, *NB201, f"search.strategy={strategy}", "search.generations=60")
    people = result.individuals
    assert (people["status"] == "ok").all()
    assert people["c10valid_val_12ep"].between(0, 100).all() and "c10_test_200ep" in people
    first = people[people["generation"] == 0]
    assert len(first) == 4  # TINY sets population 4
    best = result.generations["best_c10valid_val_12ep"]
    if strategy in ("tournament", "nsga2", "random"):
        assert best.is_monotonic_increasing  # elitist; local search restarts, aging forgets
    assert people["c10valid_val_12ep"].max() > 80


def test_local_search_finds_the_nb201_optimum_within_500_evaluations(tmp_path):
    result = search(tmp_path, *NB201, "search.strategy=local", "search.generations=496")
    assert len(result.individuals) == 500
    best = result.individuals.loc[result.individuals["c10valid_val_12ep"].idxmax()]
    assert best["c10valid_val_12ep"] == pytest.approx(84.892)
    assert best["c10_test_200ep"] == pytest.approx(94.3733)


def test_aging_evolution_resumes_exactly_on_the_table(tmp_path):
    sets = [*NB201, "search.strategy=regularized", "search.generations=80"]
    reference = search(tmp_path, *sets, name="reference")
    copy_run(tmp_path / "reference", tmp_path / "cut", 37)
    same_journal(resume_to_end(tmp_path / "cut").individuals, reference.individuals)


# --- weight inheritance and distillation ---------------------------------------------------------


class StopAfter(Reporter):
    """Requests a stop (as Ctrl-C does) once `after` evaluations returned from workers."""

    def __init__(self, evolution, after: int) -> None:
        self.evolution, self.after, self.seen = evolution, after, 0

    def evaluated(self, individual, source: str) -> None:
        self.seen += source == "worker"
        if self.seen == self.after:
            self.evolution.request_stop(signal.SIGINT)


def run_until_stopped(config, run_dir, after):
    """A search stopped once `after` results are journaled: what is in flight finishes,
    nothing more starts."""
    evolution = start_search(config, run_dir, log=None)
    evolution.reporters.add(StopAfter(evolution, after))
    assert run_to_end(evolution).state == "interrupted"


INHERIT = ["training.inherit_weights=true", "training.finetune_epochs=1", "search.generations=3"]


def test_children_inherit_and_the_journal_says_from_whom(tmp_path):
    result = search(tmp_path, *INHERIT)
    people = result.individuals.set_index("uid")
    children = people[people["generation"] > 0]
    inherited = children[children["inherited_from"].notna()]
    assert len(inherited) >= len(children) // 2
    for _, row in inherited.iterrows():
        assert set(json.loads(row["inherited_from"])) <= set(json.loads(row["parents"]))
        if pd.isna(row["cached_from"]):
            assert row["epochs"] == 1 and 0 < row["inherited_share"] <= 1
    assert (people.loc[people["generation"] == 0, "epochs"] == 2).all()
    scratch = people["inherited_from"].isna() & people["cached_from"].isna()
    assert people.loc[scratch, "epochs"].eq(2).all()
    config = resolve(sets=[*TINY, *INHERIT])
    space, _ = make_space(config)
    assert {"prune", "cut"} <= set(operator_weights({}, space, inherit_weights=True))
    assert not {"prune", "cut"} & set(operator_weights({}, space, inherit_weights=False))


def test_an_interrupted_run_with_inheritance_resumes_exactly(tmp_path):
    reference = search(tmp_path, *INHERIT, name="reference")
    run_until_stopped(resolve(sets=[*TINY, *INHERIT]), tmp_path / "stopped", after=7)
    result = resume_to_end(tmp_path / "stopped")
    same_journal(result.individuals, reference.individuals, drop=MEASURED)
    assert result.individuals["inherited_from"].notna().sum() > 3


def test_distillation_from_the_best_so_far_is_journaled(tmp_path):
    people = search(tmp_path, "training.distill_from=best").individuals
    assert people.loc[people["generation"] == 0, "distilled_from"].isna().all()
    for generation in (1, 2):
        earlier = people[(people["generation"] < generation) & (people["status"] == "ok")]
        best = earlier.sort_values(["val_accuracy", "uid"], ascending=[False, True]).iloc[0]
        teachers = set(people.loc[people["generation"] == generation, "distilled_from"])
        assert teachers == {str(best["uid"])}


def test_size_and_latency_can_be_objectives(tmp_path):
    objectives = ("search.objectives=[{name: val_accuracy, goal: max}, "
                  "{name: latency_ms, goal: min}, {name: size_bytes, goal: min}]")  # fmt: skip
    result = search(tmp_path, objectives, "search.generations=1")
    people = result.individuals
    assert (people["latency_ms"] > 0).all() and (people["size_bytes"] > 0).all()
    assert set(result.generations.columns) >= {"best_latency_ms", "best_size_bytes"}
    assert not result.pareto.empty


# --- steady-state (asynchronous) regularized evolution ---------------------------------------

STEADY = [*SLOW, "search.strategy=regularized",
          "search.objectives=[{name: val_accuracy, goal: max}]", "search.population=5",
          "search.generations=16", "search.plot_every=0", "search.async_window=3"]  # fmt: skip


def test_steady_state_depends_on_its_window(tmp_path):
    three = search(tmp_path, *STEADY, name="three")
    assert len(three.individuals) == 5 + 16 and len(three.generations) == 17
    serial = search(tmp_path, *STEADY[:-1], "search.async_window=1", name="serial")
    assert not serial.individuals["genome"].equals(three.individuals["genome"])


def test_steady_state_resumes_exactly_after_a_stop(tmp_path):
    reference = search(tmp_path, *STEADY, name="reference")
    run_until_stopped(resolve(sets=[*TINY, *STEADY]), tmp_path / "stopped", after=11)
    same_journal(resume_to_end(tmp_path / "stopped").individuals, reference.individuals)


def test_async_window_is_only_for_regularized_evolution():
    with pytest.raises(ConfigError, match="search.async_window"):
        resolve(sets=[*TINY, "search.async_window=2"])


def test_max_evaluations_counts_the_next_step_not_a_population(tmp_path):
    sets = [*SLOW, "search.strategy=regularized", "search.population=5",
            "search.objectives=[{name: val_accuracy, goal: max}]", "search.generations=50",
            "search.max_evaluations=12", "search.plot_every=0"]  # fmt: skip
    result = search(tmp_path, *sets)
    assert result.state == "stopped" and len(result.individuals) == 12
