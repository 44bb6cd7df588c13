import random

import pytest

from evonas.genome import Gene, Genome
from evonas.spaces import NB201_OPS, Nb201Space, SequentialSpace
from tests.conftest import NB201_TABLE

SPACES = {
    "1d": SequentialSpace(input_shape=(1, 40), num_classes=10),
    "2d": SequentialSpace(input_shape=(1, 8, 8), num_classes=10),
    "flat": SequentialSpace(input_shape=(20,), num_classes=3),
}


@pytest.mark.parametrize("kind", SPACES)
def test_samples_are_valid_and_seeded(kind):
    space = SPACES[kind]
    genomes = [space.sample(random.Random(seed)) for seed in range(50)]
    for genome in genomes:
        assert space.problems(genome) == []
    again = [space.sample(random.Random(seed)) for seed in range(50)]
    assert genomes == again
    assert len({g.arch_key() for g in genomes}) > 40


def test_flat_inputs_get_no_spatial_layers():
    space = SPACES["flat"]
    for seed in range(30):
        assert all(g.op in ("dense", "dropout") for g in space.sample(random.Random(seed)).genes)


def pool(gene_id):
    return Gene(gene_id, "pool", {"kind": "max", "size": 2})


def test_repair_drops_pooling_a_length_one_signal():
    space = SequentialSpace(input_shape=(1, 4), num_classes=2)
    genome = Genome(genes=tuple(pool(i) for i in range(1, 5)))
    with pytest.raises(ValueError, match="pooling size 2 on a length-1 signal"):
        space.shapes(genome)
    repaired = space.repair(genome)
    assert repaired.gene_ids() == [1, 2]
    assert space.shapes(repaired) == [(1, 2), (1, 1)]
    assert space.repair(repaired) == repaired


def test_repair_drops_spatial_layers_after_flattening_and_duplicate_ids():
    space = SPACES["1d"]
    dense = Gene(7, "dense", {"units": 32, "activation": "relu"})
    genome = Genome(genes=(dense, pool(2), dense))
    assert space.repair(genome).genes == (dense,)


def test_repair_clips_lr_and_truncates():
    space = SequentialSpace(input_shape=(1, 64), num_classes=2, max_layers=2)
    genome = Genome(genes=tuple(pool(i) for i in range(1, 6)), training={"lr": 5.0})
    repaired = space.repair(genome)
    assert len(repaired.genes) == 2
    assert repaired.training["lr"] == space.lr_max


def test_problems_report_values_outside_the_space():
    space = SPACES["1d"]
    gene = Gene(
        1,
        "conv",
        {"width": 999, "kernel": 3, "stride": 1, "activation": "relu", "batch_norm": False},
    )
    problems = space.problems(Genome(genes=(gene,)))
    assert problems == ["layer 0: width=999 not in 1..64"]


def test_shapes_follow_conv_stride_and_dense():
    space = SPACES["2d"]
    conv = Gene(
        1, "conv", {"width": 8, "kernel": 3, "stride": 2, "activation": "relu", "batch_norm": True}
    )
    dense = Gene(2, "dense", {"units": 32, "activation": "relu"})
    assert space.shapes(Genome(genes=(conv, dense))) == [(8, 4, 4), (32,)]


# --- NAS-Bench-201 cell space ------------------------------------------------------------------


def test_nb201_string_round_trip_for_all_cells():
    import pandas as pd

    space = Nb201Space()
    cells = pd.read_csv(NB201_TABLE)["arch_str"]
    assert len(cells) == 15625 == len(NB201_OPS) ** 6
    genomes = [space.from_string(text) for text in cells]
    assert [space.to_string(g) for g in genomes] == list(cells)
    assert len({g.arch_key() for g in genomes}) == 15625
    assert all(space.problems(g) == [] for g in genomes[:500])
    assert all(g.gene_ids() == [1, 2, 3, 4, 5, 6] for g in genomes[:500])


def test_nb201_bad_strings_and_problems():
    space = Nb201Space()
    for text in ("|nor_conv_3x3~0|", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                 "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"):  # fmt: skip
        with pytest.raises(ValueError):
            space.from_string(text)
    wrong = Genome(genes=space.sample(random.Random(0)).genes[:5])
    assert space.problems(wrong) == ["5 genes; a NAS-Bench-201 cell has 6 edges"]


def test_nb201_neighbors_differ_in_one_edge():
    space = Nb201Space()
    cell = space.sample(random.Random(3))
    neighbours = space.neighbors(cell)
    assert len(neighbours) == 6 * 4
    for other in neighbours:
        changed = [a != b for a, b in zip(space.operations(cell), space.operations(other))]
        assert sum(changed) == 1


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_param_count_without_torch_equals_the_built_model(kind):
    from evonas.builder import build, count_params
    from evonas.spaces import param_count

    space = SPACES[kind]
    rng = random.Random(11)
    for _ in range(25):
        genome = space.sample(rng)
        built = build(genome, space.input_shape, space.num_classes)
        assert param_count(genome, space.input_shape, space.num_classes) == count_params(built)
