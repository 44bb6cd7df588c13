"""Import the coverage set (tests/model_zoo.py) at the papers' widths: genes, parameters, import
time and the largest output difference from the original.

    .venv/bin/python benchmarks/import_models.py [--width 1.0] [--repeats 3] [--models a,b]
        [--image-size 224]

Each model is built with random weights and random batch-norm statistics, then imported
(trace, map, rebuild, copy weights, compare on 4 random inputs in eval mode). The time is the
median of `--repeats` imports of the same model (building the original is not counted).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evonas.importer import UnsupportedModelError, import_model  # noqa: E402
from tests.model_zoo import ZOO  # noqa: E402
from tests.test_model_zoo import with_statistics  # noqa: E402


def measure(name: str, width: float, repeats: int, image_size: int) -> dict:
    factory, shape = ZOO[name]
    if image_size and shape[-1] == 32:  # the CIFAR-sized models also take ImageNet-sized inputs
        shape = (shape[0], image_size, image_size)
    torch.manual_seed(0)
    model = with_statistics(factory(channels=shape[0], width=width)).eval()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        genome, rebuilt, header = import_model(model, shape, source=name)
        seconds.append(time.perf_counter() - start)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = rebuilt(x)
        if header.get("output_function") == "log_softmax":
            logits = torch.log_softmax(logits, 1)
        difference = float((model(x) - logits).abs().max())
    return {"model": name, "input": "x".join(map(str, shape)),
            "kind": "graph" if genome.is_graph else "chain", "genes": len(genome.genes),
            "params": sum(p.numel() for p in rebuilt.parameters()),
            "seconds": statistics.median(seconds), "difference": difference}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(ZOO), help="comma-separated names")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--image-size",
        type=int,
        default=0,
        help="input size of the 3x32x32 models instead (e.g. 224)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, width {args.width}")
    print("| model | input | genome | genes | parameters | import s | max output difference |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        try:
            r = measure(name, args.width, args.repeats, args.image_size)
        except UnsupportedModelError as exc:  # e.g. the CIFAR-style VGG on 224x224 inputs
            print(f"| {name} | skipped: {exc} |")
            continue
        print(f"| {r['model']} | {r['input']} | {r['kind']} | {r['genes']} | {r['params']:,} | "
              f"{r['seconds']:.2f} | {r['difference']:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
