"""Gradient-based search (DARTS / GDAS): the supernet, its loop, and seeding evolution from it."""

import json
import signal
import sqlite3

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evonas.analysis import Run, run_status
from evonas.arch_weights import derived_operations, probabilities
from evonas.builder import Nb201Cell
from evonas.config import ConfigError, resolve
from evonas.launch import resume_search, run_search, run_to_end, start_search
from evonas.reporters import Reporter
from evonas.spaces import NB201_EDGES, NB201_OPS, Nb201Space
from evonas.supernet import MixedOp, SuperCell, Supernet
from evonas.tasks import table_lookup
from tests.conftest import NB201_TABLE, cli

GRADIENT = [
    "task.name=digits",
    "space.kind=nb201",
    "search.strategy=gradient",
    "search.gradient.method=darts",
    "search.gradient.epochs=3",
    "search.gradient.channels=4",
    "search.gradient.cells_per_stage=1",
    "search.gradient.batch_size=128",
    "search.objectives=[{name: val_accuracy, goal: max}]",
    "search.plot_every=0",
    "parallel.backend=inline",
]
# the derived cells scored from the NAS-Bench-201 table: only the supernet trains
ON_TABLE = [*GRADIENT, "task.name=table", f"task.options={{path: {NB201_TABLE}}}",
            "search.gradient.task={name: digits}",
            "search.objectives=[{name: c10valid_val_12ep, goal: max}]"]  # fmt: skip


def one_hot(index: int, size: int = len(NB201_OPS)) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(index), size).float()


@pytest.mark.parametrize("index", range(len(NB201_OPS)))
def test_a_mixed_op_with_one_hot_weights_is_the_chosen_op(index):
    torch.manual_seed(0)
    mixed = MixedOp(NB201_OPS, channels=4).eval()
    x = torch.randn(2, 4, 6, 6)
    chosen = mixed.candidates[index](x)
    torch.testing.assert_close(mixed(x, one_hot(index)), chosen)
    torch.testing.assert_close(mixed(x, one_hot(index), chosen=index), chosen)  # hard sampling


def test_a_supercell_with_one_hot_weights_is_the_derived_cell():
    torch.manual_seed(1)
    ops = ["nor_conv_3x3", "skip_connect", "none", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3"]
    indices = [NB201_OPS.index(op) for op in ops]
    supercell = SuperCell(NB201_OPS, channels=4).eval()
    cell = Nb201Cell([(t, s, op) for (t, s), op in zip(NB201_EDGES, ops)], channels=4).eval()
    kept = [e for e, op in enumerate(ops) if op != "none"]
    for module, e in zip(cell.ops, kept):  # the derived cell gets the chosen candidates' weights
        module.load_state_dict(supercell.edges[e].candidates[indices[e]].state_dict())
    weights = torch.stack([one_hot(i) for i in indices])
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(supercell(x, weights, None), cell(x))
    torch.testing.assert_close(supercell(x, weights, indices), cell(x))


def test_gdas_samples_one_op_per_edge_and_its_gradient_reaches_every_weight():
    torch.manual_seed(2)
    net = Supernet(NB201_OPS, (1, 8, 8), 10, channels=4, cells_per_stage=1, method="gdas")
    net.train()
    weights, chosen = net.mixing()
    assert len(chosen) == len(NB201_EDGES)
    assert torch.equal(weights.detach(), torch.stack([one_hot(i) for i in chosen]))
    net(torch.randn(4, 1, 8, 8)).sum().backward()
    assert net.arch.grad is not None and (net.arch.grad != 0).any()
    net.eval()
    assert net.mixing()[1] == net.arch.argmax(dim=-1).tolist()  # evaluation: the derived cell


arch_matrices = st.lists(
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=5, max_size=5), min_size=6, max_size=6
)


@settings(max_examples=60, deadline=None)
@given(arch=arch_matrices, top=st.integers(1, 30))
def test_derived_cells_are_the_strongest_then_one_edge_changes(arch, top):
    arch = tuple(tuple(row) for row in arch)
    cells = derived_operations(arch, NB201_OPS, top)
    probs = probabilities(arch)
    best = cells[0]
    assert all(probs[e][NB201_OPS.index(op)] == max(probs[e]) for e, op in enumerate(best))
    assert len(cells) == min(top, 1 + len(NB201_EDGES) * (len(NB201_OPS) - 1))
    assert len({tuple(c) for c in cells}) == len(cells)
    scores = []
    for cell in cells[1:]:
        (edge,) = [e for e in range(len(best)) if cell[e] != best[e]]
        scores.append(
            probs[edge][NB201_OPS.index(cell[edge])] / probs[edge][NB201_OPS.index(best[edge])]
        )
    assert all(a >= b - 1e-12 for a, b in zip(scores, scores[1:]))  # most probable first


