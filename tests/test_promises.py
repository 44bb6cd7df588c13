"""Every promise of the README holds, through the real command line: no run that "succeeds" while
meaning nothing, every check before anything is written, the NAS-Bench-201 table from the package,
and one line (exit 2) for anything a user can get wrong, never a traceback."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from evonas.export import load_model
from tests.conftest import FAULTS, ROOT, cli, run_cli, tiny_config_yaml
from tests.test_cli import assert_one_line_error, individuals

MODELS = ROOT / "tests" / "import_models.py"


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config_yaml(search="search:\n  population: 4\n  generations: 1\n"))
    return path


def search(tmp_path, *args):
    return cli("search", "--runs-dir", tmp_path / "runs", "--name", "r", *args, cwd=tmp_path)


def nothing_written(tmp_path):
    return not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# 1. Objectives must exist ------------------------------------------------------------------


def test_an_objective_the_trainer_does_not_produce_is_refused_before_the_run(tmp_path, tiny):
    result = search(tmp_path, "--config", tiny,
                    "--set", "search.objectives=[{name: val_acc, goal: max}]")  # fmt: skip
    assert_one_line_error(result, "search.objectives[0].name: 'val_acc' is not a metric the "
                          "built-in trainer produces", "did you mean val_accuracy?")  # fmt: skip
    assert nothing_written(tmp_path)


def test_table_objectives_and_columns_must_agree(tmp_path):
    fitness_changed = search(
        tmp_path, "--preset", "nb201", "--set", "task.options.fitness=c10_test_12ep"
    )
    assert_one_line_error(
        fitness_changed,
        "search.objectives[0].name: 'c10valid_val_12ep' is not "
        "a metric the table task (its fitness and report columns) produces",
    )
    objective_changed = search(
        tmp_path,
        "--preset",
        "nb201",
        "--set",
        "search.objectives=[{name: c10_test_12ep, goal: max}]",
    )
    assert_one_line_error(objective_changed, "'c10_test_12ep' is not a metric",
                          "produces: c10_test_200ep, c10valid_val_12ep")  # fmt: skip
    no_column = search(tmp_path, "--preset", "nb201", "--set", "task.options.fitness=accuracy")
    assert_one_line_error(no_column, "task.options.fitness: no column 'accuracy' in",
                          "columns: arch_index, arch_str")  # fmt: skip
    assert nothing_written(tmp_path)


def test_a_user_evaluator_missing_an_objective_stops_at_its_first_success(tmp_path, tiny):
    (tmp_path / "evaluator.py").write_text(
        "def evaluate(genome, seed, budget):\n    return {'val_acc': 0.5, 'params': 3.0}\n"
    )
    result = search(tmp_path, "--config", tiny, "--set",
                    f"training.evaluator={tmp_path / 'evaluator.py'}:evaluate")  # fmt: skip
    assert_one_line_error(
        result,
        "search.objectives[0].name: 'val_accuracy' is not a metric",
        "produces: params, val_acc",
        "did you mean val_acc?",
        "the run stopped",
    )
    status = cli("status", tmp_path / "runs" / "r", cwd=tmp_path)
    assert "failed" in status.stdout  # the journal says so too, not "running"


def test_test_accuracy_needs_a_test_split(tmp_path):
    (tmp_path / "nosplit.py").write_text(textwrap.dedent("""
        import numpy as np
        def load():
            x = np.random.default_rng(0).normal(size=(60, 4)).astype("float32")
            y = (x[:, 0] > 0).astype(int)
            return {"x_train": x[:40], "y_train": y[:40], "x_val": x[40:], "y_val": y[40:]}
    """))  # fmt: skip
    result = search(tmp_path, "--set", f"task.name={tmp_path / 'nosplit.py'}:load",
                    "--set", "search.objectives=[{name: test_accuracy, goal: max}]")  # fmt: skip
    assert_one_line_error(result, "'test_accuracy' is not a metric the built-in trainer produces")


# 2. Tasks are checked before the run starts; a run where everything fails fails --------------


@pytest.mark.parametrize(
    ("sets", "fragments"),
    [
        (["task.name=table", "space.kind=nb201", "task.options.path=absent.csv.gz"],
         ["task.options.path: cannot read table absent.csv.gz"]),
        (["task.name=fashion_mnist", "task.options.path=/no/such/folder"],
         ["fashion_mnist: /no/such/folder/train-images-idx3-ubyte[.gz] not found"]),
        (["task.name=nosuchmodule:load"], ["task.name: cannot import 'nosuchmodule'"]),
        (["training.evaluator=nosuchmodule:evaluate"],
         ["training.evaluator: cannot import 'nosuchmodule'"]),
    ],
)  # fmt: skip
def test_a_task_or_evaluator_that_cannot_load_is_an_error_before_anything_is_written(
    tmp_path, sets, fragments
):
    result = search(tmp_path, *[arg for s in sets for arg in ("--set", s)])
    assert_one_line_error(result, *fragments)
    assert nothing_written(tmp_path)


def test_a_run_where_every_evaluation_fails_fails_with_the_most_frequent_error(tmp_path, tiny):
    result = search(tmp_path, "--config", tiny, "--set", f"training.evaluator={FAULTS}:fail")
    assert_one_line_error(result, "the run failed: every one of the last 4 evaluations failed",
                          "most frequent error (4x): RuntimeError: every evaluation fails",
                          code=1)  # fmt: skip
    people = individuals(tmp_path / "runs" / "r")
    assert len(people) == 4 and (people["status"] == "failed").all()  # nothing was lost
    assert "failed (every one of the last 4" in cli("status", tmp_path / "runs" / "r",
                                                       cwd=tmp_path).stdout  # fmt: skip


# 3. Metric names are never dropped ------------------------------------------------------------


def test_metric_names_that_are_not_identifiers_are_kept_as_columns(tmp_path, tiny):
    (tmp_path / "evaluator.py").write_text(
        "def evaluate(genome, seed, budget):\n"
        "    return {'val-acc': (seed % 10) / 10, 'top 1': 0.5, 'params': 3.0}\n"
    )
    result = search(tmp_path, "--config", tiny,
                    "--set", f"training.evaluator={tmp_path / 'evaluator.py'}:evaluate",
                    "--set", "search.objectives=[{name: val-acc, goal: max}]")  # fmt: skip
    assert result.returncode == 0, result.stderr
    people = individuals(tmp_path / "runs" / "r")
    assert {"val-acc", "top 1", "params"} <= set(people.columns)
    assert people["val-acc"].notna().all() and "best val-acc:" in result.stdout


# 4. The NAS-Bench-201 table comes from the package ------------------------------------------


def test_the_nb201_preset_works_from_any_directory(tmp_path):
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    result = cli("search", "--preset", "nb201", "--generations", "20", "--name", "nb",
                 "--runs-dir", elsewhere / "runs", cwd=elsewhere)  # fmt: skip
    assert result.returncode == 0, result.stderr
    people = individuals(elsewhere / "runs" / "nb")
    assert len(people) == 30 and people["c10valid_val_12ep"].notna().all()


# 7. No traceback for anything a user can do ---------------------------------------------------


def test_output_piped_into_head_ends_quietly(tmp_path):
    for command in (["config", "schema"], ["search", "--preset", "nb201", "--runs-dir",
                                           str(tmp_path / "runs"), "--name", "piped"]):  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "evonas", *command],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        process.stdout.readline()  # like `| head -1`: read one line, then go away
        process.stdout.close()
        err = process.stderr.read()
        process.wait(timeout=120)
        assert "Traceback" not in err and "BrokenPipeError" not in err, err
    # the search stopped as on Ctrl-C: what it journaled is consistent and resumable
    assert cli("resume", tmp_path / "runs" / "piped", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize(
    ("model", "shape", "fragment"),
    [
        (
            "lazy",
            None,
            "3 (LazyLinear): lazy layers have no shape until data goes through "
            "them; pass --input-shape",
        ),
        ("ConvBase", "1,40", "lstm (LSTM): no evonas gene for this layer"),
        ("upsampling", "3,8,8", "function interpolate"),
    ],
)
def test_models_evonas_cannot_represent_are_one_line_errors(tmp_path, model, shape, fragment):
    given = ["--input-shape", shape] if shape else []
    result = cli("import", f"{MODELS}:{model}", "--out", tmp_path / "m.yaml", *given,
                 cwd=tmp_path)  # fmt: skip
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "m.yaml").exists()


def test_a_conv_bias_before_batch_norm_is_folded_on_import(tmp_path):
    from tests import import_models

    torch.manual_seed(0)
    model = import_models.conv_bias_then_bn().eval()
    model[1].running_mean.uniform_(-0.5, 0.5)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    result = cli("import", f"{MODELS}:conv_bias_then_bn", "--weights", tmp_path / "w.pt",
                 "--out", tmp_path / "m.yaml", "--input-shape", "1,40", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    x = torch.randn(5, 1, 40)
    with torch.no_grad():
        assert torch.allclose(model(x), load_model(tmp_path / "m.yaml")(x), atol=1e-5)


def test_a_seed_made_for_another_input_is_refused_before_the_run(tmp_path, tiny):
    seed = tmp_path / "seed.yaml"
    data = yaml.safe_load((ROOT / "genomes" / "mlp.yaml").read_text())
    seed.write_text(yaml.safe_dump({**data, "input_shape": [1, 28, 28], "num_classes": 10}))
    result = search(tmp_path, "--config", tiny, "--seed-genome", seed)
    assert_one_line_error(result, "seed.yaml: made for input (1, 28, 28), but this task's input "
                          "is (1, 12)")  # fmt: skip
    assert nothing_written(tmp_path)


def test_an_internal_key_error_is_a_bug_not_a_user_error(tmp_path, monkeypatch):
    from evonas import cli as command_line

    def broken(args):
        return {}["missing"]

    monkeypatch.setitem(command_line.COMMANDS, "status", broken)
    with pytest.raises(KeyError):  # a traceback a developer can act on, not "evonas: error"
        command_line.main(["status", str(tmp_path)])


@pytest.mark.slow
def test_pip_install_alone_gives_a_working_evonas(tmp_path):
    """A wheel installed into a fresh venv (with the torch this machine can install) runs a
    search, with no file of the repository in reach."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True)  # fmt: skip
    wheel = next((tmp_path / "dist").glob("evonas-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, os.environ.get("EVONAS_TEST_TORCH", "torch==2.13.0")], check=True)
    subprocess.run([*pip, str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    evonas = str(venv / "bin" / "evonas")
    for command in (
        ["--version"],
        ["search", "--preset", "nb201", "--generations", "10", "--name", "nb"],  # fmt: skip
        [
            "search",
            "--preset",
            "demo",
            "--name",
            "demo",
            "--generations",
            "0",
            "--population",
            "2",
            "--epochs",
            "1",
            "--set",
            "task.name=digits",
        ],
    ):
        done = subprocess.run([evonas, *command], cwd=work, env=env, capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert (work / "runs" / "nb" / "history.sqlite").exists()
    page = [
        str(venv / "bin" / "python"),
        "-c",
        "from evonas.dashboard import WEB; print(sorted(p.name for p in WEB.iterdir()))",
    ]  # the dashboard's page is packaged
    listed = subprocess.run(page, cwd=work, env=env, capture_output=True, text=True, check=True)
    assert listed.stdout.strip() == "['app.js', 'index.html', 'style.css']"


def test_a_failed_run_resumes_past_its_failure_once_the_cause_is_fixed(tmp_path, tiny):
    broken = tmp_path / "broken"
    broken.write_text("the disk is full")
    (tmp_path / "evaluator.py").write_text(textwrap.dedent(f"""
        import os
        def evaluate(genome, seed, budget):
            if os.path.exists({str(broken)!r}):
                raise OSError("No space left on device")
            return {{"val_accuracy": (seed % 10) / 10, "params": 3.0}}
    """))  # fmt: skip
    first = search(tmp_path, "--config", tiny, "--set",
                   f"training.evaluator={tmp_path / 'evaluator.py'}:evaluate")  # fmt: skip
    assert first.returncode == 1 and "OSError: No space left on device" in first.stderr
    broken.unlink()
    resumed = cli("resume", tmp_path / "runs" / "r", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    people = individuals(tmp_path / "runs" / "r")
    assert (people.loc[people["generation"] == 1, "status"] == "ok").all()


def test_the_objectives_are_checked_on_resume_when_nothing_had_succeeded(tmp_path, tiny):
    evaluator = tmp_path / "evaluator.py"
    evaluator.write_text("def evaluate(genome, seed, budget):\n    raise RuntimeError('down')\n")
    args = ("--config", tiny, "--set", f"training.evaluator={evaluator}:evaluate")
    assert search(tmp_path, *args).returncode == 1  # every evaluation failed
    evaluator.write_text("def evaluate(genome, seed, budget):\n    return {'val_acc': 0.5}\n")
    resumed = run_cli("resume", str(tmp_path / "runs" / "r"), cwd=tmp_path)  # imports it anew
    assert_one_line_error(resumed, "'val_accuracy' is not a metric", "did you mean val_acc?")


def test_metric_names_differing_only_in_case_fail_the_evaluation_not_the_run(tmp_path, tiny):
    (tmp_path / "evaluator.py").write_text(
        "def evaluate(genome, seed, budget):\n"
        "    return {'val_accuracy': 0.5, 'params': 1.0, 'Val_Accuracy': 0.4}\n"
    )
    evaluator = f"training.evaluator={tmp_path / 'evaluator.py'}:evaluate"
    result = search(tmp_path, "--config", tiny, "--set", evaluator)
    assert "Traceback" not in result.stderr and result.returncode == 1  # every one failed
    errors = individuals(tmp_path / "runs" / "r")["error"]
    assert errors.str.contains("differs only in case from 'val_accuracy'").all()


def test_more_user_mistakes_are_one_line_errors_before_anything_is_written(tmp_path, tiny):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    result = cli("search", "--config", tiny, "--runs-dir", blocked, "--name", "r", cwd=tmp_path)
    assert_one_line_error(result, "cannot make the run directory")
    for backend, package in (("dask", "distributed"), ("ray", "ray")):
        import importlib.util

        if importlib.util.find_spec(package) is None:
            result = search(tmp_path, "--config", tiny, "--backend", backend)
            assert_one_line_error(result, f"parallel.backend: {backend} needs the {package}")
    derived = tmp_path / "derived.py"
    derived.write_text("def evaluate(genome, seed, budget):\n    return {'n_layers': 3.0}\n")
    result = search(tmp_path, "--config", tiny, "--set", f"training.evaluator={derived}:evaluate",
                    "--set", "search.objectives=[{name: n_layers, goal: min}]")  # fmt: skip
    errors = individuals(tmp_path / "runs" / "r")["error"]
    assert errors.str.contains("'n_layers' is a journal column of its own").all()
