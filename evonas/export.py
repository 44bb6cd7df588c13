"""Exporting trained models and loading them back, without ever unpickling arbitrary objects.

Formats:
- `state_dict`: one file, `torch.save` of a plain dict {format, genome, input_shape, num_classes,
  state_dict}; read back with `torch.load(weights_only=True)` by `load_model`.
- `torchscript`: a traced module (the genome as the extra file `genome.json`); runs without
  evonas through `torch.jit.load`.
- `onnx`: one self-contained file through `torch.onnx.export` (the optional `onnx` extra).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evonas.builder import build
from evonas.config import EXPORT_FORMATS
from evonas.genome import Genome, GenomeError, load_genome, parse_genome
from evonas.store import RunDirError, writable
from evonas.weights import UnsafeFileError, load_state_dict

FORMATS = EXPORT_FORMATS
SUFFIX = {"state_dict": ".pt", "torchscript": ".ts", "onnx": ".onnx"}
MARK = "evonas-model/1"


def write_model(
    model: nn.Module,
    genome: Genome,
    input_shape: tuple[int, ...],
    num_classes: int,
    fmt: str,
    out: str | Path,
) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.zeros(1, *input_shape)
    if fmt == "state_dict":
        torch.save(
            {
                "format": MARK,
                "genome": genome.to_dict(),
                "input_shape": list(input_shape),
                "num_classes": num_classes,
                "state_dict": model.state_dict(),
            },
            out,
        )
    elif fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(out), _extra_files={"genome.json": genome.to_json()})
    elif fmt == "onnx":
        write_onnx(model, example, out)
    else:
        raise ValueError(f"--format: expected one of {list(FORMATS)}, got {fmt!r}")
    return out


def write_onnx(model: nn.Module, example: torch.Tensor, out: Path) -> None:
    """One self-contained .onnx file (weights inside, fine below ONNX's 2 GB limit) with a
    dynamic batch dimension, through torch's exporter (the `onnx` extra: onnx, onnxscript)."""
    import contextlib
    import io
    import warnings

    from evonas.config import ConfigError

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"--format onnx: needs {' and '.join(missing)}; install the onnx extra: "
            "pip install 'evonas[onnx]'"
        )
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
    chatter = io.StringIO()  # the exporter narrates its steps; a failure still raises
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(out), input_names=["input"], output_names=["logits"],
            dynamic_axes=axes, external_data=False,
        )  # fmt: skip


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a model: from an evonas `state_dict` export, or a genome file (.yaml/.json) that
    records its input shape and classes, with weights beside it (same stem, `.pt`) if present."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml", ".json"):
        return _from_genome_file(path)
    data = load_state_dict(path)
    if not isinstance(data, dict) or data.get("format") != MARK:
        raise UnsafeFileError(
            f"{path}: not an evonas model export (evonas export --format state_dict)"
        )
    genome = parse_genome(data["genome"], where=str(path))
    model = build(genome, tuple(data["input_shape"]), int(data["num_classes"]))
    model.load_state_dict(data["state_dict"])
    return model.eval()


def _from_genome_file(path: Path) -> nn.Module:
    import yaml

    genome = load_genome(path)
    raw = yaml.safe_load(path.read_text())
    shape, classes = raw.get("input_shape"), raw.get("num_classes")
    if not shape or not classes:
        raise GenomeError(f"{path}: needs input_shape and num_classes to build a model")
    model = build(genome, tuple(shape), int(classes))
    weights = path.with_suffix(".pt")
    if weights.exists():
        model.load_state_dict(load_state_dict(weights))
    return model.eval()


def export_run(
    run_dir: str | Path, uids: list[int], fmt: str, out: str | Path, folder: bool = False
) -> list[Path]:
    """Export individuals of a run to the file `out`, or with `folder` (and always for several)
    into the directory `out`, one file `uid<N><suffix>` each."""
    from evonas.analysis import Run

    run = Run(run_dir)
    out = Path(out)
    into_folder = folder or len(uids) > 1
    if into_folder and out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out}: a file; exporting several models needs a folder")
    if not into_folder and out.is_dir():
        raise RunDirError(f"--out {out}: a folder; give the file to write (e.g. {out}/model.pt)")
    for uid in uids:  # an unknown uid is an error before anything is written
        run.genome(uid)
    writable(out / "x" if into_folder else out, "--out")
    paths = []
    for uid in uids:
        model = run.model(uid)
        genome = run.genome(uid)
        target = out / f"uid{uid}{SUFFIX[fmt]}" if into_folder else out
        input_shape = run.input_shape
        paths.append(write_model(model, genome, input_shape, _classes(model), fmt, target))
    return paths


def _classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


def genome_json(path: str | Path) -> dict[str, Any]:
    """The genome stored in a TorchScript export."""
    files = {"genome.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    return json.loads(files["genome.json"])
