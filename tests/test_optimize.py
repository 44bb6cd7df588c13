import shutil

import pandas as pd
import pytest
import torch

from evonas.analysis import Run
from evonas.optimize import nonzero_params, optimize
from tests.conftest import ROOT, cli

VARIANTS = ["original", "pruned-0.5", "pruned-0.9", "channels-0.5", "int8-dynamic", "distilled"]


@pytest.fixture(scope="module")
def run(trained, tmp_path_factory):
    """A copy of the shared trained run (optimize writes into its run directory)."""
    copy = tmp_path_factory.mktemp("optimize") / "run"
    shutil.copytree(trained.path, copy)
    return Run(copy)


@pytest.fixture(scope="module")
def optimized(run):
    uid = int(run.best()["uid"])
    table = optimize(run.path, uid, sparsities=(0.5, 0.9), finetune_epochs=1, distill_epochs=2,
                     channel_fractions=(0.5,))  # fmt: skip
    return uid, table


def test_every_variant_is_measured_and_saved(run, optimized):
    uid, table = optimized
    assert table["variant"].tolist() == VARIANTS
    folder = run.path / "optimized" / f"uid{uid}"
    for variant in VARIANTS:
        assert (folder / f"{variant}.pt").stat().st_size == int(
            table.set_index("variant").loc[variant, "file_bytes"]
        )
    pd.testing.assert_frame_equal(pd.read_csv(folder / "table.csv"), table, check_dtype=False)
    assert table[["val_accuracy", "test_accuracy"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (table["latency_ms"] > 0).all() and (table["flops"] > 0).all()


def test_the_original_row_is_the_journaled_model(run, optimized):
    uid, table = optimized
    original = table.set_index("variant").loc["original"]
    row = run.individuals.set_index("uid").loc[uid]
    assert original["val_accuracy"] == pytest.approx(row["val_accuracy"])
    assert original["params"] <= row["params"]


def test_weight_pruning_reaches_its_sparsity(run, optimized):
    uid, table = optimized
    rows = table.set_index("variant")
    model = run.model(uid)
    prunable = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Conv1d | torch.nn.Linear)
    )
    assert rows.loc["original", "params"] - rows.loc["pruned-0.9", "params"] >= 0.85 * prunable
    assert rows.loc["pruned-0.9", "gzip_bytes"] < rows.loc["original", "gzip_bytes"]
    assert rows.loc["distilled", "params"] < rows.loc["original", "params"]


def test_nonzero_params_counts_zeros_out():
    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight[0] = 0
    assert nonzero_params(layer) == 12 - 4 + 3


def test_cli_optimize_prints_the_table_and_rejects_bad_input(run):
    uid = int(run.best()["uid"])
    done = cli("optimize", str(run.path), "--individual", str(uid), "--sparsity", "0.5",
                   "--finetune-epochs", "0", "--distill-epochs", "1", cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pruned-0.5" in done.stdout and "distilled" in done.stdout
    before = run.individuals
    bad = cli("optimize", str(run.path), "--individual", "9999", cwd=ROOT)
    assert bad.returncode == 2 and "no individual with uid 9999" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = cli("optimize", str(run.path), "--best", "--sparsity", "1.5", cwd=ROOT)
    assert bad.returncode == 2 and "sparsity" in bad.stderr
    pd.testing.assert_frame_equal(Run(run.path).individuals, before)  # the run is intact


def test_int8_variant_of_a_model_without_float_parameters_is_measurable():
    from evonas.batches import arrays
    from evonas.builder import build
    from evonas.genome import parse_genome
    from evonas.optimize import quantize_int8
    from evonas.train import accuracy

    genome = parse_genome({"layers": [{"id": 1, "op": "dense", "units": 8, "activation": "relu"}]})
    quantized = quantize_int8(build(genome, (6,), 3).eval())
    x, y = torch.randn(10, 6).numpy(), torch.zeros(10, dtype=torch.long).numpy()
    assert 0 <= accuracy(quantized, arrays(x, y)) <= 1


def test_channel_pruning_makes_a_smaller_dense_network(run, optimized):
    """Structured pruning removes channels: parameters and FLOPs drop, and the saved genome is
    the smaller architecture."""
    from evonas.genome import load_genome

    uid, table = optimized
    rows = table.set_index("variant")
    assert rows.loc["channels-0.5", "flops"] < 0.6 * rows.loc["original", "flops"]
    assert rows.loc["channels-0.5", "params"] < 0.6 * rows.loc["original", "params"]
    assert rows.loc["pruned-0.5", "flops"] == rows.loc["original", "flops"]  # masks only
    small = load_genome(run.path / "optimized" / f"uid{uid}" / "channels-0.5.yaml")
    widths = [g.params.get("width", g.params.get("units")) for g in small.genes]
    original = [g.params.get("width", g.params.get("units")) for g in run.genome(uid).genes]
    assert [w for w in widths if w] == [max(1, min(w - 1, round(w / 2))) for w in original if w]
