"""Command line: argument parsing and printing. Anything a user can get wrong is a one-line error
on stderr and exit code 2; the work itself lives in the modules each command calls."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from evonas import __version__
from evonas.analysis import RunLookupError
from evonas.config import BACKENDS, EXPORT_FORMATS, ConfigError, preset_names, resolve
from evonas.devices import LeaseDirError
from evonas.genome import GenomeError
from evonas.importer import UnsupportedModelError
from evonas.plugins import PluginError
from evonas.store import RunDirError
from evonas.tasks import TaskError
from evonas.weights import UnsafeFileError

USER_ERRORS = (ConfigError, GenomeError, PluginError, RunDirError, TaskError, UnsafeFileError,
               RunLookupError, UnsupportedModelError, LeaseDirError)  # fmt: skip


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and defaults shown in --help."""

    def __init__(self, **kwargs) -> None:
        super().__init__(formatter_class=_Formatter, **kwargs)

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        shown = action.default not in (None, False, [], argparse.SUPPRESS)
        if shown and "%(default)" not in help_text and action.option_strings:
            help_text += " (default: %(default)s)"
        return help_text


def _count(text: str) -> int:
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


# --- the parser --------------------------------------------------------------------------------


def _add_settings(command: argparse.ArgumentParser) -> None:
    source = command.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="YAML config file")
    source.add_argument(
        "--preset", metavar="NAME", help=f"built-in config: {', '.join(preset_names())}"
    )
    command.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override one setting, e.g. --set search.strategy=tournament (repeatable)",
    )  # fmt: skip


def _add_limits(command: argparse.ArgumentParser) -> None:
    command.add_argument("--generations", type=_count, metavar="N",
                         help="search.generations: generations after generation 0")  # fmt: skip
    command.add_argument(
        "--max-time",
        type=_duration,
        metavar="T",
        help="stop at the first generation boundary after T (e.g. 90m, 2h)",
    )
    command.add_argument("--max-evaluations", type=_count, metavar="N",
                         help="stop before a generation would exceed N evaluations")  # fmt: skip
    command.add_argument("--n-jobs", type=_count, metavar="N",
                         help="parallel.n_jobs: evaluations at a time")  # fmt: skip
    command.add_argument("--backend", choices=BACKENDS, help="parallel.backend")
    command.add_argument("--address", metavar="ADDR",
                         help="parallel.address: a Dask scheduler or Ray cluster")  # fmt: skip


def _add_model_choice(command: argparse.ArgumentParser, pareto: bool) -> None:
    """--best [--objective] | --individual UID (| --pareto): which trained models of a run."""
    which = command.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", action="store_true",
                       help="the best on --objective (on a further objective such as params: "
                       "the best among the useful models of the Pareto front)")  # fmt: skip
    if pareto:
        which.add_argument("--pareto", action="store_true", help="every model on the Pareto front")
    which.add_argument("--individual", type=_count, metavar="UID", help="this uid")
    command.add_argument("--objective", metavar="NAME", help="with --best (default: the first)")


