"""Starting, resuming and running searches: a run directory and the `Search` that fills it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from evonas import seeds
from evonas.config import ConfigError, validate
from evonas.devices import gpu_ids
from evonas.evolve import Search, SearchResult, make_space, versions
from evonas.parallel import make_pool
from evonas.progress import Progress
from evonas.store import RunDirError, Store

# The parallel settings change where evaluations run, never their results.
RESUMABLE = (
    "search.generations", "search.max_time", "search.max_evaluations", "parallel.n_jobs",
    "parallel.backend", "parallel.address", "parallel.devices", "parallel.evaluations_per_gpu",
)  # fmt: skip


def start_search(
    config: dict[str, Any],
    run_dir: str | Path,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> Search:
    """A new run directory and the search that will fill it."""
    space, _ = make_space(config)  # a bad task or space is an error before anything is written
    chosen = seeds.collect(config["search"])
    seeds.check(chosen, space)
    parallel = config["parallel"]
    if parallel["address"]:  # an unreachable cluster is an error before the run exists
        resources = {"GPU": 1} if gpu_ids(parallel["devices"]) else None
        make_pool(parallel["backend"], parallel["n_jobs"], parallel["crash_retries"],
                  parallel["address"], resources)  # fmt: skip
    store = Store.create(run_dir, config)
    seeds.store(chosen, Path(run_dir))
    try:
        return Search(config, store, log, progress)
    except BaseException:
        store.close()
        raise


def resume_search(
    run_dir: str | Path,
    changes: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> Search:
    """Reopen a run with its recorded config; only RESUMABLE settings may change."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise RunDirError(f"{run_dir}: no config.yaml here; is this a run directory?")
    config = yaml.safe_load(config_path.read_text())
    store = Store.open(run_dir)
    try:
        meta = store.meta()
        if "config" in meta and _fixed_part(meta["config"]) != _fixed_part(config):
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
                config[section][key] = value
        validate(config)
        old = meta.get("versions")
        if old and old != versions():
            changed = [f"{k} {old.get(k)} -> {v}" for k, v in versions().items() if old.get(k) != v]
            print(
                f"evonas: warning: library versions changed: {'; '.join(changed)}", file=sys.stderr
            )
        tmp = config_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(config_path)
        return Search(config, store, log, progress)
    except BaseException:
        store.close()
        raise


def _fixed_part(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the settings that may change on resume."""
    fixed = json.loads(json.dumps(config))
    for dotted in RESUMABLE:
        section, key = dotted.split(".")
        fixed.get(section, {}).pop(key, None)
    return fixed


def search(
    config: str | Path | dict[str, Any] | None = None,
    *,
    name: str | None = None,
    runs_dir: str | Path = "runs",
    log: Callable[[str], None] = print,
    **overrides: Any,
):
    """Run a search from Python and return its `Run` for analysis.

    `config` is a preset name, a YAML file or a dict of settings (over the defaults). Overrides
    are dotted keys written with `__` (`search__population=8`) or the short names `generations`,
    `population`, `epochs`, `seed`, `n_jobs`.
    """
    from evonas.analysis import Run
    from evonas.config import preset_names, resolve

    short = {"generations": "search.generations", "population": "search.population",
             "epochs": "training.epochs", "seed": "seed", "n_jobs": "parallel.n_jobs"}  # fmt: skip
    dotted = {short.get(k, k.replace("__", ".")): v for k, v in overrides.items()}
    if isinstance(config, dict):
        resolved = resolve(base=config, overrides=dotted)
    elif config is not None and str(config) in preset_names():
        resolved = resolve(preset=str(config), overrides=dotted)
    else:
        resolved = resolve(config_file=config, overrides=dotted)
    run_name = name or (str(config) if isinstance(config, str) and "/" not in config else None)
    run_dir = Path(runs_dir) / (run_name or time.strftime("run-%Y%m%d-%H%M%S"))
    run_search(resolved, run_dir, log)
    return Run(run_dir)


def run_search(
    config: dict[str, Any], run_dir: str | Path, log: Callable[[str], None] = print
) -> SearchResult:
    """Run a whole search into a new run directory and return its tables."""
    search = start_search(config, run_dir, log)
    try:
        return search.run()
    finally:
        search.store.close()
