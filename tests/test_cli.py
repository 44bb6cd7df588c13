"""The command line through its real entry point (`evonas.cli.main`, in this process), and once in
a new process. Worker processes, kills and signals: test_cli_processes.py (slow)."""

import json
import sqlite3

import pandas as pd
import pytest
import yaml

from evonas.evaluate import MEASURED_METRICS
from tests.conftest import ROOT, cli, run_cli, tiny_config_yaml

TIMING = ["worker", "started_at", "finished_at", "eval_seconds", *MEASURED_METRICS]


def individuals(run_dir):
    with sqlite3.connect(run_dir / "history.sqlite") as db:
        return pd.read_sql_query("SELECT * FROM individuals ORDER BY uid", db)


def assert_one_line_error(result, *fragments, code=2):
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config_yaml())
    return path


def test_a_search_end_to_end(tmp_path, config_file):
    runs = tmp_path / "runs"
    result = cli("search", "--config", config_file, "--name", "one", "--runs-dir", runs,
                 cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "generation 2/2" in out and "Pareto front:" in out and "best val_accuracy:" in out
    assert "models trained from scratch train 2 epochs (training.epochs)" in out
    for path in ("config.yaml", "history.sqlite", "plots/progress.png", "plots/pareto.png",
                 "log.txt"):  # fmt: skip
        assert (runs / "one" / path).exists()
    assert len(individuals(runs / "one")) == 12
    front = out.split("Pareto front:")[1]
    assert ".0 " not in front  # parameter counts print as integers


def test_a_search_in_a_new_process(tmp_path, config_file):
    """`python -m evonas` as users run it: the same journal as in-process."""
    runs = tmp_path / "runs"
    result = run_cli("search", "--config", str(config_file), "--name", "proc", "--runs-dir",
                     str(runs), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert cli("search", "--config", config_file, "--name", "here", "--runs-dir", runs,
               cwd=tmp_path).returncode == 0  # fmt: skip
    a, b = individuals(runs / "proc"), individuals(runs / "here")
    pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING))


def test_a_search_without_a_name_gets_a_fresh_one(tmp_path, config_file):
    runs = tmp_path / "runs"
    args = ("search", "--config", config_file, "--runs-dir", runs, "--generations", "0")
    first, second = cli(*args, cwd=tmp_path), cli(*args, cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    names = sorted(p.name for p in runs.iterdir())
    assert len(names) == 2 and all(name.startswith("tiny-") for name in names)


@pytest.mark.parametrize(
    ("config_text", "fragments"),
    [
        (
            "search:\n  populaton: 4\n",
            ["search.populaton: unknown setting; did you mean population?"],
        ),
        ("search:\n  population: four\n", ["search.population: expected int, got 'four'"]),
        ("training:\n  epochs: -2\n", ["training.epochs: must be >= 1"]),
        ("search: [\n", ["not valid YAML"]),
        ("task:\n  name: nosuch\n", ["task.name: unknown task 'nosuch'"]),
    ],
)
def test_bad_config_is_a_one_line_error(tmp_path, config_text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(config_text)
    result = cli("search", "--config", path, "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert_one_line_error(result, "bad.yaml" if "YAML" in fragments[0] else "", *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_flags_and_presets(tmp_path):
    assert_one_line_error(cli("search", "--preset", "nope", cwd=tmp_path), "unknown preset")
    assert_one_line_error(cli("search", "--set", "x", cwd=tmp_path), "expected key=value")
    assert_one_line_error(cli("search", "--population", "-3", cwd=tmp_path),
                          "--population: must be >= 0", "see evonas search --help")  # fmt: skip
    assert_one_line_error(cli("frobnicate", cwd=tmp_path), "invalid choice: 'frobnicate'")
    assert_one_line_error(cli(cwd=tmp_path), "the following arguments are required: COMMAND")


def test_existing_run_is_never_overwritten(tmp_path, config_file):
    runs = tmp_path / "runs"
    first = cli("search", "--config", config_file, "--name", "r", "--runs-dir", runs,
                "--generations", "0", cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    before = individuals(runs / "r")
    again = cli("search", "--config", config_file, "--name", "r", "--runs-dir", runs, cwd=tmp_path)
    assert_one_line_error(again, "already holds a run")
    pd.testing.assert_frame_equal(individuals(runs / "r"), before)


def test_genome_command(tmp_path):
    convbase, lenet = ROOT / "genomes" / "mnist1d_convbase.yaml", ROOT / "genomes" / "lenet5.yaml"
    good = cli("genome", convbase, ROOT / "genomes" / "mlp.yaml", "--preset", "mnist1d",
               cwd=tmp_path)  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert "-> (25, 5)" in good.stdout and "17,560 parameters" in good.stdout
    assert good.stdout.count("parameters;") == 2  # several files at once
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers:\n  - {id: 1, op: conv, width: 8}\n")
    assert_one_line_error(cli("genome", bad, cwd=tmp_path), "bad.yaml.layers[0].kernel: missing")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert_one_line_error(cli("genome", broken, cwd=tmp_path), "not valid JSON")
    pools = tmp_path / "pools.yaml"
    pools.write_text(
        "layers:\n"
        + "".join(f"  - {{id: {i}, op: pool, kind: max, size: 2}}\n" for i in range(1, 5))
    )
    assert_one_line_error(
        cli("genome", pools, "--preset", "digits", cwd=tmp_path),
        "infeasible for input (1, 8, 8)",
        "length-1 signal",
    )
    assert cli("genome", lenet, "--preset", "digits", cwd=tmp_path).returncode == 0


def test_help_version_and_descriptions(tmp_path):
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0 and "search" in result.stdout and "genome" in result.stdout
    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("evonas ")
    search = cli("search", "--help", cwd=tmp_path).stdout
    assert "(default: runs)" in search  # defaults are shown
    assert "training.finetune_epochs" in search  # --epochs says what children train
    for command in ("search", "resume", "status", "report", "genome", "export", "optimize",
                    "import", "config"):  # fmt: skip
        text = cli(command, "--help", cwd=tmp_path).stdout
        description = text.split("\n\n")[1]
        assert not description.lstrip().startswith(("positional", "options")), command


def test_config_show_and_schema(tmp_path):
    shown = cli(
        "config", "show", "--preset", "digits", "--set", "search.population=7", cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    settings = yaml.safe_load(shown.stdout)
    assert settings["task"]["name"] == "digits" and settings["search"]["population"] == 7
    schema = json.loads(cli("config", "schema", cwd=tmp_path).stdout)
    assert "search" in schema["properties"]
    bad = cli("config", "show", "--set", "search.populaton=3", cwd=tmp_path)
    assert_one_line_error(bad, "search.populaton: unknown setting")
