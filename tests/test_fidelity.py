"""Multi-fidelity: learning curves in the journal, successive halving and the median rule, a
checkpoint that continues exactly, and resumes in the middle of a rung."""

import math
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import evonas
from evonas.config import ConfigError, resolve
from evonas.evaluate import MEASURED_METRICS, run_job
from evonas.fidelity import MedianRule, report_epoch
from evonas.halving import Halving, Member
from evonas.objectives import Objective
from evonas.records import Job
from tests.test_evaluate import TASK, TRAINING
from tests.test_evolve import (
    MEASURED,
    TINY,
    resume_to_end,
    run_until_stopped,
    same_journal,
    search,
)
from tests.test_train import GENOME

FAULTS = Path(__file__).with_name("faults.py")
ACCURACY = "search.objectives=[{name: val_accuracy, goal: max}]"
TOURNAMENT = "search.strategy=tournament"
HALVING = ["training.epochs=9", "search.population=9", "search.generations=2", ACCURACY, TOURNAMENT,
           "search.early_stop={kind: halving, min_epochs: 1, reduction_factor: 3}"]  # fmt: skip


def journal(run_dir: Path, table: str) -> pd.DataFrame:
    with sqlite3.connect(run_dir / "history.sqlite") as db:
        return pd.read_sql_query(f"SELECT * FROM {table} ORDER BY uid, epoch", db)


# --- a checkpoint continues exactly --------------------------------------------------------------


def job(tmp_path, **fields) -> dict:
    training = {**TRAINING, "epochs": 3, "augment": {"crop": 1, "flip": True, "cutout": 0}}
    return Job(5, GENOME.to_dict(), 11, TASK, training, **fields).to_dict()


def test_a_checkpoint_continues_exactly_as_if_never_stopped(tmp_path):
    whole = run_job(job(tmp_path, weights_path=str(tmp_path / "whole.pt")))
    checkpoint = str(tmp_path / "5-e1.pt")
    first = run_job(job(tmp_path, epochs_to=1, checkpoint=checkpoint,
                        weights_path=str(tmp_path / "first.pt")))  # fmt: skip
    assert first["status"] == "ok" and first["partial"] and first["metrics"]["epochs"] == 1
    rest = run_job(job(tmp_path, epochs_from=1, resume_from=checkpoint,
                       weights_path=str(tmp_path / "rest.pt")))  # fmt: skip
    assert not rest["partial"] and rest["metrics"]["epochs"] == 3
    a, b = torch.load(tmp_path / "whole.pt"), torch.load(tmp_path / "rest.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [*first["curve"], *rest["curve"]] == list(whole["curve"])
    assert [p["epoch"] for p in whole["curve"]] == [1, 2, 3]
    for name in set(whole["metrics"]) - set(MEASURED_METRICS) - {"train_seconds"}:
        assert rest["metrics"][name] == whole["metrics"][name], name


def test_every_builtin_evaluation_reports_its_curve():
    result = run_job(job(None))
    curve = result["curve"]
    assert [p["epoch"] for p in curve] == [1, 2, 3]
    assert all(set(p) == {"epoch", "train_loss", "val_accuracy"} for p in curve)
    assert curve[-1]["val_accuracy"] == result["metrics"]["val_accuracy"]
    assert curve[-1]["train_loss"] == result["metrics"]["train_loss"]


def test_a_failed_evaluation_keeps_the_epochs_it_trained():
    training = {**TRAINING, "epochs": 3, "optimizer": "sgd", "momentum": 0.0}
    diverging = Job(5, {**GENOME.to_dict(), "training": {"lr": 1e30}}, 11, TASK, training)
    result = run_job(diverging.to_dict())
    assert result["status"] == "failed" and "loss became" in result["error"]
    assert len(result["curve"]) < 3


# --- halving ----------------------------------------------------------------------------------


def objectives(*goals):
    return [Objective(f"m{i}", goal) for i, goal in enumerate(goals)]


def test_halving_keeps_the_best_third_at_each_rung():
    halving = Halving(1, 3, objectives("max"))
    assert halving.rungs(9) == (1, 3) and halving.rungs(10) == (1, 3, 9) and halving.rungs(1) == ()
    members = [Member(uid, halving.rungs(9)) for uid in range(9)]
    assert halving.open(members) == []
    actions = []
    for uid in range(9):
        actions += halving.arrived(uid, 1, {"m0": uid % 5})
    continued = sorted(a.uid for a in actions if a.kind == "continue")
    assert continued == [3, 4, 8]  # the values 3, 4, 4 (ties: the earlier child)
    assert all(a.until == 3 for a in actions if a.kind == "continue")
    assert sorted(a.uid for a in actions if a.kind == "stop") == [0, 1, 2, 5, 6, 7]
    assert halving.arrived(4, 3, {"m0": 9}) == []  # the rung waits for all three
    assert halving.finished(3) == []  # failed on its way to the rung: no longer waited for
    last = halving.arrived(8, 3, {"m0": 1})
    assert [(a.uid, a.kind, a.until) for a in last] == [(4, "continue", None), (8, "stop", None)]


def test_multi_objective_halving_never_stops_a_member_nobody_dominates():
    halving = Halving(1, 3, objectives("max", "min"))
    halving.open([Member(uid, (1,)) for uid in range(6)])
    points = [(0.9, 50), (0.8, 10), (0.7, 5), (0.6, 60), (0.5, 70), (0.4, 80)]  # 3 on the front
    actions = []
    for uid, (accuracy, params) in enumerate(points):
        actions += halving.arrived(uid, 1, {"m0": accuracy, "m1": params})
    assert sorted(a.uid for a in actions if a.kind == "continue") == [0, 1, 2]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=12), st.randoms())
