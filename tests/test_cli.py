import sqlite3
import textwrap

import pandas as pd
import pytest

from tests.conftest import ROOT, run_cli, tiny_config_yaml

TIMING = ["worker", "started_at", "finished_at", "eval_seconds", "train_seconds"]


def individuals(run_dir):
    with sqlite3.connect(run_dir / "history.sqlite") as db:
        return pd.read_sql_query("SELECT * FROM individuals ORDER BY uid", db)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config_yaml())
    return path


def test_search_end_to_end_and_identical_with_one_or_two_workers(tmp_path, config_file):
    runs = tmp_path / "runs"
    one = run_cli(
        "search",
        "--config",
        str(config_file),
        "--name",
        "one",
        "--runs-dir",
        str(runs),
        "--n-jobs",
        "1",
        cwd=tmp_path,
    )
    assert one.returncode == 0, one.stderr
    assert "generation 2/2" in one.stdout and "Pareto front:" in one.stdout
    for path in ("config.yaml", "history.sqlite", "plots/progress.png", "plots/pareto.png"):
        assert (runs / "one" / path).exists()
    two = run_cli(
        "search",
        "--config",
        str(config_file),
        "--name",
        "two",
        "--runs-dir",
        str(runs),
        "--n-jobs",
        "2",
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr
    a, b = individuals(runs / "one"), individuals(runs / "two")
    assert len(a) == 12
    pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING))
    assert b["worker"].nunique() == 2  # really ran in two worker processes


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


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("config_text", "fragments"),
    [
        ("search:\n  populaton: 4\n", ["search.populaton: unknown setting"]),
        ("search:\n  population: four\n", ["search.population: expected int, got 'four'"]),
        ("training:\n  epochs: -2\n", ["training.epochs: must be >= 1"]),
        ("search: [\n", ["not valid YAML"]),
        ("task:\n  name: nosuch\n", ["task.name: unknown task 'nosuch'"]),
    ],
)
def test_bad_config_is_a_one_line_error(tmp_path, config_text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(config_text)
    result = run_cli(
        "search", "--config", str(path), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path
    )
    assert_one_line_error(result, "bad.yaml" if "YAML" in fragments[0] else "", *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_flags_and_presets(tmp_path):
    assert_one_line_error(run_cli("search", "--preset", "nope", cwd=tmp_path), "unknown preset")
    assert_one_line_error(run_cli("search", "--set", "x", cwd=tmp_path), "expected key=value")
    result = run_cli("search", "--population", "-3", cwd=tmp_path)
    assert result.returncode == 2 and "--population: must be >= 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_existing_run_is_never_overwritten(tmp_path, config_file):
    runs = tmp_path / "runs"
    first = run_cli(
        "search",
        "--config",
        str(config_file),
        "--name",
        "r",
        "--runs-dir",
        str(runs),
        "--generations",
        "0",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    before = individuals(runs / "r")
    again = run_cli(
        "search", "--config", str(config_file), "--name", "r", "--runs-dir", str(runs), cwd=tmp_path
    )
    assert_one_line_error(again, "already holds a run")
    pd.testing.assert_frame_equal(individuals(runs / "r"), before)


def test_genome_command(tmp_path):
    good = run_cli(
        "genome",
        str(ROOT / "genomes" / "mnist1d_convbase.yaml"),
        "--preset",
        "mnist1d",
        cwd=tmp_path,
    )
    assert good.returncode == 0, good.stderr
    assert "-> (25, 5)" in good.stdout and "17,560 parameters" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers:\n  - {id: 1, op: conv, width: 8}\n")
    assert_one_line_error(
        run_cli("genome", str(bad), cwd=tmp_path), "bad.yaml.layers[0].kernel: missing"
    )
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert_one_line_error(run_cli("genome", str(broken), cwd=tmp_path), "not valid JSON")
    pools = tmp_path / "pools.yaml"
    pools.write_text(
        "layers:\n"
        + "".join(f"  - {{id: {i}, op: pool, kind: max, size: 2}}\n" for i in range(1, 5))
    )
    assert_one_line_error(
        run_cli("genome", str(pools), "--preset", "digits", cwd=tmp_path),
        "infeasible for input (1, 8, 8)",
        "length-1 signal",
    )


def test_help_lists_commands(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0 and "search" in result.stdout and "genome" in result.stdout
