"""Graph genomes: plain data, validation with one-line errors, canonical keys, the builder and
shape inference (property-based), export."""

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.fx.passes.shape_prop import ShapeProp

from evonas.builder import build, count_params
from evonas.genome import GenomeError, load_genome, parse_genome
from evonas.graph import GraphError, graph_shapes
from tests.conftest import ROOT

RESIDUAL = [
    {"id": 1, "op": "convolution", "channels": 8, "kernel": 3, "padding": 1, "bias": False},
    {"id": 2, "op": "batch_norm"},
    {"id": 3, "op": "activation", "function": "relu6"},
    {"id": 4, "op": "convolution", "channels": 8, "kernel": [3, 3], "padding": "same",
     "groups": 8},
    {"id": 5, "op": "add", "inputs": [3, 4]},
    {"id": 6, "op": "max_pool", "kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True},
    {"id": 7, "op": "global_avg_pool"},
    {"id": 8, "op": "linear", "features": 10},
]  # fmt: skip


def graph(layers):
    return parse_genome({"layers": layers, "training": {"lr": 0.01}})


def test_a_graph_genome_is_plain_data_that_round_trips(tmp_path):
    genome = graph(RESIDUAL)
    assert genome.is_graph and genome.genes[4].inputs == (3, 4) and genome.genes[1].inputs == (1,)
    data = genome.to_dict()
    assert "inputs" not in data["layers"][1]  # reading the gene before goes without saying
    assert data["layers"][4]["inputs"] == [3, 4]
    assert data["layers"][3]["kernel"] == 3  # [3, 3] and 3 are the same gene
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(data))
    again = load_genome(path)
    assert again == genome and again.arch_key() == genome.arch_key()
    assert graph_shapes(genome.genes, (3, 16, 16))[5] == (8, 9, 9)  # ceil mode


def test_the_key_ignores_gene_ids_and_the_listing_order_but_not_the_wiring():
    renamed = {1: 11, 2: 12, 3: 13, 4: 9, 5: 20, 6: 30, 7: 31, 8: 40}
    relabelled = []
    for layer in RESIDUAL:
        layer = {**layer, "id": renamed[layer["id"]]}
        if "inputs" in layer:
            layer["inputs"] = [renamed[i] for i in reversed(layer["inputs"])]  # add commutes
        relabelled.append(layer)
    # the depthwise conv listed before the stem's activation it does not read
    reordered = [dict(x) for x in RESIDUAL]
    reordered[3] = {**reordered[3], "inputs": [3]}
    reordered[4] = {**reordered[4], "inputs": [4, 3]}
    assert graph(relabelled).arch_key() == graph(RESIDUAL).arch_key()
    assert graph(reordered).arch_key() == graph(RESIDUAL).arch_key()
    rewired = [dict(x) for x in RESIDUAL]
    rewired[4] = {**rewired[4], "inputs": [2, 4]}
    assert graph(rewired).arch_key() != graph(RESIDUAL).arch_key()
    concat = [*RESIDUAL[:4], {"id": 5, "op": "concat", "inputs": [3, 4]}, *RESIDUAL[5:]]
    swapped = [*RESIDUAL[:4], {"id": 5, "op": "concat", "inputs": [4, 3]}, *RESIDUAL[5:]]
    assert graph(concat).arch_key() != graph(swapped).arch_key()  # channel order matters


