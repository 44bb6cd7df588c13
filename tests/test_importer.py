import pytest
import torch
import yaml

from evonas.export import load_model
from evonas.importer import UnsupportedModelError, import_model
from tests import import_models
from tests.conftest import ROOT, cli

MODELS = ROOT / "tests" / "import_models.py"
CASES = {
    "cnn1d": (1, 40),
    "net2d": (1, 8, 8),
    "mlp": None,  # inferred from the first Linear
    "resnet": (3, 8, 8),
}


def same_outputs(a, b, shape):
    x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", CASES)
def test_import_rebuilds_identical_models(name):
    torch.manual_seed(0)
    model = getattr(import_models, name)()
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    genome, rebuilt, header = import_model(model, CASES[name], source=name)
    shape = tuple(header["input_shape"])
    assert same_outputs(model, rebuilt, shape)
    assert header["num_classes"] == (3 if name == "mlp" else 10)


def test_import_ops_are_what_the_model_has():
    genome, _, _ = import_model(import_models.resnet(), (3, 8, 8))
    assert [g.op for g in genome.genes] == ["conv", "residual", "pool", "residual", "residual"]
    genome, _, _ = import_model(import_models.cnn1d(), (1, 40))
    assert [g.op for g in genome.genes] == ["conv", "pool", "conv", "dense", "dropout"]
    assert genome.genes[2].params["stride"] == 2 and genome.genes[2].params["batch_norm"]


def test_unsupported_modules_are_listed_with_their_paths():
    with pytest.raises(UnsupportedModelError) as info:
        import_model(import_models.unsupported(), (1, 40))
    message = str(info.value)
    assert message.startswith("cannot represent 2 (Upsample): no evonas gene for this layer")
    with pytest.raises(UnsupportedModelError) as info:
        import_model(import_models.ConvBase(), (1, 40))
    assert "lstm (LSTM): no evonas gene for this layer; function getitem" in str(info.value)
    with pytest.raises(UnsupportedModelError, match="pass --input-shape"):
        import_model(import_models.cnn1d())


def test_import_command_writes_genome_and_weights(tmp_path):
    out = tmp_path / "genomes" / "cnn.yaml"
    result = cli("import", f"{MODELS}:cnn1d", "--out", str(out), "--input-shape", "1,40",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(out.read_text())
    assert data["source"] == f"{MODELS}:cnn1d"
    assert data["input_shape"] == [1, 40] and data["num_classes"] == 10
    assert out.with_suffix(".pt").exists()
    rebuilt = load_model(out)
    genome_check = cli("genome", str(out), "--set", "task.name=synthetic",
                           "--set", "task.options={length: 40}", cwd=tmp_path)  # fmt: skip
    assert genome_check.returncode == 0, genome_check.stderr
    assert sum(p.numel() for p in rebuilt.parameters()) > 0


def test_import_command_with_weights_reproduces_them(tmp_path):
    torch.manual_seed(3)
    original = import_models.mlp()
    torch.save(original.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "mlp.yaml"
    result = cli("import", f"{MODELS}:mlp", "--weights", str(tmp_path / "w.pt"),
                     "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert same_outputs(original, load_model(out), (20,))


def test_import_errors_are_one_line(tmp_path):
    bad = cli("import", f"{MODELS}:unsupported", "--out", str(tmp_path / "x.yaml"),
                  "--input-shape", "1,40", cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and "2 (Upsample)" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    missing = cli("import", f"{MODELS}:nothing", "--out", "x.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "has no function 'nothing'" in missing.stderr
    shape = cli("import", f"{MODELS}:cnn1d", "--out", "x.yaml", "--input-shape", "a,b",
                    cwd=tmp_path)  # fmt: skip
    assert shape.returncode == 2 and "--input-shape: expected integers" in shape.stderr
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"\x80\x04cos\nsystem\n.")
    payload = cli("import", f"{MODELS}:mlp", "--weights", str(evil), "--out", "x.yaml",
                      cwd=tmp_path)  # fmt: skip
    assert payload.returncode == 2 and "refusing to unpickle" in payload.stderr


def test_lazy_layers_are_sized_by_one_batch_of_the_input_shape():
    torch.manual_seed(0)
    model = import_models.lazy()
    genome, rebuilt, _ = import_model(model, (1, 40))
    assert same_outputs(model, rebuilt, (1, 40))


def test_models_outside_the_chain_vocabulary_become_graphs():
    for factory, shape in ((import_models.flattened_head, (1, 40)),
                           (import_models.depthwise, (3, 8, 8))):  # fmt: skip
        torch.manual_seed(0)
        model = factory()
        genome, rebuilt, _ = import_model(model, shape)
        assert genome.is_graph and same_outputs(model, rebuilt, shape)


def test_functions_methods_and_constants_import_with_a_softmax_head():
    torch.manual_seed(0)
    model = import_models.functional()
    genome, rebuilt, header = import_model(model, (3, 6, 6))
    assert header["output_function"] == "softmax"
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(model(x), torch.softmax(rebuilt(x), 1), atol=1e-6)
    functions = [g.params["function"] for g in genome.genes if g.op == "activation"]
    assert functions == ["elu", "relu6", "relu6", "gelu", "leaky_relu"]
    assert [g.params for g in genome.genes if g.op == "scale"] == [
        {"factor": 1.0, "shift": 3.0}, {"factor": 1 / 6, "shift": 0.0},
        {"factor": 1.0, "shift": -0.5},
    ]  # fmt: skip


def test_single_tensor_concatenation_and_stochastic_depth_are_what_they_compute():
    torch.manual_seed(0)
    model = import_models.DenseAndDeep()
    genome, rebuilt, _ = import_model(model, (3, 6, 6))
    assert same_outputs(model, rebuilt, (3, 6, 6))
    assert "concat" not in [g.op for g in genome.genes]


def test_repeated_unsupported_operations_are_grouped_in_the_message():
    with pytest.raises(UnsupportedModelError) as info:
        import_model(import_models.Sliced(), (4, 5, 5))
    message = str(info.value)
    assert "function getitem x11 in node getitem, node getitem_1, node getitem_2, ...: " in message
    assert message.count("getitem") < 6 and "\n" not in message


def test_a_model_that_does_not_return_logits_is_told_so():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    with pytest.raises(UnsupportedModelError, match=r"^the model's output has shape \(4, 5, 5\)"):
        import_model(model, (3, 5, 5))
