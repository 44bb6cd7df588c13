"""Training throughput: evonas's trainer against a plain, well-written PyTorch loop, side by side.

    .venv/bin/python benchmarks/train_speed.py [--cifar DIR] [--samples 5000] [--epochs 2]
        [--batch 128] [--threads 1] [--precision fp32] [--device auto] [--repeats 3]

Both sides train the same genomes (built by evonas) on the same CIFAR-10-shaped data (the binary
files in `--cifar` where given, else synthetic uint8 images of the same shape), for the same
epochs, batch size, optimizer (Adam), cosine schedule and precision. The plain loop is what a
careful user writes by hand: uint8 data moved to the device once, a seeded permutation per
epoch, each batch scaled and standardised there, `zero_grad(set_to_none=True)`, autocast and a
grad scaler when asked, no per-step `.item()`. The runs alternate (evonas, plain, evonas, ...) so
a noisy machine slows both; the table gives each side's median images/s, their ratio (aim:
evonas >= 0.95x), and evaluations/hour of the whole evonas evaluation (training, validation and
test accuracy, FLOPs, latency) at these settings. Writes benchmarks/results/train_speed.csv.

`--concurrent 1,2,4` also trains k copies at once in k processes on the one device (what
`parallel.evaluations_per_gpu: k` does) and reports their total images/s against one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evonas.batches import TensorBatches, model_input  # noqa: E402
from evonas.builder import build, count_params  # noqa: E402
from evonas.evaluate import run_job  # noqa: E402
from evonas.genome import parse_genome  # noqa: E402
from evonas.records import Job  # noqa: E402
from evonas.tasks import load_task  # noqa: E402
from evonas.train import DTYPES, train  # noqa: E402

RESULTS = Path(__file__).with_name("results")


def conv(gene_id: int, width: int) -> dict:
    return {"id": gene_id, "op": "conv", "width": width, "kernel": 3, "stride": 1,
            "activation": "relu", "batch_norm": True}  # fmt: skip


def pool(gene_id: int) -> dict:
    return {"id": gene_id, "op": "pool", "kind": "max", "size": 2}


GENOMES = {  # a small and a mid-sized CNN for 32x32 colour images
    "cnn-small": [conv(1, 16), pool(2), conv(3, 32), pool(4),
                  {"id": 5, "op": "dense", "units": 64, "activation": "relu"}],
    "cnn-mid": [conv(1, 32), pool(2), conv(3, 64), pool(4), conv(5, 128), pool(6),
                {"id": 7, "op": "dense", "units": 128, "activation": "relu"}],
}  # fmt: skip


def synthetic_cifar(folder: Path, samples: int) -> str:
    """CIFAR-10 binary files of random images (label byte, then 3072 pixel bytes), so that
    the benchmark reads them through the same reader as the real files."""
    rng = np.random.default_rng(0)
    per_file = -(-samples // 5)
    names = [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]
    for name, count in zip(names, [per_file] * 5 + [1000]):
        records = rng.integers(0, 256, (count, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        (folder / name).write_bytes(records.tobytes())
    return str(folder)


def cifar_task(folder: str, samples: int) -> dict:
    return {"name": "cifar10", "options": {"path": folder, "limit": samples},
            "val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0}  # fmt: skip


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scaling, args) -> float:
    """The hand-written loop; returns seconds."""
    device = x.device
    mean = torch.tensor(scaling.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(scaling.std, device=device).view(1, -1, 1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = args.epochs * -(-len(x) // args.batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    half = args.precision != "fp32"
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    generator = torch.Generator().manual_seed(0)
    sync(device)
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator).to(device)
        for begin in range(0, len(x), args.batch):
            index = order[begin : begin + args.batch]
            inputs = (x[index].float() / 255 - mean) / std
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=DTYPES.get(args.precision), enabled=half):
                loss = nn.functional.cross_entropy(model(inputs).float(), y[index])
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
    sync(device)
    return time.perf_counter() - start


def evonas_loop(model: nn.Module, source: TensorBatches, args) -> float:
    settings = {"epochs": args.epochs, "batch_size": args.batch, "precision": args.precision,
                "channels_last": False, "schedule": "cosine"}  # fmt: skip
    sync(source.device)
    start = time.perf_counter()
    train(model, source, settings, 1e-3, 0)
    sync(source.device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluations_per_hour(layers: list, args, task: dict) -> float:
    """Whole evaluations (training, accuracies, FLOPs, latency) through the worker's entry."""
    job = Job(0, {"layers": layers, "training": {"lr": 1e-3}}, 0, task,
              {"optimizer": "adam", "epochs": args.epochs, "batch_size": args.batch,
               "weight_decay": 0.0, "precision": args.precision, "threads": args.threads},
              device="gpu" if args.device == "cuda" else "cpu")  # fmt: skip
    start = time.perf_counter()
    result = run_job(job.to_dict())
    if result["status"] != "ok":
        raise SystemExit(f"evaluation failed: {result['error']}")
    return 3600 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", help="folder of the CIFAR-10 binary files (else synthetic)")
    parser.add_argument("--samples", type=int, default=5000,
                        help="images (80 %% train, 20 %% validation)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side per genome")
    parser.add_argument("--genomes", default=",".join(GENOMES), help="names from GENOMES")
    parser.add_argument("--concurrent", default="",
                        help="e.g. 1,2,4: also time that many evaluations at once on the "
                        "device (evaluations_per_gpu)")  # fmt: skip
    parser.add_argument("--results", default=str(RESULTS), help="folder of the CSV written")
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.cifar or synthetic_cifar(Path(tmp), args.samples)
        what = "CIFAR-10 (binary files)" if args.cifar else "synthetic uint8 CIFAR-10 files"
        task = cifar_task(folder, args.samples)
        run(args, device, load_task(task), task, what)


