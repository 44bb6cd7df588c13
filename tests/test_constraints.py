"""Constraints (search.constraints): limits checked before training, constrained domination in
selection, feasibility in the journal, the figures and "best"."""

import random

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evonas.config import resolve
from evonas.constraints import Constraint, broken, violation
from evonas.objectives import Objective, fitness_class, fitness_values, pareto_front
from evonas.records import Individual
from evonas.strategies import rank_and_crowding, sel_best_of_sample, sel_tournament
from tests.conftest import cli, tiny_config_yaml
from tests.test_evolve import MEASURED, TINY, resume_to_end, run_until_stopped, search

TWO = [Objective("val_accuracy", "max"), Objective("params", "min")]
LIMIT = 300  # about half of the tiny space's sampled models have more parameters
CONSTRAINED = ["search.strategy=nsga2", "search.population=8", "search.generations=2",
               f"search.constraints=[{{metric: params, max: {LIMIT}}}]"]  # fmt: skip


def test_violation_is_how_far_past_each_bound_relative_to_it():
    limits = [Constraint(metric="params", max=100), Constraint(metric="val_accuracy", min=0.5)]
    assert violation({"params": 100, "val_accuracy": 0.5}, limits) == 0
    assert violation({"params": 150, "val_accuracy": 0.25}, limits) == pytest.approx(0.5 + 0.5)
    assert violation({"params": 150}, limits) == pytest.approx(0.5)  # a metric it lacks: nothing
    assert broken({"params": 150}, limits) == "params 150 breaks the constraint params <= 100"


metrics = st.fixed_dictionaries(
    {"val_accuracy": st.floats(0, 1), "params": st.floats(1, 1e12)}
)  # fmt: skip
violations = st.floats(1e-9, 1e9)


def dominates(a, b):
    return a.dominates(b)


def fitness(values):
    return fitness_class(TWO)(values)


@given(metrics, metrics, violations)
def test_any_feasible_candidate_dominates_any_infeasible_one(good, bad, by):
    feasible = fitness(fitness_values(good, True, TWO))
    infeasible = fitness(fitness_values(bad, True, TWO, violation=by))
    assert dominates(feasible, infeasible) and not dominates(infeasible, feasible)


@given(metrics, metrics, violations, violations)
def test_infeasible_candidates_compare_by_violation_alone(a, b, less, more):
    if 1.0 + less == 1.0 + more:  # closer than a double resolves: the encoding cannot tell them
        return
    less, more = sorted((less, more))
    assert dominates(fitness(fitness_values(a, True, TWO, less)),
                     fitness(fitness_values(b, True, TWO, more)))  # fmt: skip


@given(metrics, violations)
def test_a_failure_ranks_below_every_infeasible_candidate(measured, by):
    failed = fitness(fitness_values({}, False, TWO))
    assert dominates(fitness(fitness_values(measured, True, TWO, by)), failed)


def member(uid, accuracy, params, by=0.0):
    ind = Individual(uid, None, 0, status="ok", metrics={"val_accuracy": accuracy})
    ind.metrics["params"], ind.violation = params, by
    ind.fitness = fitness(fitness_values(ind.metrics, True, TWO, by))
    return ind


def test_nsga2_ranks_feasible_fronts_first_then_infeasible_by_violation():
    population = [member(0, 0.9, 500, by=0.5), member(1, 0.5, 100), member(2, 0.6, 200),
                  member(3, 0.99, 900, by=0.1), member(4, 0.4, 150)]  # fmt: skip
    rank, _ = rank_and_crowding(population)
    assert rank == {1: 0, 2: 0, 4: 1, 3: 2, 0: 3}


def test_single_objective_selection_puts_feasibility_first():
    one = [Objective("val_accuracy", "max")]
    cls = fitness_class(one)
    population = []
    for uid, (accuracy, by) in enumerate([(0.99, 0.2), (0.6, 0.0), (0.98, 0.01), (0.5, 0.0)]):
        ind = Individual(uid, None, 0, status="ok", metrics={"val_accuracy": accuracy})
        ind.fitness = cls(fitness_values(ind.metrics, True, one, by))
        population.append(ind)
    rng = random.Random(0)
    assert {i.uid for i in sel_best_of_sample(population, 20, rng, 4)} == {1}
    assert {i.uid for i in sel_tournament(population, 20, rng, 4)} <= {1, 3}  # the feasible


# --- a real constrained search -------------------------------------------------------------------


@pytest.fixture(scope="module")
def constrained(tmp_path_factory):
    from evonas.analysis import load_run

    return load_run(search(tmp_path_factory.mktemp("constrained"), *CONSTRAINED).run_dir)


def test_a_constrained_nsga2_search_never_trains_a_child_over_a_pre_training_limit(constrained):
    people = constrained.individuals
    over = people[people["params"] > LIMIT]
    assert len(over) and (people["params"] <= LIMIT).any()
    assert set(over["status"]) == {"infeasible"}
    assert over["val_accuracy"].isna().all() and over["train_seconds"].isna().all()
    assert over["error"].str.startswith("not trained: params").all()
    assert (over["violation"] > 0).all() and (
        people.loc[people["params"] <= LIMIT, "violation"] == 0
    ).all()
    assert constrained.curves["uid"].isin(over["uid"]).sum() == 0  # not one epoch


