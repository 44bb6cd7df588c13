"""Starting and resuming searches: the checks before a run directory is made, the session that
fills it, and `search()` for Python users.

`start_search` checks everything it can before writing anything (task, space, seeds, evaluator,
objectives, cluster), then creates the run directory; `resume_search` reopens one with its
recorded config (only `RESUMABLE` settings may change). Both return an `Evolution` ready to run;
`run_to_end` runs it and returns the run's tables.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from evonas import seeds as seed_files
from evonas.config import REPORTERS, RESUMABLE, Config, ConfigError, resolve, validate
from evonas.evolve import FINISHED, Evolution
from evonas.gradient import GradientSearch
from evonas.objectives import pareto_front
from evonas.plots import write_generation_plots
from evonas.plugins import PluginError, load_callable
from evonas.reporters import LogReporter, PlotReporter, ProgressReporter, Reporter, Reporters
from evonas.seeds import Seed
from evonas.spaces import Space, make_space
from evonas.store import RunDirError, Store, open_readonly, read_meta, read_run_config
from evonas.tasks import TaskInfo

Echo = Callable[[str], None]


@dataclass
class SearchResult:
    run_dir: Path
    state: str  # finished | stopped (a run limit) | interrupted (a signal)
    reason: str
    individuals: pd.DataFrame
    generations: pd.DataFrame
    pareto: pd.DataFrame
    chance: dict[str, float]  # accuracy at chance level, per accuracy metric (builtin tasks)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("evonas", "torch", "deap", "numpy", "joblib"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def preflight(config: Config) -> tuple[Space, TaskInfo | None, list[Seed]]:
    """Everything that can be checked before the run directory exists; a problem is a one-line
    error naming the setting or file."""
    from evonas.devices import placement
    from evonas.pools import make_pool

    space, info = make_space(config)  # the task's data: a missing dataset or module is an error
    check_metrics(config, space, info)
    check_plugins(config, space)
    if info is not None and config.evaluation == "trainer":
        check_training(config, info)
    chosen = seed_files.collect(config.search)
    seed_files.check(chosen, space, info.input_shape if info else None)
    if info is not None:
        seed_files.check_weights(chosen, info.input_shape, info.num_classes)
    if space.kind == "graph":
        _check_graph_search(config, chosen)
    if config.strategy == "gradient":
        _check_gradient_search(config, info)
    parallel = config.parallel
    package = {"dask": "distributed", "ray": "ray"}.get(parallel.backend)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"parallel.backend: {parallel.backend} needs the {package} package: "
            f"pip install 'evonas[{parallel.backend}]'"
        )
    where = placement(parallel)  # GPUs, and a lease folder others cannot tamper with
    if parallel.address:  # an unreachable cluster is an error before the run exists
        make_pool(parallel.backend, parallel.n_jobs, parallel.crash_retries, parallel.address,
                  where.resources)  # fmt: skip
    return space, info, chosen


def check_training(config: Config, info: TaskInfo) -> None:
    """Training settings that do not fit the task's inputs."""
    augment = config.training.augment
    used = [name for name in ("crop", "flip", "cutout") if getattr(augment, name)]
    if used and len(info.input_shape) not in (2, 3):
        raise ConfigError(f"training.augment.{used[0]}: needs images (C, H, W) or signals "
                          f"(C, L); task {info.name} has inputs of shape "
                          f"{info.input_shape}")  # fmt: skip


def _check_graph_search(config: Config, seeds: list[Seed]) -> None:
    """A graph space has no random genomes: it needs seeds, and children made from them."""
    if not seeds:
        raise ConfigError("space.kind: graph starts from seeds; give search.seed_genomes "
                          "(e.g. a file written by evonas import) or search.seed_run")  # fmt: skip
    if config.search.seed_fill != "mutate" and len(seeds) < config.search.population:
        raise ConfigError(f"search.seed_fill: a graph space fills generation 0 by mutating "
                          f"its {len(seeds)} seed(s) up to search.population "
                          f"({config.search.population}); set seed_fill: mutate")  # fmt: skip
    if config.strategy == "random":
        raise ConfigError("search.strategy: random samples fresh genomes, and a graph space has "
                          "none; use regularized, local, tournament or nsga2")  # fmt: skip


def _check_gradient_search(config: Config, info: TaskInfo | None) -> None:
    """The supernet's data: the run's task, or search.gradient.task; images either way."""
    from evonas.tasks import task_info

    own = config.search.gradient.task
    if own is not None:
        info = task_info(own.model_dump())  # a missing dataset is an error here
    key = "search.gradient.task" if own is not None else "task.name"
    if info is not None and len(info.input_shape) != 3:
        raise ConfigError(f"{key}: the supernet of a cell space needs images (C, H, W); task "
                          f"{info.name} has inputs of shape {info.input_shape}")  # fmt: skip