def parser() -> argparse.ArgumentParser:
    root = Parser(prog="evonas", description="Evolutionary neural-architecture search: "
                  "searches you can stop, resume, analyse and seed from real models.")  # fmt: skip
    root.add_argument("--version", action="version", version=f"evonas {__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                   parser_class=Parser)  # fmt: skip

    search = commands.add_parser(
        "search", help="run a new search into RUNS_DIR/NAME/",
        description="Run an evolutionary search. Settings: defaults < --preset or --config < "
        "--set < the flags below. Ctrl-C stops cleanly (evaluations in flight finish); "
        "`evonas resume` continues exactly.",
    )  # fmt: skip
    _add_settings(search)
    search.add_argument("--name", help="run name (default: the preset or config name and the "
                        "time, e.g. digits-20261126-153000)")  # fmt: skip
    search.add_argument(
        "--runs-dir", default="runs", metavar="DIR", help="parent of run directories"
    )
    search.add_argument("--population", type=_count, metavar="N", help="search.population")
    search.add_argument(
        "--epochs",
        type=_count,
        metavar="N",
        help="training.epochs: epochs of each model trained from scratch "
        "(generation 0, and every child when weights are not inherited)",
    )
    search.add_argument(
        "--finetune-epochs",
        type=_count,
        metavar="N",
        help="training.finetune_epochs: epochs of a child that inherits its "
        "parents' weights, or of a seed with weights (0: evaluate only)",
    )
    search.add_argument("--seed", type=_count, metavar="N", help="seed of the run")
    search.add_argument("--seed-genome", action="append", default=None, metavar="FILE",
                        help="put this genome (weights: FILE with .pt beside it) in generation 0 "
                        "(repeatable)")  # fmt: skip
    search.add_argument(
        "--seed-run",
        metavar="RUN_DIR",
        help="put an earlier run's Pareto front (or --seed-top K) in generation 0",
    )
    search.add_argument("--seed-top", type=_count, metavar="K",
                        help="with --seed-run: its K best on the first objective")  # fmt: skip
    _add_limits(search)

    resume = commands.add_parser(
        "resume", help="continue a run after Ctrl-C, kill -9 or a reboot, or extend it",
        description="Continue a run exactly where it was left: journaled evaluations are "
        "replayed, only unfinished ones run. Generations and run limits may be raised.",
    )  # fmt: skip
    resume.add_argument("run_dir", metavar="RUN_DIR")
    _add_limits(resume)

    status = commands.add_parser("status", help="where a run is: state, generation, best",
                                 description="Where a run is, also while it runs.")  # fmt: skip
    status.add_argument("run_dir", metavar="RUN_DIR")

    report = commands.add_parser(
        "report", help="write RUN_DIR/report.html (figures, Pareto table, failures) and summarise",
        description="A self-contained HTML report of a finished or running run.",
    )  # fmt: skip
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument(
        "--out", metavar="FILE", help="where to write (default RUN_DIR/report.html)"
    )

    board = commands.add_parser(
        "dashboard", help="a live web dashboard of the runs in RUNS_DIR (read-only)",
        description="Serve a local web app over the runs in RUNS_DIR: progress, Pareto fronts, "
        "individuals, genomes, lineages, learning curves, failures, comparisons. It reads the "
        "journals only, and updates while runs go on. Needs the dashboard extra: pip install "
        "'evonas[dashboard]'.",
    )  # fmt: skip
    board.add_argument("runs_dir", metavar="RUNS_DIR", nargs="?", default="runs",
                       help="the folder of runs")  # fmt: skip
    board.add_argument("--host", default="127.0.0.1",
                       help="where to listen; 127.0.0.1 is this machine only")  # fmt: skip
    board.add_argument("--port", type=_count, default=8050, help="0: any free port")

    genome = commands.add_parser(
        "genome", help="check genome files: layers, shapes, parameters and FLOPs",
        description="Validate genome files against a task's input shape and a search space.",
    )  # fmt: skip
    genome.add_argument("files", nargs="+", metavar="FILE", help="genome .yaml/.yml/.json")
    _add_settings(genome)

    export = commands.add_parser(
        "export", help="write trained models of a run: state_dict, TorchScript or ONNX",
        description="Export trained models with their genome; `evonas.load_model` reads "
        "state_dict files back, TorchScript and ONNX run without evonas.",
    )  # fmt: skip
    export.add_argument("run_dir", metavar="RUN_DIR")
    _add_model_choice(export, pareto=True)
    export.add_argument("--format", default="state_dict", help="file format",
                        choices=EXPORT_FORMATS)  # fmt: skip
    export.add_argument("--out", metavar="PATH", help="file (a directory with --pareto; default "
                        "RUN_DIR/export/)")  # fmt: skip

    opt = commands.add_parser(
        "optimize", help="compress a trained model: pruning, int8 quantization, distillation",
        description="Measure weight-pruned, channel-pruned, quantized and distilled variants of "
        "one trained model on "
        "the run's task; prints the table and writes RUN_DIR/optimized/uid<N>/.",
    )  # fmt: skip
    opt.add_argument("run_dir", metavar="RUN_DIR")
    _add_model_choice(opt, pareto=False)
    opt.add_argument("--sparsity", type=_sparsities, default=(0.5, 0.75, 0.9), metavar="S[,S...]",
                     help="weight-pruning sparsities, each in (0, 1)")  # fmt: skip
    opt.add_argument("--channels", type=_sparsities, default=(0.25, 0.5), metavar="F[,F...]",
                     help="structured pruning: shares of every channel group's channels to "
                     "remove, each in (0, 1)")  # fmt: skip
    opt.add_argument(
        "--importance",
        choices=("l1", "bn", "taylor"),
        default="l1",
        help="which channels structured pruning keeps (default: l1)",
    )
    opt.add_argument("--finetune-epochs", type=_count, default=2, metavar="N",
                     help="training epochs after weight or structured pruning")  # fmt: skip
    opt.add_argument(
        "--distill-epochs",
        type=_count,
        default=0,
        metavar="N",
        help="epochs of the distilled student (0: the run's training.epochs)",
    )
    opt.add_argument("--student", type=_count, metavar="UID",
                     help="student architecture (default: the model at half width)")  # fmt: skip
    opt.add_argument(
        "--out",
        metavar="DIR",
        help="where to write the variants (default: RUN_DIR/optimized/uid<N>)",
    )

    importer = commands.add_parser(
        "import", help="turn a PyTorch model into a genome file (+ its weights beside it)",
        description="Import a model from a factory function; the rebuilt model is checked to "
        "compute the same outputs.",
    )  # fmt: skip
    importer.add_argument(
        "source",
        metavar="SOURCE",
        help="path/to/file.py:function or pkg.module:function that returns an nn.Module",
    )
    importer.add_argument("--out", required=True, metavar="FILE", help="genome .yaml to write")
    importer.add_argument("--weights", metavar="FILE", help="a state_dict to load first")
    importer.add_argument(
        "--input-shape",
        metavar="C,L|C,H,W|F",
        help="input shape without the batch, when it cannot be inferred",
    )

    config = commands.add_parser("config", help="show the resolved config or its JSON schema",
                                 description="`config show`: the settings a search would use, "
                                 "as YAML. `config schema`: the JSON schema of config files "
                                 "(for editors).")  # fmt: skip
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="WHAT",
                                            parser_class=Parser)  # fmt: skip
    show = config_commands.add_parser("show", help="the resolved settings as YAML")
    _add_settings(show)
    config_commands.add_parser("schema", help="the JSON schema of config files")
    return root


