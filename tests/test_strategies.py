import random

from evonas.genome import Genome
from evonas.strategies import (
    WORST,
    Individual,
    deap_random,
    fitness_class,
    fitness_values,
    select_parents,
    select_survivors,
)

OBJECTIVES = [{"name": "val_accuracy", "goal": "max"}, {"name": "params", "goal": "min"}]


def population(points, objectives=OBJECTIVES):
    cls = fitness_class(objectives)
    people = []
    for uid, values in enumerate(points):
        ind = Individual(uid, Genome(genes=()), 0)
        ind.fitness = cls(values)
        people.append(ind)
    return people


def test_fitness_weights_follow_goals():
    assert fitness_class(OBJECTIVES).weights == (1.0, -1.0)


def test_failures_get_finite_worst_values():
    assert fitness_values({}, False, OBJECTIVES) == (-WORST, WORST)
    assert fitness_values({"val_accuracy": 0.5}, True, OBJECTIVES) == (0.5, WORST)
    assert fitness_values({"val_accuracy": 0.5, "params": 9}, True, OBJECTIVES) == (0.5, 9.0)


def test_nsga2_keeps_the_front():
    people = population([(0.9, 100), (0.8, 10), (0.5, 50), (-WORST, WORST), (0.95, 1000)])
    survivors = select_survivors("nsga2", people, 3)
    assert sorted(ind.uid for ind in survivors) == [0, 1, 4]


def test_single_objective_keeps_the_best():
    objectives = OBJECTIVES[:1]
    people = population([(0.1,), (0.9,), (0.5,), (-WORST,)], objectives)
    assert [ind.uid for ind in select_survivors("tournament", people, 2)] == [1, 2]


def test_parent_selection_is_seeded_and_prefers_the_front():
    people = population([(0.9, 100), (0.8, 10), (0.1, 5000), (0.2, 4000)])
    picks = [ind.uid for ind in select_parents("nsga2", people, 200, random.Random(1), 2)]
    again = [ind.uid for ind in select_parents("nsga2", people, 200, random.Random(1), 2)]
    assert picks == again
    assert picks.count(0) + picks.count(1) > picks.count(2) + picks.count(3)
    single = population([(0.1,), (0.9,), (0.5,)], OBJECTIVES[:1])
    chosen = select_parents("tournament", single, 50, random.Random(2), 3)
    assert sum(ind.uid == 1 for ind in chosen) > 25


def test_deap_random_leaves_global_random_alone_and_advances_rng():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    rng = random.Random(5)
    with deap_random(rng):
        drawn = random.random()
    assert random.random() == expected
    reference = random.Random(5)
    assert drawn == reference.random()
    assert rng.random() == reference.random()
