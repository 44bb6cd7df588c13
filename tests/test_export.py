import pickle

import pytest
import torch

import evonas
from evonas.export import export_run, genome_json, load_model
from evonas.genome import load_genome, save_genome
from evonas.weights import UnsafeFileError, load_state_dict
from tests.conftest import ROOT, cli


def outputs(model, shape):
    torch.manual_seed(0)
    x = torch.randn(5, *shape)
    with torch.no_grad():
        return model.eval()(x)


def test_export_formats_reload_to_identical_outputs(trained, tmp_path):
    uid = int(trained.best()["uid"])
    model = trained.model(uid)
    shape = tuple(trained.meta["input_shape"])
    expected = outputs(model, shape)
    for fmt in ("state_dict", "torchscript"):
        result = cli("export", str(trained.path), "--individual", str(uid), "--format", fmt,
                         "--out", str(tmp_path / f"m.{fmt}"), cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
    reloaded = load_model(tmp_path / "m.state_dict")
    assert torch.allclose(outputs(reloaded, shape), expected, atol=1e-6)
    scripted = torch.jit.load(str(tmp_path / "m.torchscript"))  # no evonas needed to run it
    assert torch.allclose(outputs(scripted, shape), expected, atol=1e-6)
    assert genome_json(tmp_path / "m.torchscript") == trained.genome(uid).to_dict()


def test_export_best_and_pareto(trained, tmp_path):
    best = cli("export", str(trained.path), "--best", "--objective", "params",
                   "--out", str(tmp_path / "small.pt"), cwd=tmp_path)  # fmt: skip
    assert best.returncode == 0, best.stderr
    small = load_model(tmp_path / "small.pt")
    assert sum(p.numel() for p in small.parameters()) == trained.best("params")["params"]
    front = cli("export", str(trained.path), "--pareto", "--out", str(tmp_path / "front"),
                    cwd=tmp_path)  # fmt: skip
    assert front.returncode == 0, front.stderr
    assert len(list((tmp_path / "front").glob("uid*.pt"))) == len(trained.pareto())
    uid = int(trained.best()["uid"])
    (one,) = export_run(trained.path, [uid], "state_dict", tmp_path / "one", folder=True)
    assert one == tmp_path / "one" / f"uid{uid}.pt"  # a front of one model is still a folder
    bad = cli("export", str(trained.path), "--individual", "999", cwd=tmp_path)
    assert bad.returncode == 2 and "no individual with uid 999" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_onnx_export_is_one_file_that_onnxruntime_runs_identically(trained, tmp_path):
    import onnxruntime as ort  # the dev extras install the onnx extra

    uid = int(trained.best()["uid"])
    result = cli("export", trained.path, "--individual", uid, "--format", "onnx", "--out",
                 tmp_path / "m.onnx", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # weights inside, no .data file
    model = trained.model(uid)
    x = torch.randn(5, *tuple(trained.meta["input_shape"]))  # another batch size than traced
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    (logits,) = session.run(None, {"input": x.numpy()})
    assert torch.allclose(torch.from_numpy(logits), model(x).detach(), atol=1e-4)


def test_onnx_without_the_extra_is_a_one_line_error(trained, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    without = lambda name, *rest: None if name == "onnxscript" else find_spec(name, *rest)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", without)
    result = cli("export", trained.path, "--best", "--format", "onnx", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "evonas: error: --format onnx: needs onnxscript; install the onnx extra: "
        "pip install 'evonas[onnx]'"
    )


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickle_payload_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(UnsafeFileError, match="refusing to unpickle arbitrary objects"):
        load_state_dict(evil)
    with pytest.raises(UnsafeFileError, match="refusing to unpickle"):
        load_model(evil)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, plain)
    with pytest.raises(UnsafeFileError, match="not an evonas model export"):
        load_model(plain)


def test_build_and_load_model_from_a_genome_file(tmp_path):
    genome = load_genome(ROOT / "genomes" / "mnist1d_convbase.yaml")
    path = tmp_path / "convbase.yaml"
    save_genome(genome, path)
    text = path.read_text() + "input_shape: [1, 40]\nnum_classes: 10\n"
    path.write_text(text)
    model = evonas.build(load_genome(path), (1, 40), 10)
    torch.save(model.state_dict(), tmp_path / "convbase.pt")
    again = load_model(path)
    assert torch.allclose(outputs(again, (1, 40)), outputs(model, (1, 40)))