def gradient_search(tmp_path, *sets, name="run"):
    return run_search(resolve(sets=[*GRADIENT, *sets]), tmp_path / name, log=None)


def test_a_gradient_search_journals_each_epoch_then_evaluates_the_derived_cell(tmp_path):
    result = gradient_search(tmp_path, *ON_TABLE[len(GRADIENT) :], "search.gradient.top=2")
    assert result.state == "finished"
    run = Run(result.run_dir)
    supernet = run.supernet
    assert supernet["epoch"].tolist() == [1, 2, 3]
    assert supernet["train_loss"].iloc[-1] < supernet["train_loss"].iloc[0]  # it learns
    people = run.individuals
    assert people["operator"].tolist() == ["gradient", "gradient"]
    assert people["origin"].tolist() == ["supernet:darts"] * 2
    assert (people["status"] == "ok").all() and people["c10valid_val_12ep"].between(0, 100).all()
    space = Nb201Space()
    assert space.to_string(run.genome(0)) == supernet["cell"].iloc[-1]  # the last epoch's cell
    assert space.problems(run.genome(1)) == []
    weights = run.arch_weights
    assert len(weights) == 3 * len(NB201_EDGES) * len(NB201_OPS)
    sums = weights.groupby(["epoch", "edge"])["weight"].sum()
    assert sums.round(6).eq(1).all()
    assert "supernet (darts): 3 of 3 epochs" in run_status(result.run_dir)
    assert list((result.run_dir / "supernet").iterdir()) == [result.run_dir / "supernet" /
                                                              "epoch-003.pt"]  # fmt: skip


def test_the_gradient_loop_is_deterministic_for_a_seed(tmp_path):
    sets = [*ON_TABLE[len(GRADIENT) :], "search.gradient.epochs=2"]
    first = Run(gradient_search(tmp_path, *sets, name="a").run_dir)
    second = Run(gradient_search(tmp_path, *sets, name="b").run_dir)
    other = Run(gradient_search(tmp_path, *sets, "seed=1", name="c").run_dir)
    same = ["epoch", "cell", "train_loss", "arch_loss", "val_accuracy", "tau"]
    pd.testing.assert_frame_equal(first.supernet[same], second.supernet[same])
    pd.testing.assert_frame_equal(first.arch_weights, second.arch_weights)
    assert not first.arch_weights["raw"].equals(other.arch_weights["raw"])


def test_on_the_table_task_the_derived_cell_is_scored_from_the_table(tmp_path):
    result = run_search(resolve(sets=ON_TABLE), tmp_path / "run", log=None)
    run = Run(result.run_dir)
    cell = run.supernet["cell"].iloc[-1]
    expected = table_lookup({"path": str(NB201_TABLE)}, cell)
    row = run.individuals.iloc[0]
    assert row["c10valid_val_12ep"] == pytest.approx(expected["c10valid_val_12ep"])


class StopAfterEpoch(Reporter):
    def __init__(self, session, epoch: int) -> None:
        self.session, self.epoch = session, epoch

    def info(self, line: str) -> None:
        if line.startswith(f"supernet epoch {self.epoch}/"):
            self.session.request_stop(signal.SIGINT)


def test_a_stopped_gradient_search_resumes_to_the_same_journal(tmp_path):
    sets = [*ON_TABLE, "search.gradient.method=gdas"]  # the default, written out
    reference = run_search(resolve(sets=sets), tmp_path / "reference", log=None)
    session = start_search(resolve(sets=sets), tmp_path / "stopped", log=None)
    session.reporters.add(StopAfterEpoch(session, 2))
    assert run_to_end(session).state == "interrupted"
    assert Run(tmp_path / "stopped").supernet["epoch"].tolist() == [1, 2]
    assert Run(tmp_path / "stopped").individuals.empty
    resumed = run_to_end(resume_search(tmp_path / "stopped", log=None))
    assert resumed.state == "finished"
    a, b = Run(reference.run_dir), Run(resumed.run_dir)
    same = ["epoch", "cell", "train_loss", "arch_loss", "val_accuracy", "tau"]
    pd.testing.assert_frame_equal(a.supernet[same], b.supernet[same])
    pd.testing.assert_frame_equal(a.arch_weights, b.arch_weights)
    keep = ["uid", "genome", "operator", "status", "c10valid_val_12ep"]
    pd.testing.assert_frame_equal(a.individuals[keep], b.individuals[keep])


