"""Channel groups, graph operators and inheritance across graph changes, on the coverage set."""

import random
from functools import cache

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evonas
from evonas.builder import build
from evonas.channels import channel_groups, with_width
from evonas.config import ConfigError, resolve
from evonas.genome import Genome, parse_genome
from evonas.graph_inherit import inherit_graph
from evonas.importer import import_model, write_import
from evonas.operators import OPERATORS, mutation_names
from evonas.optimize import optimize
from evonas.spaces import GraphSpace
from evonas.tasks import TaskData
from evonas.weights import plan, save_state_dict
from tests import model_zoo
from tests.conftest import ROOT, cli
from tests.test_model_zoo import with_statistics

GRAPH_MODELS = [name for name in model_zoo.ZOO if name != "vgg11_bn"]  # vgg imports as a chain


@cache
def imported(name):
    """The zoo model at a quarter width with trained-like statistics: genome and rebuilt model."""
    factory, shape = model_zoo.ZOO[name]
    torch.manual_seed(0)
    model = with_statistics(factory(classes=10, channels=shape[0], width=0.25)).eval()
    genome, rebuilt, _ = import_model(model, shape)
    return genome, rebuilt.eval(), shape


def space_for(shape, **limits):
    return GraphSpace(tuple(shape), 10, kernels=(1, 3, 5), **limits)


def saved(tmp_path, name):
    genome, model, shape = imported(name)
    path = tmp_path / f"{name}.pt"
    save_state_dict(model, path)
    return genome, model, shape, str(path)


def child_model(child, parent, path, shape, select="l1", seed=0):
    model = build(child, shape, 10)
    share = inherit_graph(model, child, shape, plan(child, [(1, parent, path)], select), seed)
    return model.eval(), share


# --- channel groups ------------------------------------------------------------------------------


def test_resnet18_groups_are_its_stages_and_block_interiors():
    genome, _, shape = imported("resnet18")
    groups = channel_groups(genome.genes, shape)
    convs = {g.id for g in genome.genes if g.op == "convolution"}
    stages = [g for g in groups.prunable() if len(g.producers) > 1]
    interiors = [g for g in groups.prunable() if len(g.producers) == 1]
    # stem + stage 1 (2 block outputs), stages 2-4 (2 block outputs + projection each)
    assert sorted(len(g.producers) for g in stages) == [3, 3, 3, 3]
    assert len(interiors) == 8  # each BasicBlock's inner channels
    assert {p for g in groups.groups for p in g.producers} == convs | {genome.genes[-1].id}
    fixed = [g.fixed for g in groups.groups if g.fixed]
    assert fixed == ["the network's input", "the network's output (its logits)"]


def test_depthwise_convolutions_tie_their_input_and_output():
    genome, _, shape = imported("mobilenet_v2")
    groups = channel_groups(genome.genes, shape)
    for group in groups.groups:
        for gene_id in group.depthwise:
            gene = next(g for g in genome.genes if g.id == gene_id)
            assert groups.group_of(gene.inputs[0]) is group
    assert sum(len(g.depthwise) for g in groups.groups) >= 10


def test_concat_and_flatten_lay_out_their_inputs_groups():
    genome, _, shape = imported("densenet")
    groups = channel_groups(genome.genes, shape)
    concat = next(g for g in genome.genes if g.op == "concat")
    layout = groups.layouts[concat.id]
    assert len(layout) == len(concat.inputs) or len(layout) > 2
    assert sum(groups.groups[i].width * r for i, r in layout) == sum(
        groups.groups[i].width * r for source in concat.inputs for i, r in groups.layouts[source]
    )
    genome, _, shape = imported("lenet5")
    groups = channel_groups(genome.genes, shape)
    flatten = next(g for g in genome.genes if g.op == "flatten")
    ((group, repeat),) = groups.layouts[flatten.id]
    assert repeat > 1 and groups.groups[group].prunable


# --- operators: long random chains stay valid ----------------------------------------------------

GRAPH_OPERATOR_NAMES = mutation_names("graph") + ["crossover"]


