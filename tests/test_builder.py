import torch
from torch import nn

from evonas.builder import build, count_flops, count_params, latency_ms, size_bytes
from evonas.genome import parse_genome

CONV = {
    "op": "conv",
    "width": 8,
    "kernel": 3,
    "stride": 1,
    "activation": "relu",
    "batch_norm": True,
}
RES = {"op": "residual", "width": 4, "kernel": 3, "activation": "silu", "batch_norm": False}
DENSE = {"op": "dense", "units": 16, "activation": "gelu"}


def genome(*layers):
    return parse_genome({"layers": [{"id": 10 + i, **layer} for i, layer in enumerate(layers)]})


def test_same_genome_builds_conv1d_and_conv2d():
    g = genome(CONV, {"op": "pool", "kind": "avg", "size": 2}, RES)
    one_d = build(g, (2, 20), 5)
    two_d = build(g, (3, 8, 8), 5)
    assert isinstance(one_d.body.g10[0], nn.Conv1d)
    assert isinstance(two_d.body.g10[0], nn.Conv2d)
    assert one_d(torch.randn(4, 2, 20)).shape == (4, 5)
    assert two_d(torch.randn(4, 3, 8, 8)).shape == (4, 5)


def test_layers_are_named_by_gene_id():
    model = build(genome(CONV, DENSE), (1, 12), 3)
    keys = model.state_dict().keys()
    assert any(k.startswith("body.g10.") for k in keys)
    assert any(k.startswith("body.g11.") for k in keys)


def test_dense_flattens_the_feature_map_and_head_pools_globally():
    model = build(genome(CONV, DENSE), (1, 12), 3)
    assert model.body.g11[1].in_features == 8 * 12
    conv_only = build(genome(CONV), (1, 12), 3)
    assert conv_only.head.linear.in_features == 8


def test_residual_projects_when_width_changes():
    model = build(genome(CONV, RES), (1, 12), 3)
    assert isinstance(model.body.g11.skip, nn.Conv1d)
    same = build(genome({**RES, "width": 8}, RES | {"width": 8}), (8, 12), 3)
    assert isinstance(same.body.g10.skip, nn.Identity)


def test_flat_inputs_and_empty_genome():
    model = build(genome(DENSE, {"op": "dropout", "rate": 0.5}), (7,), 2)
    assert model(torch.randn(5, 7)).shape == (5, 2)
    logistic = build(genome(), (7,), 2)
    assert count_params(logistic) == 7 * 2 + 2


def test_params_and_flops_counts():
    model = build(genome(DENSE), (10,), 3)
    assert count_params(model) == (10 * 16 + 16) + (16 * 3 + 3)
    # torch counts 2 FLOPs per multiply-accumulate of the two linear layers
    assert count_flops(model, (10,)) == 2 * (10 * 16 + 16 * 3)
    assert model.training  # counting does not leave the model in eval mode


def test_nb201_network_matches_the_benchmark_parameter_counts():
    from evonas.spaces import Nb201Space

    space = Nb201Space()
    # NAS-Bench-201 / NATS-Bench report 1.531546 M parameters for the all-3x3-conv cell and
    # 0.073306 M for the empty cell on CIFAR-10 (C = 16, N = 5).
    largest = build(space.genome(["nor_conv_3x3"] * 6), (3, 32, 32), 10)
    assert count_params(largest) == 1_531_546
    assert count_params(build(space.genome(["none"] * 6), (3, 32, 32), 10)) == 73_306
    cell = space.from_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    )
    model = build(cell, (3, 32, 32), 10)
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert build(cell, (1, 8, 8), 10)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_dilated_convolution_keeps_the_length():
    model = build(genome({**CONV, "dilation": 4, "kernel": 5}), (1, 40), 3)
    conv = model.body.g10[0]
    assert conv.dilation == (4,) and conv.padding == (8,)
    assert model.body.g10(torch.randn(2, 1, 40)).shape == (2, 8, 40)


def test_size_and_latency():
    model = build(genome(DENSE), (10,), 3)
    assert size_bytes(model) == 4 * count_params(model)  # float32, no buffers
    with_bn = build(genome(CONV), (1, 12), 3)
    assert size_bytes(with_bn) > 4 * count_params(with_bn)  # running statistics count too
    assert 0 < latency_ms(model, (10,)) < 1000
    assert model.training


def test_every_configurable_activation_builds():
    from evonas.builder import _ACTIVATIONS
    from evonas.config import ACTIVATIONS

    assert set(_ACTIVATIONS) == set(ACTIVATIONS)