# --- commands ------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace, **overrides):
    return resolve(preset=args.preset, config_file=args.config, sets=args.set, overrides=overrides)


def _limit_changes(args: argparse.Namespace) -> dict:
    return {
        "search.generations": args.generations,
        "search.max_time": args.max_time,
        "search.max_evaluations": args.max_evaluations,
        "parallel.n_jobs": args.n_jobs,
        "parallel.backend": args.backend,
        "parallel.address": args.address,
    }


def _run_dir(args: argparse.Namespace) -> Path:
    """--name, or a fresh name from the preset or config file and the time."""
    if args.name is not None:
        if not args.name or "/" in args.name or args.name in (".", ".."):
            raise ConfigError(f"--name: expected a plain directory name, got {args.name!r}")
        return Path(args.runs_dir) / args.name
    from evonas.launch import fresh_run_dir

    base = args.preset or (Path(args.config).stem if args.config else "run")
    return fresh_run_dir(args.runs_dir, base)


def cmd_search(args: argparse.Namespace) -> int:
    from evonas.launch import start_search

    config = _settings(
        args,
        **{
            "search.population": args.population,
            "training.epochs": args.epochs,
            "training.finetune_epochs": args.finetune_epochs,
            "seed": args.seed,
            "search.seed_genomes": args.seed_genome,
            "search.seed_run": args.seed_run,
            "search.seed_top": args.seed_top,
            **_limit_changes(args),
        },
    )
    run_dir = _run_dir(args)
    console = Console()
    evolution = start_search(config, run_dir, log=console.line, progress=None)
    console.line(f"evonas: searching into {run_dir}")
    return _drive(evolution, console)


