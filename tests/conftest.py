import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