def check_plugins(config: Config, space: Space) -> None:
    """Every plugin the config names can be loaded, and operators fit the space (a strategy
    and reporters are made when the run starts: their factories need it)."""
    from evonas.config import is_plugin
    from evonas.operators import arity, bind_operators, operator_weights
    from evonas.trackers import check_tracker

    search = config.search
    bind_operators(operator_weights(search.operators, space, config.training.inherit_weights),
                   space)  # fmt: skip
    mutates_only = config.strategy in ("regularized", "local") or search.seed_fill == "mutate"
    mutations = [n for n, w in search.operators.items() if w > 0 and arity(space, n) == 1]
    if search.operators and mutates_only and not mutations:
        raise ConfigError("search.operators: this search breeds by mutation (strategy "
                          f"{config.strategy!r}, or seed_fill: mutate); give a mutation (an "
                          "operator of one parent) a weight > 0")  # fmt: skip
    if is_plugin(config.search.strategy):
        load_callable(config.search.strategy, what="search.strategy")
    for index, ref in enumerate(config.reporters):
        if ref in REPORTERS:
            check_tracker(ref, f"reporters[{index}]")
        else:
            load_callable(ref, what=f"reporters[{index}]")


def check_metrics(config: Config, space: Space, info: TaskInfo | None) -> None:
    """Every objective and constrained metric must be one the evaluation produces: the built-in
    trainer's, the table's columns (read once), or, for a user's evaluator, what its first
    success returns (checked then; here only that it can be imported)."""
    from evonas.evaluate import BUILTIN_METRICS
    from evonas.objectives import missing_metric
    from evonas.tasks import TaskError, table_columns, table_metrics, table_options

    if config.evaluation == "evaluator":
        load_callable(config.training.evaluator, what="training.evaluator")
        return
    if config.evaluation == "table":
        options = config.task.options
        columns = table_columns(options)
        opts = table_options(options)
        for key, names in (("key", [opts["key"]]), ("fitness", [opts["fitness"]]),
                           ("report", opts["report"])):  # fmt: skip
            for name in names:
                if name not in columns:
                    raise TaskError(f"task.options.{key}: no column {name!r} in {opts['path']} "
                                    f"(columns: {', '.join(columns)})")  # fmt: skip
        available, source = (
            table_metrics(options),
            "the table task (its fitness and report columns)",
        )
    else:
        inherits = config.training.inherit_weights and space.inherits_weights
        available = [m for m in BUILTIN_METRICS if (m != "test_accuracy" or info.has_test)
                     and (m != "inherited_share" or inherits)]  # fmt: skip
        available += config.training.zero_cost  # measured before training (evonas.proxies)
        source = "the built-in trainer"
    constrained = [c.metric for c in config.search.constraints]
    problem = missing_metric(config.search.objectives, available, source, constrained)
    if problem:
        raise ConfigError(problem)


def start_search(
    config: Config, run_dir: str | Path, log: Echo | None = print, progress: bool | None = False
) -> Evolution:
    """Check the config, create the run directory and return the session that will fill it."""
    space, info, chosen = preflight(config)
    path = Path(run_dir).absolute()
    made = next((p for p in [*reversed(path.parents), path] if not p.exists()), None)
    store = Store.create(run_dir, config.to_dict())
    try:
        seed_files.store(chosen, Path(run_dir))
        return _session(config, store, space, info, log, progress)
    except BaseException:  # e.g. a plugin strategy or reporter that cannot be made
        if made is not None:  # nothing was evaluated: remove the folders made for it
            shutil.rmtree(made, ignore_errors=True)
        raise


def nothing_to_resume(run_dir: str | Path, changes: dict[str, Any] | None = None) -> str | None:
    """Why resuming `run_dir` with `changes` would do nothing (a finished run that is not given
    more generations), found without writing; None when there is something to do."""
    try:
        db = open_readonly(run_dir)
    except RunDirError:
        return None  # resume_search says what is wrong with the run
    try:
        meta = read_meta(db)
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()
    done = meta.get("config", {}).get("search", {}).get("generations")
    wanted = (changes or {}).get("search.generations")
    strategy = meta.get("config", {}).get("search", {}).get("strategy")
    if meta.get("state") == FINISHED and strategy == "gradient":
        return (f"{run_dir}: finished (a gradient search: its supernet trained and its cell "
                "evaluated); nothing to do")  # fmt: skip
    if meta.get("state") != FINISHED or done is None or (wanted is not None and wanted > done):
        return None
    return (f"{run_dir}: finished (all {done} generations); nothing to do "
            f"(resume with --generations N, N > {done}, to go on)")  # fmt: skip