def test_chain_genome_files_stay_chains():
    for path in (ROOT / "genomes").glob("*.yaml"):
        genome = load_genome(path)
        assert not genome.is_graph
        assert all("inputs" not in layer for layer in genome.to_dict()["layers"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({4: {"inputs": [3, 6]}}, "gene 5 (add) reads 6, which is not an earlier gene"),
        ({4: {"inputs": [3]}}, "gene 5 (add) needs two or more inputs"),
        ({2: {"inputs": [1, 2]}}, "gene 3 (activation) takes one input, got 2"),
        ({2: {"function": "swish"}}, "layers[2].function: expected one of ['relu', 'relu6'"),
        ({0: {"padding": "full"}}, "layers[0].padding: expected an integer in [0, 65536]"),
        ({0: {"channels": 10**9}}, "layers[0].channels: expected an integer in [1, 65536]"),
        ({7: {"units": 3}}, "layers[7].units: unknown parameter for op 'linear'"),
        ({2: {"negative_slope": 0.2}}, "layers[2].negative_slope: only for leaky_relu"),
        ({3: {"op": "conv"}}, "layers[3].op: expected a graph op"),
        ({5: {"inputs": [4]}}, "gene 5 (add) does not lead to the output (gene 8, the last)"),
    ],
)
def test_invalid_graphs_are_one_line_errors_naming_the_gene(change, message):
    layers = [{**layer, **change.get(i, {})} for i, layer in enumerate(RESIDUAL)]
    with pytest.raises(GenomeError) as info:
        graph(layers)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "shape", "message"),
    [
        ({3: {"channels": 16, "groups": 1}}, (3, 16, 16),
         "gene 5 (add): adds tensors of different shapes (8, 16, 16), (16, 16, 16)"),
        ({0: {"kernel": 7, "padding": 0}}, (3, 4, 4),
         "gene 1 (convolution): output (8, 0, 0) from input (3, 4, 4)"),
        ({3: {"groups": 3}}, (3, 16, 16), "gene 4 (convolution): groups=3 must divide"),
        ({}, (3, 16), "gene 4 (convolution): 2 values for 1 spatial dimension(s)"),
    ],
)  # fmt: skip
def test_shape_inference_names_the_gene_that_does_not_fit(change, shape, message):
    layers = [{**layer, **change.get(i, {})} for i, layer in enumerate(RESIDUAL)]
    layers[3]["kernel"] = [3, 5] if shape == (3, 16) else layers[3]["kernel"]
    with pytest.raises(GraphError) as info:
        graph_shapes(graph(layers).genes, shape)
    assert message in str(info.value)


def test_the_built_module_names_parameters_by_gene_id():
    model = build(graph(RESIDUAL), (3, 16, 16), 10)
    names = set(model.state_dict())
    assert {"g1.weight", "g2.running_mean", "g4.weight", "g4.bias", "g8.weight"} <= names
    assert "g1.bias" not in names
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    with pytest.raises(GraphError, match=r"has shape \(10,\); a classifier of 4 classes"):
        build(graph(RESIDUAL), (3, 16, 16), 4)


# --- property: every genome that shape inference accepts builds and runs with those shapes ----

UNARY = ["convolution", "batch_norm", "activation", "max_pool", "avg_pool", "dropout",
         "channel_dropout", "identity", "scale", "adaptive_avg_pool"]  # fmt: skip
FUNCTIONS = ["relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "hardswish", "hardsigmoid",
             "sigmoid", "tanh"]  # fmt: skip


