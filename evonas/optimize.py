"""Compress a trained individual of a run: weight pruning, int8 quantization, distillation.

`optimize(run_dir, uid)` measures every variant the same way on the run's task and writes each
one under `RUN_DIR/optimized/uid<N>/` with `table.csv`:

- `original`: the trained model as the search left it;
- `pruned-<s>`: global magnitude pruning of conv and linear weights to sparsity s, then
  `finetune_epochs` of training with the pruned weights held at zero (the zeros stay in the
  tensors: the file compresses, FLOPs and latency do not drop);
- `channels-<f>`: structured pruning that physically removes the share f of every prunable
  channel group (chains: of every layer), keeping the most important channels (`importance`:
  l1, bn or taylor) in every tied layer, then `finetune_epochs` of training: a smaller dense
  network, so FLOPs and CPU latency drop;
- `int8-dynamic`: PyTorch dynamic quantization (int8 weights of linear layers, CPU inference;
  convolutions stay float32);
- `distilled`: a student trained `distill_epochs` with knowledge distillation from the original:
  the genome of `student` (a uid of the run), or by default the original with every layer half as
  wide, starting from the original's most important channels.

Columns: params (non-zero parameters), file_bytes (the saved state_dict), gzip_bytes (that file
gzip-compressed: what sparsity saves in transfer), flops (forward FLOPs of one sample as dense
float operations; unchanged by pruning and quantization), latency_ms (median CPU forward of one
sample, one thread), val_accuracy, test_accuracy.
"""

from __future__ import annotations

import gzip
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from evonas.batches import Batches, split_of
from evonas.builder import build, count_flops, latency_ms
from evonas.genome import Genome, save_genome
from evonas.store import writable
from evonas.train import accuracy, logits_of, train

SPARSITIES = (0.5, 0.75, 0.9)
CHANNEL_FRACTIONS = (0.25, 0.5)


def optimize(
    run_dir: str | Path,
    uid: int,
    sparsities: tuple[float, ...] = SPARSITIES,
    finetune_epochs: int = 2,
    distill_epochs: int = 0,
    student: int | None = None,
    seed: int = 0,
    channel_fractions: tuple[float, ...] = CHANNEL_FRACTIONS,
    importance: str = "l1",
    out: str | Path | None = None,
) -> pd.DataFrame:
    """Measure and save the compressed variants of `uid` (into `out`, by default
    RUN_DIR/optimized/uid<N>); returns the table (one row each). `distill_epochs` 0 means the
    run's `training.epochs`."""
    from evonas.analysis import Run
    from evonas.tasks import load_task

    run = Run(run_dir)
    teacher = run.model(uid)
    genome = run.genome(uid)
    data = load_task(run.config.task.model_dump())
    settings = {**run.config.training.model_dump(), "threads": 1, "timeout": 0}
    lr = float(genome.training["lr"])
    out = writable(Path(out) if out else run.path / "optimized" / f"uid{uid}", "--out")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    train_set = split_of(data, "train", cpu, settings)
    val_set = split_of(data, "val", cpu, settings)
    test_set = split_of(data, "test", cpu, settings) if data.has_test else None

    def measure(name: str, model: nn.Module, flops_of: nn.Module | None = None) -> dict[str, Any]:
        path = out / f"{name}.pt"
        torch.save(model.state_dict(), path)
        raw = path.read_bytes()
        model.eval()
        row = {
            "variant": name,
            "params": nonzero_params(model),
            "file_bytes": len(raw),
            "gzip_bytes": len(gzip.compress(raw, 6, mtime=0)),
            "flops": count_flops(flops_of or model, data.input_shape),
            "latency_ms": round(latency_ms(model, data.input_shape, repeats=50), 4),
            "val_accuracy": accuracy(model, val_set),
        }
        if test_set is not None:
            row["test_accuracy"] = accuracy(model, test_set)
        return row

    rows = [measure("original", teacher)]
    for sparsity in sparsities:
        model = _copy_of(teacher, genome, data)
        magnitude_prune(model, sparsity, train_set, {**settings, "epochs": finetune_epochs}, lr,
                        seed)  # fmt: skip
        rows.append(measure(f"pruned-{sparsity:g}", model, flops_of=teacher))
    for fraction in channel_fractions:
        small_genome, model = prune_channels(teacher, genome, fraction, data, importance, seed)
        if finetune_epochs > 0:
            train(model, train_set, {**settings, "epochs": finetune_epochs}, lr, seed)
        rows.append(measure(f"channels-{fraction:g}", model))
        save_genome(small_genome, out / f"channels-{fraction:g}.yaml")
    quantized = quantize_int8(teacher)
    if quantized is not None:
        rows.append(measure("int8-dynamic", quantized, flops_of=teacher))
    student_model = _student(run, teacher, genome, student, data, seed)
    epochs = distill_epochs or int(settings["epochs"])
    teacher_logits = logits_of(teacher, train_set)
    student_lr = float(run.genome(student).training["lr"]) if student is not None else lr
    train(student_model, train_set, {**settings, "epochs": epochs}, student_lr, seed,
          teacher_logits=teacher_logits)  # fmt: skip
    rows.append(measure("distilled", student_model))
    table = pd.DataFrame(rows)
    table.to_csv(out / "table.csv", index=False)
    return table