def test_halving_decisions_do_not_depend_on_arrival_order(values, rng):
    def decide(order):
        halving = Halving(1, 2, objectives("max"))
        halving.open([Member(uid, (1, 2)) for uid in range(len(values))])
        actions = []
        for uid in order:
            actions += halving.arrived(uid, 1, {"m0": values[uid]})
        for uid in sorted(a.uid for a in actions if a.kind == "continue"):
            actions += halving.arrived(uid, 2, {"m0": values[uid] * 2 + uid % 2})
        return sorted((a.uid, a.kind, a.epoch) for a in actions)

    order = list(range(len(values)))
    shuffled = order[:]
    rng.shuffle(shuffled)
    assert decide(order) == decide(shuffled)
    stops = [a for a in decide(order) if a[1] == "stop" and a[2] == 1]
    assert len(values) - len(stops) == math.ceil(len(values) / 2)


def test_a_halving_search_stops_the_weak_and_journals_their_curves(tmp_path):
    result = search(tmp_path, *HALVING)
    people = result.individuals.set_index("uid")
    assert set(people["status"]) == {"ok", "stopped"}
    stopped = people[people["status"] == "stopped"]
    assert (
        set(stopped["epochs"]) <= {1, 3}
        and (people.loc[people["status"] == "ok", "epochs"] == 9).all()
    )
    rungs = journal(result.run_dir, "rungs")
    own = people[people["cached_from"].isna()]
    for _, group in own.groupby("generation"):
        at_one = rungs[rungs["uid"].isin(group.index) & (rungs["epoch"] == 1)]
        assert len(at_one) == len(group)  # every member reached the first rung
        went_on = rungs[rungs["uid"].isin(group.index) & (rungs["epoch"] == 3)]
        assert len(went_on) == math.ceil(len(group) / 3)
    curves = evonas.load_run(result.run_dir).curves
    assert set(curves.columns) >= {"uid", "epoch", "train_loss", "val_accuracy", "status"}
    for uid, row in own.iterrows():
        assert curves[curves["uid"] == uid]["epoch"].tolist() == list(
            range(1, int(row["epochs"]) + 1)
        )
    spent = people["epochs"].sum()
    assert spent < 9 * len(people) / 2  # what the same search trains without stopping


def test_resuming_in_the_middle_of_a_rung_equals_an_uninterrupted_run(tmp_path):
    reference = search(tmp_path, *HALVING, name="reference")
    for after in (2, 9, 13):
        run_dir = tmp_path / f"stopped-{after}"
        run_until_stopped(resolve(sets=[*TINY, *HALVING]), run_dir, after=after)
        result = resume_to_end(run_dir, **{"parallel.n_jobs": 2})
        assert result.state == "finished"
        pd.testing.assert_frame_equal(result.individuals.drop(columns=MEASURED),
                                      reference.individuals.drop(columns=MEASURED))  # fmt: skip
        for table in ("rungs", "curves"):
            got, want = journal(run_dir, table), journal(tmp_path / "reference", table)
            if table == "rungs":  # measured metrics differ from run to run
                got, want = got.drop(columns="metrics"), want.drop(columns="metrics")
            pd.testing.assert_frame_equal(got, want)


# --- the median rule ------------------------------------------------------------------------------


def test_the_median_rule_compares_with_completed_candidates_at_the_same_epoch():
    rule = MedianRule(objectives("max"), min_epochs=2, min_curves=3,
                      reference={2: [{"m0": 0.5}, {"m0": 0.6}, {"m0": 0.7}]})  # fmt: skip
    assert rule.stops(2, {"m0": 0.55})  # two of three were better
    assert not rule.stops(2, {"m0": 0.65})
    assert not rule.stops(1, {"m0": 0.0})  # before min_epochs
    assert not rule.stops(3, {"m0": 0.0})  # nobody to compare with
    two = MedianRule(objectives("max", "min"), 1, 1, {1: [{"m0": 0.9, "m1": 10}]})
    assert two.stops(1, {"m0": 0.5, "m1": 20}) and not two.stops(1, {"m0": 0.5, "m1": 5})
    assert MedianRule.of(rule.to_dict()) == rule