@pytest.mark.parametrize("name", GRAPH_MODELS)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    chain=st.lists(st.sampled_from(GRAPH_OPERATOR_NAMES), min_size=5, max_size=20),
)
def test_long_random_operator_chains_stay_valid_and_buildable(name, seed, chain):
    original, _, shape = imported(name)
    space = space_for(shape)
    rng = random.Random(seed)
    genome = original
    for op_name in chain:
        op = OPERATORS["graph", op_name]
        genome = (op.fn(genome, original, space, rng) if op.arity == 2
                  else op.fn(genome, space, rng))  # fmt: skip
        assert space.problems(genome) == [], (op_name, space.problems(genome))
        assert parse_genome(genome.to_dict()) == genome  # plain data round trip
    model = build(genome, shape, 10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("op_name", GRAPH_OPERATOR_NAMES)
def test_each_graph_operator_applies_is_seeded_and_keeps_ids(op_name):
    genome, _, shape = imported("resnet18")
    space = space_for(shape)
    op = OPERATORS["graph", op_name]
    changed = 0
    for seed in range(8):
        args = (genome, genome) if op.arity == 2 else (genome,)
        child = op.fn(*args, space, random.Random(seed))
        assert child == op.fn(*args, space, random.Random(seed))
        changed += child.arch_key() != genome.arch_key()
        kept = set(child.gene_ids()) & set(genome.gene_ids())
        assert all(a.op == b.op for a in child.genes for b in genome.genes
                   if a.id == b.id and a.id in kept)  # fmt: skip
    expected = 0 if op_name == "crossover" else 4  # crossing a genome with itself changes nothing
    assert changed >= expected, op_name


def test_operators_respect_the_space_limits():
    genome, _, shape = imported("resnet18")
    params = sum(p.numel() for p in imported("resnet18")[1].parameters())
    space = space_for(shape, max_params=params)  # no room to grow
    for seed in range(10):
        for name in ("insert_block", "change_width", "insert_gene"):
            child = OPERATORS["graph", name].fn(genome, space, random.Random(seed))
            assert space.limits_problem(child) is None
    tight = space_for(shape, max_depth=5)
    assert "space.max_depth 5" in tight.infeasible(genome)


def test_homologous_crossover_takes_genes_from_both_parents():
    genome, _, shape = imported("resnet18")
    space = space_for(shape)
    wide = OPERATORS["graph", "change_width"].fn(genome, space, random.Random(3))
    kernel = OPERATORS["graph", "change_kernel"].fn(wide, space, random.Random(4))
    assert kernel != genome
    seen = set()
    for seed in range(20):
        child = OPERATORS["graph", "crossover"].fn(genome, kernel, space, random.Random(seed))
        assert child.gene_ids() == genome.gene_ids()  # a's wiring
        seen.add(child.arch_key())
    assert len(seen) >= 3  # parent a, parent b and mixtures


# --- inheritance ---------------------------------------------------------------------------------

PRESERVING = ["insert_gene", "insert_block", "add_skip"]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet", "conv1d_net"])
@pytest.mark.parametrize("op_name", PRESERVING)
def test_inserted_genes_blocks_and_skips_leave_outputs_unchanged(tmp_path, name, op_name):
    genome, parent, shape, path = saved(tmp_path, name)
    space = space_for(shape)
    x = torch.randn(4, *shape)
    tried = 0
    for seed in range(4):
        child = OPERATORS["graph", op_name].fn(genome, space, random.Random(seed))
        if child is genome:
            continue
        tried += 1
        model, share = child_model(child, genome, path, shape)
        with torch.no_grad():
            torch.testing.assert_close(model(x), parent(x), atol=1e-5, rtol=0)
        # every parameter of the parent is carried over, and only those
        size = sum(p.numel() for p in parent.parameters())
        assert share == pytest.approx(size / sum(p.numel() for p in model.parameters()))
    assert tried


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet", "lenet5"])
def test_widening_any_group_leaves_outputs_unchanged(tmp_path, name):
    genome, parent, shape, path = saved(tmp_path, name)
    x = torch.randn(4, *shape)
    for group in channel_groups(genome.genes, shape).prunable()[:6]:
        child = Genome(with_width(genome.genes, group, group.width + 3), dict(genome.training))
        model, _ = child_model(child, genome, path, shape)
        with torch.no_grad():
            torch.testing.assert_close(model(x), parent(x), atol=1e-5, rtol=0)


def test_depthwise_made_dense_computes_the_same():
    genome, parent, shape = imported("mobilenet_v2")
    x = torch.randn(4, *shape)
    groups = channel_groups(genome.genes, shape)
    depthwise = next(i for g in groups.groups for i in g.depthwise)
    genes = tuple(g.with_params(groups=1) if g.id == depthwise else g for g in genome.genes)
    child = Genome(genes, dict(genome.training))
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/p.pt"
        save_state_dict(parent, path)
        model, _ = child_model(child, genome, path, shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x), parent(x), atol=1e-5, rtol=0)


