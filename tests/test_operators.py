import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evonas.builder import build
from evonas.genome import parse_genome
from evonas.operators import OPERATORS, crossover, mutation_names
from evonas.spaces import SequentialSpace

SPACES = {
    "1d": SequentialSpace(
        input_shape=(2, 24), num_classes=4, widths=(4, 8), units=(8, 16), dilations=(1, 2)
    ),
    "2d": SequentialSpace(input_shape=(1, 8, 8), num_classes=3, widths=(4, 8), units=(8, 16)),
    "flat": SequentialSpace(input_shape=(10,), num_classes=2, units=(8, 16)),
}


def forward_ok(genome, space):
    model = build(genome, space.input_shape, space.num_classes)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, *space.input_shape))
    return tuple(out.shape) == (3, space.num_classes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(SPACES)),
    seed=st.integers(0, 2**32 - 1),
    chain=st.lists(st.sampled_from(mutation_names() + ["crossover"]), min_size=1, max_size=8),
)
def test_any_operator_chain_gives_valid_buildable_genomes(kind, seed, chain):
    space = SPACES[kind]
    rng = random.Random(seed)
    genome = space.sample(rng)
    other = space.sample(rng)
    for name in chain:
        op = OPERATORS["sequential", name]
        genome = op.fn(genome, other, space, rng) if op.arity == 2 else op.fn(genome, space, rng)
        assert space.problems(genome) == [], (name, genome)
        # round trip through plain data, as across a process boundary
        assert parse_genome(genome.to_dict()) == genome
    assert forward_ok(genome, space)


@pytest.mark.parametrize("name", mutation_names())
def test_each_mutation_changes_something_usually_and_is_seeded(name):
    space = SPACES["1d"]
    changed = 0
    for seed in range(30):
        parent = space.sample(random.Random(seed))
        child = OPERATORS["sequential", name].fn(parent, space, random.Random(seed + 1000))
        again = OPERATORS["sequential", name].fn(parent, space, random.Random(seed + 1000))
        assert child == again
        changed += child != parent
    assert changed >= 10  # a genome without the parameter is returned unchanged


@pytest.mark.parametrize(
    "name", ["change_width", "change_kernel", "change_activation", "change_lr"]
)
def test_parameter_mutations_keep_gene_ids(name):
    space = SPACES["2d"]
    for seed in range(20):
        parent = space.sample(random.Random(seed))
        child = OPERATORS["sequential", name].fn(parent, space, random.Random(seed))
        assert child.gene_ids() == parent.gene_ids()


def test_add_layer_keeps_existing_ids_and_adds_one():
    space = SPACES["1d"]
    for seed in range(20):
        parent = space.sample(random.Random(seed))
        child = OPERATORS["sequential", "add_layer"].fn(parent, space, random.Random(seed))
        if child != parent:
            assert set(parent.gene_ids()) <= set(child.gene_ids())


def test_crossover_takes_head_from_one_parent_and_tail_from_the_other():
    space = SPACES["1d"]
    for seed in range(30):
        rng = random.Random(seed)
        a, b = space.sample(rng), space.sample(rng)
        child = crossover(a, b, space, rng)
        ids = child.gene_ids()
        from_a = [i for i in ids if i in a.gene_ids()]
        from_b = [i for i in ids if i in b.gene_ids()]
        assert from_a + from_b == ids
        assert from_a == a.gene_ids()[: len(from_a)]
        assert from_b == b.gene_ids()[len(b.gene_ids()) - len(from_b) :]
        assert child.training["lr"] in (a.training["lr"], b.training["lr"])


def test_crossover_never_puts_a_conv_after_a_dense():
    space = SPACES["1d"]
    dense_first = parse_genome(
        {"layers": [{"id": 1, "op": "dense", "units": 8, "activation": "relu"}]}
    )
    conv_only = parse_genome(
        {
            "layers": [
                {
                    "id": 2,
                    "op": "conv",
                    "width": 4,
                    "kernel": 3,
                    "stride": 1,
                    "activation": "relu",
                    "batch_norm": False,
                }
            ]
        }
    )
    for seed in range(20):
        child = crossover(dense_first, conv_only, space, random.Random(seed))
        assert space.problems(child) == []
