import random

from evonas.genome import Genome
from evonas.spaces import Nb201Space
from evonas.strategies import (
    WORST,
    Child,
    Individual,
    LocalSearch,
    RandomSearch,
    RegularizedEvolution,
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


# --- strategies on a stub fitness ------------------------------------------------------------


def stub(uid, value, genome=None):
    ind = Individual(uid, genome or Genome(genes=()), 0)
    ind.fitness = fitness_class(OBJECTIVES[:1])((value,))
    return ind


def keep_all(individuals):
    return individuals


def test_aging_removes_the_oldest_even_if_it_is_the_best():
    strategy = RegularizedEvolution(3, 0, 2, random.Random(0))
    population = [stub(0, 0.99), stub(1, 0.1), stub(2, 0.2)]
    survivors = strategy.survivors(population, [stub(3, 0.05)], keep_all)
    assert [ind.uid for ind in survivors] == [1, 2, 3]


def test_aging_parent_is_the_best_of_its_sample():
    strategy = RegularizedEvolution(4, 0, 4, random.Random(0))  # sample = whole population
    population = [stub(0, 0.3), stub(1, 0.9), stub(2, 0.5), stub(3, 0.1)]
    chosen = []

    def vary(select, mutation_only=False):
        parents = select(1)
        chosen.append(parents[0].uid)
        assert mutation_only
        return Child(Genome(genes=()), tuple(parents), "stub")

    assert len(strategy.breed(population, vary, None, None)) == 1  # one child per step
    assert chosen == [1]


def test_local_search_keeps_the_incumbent_unless_beaten():
    strategy = LocalSearch(Nb201Space(), 1, 0, 3, random.Random(0))
    incumbent = stub(0, 0.5)
    assert strategy.survivors([incumbent], [stub(1, 0.4)], keep_all) == [incumbent]
    assert strategy.survivors([incumbent], [stub(2, 0.5)], keep_all) == [incumbent]
    better = stub(3, 0.6)
    assert strategy.survivors([incumbent], [stub(4, 0.1), better], keep_all) == [better]
    restart = stub(5, 0.01)
    restart.operator = "restart"
    assert strategy.survivors([incumbent], [restart], keep_all) == [restart]


def test_local_search_walks_unseen_neighbours_then_restarts():
    space = Nb201Space()
    strategy = LocalSearch(space, 1, 5, 3, random.Random(0))
    incumbent = stub(0, 0.5, space.sample(random.Random(1)))
    seen = set()
    children = strategy.breed([incumbent], None, lambda: space.sample(random.Random(2)),
                              lambda g: g.arch_key() in seen)  # fmt: skip
    assert len(children) == 5 and all(c.operator == "mutate_edge" for c in children)
    assert {c.genome.arch_key() for c in children} <= {
        g.arch_key() for g in space.neighbors(incumbent.genome)
    }
    seen |= {g.arch_key() for g in space.neighbors(incumbent.genome)}
    restart = strategy.breed([incumbent], None, lambda: space.sample(random.Random(2)),
                             lambda g: g.arch_key() in seen)  # fmt: skip
    assert [c.operator for c in restart] == ["restart"] and restart[0].parents == ()


def test_random_search_only_samples():
    space = Nb201Space()
    strategy = RandomSearch(False, 4, 0, 3, random.Random(0))
    rng = random.Random(5)
    children = strategy.breed([], None, lambda: space.sample(rng), lambda g: False)
    assert len(children) == 4
    assert all(c.operator == "sample" and c.parents == () for c in children)
    population = [stub(i, v) for i, v in enumerate([0.1, 0.5, 0.3, 0.2])]
    survivors = strategy.survivors(population, [stub(9, 0.9)], keep_all)
    assert [ind.uid for ind in survivors] == [9, 1, 2, 3]
