"""Command line: `evonas search ...`. Bad input is a one-line error and exit code 2."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from pathlib import Path

from evonas.config import ConfigError, preset_names, resolve
from evonas.genome import GenomeError
from evonas.plugins import PluginError
from evonas.store import RunDirError, UnsafeFileError
from evonas.tasks import TaskError

USER_ERRORS = (ConfigError, GenomeError, PluginError, RunDirError, TaskError, UnsafeFileError)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _sparsities(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.5,0.9, got {text!r}") from None
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"each sparsity must be in (0, 1), got {text!r}")
    return values


def _duration(text: str) -> float:
    """Seconds from '90', '90s', '30m', '2h' or '1d'."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90s, 30m or 2h, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _add_limits(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--generations", type=_positive_int, metavar="N", help="search.generations"
    )
    command.add_argument(
        "--max-time",
        type=_duration,
        metavar="T",
        help="stop at the first generation boundary after T (e.g. 90m, 2h)",
    )
    command.add_argument(
        "--max-evaluations",
        type=_positive_int,
        metavar="N",
        help="stop before a generation would exceed N evaluations",
    )
    command.add_argument("--n-jobs", type=_positive_int, metavar="N", help="parallel.n_jobs")
    command.add_argument(
        "--backend", choices=["loky", "dask", "ray", "inline"], help="parallel.backend"
    )
    command.add_argument(
        "--address", metavar="ADDR", help="parallel.address: a Dask scheduler or Ray cluster"
    )


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
    search.add_argument("--population", type=_positive_int, metavar="N", help="search.population")
    search.add_argument("--epochs", type=_positive_int, metavar="N", help="training.epochs")
    search.add_argument("--seed", type=_positive_int, metavar="N", help="seed")
    search.add_argument(
        "--seed-genome", action="append", default=None, metavar="FILE",
        help="put this genome (weights: FILE with .pt beside it) in generation 0 (repeatable)",
    )  # fmt: skip
    search.add_argument(
        "--seed-run",
        metavar="RUN_DIR",
        help="put an earlier run's Pareto front (or --seed-top K) in generation 0",
    )
    search.add_argument(
        "--seed-top",
        type=_positive_int,
        metavar="K",
        help="with --seed-run: its K best on the first objective",
    )
    _add_limits(search)
    resume = commands.add_parser(
        "resume",
        help="continue a run after Ctrl-C, kill -9 or a reboot, or extend it",
        description="Continue a run exactly where it was left: journaled evaluations are replayed, "
        "only unfinished ones run. Generations and run limits may be raised.",
    )
    resume.add_argument("run_dir", metavar="RUN_DIR")
    _add_limits(resume)
    status = commands.add_parser("status", help="where a run is: generation, evaluations, best")
    status.add_argument("run_dir", metavar="RUN_DIR")
    report = commands.add_parser(
        "report", help="write RUN_DIR/report.html (figures, Pareto table, failures) and summarise"
    )
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument(
        "--out", metavar="FILE", help="where to write (default RUN_DIR/report.html)"
    )
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
    export = commands.add_parser(
        "export", help="write trained models of a run: state_dict, TorchScript or ONNX"
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    _add_model_choice(export, pareto=True)
    export.add_argument(
        "--format", default="state_dict", choices=["state_dict", "torchscript", "onnx"]
    )
    export.add_argument("--out", metavar="PATH", help="file (a directory with --pareto)")
    opt = commands.add_parser(
        "optimize",
        help="compress a trained model of a run: weight pruning, int8 quantization, distillation",
        description="Measure pruned, quantized and distilled variants of one trained model on the "
        "run's task; prints the table and writes RUN_DIR/optimized/uid<N>/ (models + table.csv).",
    )
    opt.add_argument("run_dir", metavar="RUN_DIR")
    _add_model_choice(opt, pareto=False)
    opt.add_argument(
        "--sparsity", type=_sparsities, default="0.5,0.75,0.9", metavar="S[,S...]",
        help="weight-pruning sparsities, each in (0, 1) (default 0.5,0.75,0.9)",
    )  # fmt: skip
    opt.add_argument(
        "--finetune-epochs", type=_positive_int, default=2, metavar="N",
        help="training epochs after weight pruning (default 2)",
    )  # fmt: skip
    opt.add_argument(
        "--distill-epochs", type=_positive_int, default=0, metavar="N",
        help="epochs of the distilled student (default: the run's epochs)",
    )  # fmt: skip
    opt.add_argument(
        "--student", type=_positive_int, metavar="UID",
        help="student architecture (default: the model at half width)",
    )  # fmt: skip
    importer = commands.add_parser(
        "import", help="turn a PyTorch model into a genome file (+ its weights beside it)"
    )
    importer.add_argument(
        "source", metavar="SOURCE",
        help="path/to/file.py:function or pkg.module:function that returns an nn.Module",
    )  # fmt: skip
    importer.add_argument("--out", required=True, metavar="FILE", help="genome .yaml to write")
    importer.add_argument("--weights", metavar="FILE", help="a state_dict to load first")
    importer.add_argument(
        "--input-shape",
        metavar="C,L|C,H,W|F",
        help="input shape without the batch, when it cannot be inferred",
    )
    return root


def cmd_import(args: argparse.Namespace) -> int:
    from evonas.export import load_state_dict
    from evonas.importer import ImportError_, import_model, write_import
    from evonas.plugins import load_callable

    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(d) for d in args.input_shape.split(","))
        except ValueError:
            raise ConfigError(
                f"--input-shape: expected integers like 1,40, got {args.input_shape!r}"
            ) from None
    factory = load_callable(args.source, what="SOURCE")
    try:
        model = factory()
    except Exception as exc:  # user code
        raise PluginError(f"SOURCE: {args.source} failed: {type(exc).__name__}: {exc}") from None
    if not hasattr(model, "state_dict"):
        raise PluginError(
            f"SOURCE: {args.source} returned {type(model).__name__}, not an nn.Module"
        )
    if args.weights:
        try:
            model.load_state_dict(load_state_dict(args.weights))
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise UnsafeFileError(
                f"--weights {args.weights}: does not fit the model ({first})"
            ) from None
    try:
        genome, rebuilt, header = import_model(model, shape, source=args.source)
    except ImportError_ as exc:
        raise GenomeError(f"{args.source}: {exc}") from None
    weights = write_import(genome, rebuilt, header, Path(args.out))
    print(
        f"{args.out}: {len(genome.genes)} layers, input {tuple(header['input_shape'])}, "
        f"{header['num_classes']} classes; weights: {weights}"
    )
    return 0