def cmd_resume(args: argparse.Namespace) -> int:
    from evonas.launch import nothing_to_resume, resume_search

    console = Console()
    done = nothing_to_resume(args.run_dir, _limit_changes(args))
    if done:  # a finished run stays exactly as it is
        console.line(f"evonas: {done}")
        return 0
    evolution = resume_search(args.run_dir, _limit_changes(args), log=console.line, progress=None)
    console.line(f"evonas: resuming {args.run_dir}")
    return _drive(evolution, console)


class Console:
    """Lines to stdout. When stdout goes away (`evonas search ... | head`), a running search
    is asked to stop as on Ctrl-C, and nothing more is printed."""

    def __init__(self) -> None:
        self.on_closed: Callable[[], None] = lambda: None
        self.closed = False

    def line(self, text: str) -> None:
        if self.closed:
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:
            self.closed = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.on_closed()


def _drive(evolution, console: Console) -> int:
    """Run a search with signal handling: the first SIGINT/SIGTERM (or a closed stdout) stops
    dispatching and lets evaluations in flight finish; a second signal stops at once."""
    from evonas.launch import run_to_end, training_plan

    resume = f"evonas resume {shlex.quote(str(evolution.store.run_dir))}"

    def on_signal(signum: int, frame) -> None:
        if evolution.stop_signal is not None:
            raise KeyboardInterrupt
        evolution.request_stop(signum)
        _warn(f"\nevonas: {signal.Signals(signum).name}: finishing evaluations in flight "
              "(again to stop at once)")  # fmt: skip

    console.on_closed = lambda: evolution.request_stop(signal.SIGPIPE)
    console.line(f"evonas: {training_plan(evolution)}")
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = run_to_end(evolution)
    except KeyboardInterrupt:
        _warn(f"evonas: stopped at once; resume with: {resume}")
        return 128 + (evolution.stop_signal or signal.SIGINT)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if result.state == "interrupted":
        _warn(f"evonas: resume with: {resume}")
        return 128 + evolution.stop_signal
    if result.state == "failed":  # a run that cannot mean anything must not look like a success
        _warn(
            f"evonas: error: the run failed: {result.reason} (journal: {evolution.store.run_dir})"
        )
        return 1
    for line in summary_lines(result, evolution):
        console.line(line)
    if result.state == "stopped":
        console.line(f"evonas: {result.reason}; extend with: {resume} --generations N|--max-time T|"
                     "--max-evaluations N")  # fmt: skip
    return 0


def summary_lines(result, evolution) -> list[str]:
    """The end of a search: counts, the best per objective, the Pareto front."""
    from evonas.launch import training_plan
    from evonas.objectives import best_row
    from evonas.records import FAILURES, STOPPED
    from evonas.reporters import number

    people = result.individuals
    objectives = evolution.config.search.objectives
    failed = int(people["status"].isin(FAILURES).sum())
    stopped = int((people["status"] == STOPPED).sum())
    cached = int(people["cached_from"].notna().sum())
    early = f"{stopped} stopped early, " if stopped else ""
    lines = ["", f"{len(people)} evaluations ({failed} failed, {early}{cached} from the cache) in "
             f"{result.run_dir}; {training_plan(evolution)}"]  # fmt: skip
    chance = result.chance.get(objectives[0].name)
    names = [o.name for o in objectives]
    extra = ["test_accuracy"] if "test_accuracy" in people and "test_accuracy" not in names else []
    for objective in objectives:
        try:
            best = best_row(people, objective.name, objectives, chance)
        except KeyError:
            continue
        details = [f"uid {best['uid']}"] + [
            f"{n} {number(best[n])}" for n in [*names, *extra] if n != objective.name
        ]
        lines.append(
            f"best {objective.name}: {number(best[objective.name])} ({', '.join(details)})"
        )
    if not result.pareto.empty:
        lines += [
            "",
            "Pareto front:",
            table_text(result.pareto[["uid", "generation", *names, *extra]]),
        ]
    lines.append(f"\nplots: {result.run_dir / 'plots'}")
    return lines