def test_best_and_the_front_are_feasible(constrained):
    front = pareto_front(constrained.individuals, constrained.objectives)
    assert len(front) and (front["params"] <= LIMIT).all()
    assert (constrained.generations["best_params"] <= LIMIT).all()
    assert constrained.best("params")["params"] <= LIMIT


def test_the_figures_show_infeasible_models_apart(constrained):
    from evonas.plots import failure_data, pareto_data

    assert not pareto_data(constrained.individuals, constrained.objectives)["on_front"].isna().any()
    assert failure_data(constrained.individuals)["infeasible"].sum() > 0


def test_status_counts_infeasible_candidates_apart_from_failures(constrained):
    from evonas.analysis import run_status

    infeasible = (constrained.individuals["status"] == "infeasible").sum()
    assert f"0 failed, {infeasible} infeasible;" in run_status(constrained.path)


def test_a_post_training_constraint_ranks_without_rejecting(tmp_path):
    from evonas.analysis import load_run

    run = search(tmp_path, "search.strategy=tournament", "search.population=6",
                 "search.objectives=[{name: val_accuracy, goal: max}]",
                 "search.constraints=[{metric: val_accuracy, max: 0.6}]")  # fmt: skip
    people = run.individuals
    above = people[people["val_accuracy"] > 0.6]
    assert len(above) and set(above["status"]) == {"ok"} and (above["violation"] > 0).all()
    best = load_run(run.run_dir).best("val_accuracy")["val_accuracy"]
    assert best <= 0.6  # the most accurate feasible model, not the most accurate one


def test_resumed_constrained_run_equals_uninterrupted(tmp_path):
    reference = search(tmp_path, *CONSTRAINED, name="reference")
    run_until_stopped(resolve(sets=[*TINY, *CONSTRAINED]), tmp_path / "stopped", after=5)
    resumed = resume_to_end(tmp_path / "stopped")
    pd.testing.assert_frame_equal(resumed.individuals.drop(columns=MEASURED),
                                  reference.individuals.drop(columns=MEASURED))  # fmt: skip


def test_a_run_where_nothing_meets_the_constraints_fails_and_says_so(tmp_path):
    (tmp_path / "tiny.yaml").write_text(tiny_config_yaml(
        search="search:\n  population: 4\n  generations: 1\n"
               "  constraints: [{metric: params, max: 5}]\n"))  # fmt: skip
    done = cli("search", "--config", "tiny.yaml", "--name", "r", "--runs-dir", "runs", cwd=tmp_path)
    assert done.returncode == 1
    assert "no fully trained candidate met search.constraints (params <= 5)" in done.stderr


@pytest.mark.parametrize(("constraints", "message"), [
    ("[{metric: params}]", "search.constraints[0]: params: give max, min or both"),
    ("[{metric: params, max: lots}]", "search.constraints[0].max: expected a finite number"),
    ("[{metric: params, min: 10, max: 5}]", "params: min 10 is above max 5"),
    ("[{metric: parms, max: 5}]", "search.constraints[0].metric: 'parms' is not a metric the "
                                  "built-in trainer produces"),
    ("[{metric: params, maximum: 5}]", "search.constraints[0].maximum: unknown setting"),
])  # fmt: skip
def test_bad_constraints_are_one_line_errors_before_anything_is_written(tmp_path, constraints,
                                                                        message):  # fmt: skip
    (tmp_path / "tiny.yaml").write_text(
        tiny_config_yaml(
            search=f"search:\n  population: 4\n  generations: 1\n  constraints: {constraints}\n"
        )
    )
    done = cli("search", "--config", "tiny.yaml", "--name", "r", "--runs-dir", "runs", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "runs").exists()


def test_an_untrained_reject_never_outranks_a_trained_model_slightly_past_a_limit():
    from evonas.constraints import UNMEASURED

    limits = [Constraint(metric="params", max=50_000), Constraint(metric="val_accuracy", min=0.9)]
    trained = violation({"params": 40_000, "val_accuracy": 0.5}, limits)
    rejected = violation({"params": 55_000}, limits, unmeasured=UNMEASURED)
    assert 0 < trained < rejected


def test_successive_halving_continues_the_feasible_member_at_a_rung():
    from evonas.halving import Halving, Member

    rule = Halving(
        1, 3, [Objective("val_accuracy", "max")], [Constraint(metric="latency_ms", max=2)]
    )
    actions = rule.open([Member(uid, (1,)) for uid in range(3)])
    for uid, (accuracy, latency) in enumerate([(0.9, 5.0), (0.8, 1.0), (0.95, 3.0)]):
        actions += rule.arrived(uid, 1, {"val_accuracy": accuracy, "latency_ms": latency})
    assert {a.uid for a in actions if a.kind == "continue"} == {1}
    assert {a.uid for a in actions if a.kind == "stop"} == {0, 2}
