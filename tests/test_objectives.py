import numpy as np
import pandas as pd
import pytest

from evonas.objectives import (
    WORST,
    Objective,
    best_row,
    fitness_class,
    fitness_values,
    pareto_front,
    pareto_mask,
    population_stats,
    quality_floor,
)

ACCURACY, PARAMS = Objective("val_accuracy", "max"), Objective("params", "min")
OBJECTIVES = [ACCURACY, PARAMS]


def people(rows):
    frame = pd.DataFrame(rows, columns=["uid", "status", "val_accuracy", "params"])
    return frame.assign(generation=0)


def test_pareto_mask_respects_goals():
    values = np.array([[0.5, 100], [0.9, 1000], [0.7, 50], [0.4, 500]])
    assert pareto_mask(values, OBJECTIVES).tolist() == [False, True, True, False]
    both_max = [ACCURACY, Objective("params", "max")]
    assert pareto_mask(values, both_max).tolist() == [False, True, False, False]


def test_fitness_weights_and_finite_worst_values():
    assert fitness_class(OBJECTIVES).weights == (1.0, -1.0)
    assert fitness_values({}, False, OBJECTIVES) == (-WORST, WORST)
    assert fitness_values({"val_accuracy": 0.5}, True, OBJECTIVES) == (0.5, WORST)


def test_pareto_front_ignores_failures_and_is_ordered_by_the_last_objective():
    frame = people([(0, "ok", 0.5, 100), (1, "ok", 0.9, 1000), (2, "ok", 0.7, 50),
                    (3, "failed", None, None), (4, "ok", 0.4, 500)])  # fmt: skip
    assert pareto_front(frame, OBJECTIVES)["uid"].tolist() == [2, 1]
    assert pareto_front(frame.assign(status="failed"), OBJECTIVES).empty


def test_best_on_a_further_objective_is_a_useful_model_not_one_at_chance():
    # 10 classes: chance 0.1. A 214-parameter model at 26 % is on the front, but not useful.
    frame = people(
        [
            (0, "ok", 0.26, 214),
            (1, "ok", 0.95, 9000),
            (2, "ok", 0.90, 2000),
            (3, "ok", 0.90, 2000),
            (4, "ok", 0.50, 1500),
            (5, "failed", None, None),
        ]
    )
    accuracy = frame["val_accuracy"].dropna().to_numpy()
    assert quality_floor(accuracy, ACCURACY, chance=0.1) == pytest.approx(0.525)
    assert best_row(frame, "val_accuracy", OBJECTIVES, chance=0.1)["uid"] == 1
    smallest = best_row(frame, "params", OBJECTIVES, chance=0.1)
    assert smallest["uid"] == 2  # ties (uid 3) broken by the other objectives, then uid
    # unknown chance: halfway from the worst successful value
    assert quality_floor(accuracy, ACCURACY, chance=None) == pytest.approx(0.605)
    # a metric that is no objective is simply the best (goal from its name)
    assert best_row(frame, "params", [ACCURACY], chance=0.1)["uid"] == 0
    with pytest.raises(KeyError, match="latency_ms"):
        best_row(frame, "latency_ms", OBJECTIVES)


def test_population_stats():
    stats = population_stats([{"val_accuracy": 0.5, "params": 10}, {"val_accuracy": 0.7}],
                             OBJECTIVES)  # fmt: skip
    assert stats == {"best_val_accuracy": 0.7, "median_val_accuracy": 0.6,
                     "best_params": 10, "median_params": 10}  # fmt: skip


@pytest.mark.parametrize("name", ["", 'a"b', " padded"])
def test_objective_names_are_metric_names(name):
    with pytest.raises(ValueError):
        Objective(name, "max")


def test_the_best_params_of_a_population_is_its_smallest_useful_member():
    rows = [{"val_accuracy": 0.26, "params": 214}, {"val_accuracy": 0.95, "params": 9000},
            {"val_accuracy": 0.90, "params": 2000}]  # fmt: skip
    stats = population_stats(rows, OBJECTIVES, chance=0.1)
    assert stats["best_params"] == 2000 and stats["median_params"] == 2000


def test_the_floor_of_a_minimised_quality_starts_from_the_largest_value():
    loss = [Objective("val_loss", "min"), Objective("params", "min")]
    frame = pd.DataFrame({"uid": [0, 1, 2], "status": "ok", "generation": 0,
                          "val_loss": [2.0, 0.2, 1.0], "params": [10, 900, 50]})  # fmt: skip
    assert quality_floor(frame["val_loss"].to_numpy(), loss[0], chance=None) == pytest.approx(1.1)
    assert best_row(frame, "params", loss)["uid"] == 2  # loss 1.0 <= 1.1; 2.0 is not useful
