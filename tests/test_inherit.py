import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evonas.builder import build
from evonas.genome import Gene, Genome
from evonas.inherit import inherit
from evonas.operators import OPERATORS, mutation_names
from evonas.spaces import SequentialSpace
from evonas.weights import plan, save_state_dict

SHAPE = (2, 24)
CLASSES = 5


def conv(gid, width, kernel=3, bn=False, stride=1, activation="relu"):
    params = {"width": width, "kernel": kernel, "stride": stride, "dilation": 1,
              "activation": activation, "batch_norm": bn}  # fmt: skip
    return Gene(gid, "conv", params)


def dense(gid, units):
    return Gene(gid, "dense", {"units": units, "activation": "relu"})


def residual(gid, width, bn=True):
    return Gene(
        gid, "residual", {"width": width, "kernel": 3, "activation": "relu", "batch_norm": bn}
    )


POOL = Gene(50, "pool", {"kind": "max", "size": 2})
PARENT = Genome(genes=(conv(1, 8), conv(2, 16, bn=True), POOL, dense(3, 32)))


def trained(genome, path, seed=0):
    """A parent with distinct random weights and batch-norm statistics, saved to `path`."""
    torch.manual_seed(seed)
    model = build(genome, SHAPE, CLASSES)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            tensor.copy_(torch.randn_like(tensor) if "running_var" not in name else
                         torch.rand_like(tensor) + 0.5)  # fmt: skip
    save_state_dict(model, str(path))
    return model.eval()


def child_of(genome, parents, select="l1", seed=1):
    model = build(genome, SHAPE, CLASSES)
    share = inherit(model, genome, SHAPE, plan(genome, parents, select), seed)
    return model.eval(), share


def outputs(model, seed=3):
    x = torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


@pytest.fixture
def parent(tmp_path):
    path = tmp_path / "parent.pt"
    return trained(PARENT, path), [(0, PARENT, str(path))]


@pytest.mark.parametrize("select", ["l1", "bn", "random"])
def test_a_pruned_child_keeps_exactly_the_surviving_channels(parent, select):
    parent_model, parents = parent
    genome = Genome(genes=(conv(1, 8), conv(2, 10, bn=True), POOL, dense(3, 32)))
    child, _ = child_of(genome, parents, select)
    p, c = parent_model.state_dict(), child.state_dict()
    if select == "random":
        norms = torch.rand(16)  # any 10 channels; read them back from the child
        kept = [
            int((p["body.g2.0.weight"] == w).all(dim=(1, 2)).nonzero())
            for w in c["body.g2.0.weight"]
        ]
        assert kept == sorted(set(kept)) and len(kept) == 10
    else:
        norms = (
            p["body.g2.1.weight"].abs()
            if select == "bn"
            else p["body.g2.0.weight"].abs().sum((1, 2))
        )
        kept = sorted(torch.topk(norms, 10).indices.tolist())
    assert torch.equal(c["body.g2.0.weight"], p["body.g2.0.weight"][kept])
    for stat in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(c[f"body.g2.1.{stat}"], p[f"body.g2.1.{stat}"][kept])
    assert torch.equal(c["body.g1.0.weight"], p["body.g1.0.weight"])  # untouched layer
    # the consumer (dense after pooling to length 12) reads only the surviving channels' features
    columns = [ch * 12 + s for ch in kept for s in range(12)]
    assert torch.equal(c["body.g3.1.weight"], p["body.g3.1.weight"][:, columns])
    assert torch.equal(c["head.linear.weight"], p["head.linear.weight"])


def test_prune_by_l1_keeps_more_of_the_function_than_pruning_the_strongest(parent):
    parent_model, parents = parent
    genome = Genome(genes=(conv(1, 8), conv(2, 12, bn=True), POOL, dense(3, 32)))
    child, _ = child_of(genome, parents, "l1")
    assert child.state_dict()["body.g2.0.weight"].shape[0] == 12


@pytest.mark.parametrize(
    "genes",
    [
        (conv(1, 8), conv(9, 8), conv(2, 16, bn=True), POOL, dense(3, 32)),  # conv, no BN
        (conv(1, 8), conv(9, 8, kernel=5, bn=True), conv(2, 16, bn=True), POOL, dense(3, 32)),
        (conv(1, 8), conv(9, 12), conv(2, 16, bn=True), POOL, dense(3, 32)),  # wider than input
        (conv(1, 8), residual(9, 8), conv(2, 16, bn=True), POOL, dense(3, 32)),
        (conv(1, 8), residual(9, 8, bn=False), conv(2, 16, bn=True), POOL, dense(3, 32)),
        (conv(1, 8), conv(2, 16, bn=True), POOL, dense(3, 32), dense(9, 32)),
    ],
    ids=["conv", "conv-bn-k5", "conv-wider", "residual-bn", "residual", "dense"],
)
def test_an_identity_initialised_added_layer_leaves_the_outputs_unchanged(parent, genes):
    parent_model, parents = parent
    child, share = child_of(Genome(genes=genes), parents)
    assert torch.allclose(outputs(child), outputs(parent_model), atol=1e-4)
    assert 0.5 < share < 1


