import random

from evonas.config import Search
from evonas.genome import Genome
from evonas.objectives import WORST, Objective, fitness_class, fitness_values
from evonas.operators import Variation
from evonas.records import Individual
from evonas.spaces import Nb201Space
from evonas.strategies import (
    PARENT_SELECTIONS,
    STRATEGIES,
    SURVIVOR_SELECTIONS,
    LocalSearch,
    RandomSearch,
    RegularizedEvolution,
    deap_random,
    make_strategy,
)

OBJECTIVES = [Objective("val_accuracy", "max"), Objective("params", "min")]


def select_survivors(name, people, k):
    return SURVIVOR_SELECTIONS[{"nsga2": "nsga2", "tournament": "best"}[name]](people, k)


def select_parents(name, people, k, rng, size):
    kind = {"nsga2": "crowded_tournament", "tournament": "tournament"}[name]
    return PARENT_SELECTIONS[kind](people, k, rng, size)


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


# --- strategies on a stub fitness: the ask/tell protocol --------------------------------------


def stub(uid, value, genome=None, operator="sample"):
    ind = Individual(uid, genome or Genome(genes=()), 0, operator=operator)
    ind.fitness = fitness_class(OBJECTIVES[:1])((value,))
    return ind


def settings(population, offspring=0, tournament_size=3, objectives=OBJECTIVES[:1]):
    return Search(population=population, offspring=offspring, tournament_size=tournament_size,
                  objectives=objectives)  # fmt: skip


def strategy(cls, search, space=None, seed=0, seen=lambda genome: False):
    return cls(search, Variation(space or Nb201Space(), {"mutate_edge": 1.0}, random.Random(seed)),
               seen)  # fmt: skip


def test_every_configured_strategy_is_registered():
    from evonas.config import STRATEGIES as NAMES

    assert set(STRATEGIES) == set(NAMES) - {"auto"}
    for name in STRATEGIES:
        made = make_strategy(
            name,
            settings(4, objectives=OBJECTIVES),
            Variation(Nb201Space(), {"mutate_edge": 1.0}, random.Random(0)),
            lambda genome: False,
        )
        assert made.offspring >= 1 and made.initial_size == 4


def test_aging_removes_the_oldest_even_if_it_is_the_best():
    aging = strategy(RegularizedEvolution, settings(3, tournament_size=2))
    aging.start([stub(0, 0.99), stub(1, 0.1), stub(2, 0.2)])
    survivors = aging.tell([stub(3, 0.05)])
    assert [ind.uid for ind in survivors] == [1, 2, 3] and aging.population == survivors


def test_aging_parent_is_the_best_of_its_sample():
    space = Nb201Space()
    aging = strategy(RegularizedEvolution, settings(4, tournament_size=4), space)  # all sampled
    population = [stub(i, v, space.sample(random.Random(i))) for i, v in
                  enumerate([0.3, 0.9, 0.5, 0.1])]  # fmt: skip
    aging.start(population)
    children = aging.ask(1)  # one child per step by default
    assert aging.offspring == 1 and len(children) == 1
    assert [p.uid for p in children[0].parents] == [1]
    assert children[0].operator == "mutate_edge"


def test_local_search_keeps_the_incumbent_unless_beaten():
    local = strategy(LocalSearch, settings(2))
    incumbent = stub(0, 0.5)
    local.start([incumbent])
    assert local.tell([stub(1, 0.4)]) == [incumbent]
    assert local.tell([stub(2, 0.5)]) == [incumbent]
    better = stub(3, 0.6)
    assert local.tell([stub(4, 0.1), better]) == [better]
    restart = stub(5, 0.01, operator="restart")
    assert local.tell([restart]) == [restart]


def test_local_search_walks_unseen_neighbours_then_restarts():
    space = Nb201Space()
    seen = set()
    local = strategy(LocalSearch, settings(2, offspring=5), space,
                     seen=lambda g: g.arch_key() in seen)  # fmt: skip
    incumbent = stub(0, 0.5, space.sample(random.Random(1)))
    local.start([incumbent])
    children = local.ask(5)
    assert len(children) == 5 and all(c.operator == "mutate_edge" for c in children)
    assert {c.genome.arch_key() for c in children} <= {
        g.arch_key() for g in space.neighbors(incumbent.genome)
    }
    seen |= {g.arch_key() for g in space.neighbors(incumbent.genome)}
    restart = local.ask(5)
    assert [c.operator for c in restart] == ["restart"] and restart[0].parents == ()


def test_random_search_only_samples():
    search = settings(4)
    random_search = strategy(lambda *args: RandomSearch(False, *args), search)
    children = random_search.ask(4)
    assert len(children) == 4
    assert all(c.operator == "sample" and c.parents == () for c in children)
    random_search.start([stub(i, v) for i, v in enumerate([0.1, 0.5, 0.3, 0.2])])
    survivors = random_search.tell([stub(9, 0.9)])
    assert [ind.uid for ind in survivors] == [9, 1, 2, 3]