def test_pruning_a_resnet_stage_keeps_the_same_channels_in_every_tied_layer(tmp_path):
    genome, parent, shape, path = saved(tmp_path, "resnet18")
    groups = channel_groups(genome.genes, shape)
    stage = max((g for g in groups.prunable() if len(g.producers) == 3), key=lambda g: g.width)
    child = Genome(with_width(genome.genes, stage, stage.width // 2), dict(genome.training))
    model, _ = child_model(child, genome, path, shape)
    theirs, mine = parent.state_dict(), model.state_dict()
    score = sum(
        (lambda rows: rows / rows.mean())(theirs[f"g{p}.weight"].abs().flatten(1).sum(1))
        for p in stage.producers
    )
    kept = sorted(score.topk(stage.width // 2).indices.tolist())
    genes = {g.id: g for g in genome.genes}
    for producer in stage.producers:  # every tied convolution keeps the same filters
        torch.testing.assert_close(mine[f"g{producer}.weight"],
                                   theirs[f"g{producer}.weight"][kept])  # fmt: skip
    norms = [m for m in stage.members if genes.get(m) and genes[m].op == "batch_norm"]
    assert len(norms) == 3
    for norm in norms:
        for key in ("weight", "bias", "running_mean", "running_var"):
            torch.testing.assert_close(mine[f"g{norm}.{key}"], theirs[f"g{norm}.{key}"][kept])
    readers = [g for g in genome.genes if g.op in ("convolution", "linear")
               and groups.group_of(g.inputs[0]) == stage]  # fmt: skip
    assert readers
    for reader in readers:  # every consumer reads exactly the surviving channels
        torch.testing.assert_close(mine[f"g{reader.id}.weight"],
                                   theirs[f"g{reader.id}.weight"][:, kept])  # fmt: skip


@pytest.mark.parametrize("select", ["bn", "taylor", "random"])
def test_other_importances_choose_channels_deterministically(tmp_path, select):
    genome, _, shape, path = saved(tmp_path, "resnet18")
    group = channel_groups(genome.genes, shape).prunable()[0]
    child = Genome(with_width(genome.genes, group, group.width // 2), dict(genome.training))
    data = model_zoo.digits_images(shape[-1], shape[0])

    task = TaskData("digits", data["x_train"], data["y_train"], data["x_train"][:10],
                    data["y_train"][:10], None, None, 10)  # fmt: skip

    kept = []
    for _ in range(2):
        model = build(child, shape, 10)
        inherit_graph(model, child, shape, plan(child, [(1, genome, path)], select), 7, task)
        kept.append(model.state_dict()[f"g{group.producers[0]}.weight"])
    torch.testing.assert_close(kept[0], kept[1])


# --- a search around a seed ----------------------------------------------------------------------


def graph_search_config(tmp_path):
    """A small NSGA-II search around an imported ResNet-18, children inheriting weights."""
    model, _ = model_zoo.trained("resnet18", steps=10)
    genome, rebuilt, header = import_model(model, (3, 16, 16), source="resnet18")
    write_import(genome, rebuilt, header, tmp_path / "resnet18.yaml")
    config = {
        "task": {"name": "tests.model_zoo:digits_images", "options": {"size": 16, "limit": 300}},
        "space": {"kind": "graph"},
        "training": {"epochs": 1, "finetune_epochs": 1, "batch_size": 64,
                     "inherit_weights": True},
        "search": {"population": 4, "generations": 2, "seed_fill": "mutate",  # 12 evaluations
                   "seed_genomes": [str(tmp_path / "resnet18.yaml")], "strategy": "nsga2",
                   "objectives": [{"name": "val_accuracy", "goal": "max"},
                                  {"name": "params", "goal": "min"}]},
        "parallel": {"backend": "inline"},
    }  # fmt: skip
    return config


def test_a_graph_search_evolves_an_imported_model_with_inherited_weights(tmp_path):
    config = graph_search_config(tmp_path)
    run = evonas.search(config, name="graph", runs_dir=tmp_path / "runs", log=None)
    people = run.individuals
    assert (people["status"] == "ok").all(), people["error"].tolist()
    children = people[people["operator"] != "seed"]
    assert set(children["operator"]) <= set(mutation_names("graph")) | {"crossover"}
    assert (children["inherited_share"] > 0).all()
    assert people["params"].nunique() > 1  # the architecture did change
    # structured pruning of the best graph removes channels: FLOPs and parameters drop
    best = int(run.best()["uid"])
    table = optimize(run.path, best, sparsities=(), finetune_epochs=1, distill_epochs=1,
                     channel_fractions=(0.5,), importance="bn").set_index("variant")  # fmt: skip
    assert table.loc["channels-0.5", "flops"] < 0.5 * table.loc["original", "flops"]
    assert table.loc["channels-0.5", "params"] < 0.5 * table.loc["original", "params"]
    assert table.loc["distilled", "params"] < table.loc["original", "params"]


def test_graph_limits_and_graph_only_settings_are_checked_before_the_run(tmp_path):
    model, _ = model_zoo.trained("lenet5", steps=2)
    genome, rebuilt, header = import_model(model, (1, 28, 28))
    write_import(genome, rebuilt, header, tmp_path / "lenet.yaml")
    result = cli("search", "--runs-dir", str(tmp_path / "runs"), "--name", "x",
                 "--seed-genome", str(tmp_path / "lenet.yaml"),
                 "--set", "task.name=tests.model_zoo:digits_images",
                 "--set", 'task.options={"size": 28, "channels": 1}',
                 "--set", "space.kind=graph", "--set", "search.seed_fill=mutate",
                 "--set", "space.max_params=1000", cwd=ROOT)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "space.max_params 1000" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "x").exists()
    with pytest.raises(ConfigError, match="space.max_width: only for space.kind: graph"):
        resolve(overrides={"space.max_width": 64})


# --- corner cases found in review ----------------------------------------------------------------


def _small(tmp_path, layers, shape=(3, 8, 8)):
    genome = parse_genome({"layers": layers, "training": {"lr": 0.01}})
    torch.manual_seed(0)
    model = with_statistics(build(genome, shape, 10)).eval()
    path = tmp_path / "parent.pt"
    save_state_dict(model, path)
    return genome, model, str(path), shape


CONV = {"op": "convolution", "channels": 4, "kernel": 3, "padding": 1}
CONCAT_POOL = [  # the same channels concatenated twice, as a concat-pool head does
    {"id": 1, **CONV}, {"id": 2, "op": "batch_norm"},
    {"id": 3, "op": "activation", "function": "relu"},
    {"id": 4, "op": "adaptive_max_pool", "size": 1, "inputs": [3]},
    {"id": 5, "op": "adaptive_avg_pool", "size": 1, "inputs": [3]},
    {"id": 6, "op": "concat", "inputs": [4, 5]}, {"id": 7, "op": "flatten"},
    {"id": 8, "op": "linear", "features": 10},
]  # fmt: skip
ADD_OF_CONCATS = [  # 4+4 channels added to 2+6: laid out differently, so nothing can narrow
    {"id": 1, **CONV, "inputs": [0]}, {"id": 2, **CONV, "inputs": [0]},
    {"id": 3, **CONV, "channels": 2, "inputs": [0]},
    {"id": 4, **CONV, "channels": 6, "inputs": [0]},
    {"id": 5, "op": "concat", "inputs": [1, 2]}, {"id": 6, "op": "concat", "inputs": [3, 4]},
    {"id": 7, "op": "add", "inputs": [5, 6]}, {"id": 8, "op": "global_avg_pool"},
    {"id": 9, "op": "linear", "features": 10},
]  # fmt: skip


@pytest.mark.parametrize("layers", [CONCAT_POOL, ADD_OF_CONCATS], ids=["concat_pool", "add"])
def test_inserting_anywhere_in_concatenations_leaves_outputs_unchanged(tmp_path, layers):
    genome, parent, path, shape = _small(tmp_path, layers)
    x = torch.randn(4, *shape)
    for seed in range(8):
        child = OPERATORS["graph", "insert_gene"].fn(genome, space_for(shape), random.Random(seed))
        model, _ = child_model(child, genome, path, shape)
        with torch.no_grad():
            torch.testing.assert_close(model(x), parent(x), atol=1e-5, rtol=0)


def test_differently_composed_adds_fix_their_groups():
    genome = parse_genome({"layers": ADD_OF_CONCATS})
    groups = channel_groups(genome.genes, (3, 8, 8))
    assert [g.fixed for g in groups.groups[1:5]] == ["add 7 of differently composed tensors"] * 4


def test_an_even_same_padded_kernel_grows_without_changing_the_function(tmp_path):
    layers = [{"id": 1, "op": "convolution", "channels": 4, "kernel": 2, "padding": "same"},
              {"id": 2, "op": "global_avg_pool"},
              {"id": 3, "op": "linear", "features": 10}]  # fmt: skip
    genome, parent, path, shape = _small(tmp_path, layers)
    x = torch.randn(4, *shape)
    for kernel in (3, 4, 5):
        child = parse_genome({"layers": [{**layers[0], "kernel": kernel}, *layers[1:]]})
        model, _ = child_model(child, genome, path, shape)
        with torch.no_grad():
            torch.testing.assert_close(model(x), parent(x), atol=1e-5, rtol=0)


def test_crossover_of_different_activations_gives_a_genome_that_reads_back():
    genome, _, shape = imported("resnet18")
    space = GraphSpace(shape, 10, activations=("elu", "leaky_relu"))
    other = OPERATORS["graph", "change_activation"].fn(genome, space, random.Random(0))
    for seed in range(20):
        for a, b in ((genome, other), (other, genome)):
            child = OPERATORS["graph", "crossover"].fn(a, b, space, random.Random(seed))
            assert parse_genome(child.to_dict()) == child


def test_a_stopped_graph_search_resumes_to_the_uninterrupted_history(tmp_path):
    """Stopped at a generation boundary and resumed, a graph search with inherited weights
    breeds, trains and scores exactly what an uninterrupted one does (timings aside)."""
    from tests.test_evolve import resume_to_end

    config = graph_search_config(tmp_path)
    runs = tmp_path / "runs"
    evonas.search(config, name="reference", runs_dir=runs, log=None)
    limited = {**config, "search": {**config["search"], "max_evaluations": 5}}
    stopped = evonas.search(limited, name="stopped", runs_dir=runs, log=None)
    assert len(stopped.individuals) == 4  # generation 0 only: the limit stops at a boundary
    assert resume_to_end(runs / "stopped", **{"search.max_evaluations": 0}).state == "finished"
    columns = ["uid", "generation", "genome", "parents", "operator", "status", "params", "flops",
               "inherited_share", "val_accuracy"]  # fmt: skip
    reference, resumed = (evonas.load_run(runs / name).individuals[columns]
                          for name in ("reference", "stopped"))  # fmt: skip
    pd.testing.assert_frame_equal(resumed, reference)