@st.composite
def gene_params(draw, op):
    small = st.integers(1, 3)
    if op == "convolution":
        groups = draw(st.sampled_from([1, 2]))
        padding = draw(st.one_of(st.integers(0, 2), st.sampled_from(["same", "valid"])))
        stride = 1 if padding == "same" else draw(small)
        return {"channels": 2 * draw(small), "kernel": draw(small), "stride": stride,
                "padding": padding, "dilation": draw(st.integers(1, 2)), "groups": groups,
                "bias": draw(st.booleans())}  # fmt: skip
    if op in ("max_pool", "avg_pool"):
        kernel = draw(st.integers(1, 3))
        padding = draw(st.integers(0, kernel // 2))
        return {"kernel": kernel, "stride": draw(small), "padding": padding,
                "ceil_mode": draw(st.booleans())}  # fmt: skip
    if op == "activation":
        return {"function": draw(st.sampled_from(FUNCTIONS))}
    if op in ("dropout", "channel_dropout"):
        return {"rate": 0.5}
    if op == "scale":
        return {"factor": draw(st.floats(-2, 2)), "shift": draw(st.floats(-1, 1))}
    if op == "adaptive_avg_pool":
        return {"size": draw(st.integers(1, 3))}
    return {}


@st.composite
def graph_genomes(draw):
    """A backbone of random genes (each reads the one before) with random merges back to earlier
    genes, a global pooling and a linear classifier."""
    layers = []
    for gene_id in range(1, draw(st.integers(1, 8)) + 1):
        previous = layers[-1]["id"] if layers else 0
        if layers and draw(st.booleans()):
            other = draw(st.sampled_from([0] + [x["id"] for x in layers]))
            op = draw(st.sampled_from(["add", "concat", "multiply"]))
            layers.append({"id": gene_id, "op": op, "inputs": [previous, other]})
        else:
            op = draw(st.sampled_from(UNARY))
            layers.append({"id": gene_id, "op": op, **draw(gene_params(op))})
    layers += [{"id": 90, "op": "global_avg_pool"}, {"id": 91, "op": "linear", "features": 3}]
    return graph(layers), draw(st.sampled_from([(2, 9), (2, 8, 7)]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph_genomes())
def test_every_graph_shape_inference_accepts_builds_with_those_shapes(case):
    genome, shape = case
    try:
        expected = graph_shapes(genome.genes, shape)
    except GraphError:
        return  # refused before any torch code runs
    model = build(genome, shape, 3).eval()
    ShapeProp(model).propagate(torch.randn(2, *shape))
    node_shapes = {n.name: tuple(n.meta["tensor_meta"].shape[1:]) for n in model.graph.nodes
                   if n.op == "call_module"}  # fmt: skip
    for gene, out in zip(genome.genes, expected):
        if f"g{gene.id}" in node_shapes:
            assert node_shapes[f"g{gene.id}"] == out, gene
    assert model(torch.randn(2, *shape)).shape == (2, 3)
    assert count_params(model) > 0


def test_graph_models_export_to_torchscript_and_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from evonas.export import write_model

    genome = graph(RESIDUAL)
    model = build(genome, (3, 16, 16), 10).eval()
    x = torch.randn(3, 3, 16, 16)
    write_model(model, genome, (3, 16, 16), 10, "torchscript", tmp_path / "m.ts")
    scripted = torch.jit.load(str(tmp_path / "m.ts"))
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)
    write_model(model, genome, (3, 16, 16), 10, "onnx", tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), model(x), atol=1e-4)


def test_a_graph_search_needs_seeds_and_children_made_from_them(tmp_path):
    from evonas.config import ConfigError, resolve
    from evonas.launch import preflight

    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(graph(RESIDUAL).to_dict()))
    base = {"task": {"name": "tests.model_zoo:digits_images", "options": {"size": 16}},
            "space": {"kind": "graph"}, "search": {"population": 4}}  # fmt: skip
    cases = [
        ({}, "space.kind: graph starts from seeds; give search.seed_genomes"),
        ({"seed_genomes": [str(seed)]}, "search.seed_fill: a graph space fills generation 0"),
        ({"seed_genomes": [str(seed)], "seed_fill": "mutate", "strategy": "random"},
         "search.strategy: random samples fresh genomes"),
    ]  # fmt: skip
    for search, message in cases:
        config = resolve(base={**base, "search": {**base["search"], **search}})
        with pytest.raises(ConfigError, match=message):
            preflight(config)
    config = resolve(base={**base, "search": {**base["search"], "seed_genomes": [str(seed)],
                                              "seed_fill": "mutate"}})  # fmt: skip
    space, _, seeds = preflight(config)
    assert space.kind == "graph" and seeds[0].genome == graph(RESIDUAL)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(graph([*RESIDUAL[:-1], {**RESIDUAL[-1], "features": 4}])
                                    .to_dict()))  # fmt: skip
    config = resolve(base={**base, "search": {**base["search"], "seed_genomes": [str(wrong)],
                                              "seed_fill": "mutate"}})  # fmt: skip
    with pytest.raises(GenomeError, match="a classifier of 10 classes needs"):
        preflight(config)
