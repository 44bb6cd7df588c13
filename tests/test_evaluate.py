import textwrap

import pytest

from evonas.evaluate import evaluation_seed, run_job
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
    return {
        "uid": 7,
        "genome": (genome or GENOME).to_dict(),
        "seed": 11,
        "task": TASK,
        "training": {**TRAINING, **training},
        "evaluator": evaluator,
    }


def test_builtin_job_reports_all_metrics():
    result = run_job(job())
    assert result["status"] == "ok" and result["error"] is None
    assert result["uid"] == 7
    metrics = result["metrics"]
    expected = {"val_accuracy", "test_accuracy", "params", "flops", "train_seconds", "size_bytes",
                "latency_ms"}  # fmt: skip
    assert expected <= set(metrics)
    assert 0 <= metrics["val_accuracy"] <= 1 and metrics["params"] > 0 and metrics["flops"] > 0


def test_same_job_gives_same_metrics():
    a, b = run_job(job())["metrics"], run_job(job())["metrics"]
    for timing in ("train_seconds", "latency_ms"):
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
            return {"val_accuracy": len(genome["layers"]) / 10, "seed": seed,
                    "epochs": budget["epochs"]}
        def nan(genome, seed, budget):
            return {"val_accuracy": float("nan")}
        def boom(genome, seed, budget):
            raise RuntimeError("disk on fire")
        def text(genome, seed, budget):
            return {"val_accuracy": "high"}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_user_evaluator_gets_genome_seed_and_budget(evaluators):
    result = run_job(job(evaluator="myeval:score", epochs=3))
    assert result["status"] == "ok"
    assert result["metrics"] == {"val_accuracy": 0.2, "seed": 11.0, "epochs": 3.0}


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("nan", "ValueError: metric 'val_accuracy' is nan"),
        ("boom", "RuntimeError: disk on fire"),
        ("text", "TypeError: evaluator returned a non-numeric metric"),
        ("absent", "PluginError: training.evaluator: 'myeval' has no function 'absent'"),
    ],
)
def test_user_evaluator_failures_are_data(evaluators, name, error):
    result = run_job(job(evaluator=f"myeval:{name}"))
    assert result["status"] == "failed"
    assert result["error"].startswith(error)


def test_evaluation_seed_depends_on_run_seed_and_uid_only():
    assert evaluation_seed(0, 1) == evaluation_seed(0, 1)
    assert len({evaluation_seed(s, u) for s in range(5) for u in range(50)}) == 250
