"""The CLI in real processes (slow): worker processes, kill -9 and signals, one writer per run,
user modules found from the working directory."""

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pandas as pd
import pytest

from tests.conftest import ROOT, run_cli, tiny_config_yaml
from tests.test_cli import TIMING, assert_one_line_error, individuals

pytestmark = pytest.mark.slow
LOKY = "parallel:\n  backend: loky\n"


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config_yaml(parallel=LOKY))
    return path


def test_search_end_to_end_and_identical_with_one_or_two_workers(tmp_path, config_file):
    runs = tmp_path / "runs"
    for name, n_jobs in (("one", "1"), ("two", "2")):
        done = run_cli("search", "--config", str(config_file), "--name", name, "--runs-dir",
                       str(runs), "--n-jobs", n_jobs, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "generation 2/2" in done.stdout and "Pareto front:" in done.stdout
    for path in ("config.yaml", "history.sqlite", "plots/progress.png", "plots/pareto.png"):
        assert (runs / "one" / path).exists()
    a, b = individuals(runs / "one"), individuals(runs / "two")
    assert len(a) == 12
    pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING))
    assert 1 <= b["worker"].nunique() <= 2  # worker processes (how many got work depends on load)


def test_user_task_and_evaluator_end_to_end(tmp_path):
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "plugin.py").write_text(
        textwrap.dedent("""
        import numpy as np
        def blobs(n=120):
            rng = np.random.default_rng(1)
            x = rng.normal(size=(n, 6)).astype("float32")
            y = (x[:, 0] + x[:, 1] > 0).astype(int)
            return {"x_train": x[:80], "y_train": y[:80], "x_val": x[80:100],
                    "y_val": y[80:100], "x_test": x[100:], "y_test": y[100:]}
        def evaluate(genome, seed, budget):
            units = sum(layer.get("units", 0) for layer in genome["layers"])
            return {"score": units / 100.0, "cost": float(len(genome["layers"]))}
    """)
    )
    config = tmp_path / "user.yaml"
    config.write_text(
        textwrap.dedent("""
        task: {name: "userpkg.plugin:blobs", options: {n: 120}}
        space: {max_layers: 3, units: [8, 16]}
        training: {epochs: 2}
        search:
          population: 4
          generations: 1
          objectives: [{name: val_accuracy, goal: max}, {name: params, goal: min}]
    """)
    )
    env = {"PYTHONPATH": str(tmp_path)}
    task_run = run_cli(
        "search",
        "--config",
        str(config),
        "--name",
        "task",
        "--runs-dir",
        str(tmp_path / "runs"),
        cwd=tmp_path,
        env_extra=env,
    )
    assert task_run.returncode == 0, task_run.stderr
    people = individuals(tmp_path / "runs" / "task")
    assert (people["status"] == "ok").all() and people["test_accuracy"].notna().all()
    eval_run = run_cli(
        "search",
        "--config",
        str(config),
        "--name",
        "eval",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--set",
        "training.evaluator=userpkg.plugin:evaluate",
        "--set",
        "search.objectives=[{name: score, goal: max}, {name: cost, goal: min}]",
        cwd=tmp_path,
        env_extra=env,
    )
    assert eval_run.returncode == 0, eval_run.stderr
    people = individuals(tmp_path / "runs" / "eval")
    assert (people["status"] == "ok").all()
    assert {"score", "cost"} <= set(people.columns) and "val_accuracy" not in people.columns
    assert "best score:" in eval_run.stdout


# --- long-running jobs: kill -9, signals, one writer per run ---------------------------------

FAULTS = ROOT / "tests" / "faults.py"
SLOW = tiny_config_yaml(
    training=f"training:\n  evaluator: {FAULTS}:slow\n",
    search="search:\n  population: 6\n  generations: 5\n",
    parallel=LOKY,
)


