import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from evonas.tasks import nb201_table

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ROOT / "tests" / "faults.py"


NB201_TABLE = nb201_table()  # shipped inside the package
TINY = {
    "task": {"name": "synthetic", "options": {"samples": 240, "length": 12, "classes": 3}},
    "space": {"max_layers": 4, "widths": [4, 8], "units": [8, 16]},
    "training": {"epochs": 2, "batch_size": 32},
    "search": {"population": 4, "generations": 3},
    "parallel": {"backend": "inline"},
}


@pytest.fixture(scope="session", autouse=True)
def _dataset_cache(tmp_path_factory):
    """Generated datasets go to a per-session cache, inherited by CLI subprocesses."""
    os.environ["EVONAS_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def tiny_config_yaml(**sections: str) -> str:
    """A config for a seconds-long real search on the synthetic task."""
    base = {
        "task": "task:\n  name: synthetic\n  options: {samples: 240, length: 12, classes: 3}\n",
        "space": "space:\n  max_layers: 4\n  widths: [4, 8]\n  units: [8, 16]\n",
        "training": "training:\n  epochs: 2\n  batch_size: 32\n",
        "search": "search:\n  population: 4\n  generations: 2\n",
    }
    base.update(sections)
    return "".join(base.values())


def cli(*args: str, cwd: Path) -> SimpleNamespace:
    """Run `evonas ARGS` in this process (the real entry point, without a new interpreter);
    returns returncode, stdout and stderr like `run_cli`."""
    from evonas.cli import main

    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit:  # argparse
                code = exit.code
    finally:
        os.chdir(here)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_cli(*args: str, cwd: Path, env_extra: dict | None = None, timeout: int = 300):
    """Run `python -m evonas ARGS` in a subprocess; returns the CompletedProcess."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "evonas", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A small real run with trained weights (shared, read-only)."""
    import evonas

    runs = tmp_path_factory.mktemp("runs")
    return evonas.search(TINY, name="trained", runs_dir=runs, log=None)


@pytest.fixture(scope="session")
def faulty(tmp_path_factory):
    """A run with every failure an in-process evaluation can have (an exception, NaN, a timeout,
    out of memory), from the fault-injection evaluator (shared, read-only). Dead workers are
    tested with real processes in test_workers.py."""
    import evonas

    runs = tmp_path_factory.mktemp("runs")
    config = {**TINY, "training": {"evaluator": f"{FAULTS}:in_process", "timeout": 0.5}}
    return evonas.search(config, name="faulty", runs_dir=runs, log=None, population=8,
                         generations=1)  # fmt: skip


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
