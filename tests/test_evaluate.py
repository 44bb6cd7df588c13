import textwrap

import pytest

from evonas.evaluate import MEASURED_METRICS, run_job
from evonas.records import Job, evaluation_seed
from tests.test_train import GENOME

TASK = {
    "name": "synthetic",
    "options": {"samples": 200, "length": 12},
    "split_seed": 0,
    "val_fraction": 0.2,
    "test_fraction": 0.2,
}
TRAINING = {
    "optimizer": "adam",
    "epochs": 2,
    "batch_size": 32,
    "weight_decay": 0.0,
    "threads": 1,
    "timeout": 0.0,
}


def job(genome=None, evaluator=None, **training):
    return Job(7, (genome or GENOME).to_dict(), 11, TASK, {**TRAINING, **training},
               evaluator=evaluator).to_dict()  # fmt: skip


def test_builtin_job_reports_all_metrics():
    result = run_job(job())
    assert result["status"] == "ok" and result["error"] is None
    assert result["uid"] == 7
    metrics = result["metrics"]
    expected = {"val_accuracy", "test_accuracy", "params", "flops", "train_seconds", "size_bytes",
                "latency_ms", "peak_memory_mb"}  # fmt: skip
    assert expected <= set(metrics)
    assert 0 <= metrics["val_accuracy"] <= 1 and metrics["params"] > 0 and metrics["flops"] > 0


def test_same_job_gives_same_metrics():
    a, b = run_job(job())["metrics"], run_job(job())["metrics"]
    for timing in MEASURED_METRICS:
        a.pop(timing), b.pop(timing)
    assert a == b


def test_exceptions_become_failed_results():
    result = run_job(job(optimizer="lbfgs"))
    assert result["status"] == "failed"
    assert result["error"] == "ValueError: training.optimizer: unknown optimizer 'lbfgs'"
    assert result["metrics"] == {}


@pytest.fixture
def evaluators(tmp_path, monkeypatch):
    (tmp_path / "myeval.py").write_text(
        textwrap.dedent("""
        def score(genome, seed, budget):
            return {"val_accuracy": len(genome["layers"]) / 10, "given_seed": seed,
                    "epochs": budget["epochs"]}
        def nan(genome, seed, budget):
            return {"val_accuracy": float("nan")}
        def boom(genome, seed, budget):
            raise RuntimeError("disk on fire")
        def text(genome, seed, budget):
            return {"val_accuracy": "high"}
        def dashed(genome, seed, budget):
            return {"val-acc": 0.5, "Top 1": 0.25}
        def clash(genome, seed, budget):
            return {"val_accuracy": 0.5, "Seed": 3}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_user_evaluator_gets_genome_seed_and_budget(evaluators):
    result = run_job(job(evaluator="myeval:score", epochs=3))
    assert result["status"] == "ok"
    assert result["metrics"] == {"val_accuracy": 0.2, "given_seed": 11.0, "epochs": 3.0}


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("nan", "ValueError: metric 'val_accuracy' is nan"),
        ("boom", "RuntimeError: disk on fire"),
        ("text", "TypeError: evaluator returned a non-numeric metric"),
        ("absent", "PluginError: training.evaluator: 'myeval' has no function 'absent'"),
        ("clash", "MetricNameError: metric name 'Seed' is a journal column of its own (seed)"),
    ],
)
def test_user_evaluator_failures_are_data(evaluators, name, error):
    result = run_job(job(evaluator=f"myeval:{name}"))
    assert result["status"] == "failed"
    assert result["error"].startswith(error)


def test_metric_names_that_are_not_identifiers_are_kept(evaluators):
    result = run_job(job(evaluator="myeval:dashed"))
    assert result["status"] == "ok"
    assert result["metrics"] == {"val-acc": 0.5, "Top 1": 0.25}


def test_evaluation_seed_depends_on_run_seed_and_uid_only():
    assert evaluation_seed(0, 1) == evaluation_seed(0, 1)
    assert len({evaluation_seed(s, u) for s in range(5) for u in range(50)}) == 250