def resume_search(
    run_dir: str | Path,
    changes: dict[str, Any] | None = None,
    log: Echo | None = print,
    progress: bool | None = False,
) -> Evolution:
    """Reopen a run with its recorded config; only RESUMABLE settings may change."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    settings = read_run_config(run_dir)
    store = Store.open(run_dir)
    try:
        meta = store.meta()
        if "config" in meta and _fixed_part(meta["config"]) != _fixed_part(settings):
            raise RunDirError(
                f"{config_path}: changed since the run started; a resumed run must replay the "
                f"same config (only {', '.join(RESUMABLE)} may change, as resume flags)"
            )
        for dotted, value in (changes or {}).items():
            if dotted not in RESUMABLE:
                raise ConfigError(
                    f"{dotted}: cannot change on resume (only {', '.join(RESUMABLE)})"
                )
            if value is not None:
                section, key = dotted.split(".")
                settings[section][key] = value
        config = validate(settings)
        old = meta.get("versions")
        if old and old != versions():
            changed = [f"{k} {old.get(k)} -> {v}" for k, v in versions().items() if old.get(k) != v]
            print(f"evonas: warning: library versions changed: {'; '.join(changed)}",
                  file=sys.stderr)  # fmt: skip
        tmp = config_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        tmp.replace(config_path)
        space, info = make_space(config)
        return _session(config, store, space, info, log, progress)
    except BaseException:
        store.close()
        raise


def _session(
    config: Config,
    store: Store,
    space: Space,
    info: TaskInfo | None,
    log: Echo | None,
    progress: bool | None,
) -> Evolution:
    try:
        from evonas.devices import gpu_ids

        gpus = gpu_ids(config.parallel.devices)
        elapsed = float(store.meta().get("elapsed_seconds", 0.0))
        store.set_meta({
            "config": config.to_dict(),
            "versions": versions(),
            "device": f"gpus {gpus}" if gpus else "cpu",
            "input_shape": list(info.input_shape) if info else None,
            "chance": info.chance if info else {},
            "state": "running",
        })  # fmt: skip
        session = GradientSearch if config.strategy == "gradient" else Evolution
        return session(config, store, space, seed_files.load(store.run_dir),
                       _reporters(config, store, space, log, progress), elapsed)  # fmt: skip
    except BaseException:
        store.close()
        raise


def _reporters(
    config: Config, store: Store, space: Space, log: Echo | None, progress: bool | None
) -> Reporters:
    search, training = config.search, config.training
    note = ""
    if config.evaluation == "trainer":
        note = f"{training.epochs} epochs from scratch"
        if training.inherit_weights and space.inherits_weights:
            note += f", {training.finetune_epochs} inherited"
    if config.strategy == "gradient":
        note = f"supernet {search.gradient.epochs} epochs ({search.gradient.method}), then " + note
    generations = 0 if config.strategy == "gradient" else search.generations  # generation 0 only
    bar = ProgressReporter(generations, search.objectives[0], enabled=progress, note=note)
    objectives = search.objectives

    def draw() -> None:
        store.flush()  # drawing takes a while: commit what it shows first
        write_generation_plots(
            store.run_dir / "plots", store.individuals(), store.generations(), objectives,
            title=store.run_dir.name,
        )  # fmt: skip

    logger = LogReporter(log, store.run_dir / "log.txt", bar)
    reporters: list[Reporter] = [bar, logger, PlotReporter(draw, search.plot_every)]
    return Reporters([*reporters, *named_reporters(config, store.run_dir, logger.write)])


def named_reporters(config: Config, run_dir: Path, say: Echo) -> list[Reporter]:
    """The reporters a config names (`reporters:`): the built-in trackers (`evonas.trackers`;
    `say` is where they report their own failure), or plugins, whose `factory(run_dir, config)`
    returns an `evonas.reporters.Reporter` (a subclass overrides the hooks it needs)."""
    from evonas.trackers import make_tracker

    made: list[Reporter] = []
    for index, ref in enumerate(config.reporters):
        if ref in REPORTERS:
            try:
                tracker = make_tracker(ref, Path(run_dir), config)
            except Exception as exc:  # e.g. a tracking server that went away since the check
                raise ConfigError(f"reporters[{index}]: {ref} cannot start ({exc})") from None
            tracker.say = say
            made.append(tracker)
            continue
        factory = load_callable(ref, what=f"reporters[{index}]")
        try:
            reporter = factory(Path(run_dir), config)
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise PluginError(f"reporters[{index}]: {ref} failed ({problem})") from None

        if not isinstance(reporter, Reporter):
            raise PluginError(f"reporters[{index}]: {ref} made a {type(reporter).__name__}, "
                              "not an evonas.reporters.Reporter")  # fmt: skip
        made.append(reporter)
    return made


def _fixed_part(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the settings that may change on resume."""
    fixed = json.loads(json.dumps(config))
    for dotted in RESUMABLE:
        section, key = dotted.split(".")
        fixed.get(section, {}).pop(key, None)
    return fixed