def test_a_killed_epoch_is_trained_again_from_the_last_journaled_one(tmp_path):
    """A kill after a worker saved epoch 2's supernet but before the journal held it: the
    resume trains epoch 2 again from epoch 1's checkpoint (kept until 2 is journaled)."""
    sets = [*ON_TABLE, "search.gradient.epochs=2"]
    reference = run_search(resolve(sets=sets), tmp_path / "reference", log=None)
    session = start_search(resolve(sets=sets), tmp_path / "killed", log=None)
    session.reporters.add(StopAfterEpoch(session, 1))
    run_to_end(session)
    killed = tmp_path / "killed"
    assert (killed / "supernet" / "epoch-001.pt").exists()
    (killed / "supernet" / "epoch-002.pt").write_bytes(b"written, never journaled")
    with sqlite3.connect(killed / "history.sqlite") as db:
        db.execute("UPDATE meta SET value = '\"running\"' WHERE key = 'state'")
    resumed = run_to_end(resume_search(killed, log=None))
    assert resumed.state == "finished"
    pd.testing.assert_frame_equal(Run(reference.run_dir).arch_weights, Run(killed).arch_weights)
    assert resumed.individuals["genome"].tolist() == reference.individuals["genome"].tolist()
    assert not (killed / "supernet" / "epoch-001.pt").exists()


def test_a_failing_supernet_epoch_fails_the_run_with_its_reason(tmp_path, monkeypatch):
    import evonas.supernet

    def broken(self):
        raise FloatingPointError("supernet loss became nan in epoch 1")

    monkeypatch.setattr(evonas.supernet.SupernetSearch, "run_epoch", broken)
    result = run_search(resolve(sets=ON_TABLE), tmp_path / "run", log=None)
    assert result.state == "failed"
    assert "supernet epoch 1 failed: FloatingPointError" in result.reason
    assert result.individuals.empty


def test_a_gradient_run_on_digits_seeds_an_evolutionary_search(tmp_path):
    base = ["--set", "task.name=digits", "--set", "space.kind=nb201", "--set",
            "parallel.backend=inline", "--set", "training.epochs=1", "--set",
            "search.objectives=[{name: val_accuracy, goal: max}]", "--set",
            "search.plot_every=0"]  # fmt: skip
    gradient = cli("search", "--name", "gradient", *base, "--set", "search.strategy=gradient",
                   "--set", "search.gradient.epochs=2", "--set", "search.gradient.channels=4",
                   "--set", "search.gradient.cells_per_stage=1", cwd=tmp_path)  # fmt: skip
    assert gradient.returncode == 0, gradient.stderr
    assert "supernet epoch 2/2" in gradient.stdout
    derived = Run(tmp_path / "runs" / "gradient").genome(0)
    assert Nb201Space().problems(derived) == []
    evolved = cli("search", "--name", "evolved", *base, "--set", "search.strategy=regularized",
                  "--set", "search.population=2", "--set", "search.generations=1",
                  "--seed-run", "runs/gradient", cwd=tmp_path)  # fmt: skip
    assert evolved.returncode == 0, evolved.stderr
    people = Run(tmp_path / "runs" / "evolved").individuals
    seed = people[people["operator"] == "seed"]
    assert len(seed) == 1 and seed["origin"].iloc[0].endswith("gradient#uid0")
    assert json.loads(seed["genome"].iloc[0]) == derived.to_dict()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["space.kind=sequential"], "search.strategy: gradient needs a cell space"),
        (["task.name=table"], "search.gradient.task: a table lookup has no data"),
        (["search.predictor=gp"], "search.predictor: screens the children"),
        (["search.seed_run=runs/x"], "a gradient search starts from the supernet"),
        (["search.gradient.tau_min=20"], "search.gradient.tau_min: must be <= tau_max"),
        (["search.gradient.task={name: table}"], "the supernet trains on real data"),
    ],
)
def test_bad_gradient_settings_are_one_line_errors(sets, message):
    with pytest.raises(ConfigError, match=message):
        resolve(sets=[*GRADIENT, *sets])


def test_a_supernet_needs_images_before_anything_is_written(tmp_path):
    sets = ["space.kind=nb201", "search.strategy=gradient", "task.name=mnist1d"]
    result = cli("search", "--name", "x", *[a for s in sets for a in ("--set", s)], cwd=tmp_path)
    assert result.returncode == 2
    assert "needs images (C, H, W)" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "x").exists()


def test_the_report_of_a_gradient_run_shows_the_supernet(tmp_path):
    from evonas.report import write_report

    result = run_search(resolve(sets=[*ON_TABLE, "search.gradient.epochs=2"]), tmp_path / "run",
                        log=None)  # fmt: skip
    page = write_report(result.run_dir).read_text()
    assert 'id="fig-arch_weights"' in page and "<h2>Supernet</h2>" in page
    assert Run(result.run_dir).supernet["cell"].iloc[-1] in page