def table_text(frame) -> str:
    """A table for the terminal: integers without decimals, other numbers to 4 digits."""
    from evonas.reporters import number_formats

    return frame.to_string(index=False, formatters=number_formats(frame))


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_status(args: argparse.Namespace) -> int:
    from evonas.analysis import run_status

    print(run_status(args.run_dir))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from evonas.analysis import Run
    from evonas.report import summary_text, write_report

    path = write_report(args.run_dir, args.out)
    print(summary_text(Run(args.run_dir)))
    print(f"\nreport: {path}")
    return 0


def cmd_genome(args: argparse.Namespace) -> int:
    from evonas.builder import describe
    from evonas.genome import genome_header, load_genome
    from evonas.spaces import make_space

    configured = bool(args.config or args.preset or args.set)
    space, info = make_space(_settings(args)) if configured else (None, None)
    for path in args.files:
        genome = load_genome(path)
        made_for = genome_header(path)
        if configured or "input_shape" not in made_for:
            if info is None:
                space, info = make_space(_settings(args))
            if info is None:
                raise ConfigError("evonas genome: a table task has no input shape; set task.name")
            shape, classes, task = info.input_shape, info.num_classes, info.name
        else:  # an imported genome says what it was made for
            shape, classes = tuple(made_for["input_shape"]), int(made_for["num_classes"])
            task = f"as imported from {made_for.get('source') or path}"
        try:
            lines = describe(genome, space, shape, classes)
        except ValueError as exc:
            raise GenomeError(f"{path}: infeasible for input {shape}: {exc}") from None
        print(f"{path}: input {shape}, {classes} classes ({task})")
        print("\n".join(lines))
    return 0


def _best_uid(run, objective: str | None) -> int:
    return int(run.best(objective)["uid"])


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
    for path in export_run(run.path, uids, args.format, out, folder=args.pareto):
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
                     args.student, channel_fractions=args.channels,
                     importance=args.importance, out=args.out)  # fmt: skip
    print(table_text(table))
    print(f"\nsaved: {args.out or run.path / 'optimized' / f'uid{uid}'}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from evonas.importer import import_from_source

    genome, header, weights = import_from_source(args.source, Path(args.out), args.weights,
                                                 args.input_shape)  # fmt: skip
    kind = f"a graph of {len(genome.genes)} genes" if genome.is_graph else (
        f"a chain of {len(genome.genes)} layers")  # fmt: skip
    head = f" (its {header['output_function']} is left to the loss)" if header.get(
        "output_function") else ""  # fmt: skip
    print(f"{args.out}: {kind}, input {tuple(header['input_shape'])}, "
          f"{header['num_classes']} classes{head}; same outputs as the original; "
          f"weights: {weights}")  # fmt: skip
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from evonas.config import Config, dump_yaml

    if args.config_command == "schema":
        print(json.dumps(Config.model_json_schema(), indent=2))
    else:
        print(dump_yaml(_settings(args)), end="")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from evonas.dashboard import make_server

    server = make_server(args.runs_dir, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"evonas dashboard: http://{host}:{port}/ (runs in {args.runs_dir}; Ctrl-C to stop)",
          flush=True)  # fmt: skip
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


COMMANDS = {"search": cmd_search, "resume": cmd_resume, "status": cmd_status,
            "dashboard": cmd_dashboard, "report": cmd_report, "export": cmd_export,
            "optimize": cmd_optimize, "import": cmd_import, "genome": cmd_genome,
            "config": cmd_config}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as exc:
        print(f"evonas: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `evonas ... | head`: the reader has gone; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("\nevonas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