def _add_model_choice(command: argparse.ArgumentParser, pareto: bool) -> None:
    """--best [--objective] | --individual UID (| --pareto): which trained models of a run."""
    which = command.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", action="store_true", help="the best on --objective")
    if pareto:
        which.add_argument("--pareto", action="store_true", help="every model on the Pareto front")
    which.add_argument("--individual", type=_positive_int, metavar="UID")
    command.add_argument("--objective", metavar="NAME", help="with --best (default: the first)")


def _best_uid(run, objective: str | None) -> int:
    try:
        return int(run.best(objective)["uid"])
    except KeyError as exc:
        raise ConfigError(f"--objective: {exc.args[0]}") from None


def cmd_export(args: argparse.Namespace) -> int:
    from evonas.analysis import Run
    from evonas.export import SUFFIX, export_run

    run = Run(args.run_dir)
    if args.best:
        uids = [_best_uid(run, args.objective)]
    elif args.pareto:
        uids = [int(uid) for uid in run.pareto()["uid"]]
    else:
        uids = [args.individual]
    name = "pareto" if args.pareto else f"uid{uids[0]}{SUFFIX[args.format]}"
    out = Path(args.out) if args.out else run.path / "export" / name
    for path in export_run(run.path, uids, args.format, out):
        print(path)
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from evonas.analysis import Run
    from evonas.optimize import optimize

    run = Run(args.run_dir)
    uid = _best_uid(run, args.objective) if args.best else args.individual
    for known in (uid, args.student):
        if known is not None:
            run.genome(known)  # an unknown uid is an error before any work
    print(f"optimizing uid {uid} of {run.path}")
    table = optimize(run.path, uid, args.sparsity, args.finetune_epochs, args.distill_epochs,
                     args.student)  # fmt: skip
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nsaved: {run.path / 'optimized' / f'uid{uid}'}")
    return 0