MEDIAN = [f"training.evaluator={FAULTS}:curve", "training.epochs=6", ACCURACY, TOURNAMENT,
          "search.population=6", "search.generations=3",
          "search.early_stop={kind: median, min_epochs: 1, min_curves: 3}"]  # fmt: skip


def test_a_user_evaluator_reports_its_curve_and_the_median_rule_stops_it(tmp_path):
    result = search(tmp_path, *MEDIAN)
    people = result.individuals.set_index("uid")
    curves = evonas.load_run(result.run_dir).curves
    assert set(curves["uid"]) == set(people[people["cached_from"].isna()].index)
    stopped = people[people["status"] == "stopped"]
    assert len(stopped) > 0 and (people.loc[people["generation"] == 0, "status"] == "ok").all()
    for _, row in stopped.iterrows():
        epoch = int(row["epochs"])
        assert epoch < 6
        earlier = people[(people["generation"] < row["generation"]) & (people["status"] == "ok")]
        earlier = earlier[earlier["cached_from"].isna()]
        at = curves[curves["uid"].isin(earlier.index) & (curves["epoch"] == epoch)]
        assert (at["val_accuracy"] > row["val_accuracy"]).sum() * 2 > len(at)
    again = search(tmp_path, *MEDIAN, "parallel.n_jobs=2", name="again")
    same_journal(again.individuals, result.individuals)


def test_report_epoch_outside_an_evaluation_does_nothing_and_checks_its_epoch():
    report_epoch(1, val_accuracy=0.5)  # a user's function run on its own
    from evonas.fidelity import CurveRecorder, recording

    with recording(CurveRecorder()) as recorder:
        report_epoch(1, val_accuracy=0.5)
        with pytest.raises(ValueError, match="epochs must increase"):
            report_epoch(1, val_accuracy=0.6)
        with pytest.raises(ValueError, match="integer >= 1"):
            report_epoch(0)
    assert recorder.points == [{"epoch": 1.0, "val_accuracy": 0.5}]


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["search.early_stop={kind: halving}", "search.strategy=regularized", ACCURACY,
          "search.async_window=2"], "the steady state"),
        ([f"training.evaluator={FAULTS}:curve", "search.early_stop={kind: halving}"],
         "can use median"),
        (["search.early_stop={kind: median, min_epochs: 2}", "training.epochs=2"],
         "must be below training.epochs"),
        (["search.early_stop={kind: asha}"], "search.early_stop.kind"),
        (["search.early_stop={kind: halving, reduction_factor: 1}"], "reduction_factor"),
    ],
)  # fmt: skip
def test_early_stop_settings_that_cannot_work_are_refused(sets, message):
    with pytest.raises(ConfigError, match=message):
        resolve(sets=[*TINY, *sets])


def test_the_curves_figure_colours_by_outcome(tmp_path):
    result = search(tmp_path, *HALVING[:2], "search.population=4", "search.generations=1",
                    ACCURACY, "search.early_stop={kind: halving, min_epochs: 1}")  # fmt: skip
    run = evonas.load_run(result.run_dir)
    from evonas.plots import curves_data

    data = curves_data(run.curves)
    assert set(data["outcome"]) == {"ok", "stopped"}
    figure = run.figure("curves")
    assert figure.axes[0].get_xlabel() == "epoch"


@pytest.mark.slow
def test_halving_with_worker_processes_equals_the_inline_run(tmp_path):
    inline = search(tmp_path, *HALVING, name="inline")
    workers = search(tmp_path, *HALVING, "parallel.backend=loky", "parallel.n_jobs=2",
                     name="workers")  # fmt: skip
    pd.testing.assert_frame_equal(workers.individuals.drop(columns=MEASURED),
                                  inline.individuals.drop(columns=MEASURED))  # fmt: skip
    got, want = journal(workers.run_dir, "curves"), journal(inline.run_dir, "curves")
    pd.testing.assert_frame_equal(got, want)


def test_fine_tuned_children_join_the_rungs_below_their_fine_tune_budget(tmp_path):
    sets = [*HALVING, "training.inherit_weights=true", "training.finetune_epochs=3"]
    people = search(tmp_path, *sets).individuals
    own = people[people["cached_from"].isna()]
    tuned = own[own["inherited_from"].notna()]
    scratch = own[own["inherited_from"].isna()]
    assert len(tuned) > 0
    assert set(tuned["epochs"]) <= {1, 3} and set(scratch["epochs"]) <= {1, 3, 9}
    assert set(tuned.loc[tuned["status"] == "ok", "epochs"]) == {3}
    assert set(tuned.loc[tuned["status"] == "stopped", "epochs"]) <= {1}
