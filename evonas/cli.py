"""Command line: `evonas search ...`. Bad input is a one-line error and exit code 2."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from evonas.config import ConfigError, preset_names, resolve
from evonas.genome import GenomeError
from evonas.plugins import PluginError
from evonas.store import RunDirError
from evonas.tasks import TaskError

USER_ERRORS = (ConfigError, GenomeError, PluginError, RunDirError, TaskError)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="evonas", description="Evolutionary neural-architecture search."
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    search = commands.add_parser(
        "search",
        help="run a new search into runs/NAME/",
        description="Run an evolutionary search. Settings: defaults < --preset or --config < "
        "--set < the flags below.",
    )
    source = search.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="YAML config file")
    source.add_argument(
        "--preset", metavar="NAME", help=f"built-in config: {', '.join(preset_names())}"
    )
    search.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set search.strategy=tournament (repeatable)",
    )
    search.add_argument("--name", help="run name (default: the preset name or a timestamp)")
    search.add_argument(
        "--runs-dir", default="runs", metavar="DIR", help="parent of run directories"
    )
    search.add_argument("--generations", type=_positive_int, metavar="N", help="search.generations")
    search.add_argument("--population", type=_positive_int, metavar="N", help="search.population")
    search.add_argument("--epochs", type=_positive_int, metavar="N", help="training.epochs")
    search.add_argument("--seed", type=_positive_int, metavar="N", help="seed")
    search.add_argument("--n-jobs", type=_positive_int, metavar="N", help="parallel.n_jobs")
    genome = commands.add_parser(
        "genome",
        help="check a genome file and show its layers, shapes, parameters and FLOPs",
        description="Validate a genome file against a task's input shape and a search space.",
    )
    genome.add_argument("file", metavar="FILE", help="genome .yaml/.yml/.json")
    source = genome.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="YAML config file (task and space)")
    source.add_argument("--preset", metavar="NAME", help="built-in config")
    genome.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return root


def cmd_genome(args: argparse.Namespace) -> int:
    from evonas.build import build, count_flops, count_params
    from evonas.config import space_settings
    from evonas.genome import load_genome
    from evonas.spaces import SequentialSpace
    from evonas.tasks import load_task

    genome = load_genome(args.file)
    config = resolve(preset=args.preset, config_file=args.config, sets=args.set)
    task = load_task(config["task"])
    space = SequentialSpace(task.input_shape, task.num_classes, **space_settings(config))
    try:
        shapes = space.shapes(genome)
    except ValueError as exc:
        raise GenomeError(f"{args.file}: infeasible for input {task.input_shape}: {exc}") from None
    print(f"{args.file}: input {task.input_shape}, {task.num_classes} classes ({task.name})")
    for gene, shape in zip(genome.genes, shapes):
        params = " ".join(f"{k}={v}" for k, v in gene.params.items())
        print(f"  g{gene.id:<11} {gene.op:<9} {params:<60} -> {shape}")
    model = build(genome, task.input_shape, task.num_classes)
    flops = count_flops(model, task.input_shape)
    print(f"  lr {genome.training['lr']:g}; {count_params(model):,} parameters; {flops:,} FLOPs")
    for problem in space.problems(genome):
        print(f"  note: outside the configured space: {problem}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from evonas.evolve import run_search

    config = resolve(
        preset=args.preset,
        config_file=args.config,
        sets=args.set,
        overrides={
            "search.generations": args.generations,
            "search.population": args.population,
            "training.epochs": args.epochs,
            "seed": args.seed,
            "parallel.n_jobs": args.n_jobs,
        },
    )
    name = args.name or args.preset or time.strftime("run-%Y%m%d-%H%M%S")
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"--name: expected a plain directory name, got {name!r}")
    run_dir = Path(args.runs_dir) / name
    print(f"evonas: searching into {run_dir}", flush=True)
    result = run_search(config, run_dir, log=lambda line: print(line, flush=True))
    print_summary(result, config["search"]["objectives"])
    return 0


def print_summary(result, objectives: list[dict[str, str]]) -> None:
    individuals = result.individuals
    ok = individuals[individuals["status"] == "ok"]
    failed = len(individuals) - len(ok)
    print(f"\n{len(individuals)} evaluations ({failed} failed) in {result.run_dir}")
    names = [o["name"] for o in objectives]
    for objective in objectives:
        name = objective["name"]
        if ok.empty or name not in ok:
            continue
        index = ok[name].idxmax() if objective["goal"] == "max" else ok[name].idxmin()
        best = ok.loc[index]
        details = [f"uid {best['uid']}"] + [f"{n} {best[n]:.4g}" for n in names if n != name]
        if "test_accuracy" in ok and "test_accuracy" not in names:
            details.append(f"test_accuracy {best['test_accuracy']:.4f}")
        print(f"best {name}: {best[name]:.4g} ({', '.join(details)})")
    if not result.pareto.empty:
        columns = ["uid", "generation", *names]
        if "test_accuracy" in result.pareto and "test_accuracy" not in names:
            columns.append("test_accuracy")
        print("\nPareto front:")
        print(result.pareto[columns].to_string(index=False))
    print(f"\nplots: {result.run_dir / 'plots'}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return {"search": cmd_search, "genome": cmd_genome}[args.command](args)
    except USER_ERRORS as exc:
        print(f"evonas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nevonas: interrupted; every finished evaluation is in the journal", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