@pytest.mark.parametrize(
    "genes",
    [
        (conv(1, 12), conv(2, 16, bn=True), POOL, dense(3, 32)),  # a wider first layer
        (conv(1, 8), conv(2, 16, bn=True), POOL, dense(3, 64)),  # a wider dense layer
        (conv(1, 8, kernel=7), conv(2, 16, bn=True), POOL, dense(3, 32)),  # a larger kernel
    ],
    ids=["widen-conv", "widen-dense", "larger-kernel"],
)
def test_widening_keeps_the_old_units_outputs(parent, genes):
    parent_model, parents = parent
    child, _ = child_of(Genome(genes=genes), parents)
    assert torch.allclose(outputs(child), outputs(parent_model), atol=1e-4)


def test_after_crossover_each_gene_inherits_from_its_parent(tmp_path):
    a = Genome(genes=(conv(1, 8), conv(2, 16), POOL, dense(3, 32)))
    b = Genome(genes=(conv(11, 8), conv(12, 16), Gene(51, "pool", {"kind": "avg", "size": 2}),
                      dense(13, 32)))  # fmt: skip
    model_a, model_b = trained(a, tmp_path / "a.pt", 1), trained(b, tmp_path / "b.pt", 2)
    child = Genome(genes=(conv(1, 8), conv(2, 16), Gene(51, "pool", {"kind": "avg", "size": 2}),
                          dense(13, 32)))  # fmt: skip
    parents = [(0, a, str(tmp_path / "a.pt")), (1, b, str(tmp_path / "b.pt"))]
    assert plan(child, parents)["genes"] == {"1": 0, "2": 0, "51": 1, "13": 1}
    assert plan(child, parents)["head"] == 1
    model, _ = child_of(child, parents)
    sa, sb, sc = model_a.state_dict(), model_b.state_dict(), model.state_dict()
    for name in ("body.g1.0.weight", "body.g1.0.bias", "body.g2.0.weight", "body.g2.0.bias"):
        assert torch.equal(sc[name], sa[name])
    for name in ("body.g13.1.weight", "body.g13.1.bias", "head.linear.weight", "head.linear.bias"):
        assert torch.equal(sc[name], sb[name])  # same 16 channels x 12 positions: positional


def test_a_gene_id_both_parents_carry_comes_from_the_one_it_was_copied_from(tmp_path):
    shared = conv(7, 8)
    a = Genome(genes=(shared, conv(2, 16), dense(3, 32)))
    b = Genome(genes=(conv(4, 8), shared.with_params(kernel=5), dense(6, 32)))
    parents = [(0, a, "a.pt"), (1, b, "b.pt")]
    child = Genome(genes=(conv(4, 8), shared.with_params(kernel=5), dense(3, 32)))
    assert plan(child, parents)["genes"] == {"4": 1, "7": 1, "3": 0}


def test_no_shared_gene_means_no_plan():
    other = Genome(genes=(conv(99, 8),))
    assert plan(other, [(0, PARENT, "p.pt")]) is None


SPACE = SequentialSpace(input_shape=SHAPE, num_classes=CLASSES, widths=(4, 8), units=(8, 16),
                        kernels=(3, 5), activations=("relu",))  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(seed=st.integers(0, 2**32 - 1), op=st.sampled_from(mutation_names() + ["crossover"]))
def test_any_child_inherits_without_error(tmp_path, seed, op):
    rng = random.Random(seed)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    trained(a, tmp_path / "a.pt", 1)
    trained(b, tmp_path / "b.pt", 2)
    operator = OPERATORS["sequential", op]
    child = operator.fn(a, b, SPACE, rng) if operator.arity == 2 else operator.fn(a, SPACE, rng)
    parents = [(0, a, str(tmp_path / "a.pt")), (1, b, str(tmp_path / "b.pt"))][: operator.arity]
    the_plan = plan(child, parents)
    if the_plan is None:
        return
    model = build(child, SHAPE, CLASSES)
    share = inherit(model, child, SHAPE, the_plan, seed)
    assert 0 <= share <= 1
    assert torch.isfinite(outputs(model.eval())).all()
    if op in ("change_lr", "change_activation"):
        assert share == 1  # nothing new: every parameter is inherited


def test_a_shared_id_on_another_op_is_not_inherited():
    parent = Genome(genes=(conv(1, 8), dense(2, 16)))
    child = Genome(genes=(conv(1, 8), conv(2, 8), dense(3, 16)))  # ids written by hand: 2 repeats
    assert plan(child, [(0, parent, "p.pt")])["genes"] == {"1": 0}


def test_a_residual_whose_input_was_pruned_keeps_its_skip_path(tmp_path):
    parent = Genome(genes=(conv(1, 8), residual(2, 8, bn=False), POOL, dense(3, 16)))
    trained(parent, tmp_path / "p.pt")
    child = Genome(genes=(conv(1, 6), residual(2, 8, bn=False), POOL, dense(3, 16)))
    model, _ = child_of(child, [(0, parent, str(tmp_path / "p.pt"))])
    skip = model.state_dict()["body.g2.skip.weight"][:, :, 0]  # (8 out, 6 in): now a projection
    kept = [int(i) for i in skip.argmax(dim=0)]  # which output each surviving input feeds
    assert skip.sum() == 6 and (skip.sum(dim=1) <= 1).all() and len(set(kept)) == 6