def _copy_of(model: nn.Module, genome: Genome, data) -> nn.Module:
    twin = build(genome, data.input_shape, data.num_classes)
    twin.load_state_dict(model.state_dict())
    return twin


def nonzero_params(model: nn.Module) -> int:
    """Non-zero parameters; for a dynamically quantized model, its packed int8 weights too."""
    from torch.ao.nn.quantized import Linear as QuantizedLinear

    count = sum(int((p != 0).sum()) for p in model.parameters())
    for module in model.modules():
        if isinstance(module, QuantizedLinear):  # packed weights, not parameters
            weight = module.weight()
            count += int((weight.dequantize() != 0).sum())
            if module.bias() is not None:
                count += int((module.bias() != 0).sum())
    return count


def magnitude_prune(
    model: nn.Module, sparsity: float, source: Batches, settings: dict[str, Any], lr: float,
    seed: int,
) -> None:  # fmt: skip
    """Zero the `sparsity` share of conv and linear weights with the smallest magnitude (one
    global threshold), fine-tune with the mask held, and make the zeros permanent."""
    from torch.nn.utils import prune

    targets = [
        (module, "weight")
        for module in model.modules()
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Linear)
    ]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=sparsity)
    if settings["epochs"] > 0:
        train(model, source, settings, lr, seed)
    for module, name in targets:
        prune.remove(module, name)


def quantize_int8(model: nn.Module) -> nn.Module | None:
    """Dynamic int8 quantization of the linear layers; None where this torch lacks it."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def _student(run, teacher: nn.Module, genome: Genome, student: int | None, data, seed: int):
    """The student: another individual's architecture (fresh weights), or the teacher at half
    width starting from its most important channels."""
    torch.manual_seed(seed)
    if student is not None:
        return build(run.genome(student), data.input_shape, data.num_classes)
    return prune_channels(teacher, genome, 0.5, data, "l1", seed)[1]


def narrowed(genome: Genome, fraction: float, input_shape: tuple[int, ...]) -> Genome:
    """The genome with the share `fraction` of the channels of every channel group that can
    change (graphs) or of every conv and dense layer (chains) removed."""
    from evonas.channels import channel_groups, with_width
    from evonas.operators import PRUNABLE, narrower

    if genome.is_graph:
        genes = genome.genes
        for group in channel_groups(genes, input_shape).prunable():
            genes = with_width(genes, group, narrower(group.width, fraction))
    else:
        genes = tuple(
            g.with_params(**{PRUNABLE[g.op]: narrower(g.params[PRUNABLE[g.op]], fraction)})
            if g.op in PRUNABLE and g.params[PRUNABLE[g.op]] > 1
            else g
            for g in genome.genes
        )
    return Genome(genes=tuple(genes), training=dict(genome.training))


def prune_channels(
    model: nn.Module, genome: Genome, fraction: float, data, importance: str, seed: int
) -> tuple[Genome, nn.Module]:
    """Structured pruning: the narrowed genome and its (smaller) model, holding `model`'s most
    important channels by `importance` (l1, bn or taylor) in every tied layer."""
    from evonas.graph_inherit import inherit_graph
    from evonas.inherit import inherit
    from evonas.weights import plan, save_state_dict

    small = narrowed(genome, fraction, data.input_shape)
    torch.manual_seed(seed)
    pruned = build(small, data.input_shape, data.num_classes)
    with tempfile.TemporaryDirectory() as folder:
        source = str(Path(folder) / "original.pt")
        save_state_dict(model, source)
        how = plan(small, [(0, genome, source)], importance)
        (inherit_graph if small.is_graph else inherit)(pruned, small, data.input_shape, how,
                                                       seed, data)  # fmt: skip
    return small, pruned