def run_to_end(evolution: Evolution) -> SearchResult:
    """Run a session to its end, close the run and return its tables."""
    try:
        outcome = evolution.run()
        store = evolution.store
        individuals, generations = store.individuals(), store.generations()
        chance = store.meta().get("chance") or {}
    finally:
        evolution.store.close()
    pareto = pareto_front(individuals, evolution.config.search.objectives)
    return SearchResult(evolution.store.run_dir, outcome.state, outcome.reason, individuals,
                        generations, pareto, chance)  # fmt: skip


def training_plan(evolution: Evolution) -> str:
    """How the run's models are evaluated, in one line (what --epochs and finetune_epochs do)."""
    config = evolution.config
    training = config.training
    if config.evaluation == "evaluator":
        return f"models evaluated by {training.evaluator}"
    if config.evaluation == "table":
        column = config.task.options.get("fitness", "c10valid_val_12ep")
        plan = f"fitness looked up in a table ({column})"
        if config.strategy == "gradient":
            gradient = config.search.gradient
            plan = (f"a supernet trains {gradient.epochs} epochs on {gradient.task.name} "
                    f"({gradient.method}); the derived cell's {plan}")  # fmt: skip
        return plan
    plan = f"models trained from scratch train {training.epochs} epochs (training.epochs)"
    if config.strategy == "gradient":
        gradient = config.search.gradient
        on = f" on {gradient.task.name}" if gradient.task else ""
        return (f"a supernet trains {gradient.epochs} epochs{on} ({gradient.method}); the "
                f"derived cell(s) then train {training.epochs} epochs from scratch "
                "(training.epochs)")  # fmt: skip
    if evolution.weights.inherits:
        plan += (f"; children that inherit their parents' weights train "
                 f"{training.finetune_epochs} (training.finetune_epochs)")  # fmt: skip
    return plan


def fresh_run_dir(runs_dir: str | Path, base: str) -> Path:
    """A new run directory named after `base` and the time (`digits-20261126-153000`)."""
    stem = f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = Path(runs_dir) / stem, 1
    while candidate.exists():
        n += 1
        candidate = Path(runs_dir) / f"{stem}-{n}"
    return candidate


def run_search(config: Config, run_dir: str | Path, log: Echo | None = print) -> SearchResult:
    """Run a whole search into a new run directory and return its tables."""
    return run_to_end(start_search(config, run_dir, log))


def search(
    config: str | Path | dict[str, Any] | None = None,
    *,
    name: str | None = None,
    runs_dir: str | Path = "runs",
    log: Echo | None = print,
    **overrides: Any,
):
    """Run a search from Python and return its `Run` for analysis.

    `config` is a preset name, a YAML file or a dict of settings (over the defaults). Overrides
    are dotted keys written with `__` (`search__population=8`) or the short names `generations`,
    `population`, `epochs`, `seed`, `n_jobs`. Without `name`, the run gets a fresh directory
    named after the preset or file and the time.
    """
    from evonas.analysis import Run
    from evonas.config import preset_names

    short = {"generations": "search.generations", "population": "search.population",
             "epochs": "training.epochs", "seed": "seed", "n_jobs": "parallel.n_jobs"}  # fmt: skip
    dotted = {short.get(k, k.replace("__", ".")): v for k, v in overrides.items()}
    if isinstance(config, dict):
        resolved = resolve(base=config, overrides=dotted)
    elif config is not None and str(config) in preset_names():
        resolved = resolve(preset=str(config), overrides=dotted)
    else:
        resolved = resolve(config_file=config, overrides=dotted)
    if name:
        run_dir = Path(runs_dir) / name
    else:
        base = Path(str(config)).stem if isinstance(config, str | Path) else "run"
        run_dir = fresh_run_dir(runs_dir, base)
    run_search(resolved, run_dir, log)
    return Run(run_dir)
