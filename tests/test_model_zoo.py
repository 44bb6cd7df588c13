"""Coverage: the common CNN families (tests/model_zoo.py) import with identical outputs, and seed
a search whose generation 0 reproduces their accuracy when not fine-tuned."""

import pytest
import torch

import evonas
from evonas.export import load_model
from evonas.importer import import_model, write_import
from tests import model_zoo
from tests.conftest import ROOT, cli

ZOO_FILE = ROOT / "tests" / "model_zoo.py"


def with_statistics(model):
    """Non-trivial batch-norm statistics, as a trained model has."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
    return model


@pytest.mark.parametrize("name", model_zoo.ZOO)
def test_each_family_imports_with_identical_outputs(name):
    factory, shape = model_zoo.ZOO[name]
    torch.manual_seed(0)
    model = with_statistics(factory(channels=shape[0], width=0.25)).eval()
    genome, rebuilt, header = import_model(model, shape, source=name)
    x = torch.randn(5, *shape)
    with torch.no_grad():
        expected, logits = model(x), rebuilt(x)
    if header.get("output_function") == "log_softmax":
        logits = torch.log_softmax(logits, 1)
    assert (expected - logits).abs().max() <= 1e-5
    assert header["num_classes"] == 10 and header["input_shape"] == list(shape)
    params, original = (sum(p.numel() for p in m.parameters()) for m in (rebuilt, model))
    # layers forward never calls are left out (EfficientNet's unused expansion of its first
    # block), and a chain (VGG) folds a conv's bias before batch norm into the norm
    assert 0.95 * original < params <= original


def test_what_the_importer_reads_from_real_code():
    """Spot checks of the mapping: projection shortcuts, depthwise convolutions, ReLU6, SE
    gating, concatenation, ceil-mode pooling, valid padding and the recorded softmax head."""
    ops = {}
    for name in ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "squeezenet1_1",
                 "conv1d_net", "mnist_net"):  # fmt: skip
        factory, shape = model_zoo.ZOO[name]
        genome, _, header = import_model(factory(channels=shape[0], width=0.25), shape)
        ops[name] = (genome, header)
    resnet, _ = ops["resnet18"]
    adds = [g for g in resnet.genes if g.op == "add"]
    assert len(adds) == 8  # one per BasicBlock
    strided = [g for g in resnet.genes if g.op == "convolution" and g.params["kernel"] == 1]
    assert len(strided) == 3 and all(g.params["stride"] == 2 for g in strided)  # projections
    mobilenet, _ = ops["mobilenet_v2"]
    depthwise = [g for g in mobilenet.genes if g.op == "convolution" and g.params["groups"] > 1]
    assert depthwise and all(g.params["groups"] == g.params["channels"] for g in depthwise)
    assert any(g.params.get("function") == "relu6" for g in mobilenet.genes)
    v3, _ = ops["mobilenet_v3_small"]
    gates = [g for g in v3.genes if g.op == "multiply"]
    assert len(gates) == 9 and any(g.params.get("function") == "hardswish" for g in v3.genes)
    squeeze, _ = ops["squeezenet1_1"]
    assert sum(g.op == "concat" for g in squeeze.genes) == 8
    assert all(g.params["ceil_mode"] for g in squeeze.genes if g.op == "max_pool")
    conv1d, _ = ops["conv1d_net"]
    assert [g.params["padding"] for g in conv1d.genes if g.op == "convolution"] == [1, "valid", 1]
    _, header = ops["mnist_net"]
    assert header["output_function"] == "log_softmax"


def test_import_and_genome_commands_on_a_graph(tmp_path):
    out = tmp_path / "resnet.yaml"
    result = cli("import", f"{ZOO_FILE}:resnet18", "--input-shape", "3,32,32", "--out", out,
                 cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = load_model(out)
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in model_zoo.resnet18().parameters()
    )
    shown = cli("genome", out, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "input (3, 32, 32), 10 classes (as imported from" in lines[0]
    assert any("add" in line and "<- g" in line for line in lines)  # inputs shown for merges
    assert lines[-1].startswith("  69 genes; lr 0.001; 11,181,642 parameters;")
    conv = next(line for line in lines if line.strip().startswith("g1 "))
    assert "-> (64, 16, 16)" in conv and "9,408 params" in conv


# name groups that share an input shape, and the task they are seeded on
GROUPS = {
    "images": (["resnet18", "mobilenet_v2", "mobilenet_v3_small", "vgg11_bn", "squeezenet1_1",
                "densenet", "efficientnet_b0", "resnet50"], {"size": 32, "channels": 3}),
    "small": (["lenet5", "mnist_net"], {"size": 28, "channels": 1}),
    "signal": (["conv1d_net"], {"size": 0}),
}  # fmt: skip


@pytest.mark.parametrize("group", GROUPS)
def test_imported_models_seed_a_search_that_reproduces_their_accuracy(tmp_path, group):
    names, options = GROUPS[group]
    seeds, accuracy = [], {}
    for name in names:
        model, accuracy[name] = model_zoo.trained(name, steps=12)
        shape = model_zoo.ZOO[name][1] if options["size"] else (1, 64)
        genome, rebuilt, header = import_model(model, shape, source=name)
        write_import(genome, rebuilt, header, tmp_path / f"{name}.yaml")
        seeds.append(str(tmp_path / f"{name}.yaml"))
    config = {
        "task": {"name": "tests.model_zoo:digits_images", "options": options},
        "space": {"kind": "graph"},
        "training": {"epochs": 1, "finetune_epochs": 0, "batch_size": 64},
        "search": {"population": max(2, len(seeds)), "generations": 1, "seed_genomes": seeds,
                   "seed_fill": "mutate",
                   "objectives": [{"name": "val_accuracy", "goal": "max"}],
                   "strategy": "regularized"},
        "parallel": {"backend": "inline"},
    }  # fmt: skip
    run = evonas.search(config, name=group, runs_dir=tmp_path / "runs", log=None)
    first = run.individuals[run.individuals["generation"] == 0].set_index("origin")
    for name, path in zip(names, seeds):
        row = first.loc[f"file:{path}"]
        assert row["status"] == "ok", row["error"]
        assert row["val_accuracy"] == pytest.approx(accuracy[name], abs=1e-9), name
    if group == "small":  # these learn within a few steps: the accuracies are not chance
        assert min(accuracy.values()) > 0.3
