import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evonas.builder import build, count_params
from evonas.genome import Gene, Genome
from evonas.operators import OPERATORS, cut, narrower, prune
from evonas.spaces import SequentialSpace

SPACE = SequentialSpace(input_shape=(1, 32), num_classes=4, widths=(8, 16, 32), units=(16, 32))


def params(genome):
    return count_params(build(genome, SPACE.input_shape, SPACE.num_classes))


def test_narrower_removes_the_fraction_and_at_least_one_channel():
    assert narrower(32, 0.25) == 24
    assert narrower(8, 0.5) == 4
    assert narrower(2, 0.1) == 1
    assert narrower(4, 0.01) == 3


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(["prune", "cut"]))
def test_pruning_operators_give_smaller_valid_children_with_the_parents_ids(seed, name):
    rng = random.Random(seed)
    parent = SPACE.sample(rng)
    child = OPERATORS["sequential", name].fn(parent, SPACE, rng)
    assert SPACE.problems(child) == []
    assert {g.id for g in child.genes} <= {g.id for g in parent.genes}
    if child.arch_key() != parent.arch_key():
        assert params(child) < params(parent)


def test_prune_narrows_one_conv_or_dense_layer_by_the_fraction():
    conv = {"width": 32, "kernel": 3, "stride": 1, "activation": "relu", "batch_norm": True}
    parent = Genome(
        genes=(Gene(1, "conv", conv), Gene(2, "dense", {"units": 16, "activation": "relu"}))
    )
    seen = set()
    for seed in range(20):
        child = prune(parent, SPACE, random.Random(seed))
        changed = [(g.op, g.params.get("width", g.params.get("units"))) for g, p in
                   zip(child.genes, parent.genes) if g != p]  # fmt: skip
        assert len(changed) == 1
        seen.add(changed[0])
    assert seen == {("conv", 24), ("dense", 12)}


def test_cut_removes_a_layer_or_random_channels():
    parent = SPACE.sample(random.Random(5))
    outcomes = set()
    for seed in range(30):
        child = cut(parent, SPACE, random.Random(seed))
        outcomes.add("layer" if len(child.genes) < len(parent.genes) else "channels")
    assert outcomes == {"layer", "channels"}


def test_nothing_to_prune_returns_the_parent():
    lonely = Genome(genes=(Gene(1, "pool", {"kind": "max", "size": 2}),))
    assert prune(lonely, SPACE, random.Random(0)) is lonely


@pytest.mark.parametrize("name", ["prune", "cut"])
def test_pruning_operators_are_ordinary_registry_operators(name):
    assert (
        OPERATORS["sequential", name].arity == 1
        and OPERATORS["sequential", name].space == "sequential"
    )