def run(args, device: torch.device, data, task: dict, what: str) -> None:
    scaling = data.scaling
    x, y = torch.from_numpy(data.x_train).to(device), torch.from_numpy(data.y_train).to(device)
    source = TensorBatches(x, y, scaling)
    assert torch.equal(model_input(x[:4], scaling), source.take(torch.arange(4))[0])
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {args.threads} thread(s)"
    )
    print(f"{what}: {len(x)} images, {args.epochs} epochs, batch {args.batch}, "
          f"{args.precision}, {name}")  # fmt: skip
    rows = []
    for genome_name in args.genomes.split(","):
        layers = GENOMES[genome_name]
        genome = parse_genome({"layers": layers})
        times: dict[str, list[float]] = {"evonas": [], "plain": []}
        for side in ("evonas", "plain"):  # untimed: first-call costs (allocator, kernels)
            warm = build(genome, (3, 32, 32), 10).to(device)
            evonas_loop(warm, source, args) if side == "evonas" else plain_loop(
                warm, x, y, scaling, args)  # fmt: skip
        for repeat in range(args.repeats):
            for side in ("evonas", "plain") if repeat % 2 == 0 else ("plain", "evonas"):
                torch.manual_seed(repeat)
                model = build(genome, (3, 32, 32), 10).to(device)
                seconds = (evonas_loop(model, source, args) if side == "evonas"
                           else plain_loop(model, x, y, scaling, args))  # fmt: skip
                times[side].append(seconds)
        images = args.epochs * len(x)
        ours, theirs = (images / statistics.median(times[s]) for s in ("evonas", "plain"))
        per_hour = evaluations_per_hour(layers, args, task)
        rows.append({"genome": genome_name, "params": count_params(build(genome, (3, 32, 32), 10)),
                     "device": name, "precision": args.precision,
                     "evonas_images_per_s": round(ours, 1), "plain_images_per_s": round(theirs, 1),
                     "ratio": round(ours / theirs, 3),
                     "evaluations_per_hour": round(per_hour, 1)})  # fmt: skip
        print(rows[-1])
    table = pd.DataFrame(rows)
    Path(args.results).mkdir(parents=True, exist_ok=True)
    table.to_csv(Path(args.results) / "train_speed.csv", index=False)
    print(table.to_string(index=False))
    if args.concurrent:
        shared = concurrency(args, device, task, name)
        shared.to_csv(Path(args.results) / "train_speed_concurrent.csv", index=False)
        print(shared.to_string(index=False))


def concurrency(args, device: torch.device, task: dict, name: str) -> pd.DataFrame:
    """k evaluations training at once on one device (k processes, as `evaluations_per_gpu: k`
    runs them), against one: the total images/s of each k."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    for genome_name in args.genomes.split(","):
        base = None
        for k in (int(v) for v in args.concurrent.split(",")):
            with context.Manager() as manager, ProcessPoolExecutor(k, mp_context=context) as pool:
                barrier = manager.Barrier(k)
                futures = [pool.submit(one_of_many, GENOMES[genome_name], task, str(device),
                                       vars(args), barrier) for _ in range(k)]  # fmt: skip
                done = [f.result() for f in futures]
            total = sum(images for _, images in done) / max(seconds for seconds, _ in done)
            base = base or total
            rows.append({"genome": genome_name, "device": name, "evaluations_at_once": k,
                         "total_images_per_s": round(total, 1),
                         "speedup": round(total / base, 2)})  # fmt: skip
            print(rows[-1])
    return pd.DataFrame(rows)


def one_of_many(
    layers: list, task: dict, device_name: str, options: dict, barrier
) -> tuple[float, int]:
    """One of k processes: warm up, wait for the others, then time one training; returns its
    seconds and the images it trained on."""
    args = argparse.Namespace(**options)
    torch.set_num_threads(args.threads)
    device = torch.device(device_name)
    data = load_task(task)
    x, y = torch.from_numpy(data.x_train).to(device), torch.from_numpy(data.y_train).to(device)
    source = TensorBatches(x, y, data.scaling)
    genome = parse_genome({"layers": layers})
    evonas_loop(build(genome, (3, 32, 32), 10).to(device), source, args)
    barrier.wait()
    seconds = evonas_loop(build(genome, (3, 32, 32), 10).to(device), source, args)
    return seconds, args.epochs * len(x)


if __name__ == "__main__":
    main()