def start_cli(*args, cwd, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "evonas", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def journal_rows(run_dir):
    path = run_dir / "history.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM individuals").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def journaled_seeds(run_dir):
    return set(individuals(run_dir)["seed"])


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path):
    config = tmp_path / "slow.yaml"
    config.write_text(SLOW)
    runs = tmp_path / "runs"
    env = {"EVONAS_TEST_SLEEP": "0.1"}
    reference = run_cli("search", "--config", str(config), "--name", "ref", "--runs-dir",
                        str(runs), "--n-jobs", "1", cwd=tmp_path, env_extra=env)  # fmt: skip
    assert reference.returncode == 0, reference.stderr
    run_dir, calls = runs / "killed", tmp_path / "calls.txt"
    rng = random.Random(7)
    command = ["search", "--config", str(config), "--name", "killed", "--runs-dir", str(runs)]
    journaled_before = {}
    kills = 0
    for phase in range(8):
        phase_env = {**env, "EVONAS_TEST_CALLS": str(calls), "EVONAS_TEST_PHASE": str(phase)}
        journaled_before[phase] = journaled_seeds(run_dir) if run_dir.exists() else set()
        proc = start_cli(*command, "--n-jobs", str(1 + phase % 2), cwd=tmp_path,
                         env_extra=phase_env)  # fmt: skip
        if kills < 4:
            seen = journal_rows(run_dir)
            with contextlib.suppress(AssertionError):  # it may also finish first
                wait_until(lambda seen=seen: journal_rows(run_dir) > seen, timeout=30)
            time.sleep(rng.uniform(0.0, 0.5))
        if kills < 4 and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            command = ["resume", str(run_dir)]
            continue
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        break
    assert kills >= 2
    a, b = individuals(runs / "ref"), individuals(run_dir)
    pd.testing.assert_frame_equal(a.drop(columns=TIMING, errors="ignore"),
                                  b.drop(columns=TIMING, errors="ignore"))  # fmt: skip
    # No journaled evaluation was trained again in a later phase.
    for line in calls.read_text().split("\n"):
        if line:
            phase, seed = map(int, line.split())
            assert seed not in journaled_before[phase], (phase, seed)


def run_until_some_rows(tmp_path, name, extra_env=None):
    config = tmp_path / "slow.yaml"
    config.write_text(SLOW.replace("generations: 5", "generations: 50"))
    env = {"EVONAS_TEST_SLEEP": "0.3", **(extra_env or {})}
    runs = tmp_path / "runs"
    command = ["search", "--config", str(config), "--name", name, "--runs-dir", str(runs)]
    proc = start_cli(*command, "--n-jobs", "2", cwd=tmp_path, env_extra=env)
    run_dir = runs / name
    wait_until(lambda: journal_rows(run_dir) >= 3)
    return proc, run_dir


def assert_consistent(run_dir):
    with sqlite3.connect(run_dir / "history.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    people = individuals(run_dir)
    assert people["status"].isin(["ok", "failed", "timeout", "crashed", "oom"]).all()
    assert people["uid"].is_unique


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_stops_cleanly_with_resume_command(tmp_path, signum, code):
    proc, run_dir = run_until_some_rows(tmp_path, "sig")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"resume with: evonas resume {run_dir}" in err
    assert_consistent(run_dir)
    status = run_cli("status", str(run_dir), cwd=tmp_path)
    assert (
        status.returncode == 0 and f"interrupted ({signal.Signals(signum).name})" in status.stdout
    )
    resumed = run_cli("resume", str(run_dir), "--generations", "2", cwd=tmp_path,
                      env_extra={"EVONAS_TEST_SLEEP": "0"})  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr


def test_second_ctrl_c_stops_at_once(tmp_path):
    proc, run_dir = run_until_some_rows(tmp_path, "twice", {"EVONAS_TEST_SLEEP": "5"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    proc.send_signal(signal.SIGINT)
    # the second signal only once the first was handled (two at once may arrive as one)
    wait_until(lambda: any("finishing evaluations in flight" in line for line in lines))
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    reader.join(timeout=10)
    assert proc.returncode == 130
    assert any("stopped at once; resume with: evonas resume" in line for line in lines)
    assert_consistent(run_dir)


def test_one_writer_per_run(tmp_path):
    proc, run_dir = run_until_some_rows(tmp_path, "busy")
    status = run_cli("status", str(run_dir), cwd=tmp_path)
    assert f"running (pid {proc.pid})" in status.stdout
    second = run_cli("resume", str(run_dir), cwd=tmp_path)
    assert_one_line_error(second, "in use by another evonas process", f"pid {proc.pid}")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert_consistent(run_dir)
