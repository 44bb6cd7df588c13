import numpy as np
import pytest
import torch

from evonas.batches import arrays
from evonas.builder import build
from evonas.genome import parse_genome
from evonas.tasks import load_task
from evonas.train import TimeBudgetExceeded, TrainingDiverged, accuracy, logits_of, train

SETTINGS = {
    "optimizer": "adam",
    "epochs": 8,
    "batch_size": 32,
    "weight_decay": 0.0,
    "timeout": 0.0,
}
GENOME = parse_genome(
    {
        "layers": [
            {
                "id": 1,
                "op": "conv",
                "width": 8,
                "kernel": 3,
                "stride": 1,
                "activation": "relu",
                "batch_norm": True,
            },
            {"id": 2, "op": "dense", "units": 16, "activation": "relu"},
        ]
    }
)


def data():
    return load_task(
        {
            "name": "synthetic",
            "options": {"samples": 300, "length": 12},
            "split_seed": 0,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        }
    )


def trained(seed, **settings):
    d = data()
    torch.manual_seed(seed)
    model = build(GENOME, d.input_shape, d.num_classes)
    stats = train(model, arrays(d.x_train, d.y_train), {**SETTINGS, **settings}, 0.01, seed)
    return model, stats, d


def test_training_learns_the_task():
    model, stats, d = trained(0)
    val = accuracy(model, arrays(d.x_val, d.y_val))
    assert val > 0.8  # three classes: chance is 1/3
    assert stats["train_seconds"] > 0


def test_training_is_deterministic_for_a_seed():
    first, _, d = trained(5)
    second, _, _ = trained(5)
    other, _, _ = trained(6)
    x = torch.from_numpy(d.x_val)
    assert torch.equal(first(x), second(x))
    assert not torch.equal(first(x), other(x))


def test_nan_loss_is_an_error():
    d = data()
    x = d.x_train.copy()
    x[0, 0, 0] = np.nan
    model = build(GENOME, d.input_shape, d.num_classes)
    with pytest.raises(TrainingDiverged, match="loss became nan in epoch 1"):
        train(model, arrays(x, d.y_train), SETTINGS, 0.01, 0)


def test_time_budget_is_enforced():
    with pytest.raises(TimeBudgetExceeded, match="budget of 1e-09 s"):
        trained(0, timeout=1e-9)


def test_distillation_follows_the_teacher_not_the_labels():
    teacher, _, d = trained(0)
    teacher_logits = logits_of(teacher, arrays(d.x_train, d.y_train))
    wrong = np.random.default_rng(0).permutation(d.y_train)  # labels that teach nothing
    results = {}
    for alpha in (0.0, 1.0):
        torch.manual_seed(1)
        student = build(GENOME, d.input_shape, d.num_classes)
        settings = {**SETTINGS, "distill_alpha": alpha, "distill_temperature": 2.0}
        train(student, arrays(d.x_train, wrong), settings, 0.01, 1, teacher_logits=teacher_logits)
        results[alpha] = accuracy(student, arrays(d.x_val, d.y_val))
    assert results[1.0] > 0.75  # learned the task from the teacher's soft targets alone
    assert results[0.0] < 0.6  # the same training on the shuffled labels alone does not
