"""The benchmarks of the training path still run (tiny flags, results to a temporary folder), so
their numbers in BENCHMARKS.md can be reproduced after a change."""

import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import ROOT
from tests.test_data import write_idx_set

pytestmark = pytest.mark.slow


def run(script, *args, cwd):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)],
                         cwd=cwd, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_train_speed_compares_both_loops_and_concurrent_evaluations(tmp_path):
    run("train_speed.py", "--samples", 300, "--epochs", 1, "--repeats", 1, "--genomes",
        "cnn-small", "--concurrent", "1,2", "--results", tmp_path, cwd=tmp_path)  # fmt: skip
    table = pd.read_csv(tmp_path / "train_speed.csv")
    assert (table["ratio"] > 0).all() and (table["evaluations_per_hour"] > 0).all()
    assert list(pd.read_csv(tmp_path / "train_speed_concurrent.csv")["evaluations_at_once"]) == [
        1,
        2,
    ]


def test_fashion_mnist_benchmark_searches_and_retrains(tmp_path):
    write_idx_set(tmp_path / "idx", n=300, n_test=60)
    out = run("fashion_mnist.py", "--data", tmp_path / "idx", "--minutes", 0.05, "--limit", 200,
              "--epochs", 1, "--population", 4, "--retrain-epochs", 1, "--results", tmp_path,
              cwd=tmp_path)  # fmt: skip
    row = pd.read_csv(tmp_path / "fashion_mnist.csv").iloc[0]
    assert row["evaluations"] >= 4 and 0 <= row["test_accuracy"] <= 1
    assert "test accuracy" in out


def test_the_surrogate_benchmark_compares_predictors_with_real_training(tmp_path):
    out = run("surrogate_mnist1d.py", "--seeds", 1, "--evaluations", 12, "--epochs", 1,
              "--jobs", 1, "--results", tmp_path, cwd=tmp_path)  # fmt: skip
    table = pd.read_csv(tmp_path / "surrogate_mnist1d.csv")
    assert list(table["predictor"]) == ["none", "gp"]
    assert (table["evaluations"] == 12).all() and table["best_val"].between(0, 1).all()
    assert table.loc[table["predictor"] == "gp", "predictor_rho"].notna().all()
    assert "NASWOT rank corr." in out


def test_the_gradient_benchmark_compares_gradient_search_and_evolution(tmp_path):
    run("gradient_nb201.py", "--seeds", 1, "--darts-epochs", 2, "--gdas-epochs", 2, "--epochs", 1,
        "--final-epochs", 1, "--results", tmp_path, cwd=tmp_path)  # fmt: skip
    table = pd.read_csv(tmp_path / "gradient_nb201.csv")
    assert list(table["arm"]) == ["darts", "gdas", "evolution", "darts+evolution"]
    assert table["test_accuracy"].between(0, 1).all()
    assert table["c10_test_200ep"].between(0, 100).all()
    assert (table.loc[table["arm"] == "darts", "evaluations"] == 1).all()
    assert (table.loc[table["arm"] == "evolution", "evaluations"] >= 1).all()
