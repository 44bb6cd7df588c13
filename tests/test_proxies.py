"""Zero-cost proxies: synflow and NASWOT on real models, and journaled by a real training run."""

import torch
from torch import nn

from evonas.proxies import naswot, synflow, zero_cost_metrics
from tests.test_evolve import search


def mlp(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, width), nn.ReLU(), nn.Linear(width, 3))


def test_synflow_grows_with_the_network_and_leaves_it_untouched():
    model = mlp(8)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(16, 1, 12)
    small, large = synflow(model, x), synflow(mlp(64), x)
    assert 0 < small < large
    assert synflow(model, x) == small  # deterministic
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_naswot_scores_inputs_the_network_tells_apart_higher():
    model = mlp(32)
    distinct = naswot(model, torch.randn(16, 1, 12))
    alike = naswot(model, torch.randn(1, 1, 12).repeat(16, 1, 1) + 1e-4 * torch.randn(16, 1, 12))
    assert distinct > alike


def test_batch_norm_statistics_are_not_changed_by_the_proxies():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(40, 3))  # fmt: skip
    stats = model[1].running_mean.clone()
    from evonas.batches import arrays

    data = arrays(torch.randn(80, 1, 12).numpy(), torch.zeros(80, dtype=torch.long).numpy())
    metrics = zero_cost_metrics(["synflow", "naswot"], model, data)
    assert set(metrics) == {"synflow", "naswot"}
    assert torch.equal(model[1].running_mean, stats)


def test_a_real_search_journals_the_proxies_without_changing_training(tmp_path):
    people = search(tmp_path, "training.zero_cost=[synflow, naswot]").individuals
    assert (people["status"] == "ok").all()
    assert people["synflow"].gt(0).all() and people["naswot"].notna().all()
    plain = search(tmp_path, name="plain").individuals
    columns = ["uid", "genome", "val_accuracy", "params"]
    assert people[columns].equals(plain[columns])


def test_a_proxy_can_be_an_objective(tmp_path):
    objectives = "search.objectives=[{name: val_accuracy, goal: max}, {name: naswot, goal: max}]"
    result = search(tmp_path, "training.zero_cost=[naswot]", objectives)
    assert result.state == "finished" and result.individuals["naswot"].notna().all()


def test_a_proxy_that_is_not_measured_is_not_an_objective(tmp_path):
    import pytest

    from evonas.config import ConfigError

    with pytest.raises(ConfigError, match="'naswot' is not a metric"):
        search(tmp_path, "search.objectives=[{name: naswot, goal: max}]")