def cmd_genome(args: argparse.Namespace) -> int:
    from evonas.builder import build, count_flops, count_params
    from evonas.evolve import make_space
    from evonas.genome import load_genome
    from evonas.tasks import load_task

    genome = load_genome(args.file)
    config = resolve(preset=args.preset, config_file=args.config, sets=args.set)
    space, _ = make_space(config)
    task = load_task(config["task"])
    if not hasattr(space, "shapes"):
        raise ConfigError("evonas genome checks genomes of the sequential space (space.kind)")
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
    from evonas.launch import start_search
    from evonas.progress import Progress

    config = resolve(
        preset=args.preset,
        config_file=args.config,
        sets=args.set,
        overrides={
            "search.population": args.population,
            "training.epochs": args.epochs,
            "seed": args.seed,
            "search.seed_genomes": args.seed_genome,
            "search.seed_run": args.seed_run,
            "search.seed_top": args.seed_top,
            **_limit_changes(args),
        },
    )
    name = args.name or args.preset or time.strftime("run-%Y%m%d-%H%M%S")
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"--name: expected a plain directory name, got {name!r}")
    run_dir = Path(args.runs_dir) / name
    print(f"evonas: searching into {run_dir}", flush=True)
    progress = Progress(config["search"]["generations"])
    return _drive(start_search(config, run_dir, log=_print, progress=progress))


def cmd_resume(args: argparse.Namespace) -> int:
    from evonas.launch import resume_search
    from evonas.progress import Progress

    progress = Progress()
    search = resume_search(args.run_dir, _limit_changes(args), log=_print, progress=progress)
    progress.total_generations = search.config["search"]["generations"]
    print(f"evonas: resuming {args.run_dir}", flush=True)
    return _drive(search)


def _limit_changes(args: argparse.Namespace) -> dict:
    return {
        "search.generations": args.generations,
        "search.max_time": args.max_time,
        "search.max_evaluations": args.max_evaluations,
        "parallel.n_jobs": args.n_jobs,
        "parallel.backend": args.backend,
        "parallel.address": args.address,
    }


def _print(line: str) -> None:
    print(line, flush=True)


def _drive(search) -> int:
    """Run a search with signal handling: the first SIGINT/SIGTERM stops dispatching and lets
    evaluations in flight finish; a second one stops at once. Exit 128 + signal number."""
    from evonas.evolve import INTERRUPTED

    resume = f"evonas resume {shlex.quote(str(search.store.run_dir))}"

    def on_signal(signum: int, frame) -> None:
        if search.stop_signal is not None:
            raise KeyboardInterrupt
        search.request_stop(signum)
        print(
            f"\nevonas: {signal.Signals(signum).name}: finishing evaluations in flight "
            "(again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = search.run()
    except KeyboardInterrupt:
        signum = search.stop_signal or signal.SIGINT
        print(f"evonas: stopped at once; resume with: {resume}", file=sys.stderr, flush=True)
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        search.store.close()
    if result.state == INTERRUPTED:
        print(f"evonas: resume with: {resume}", file=sys.stderr, flush=True)
        return 128 + search.stop_signal
    print_summary(result, search.config["search"]["objectives"])
    if result.state != "finished":
        print(
            f"evonas: {result.reason}; extend with: {resume} --generations N|--max-time T|"
            "--max-evaluations N"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from evonas.analysis import Run
    from evonas.report import summary_text, write_report

    path = write_report(args.run_dir, args.out)
    print(summary_text(Run(args.run_dir)))
    print(f"\nreport: {path}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from evonas.analysis import run_status

    print(run_status(args.run_dir))
    return 0


def print_summary(result, objectives: list[dict[str, str]]) -> None:
    individuals = result.individuals
    ok = individuals[individuals["status"] == "ok"]
    failed = len(individuals) - len(ok)
    cached = int(individuals["cached_from"].notna().sum()) if "cached_from" in individuals else 0
    print(
        f"\n{len(individuals)} evaluations ({failed} failed, {cached} from the cache) in "
        f"{result.run_dir}"
    )
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
        commands = {
            "search": cmd_search,
            "resume": cmd_resume,
            "status": cmd_status,
            "report": cmd_report,
            "export": cmd_export,
            "optimize": cmd_optimize,
            "import": cmd_import,
            "genome": cmd_genome,
        }
        return commands[args.command](args)
    except USER_ERRORS as exc:
        print(f"evonas: error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:  # e.g. an unknown uid or metric: the message is the first argument
        print(f"evonas: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nevonas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
