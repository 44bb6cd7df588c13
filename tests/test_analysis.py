import signal

import networkx as nx
import pytest
import torch
from matplotlib.figure import Figure

import evonas
from evonas.analysis import RunLookupError, compare, load_run
from evonas.plots import FIGURES
from evonas.store import RunDirError
from tests.conftest import FAULTS
from tests.test_cli_processes import journal_rows, start_cli, wait_until


def test_search_returns_a_run_with_every_evaluation(trained):
    people = trained.individuals
    assert len(people) == 16
    assert {"uid", "generation", "parents", "operator", "origin", "status", "error",
            "val_accuracy", "test_accuracy", "params", "flops", "eval_seconds",
            "cached_from", "weights"} <= set(people.columns)  # fmt: skip
    assert people.loc[people["generation"] == 0, "origin"].eq("sampled").all()
    assert people.loc[people["generation"] > 0, "origin"].eq("offspring").all()
    assert all(isinstance(p, list) for p in people["parents"])
    assert trained.generations["population"].map(len).eq(4).all()
    assert not trained.running


def test_pareto_best_and_genome(trained):
    front = trained.pareto()
    people = trained.individuals
    ok = people[people["status"] == "ok"]
    for _, row in front.iterrows():
        dominated = (
            (ok["val_accuracy"] >= row["val_accuracy"])
            & (ok["params"] <= row["params"])
            & ((ok["val_accuracy"] > row["val_accuracy"]) | (ok["params"] < row["params"]))
        )
        assert not dominated.any()
    assert set(trained.pareto(generation=0)["generation"]) == {0}
    best = trained.best()
    assert best["val_accuracy"] == ok["val_accuracy"].max()
    # the smallest model that is also good: on the front, at least halfway from chance to the best
    smallest = trained.best("params")
    chance = trained.chance["val_accuracy"]
    floor = chance + (best["val_accuracy"] - chance) / 2
    useful = front[front["val_accuracy"] >= floor]
    assert smallest["uid"] in set(useful["uid"]) and smallest["params"] == useful["params"].min()
    assert 0 < chance < 0.5  # 3 balanced classes
    genome = trained.genome(int(best["uid"]))
    assert genome.arch_key() == best["arch_key"]
    with pytest.raises(RunLookupError, match="no individual with uid 999"):
        trained.genome(999)


def test_lineage_as_table_and_graph(trained):
    child = int(trained.individuals["uid"].max())
    lineage = trained.lineage(child)
    assert lineage.iloc[0]["uid"] == child and lineage.iloc[0]["depth"] == 0
    assert (lineage.loc[lineage["depth"] > 0, "generation"] < 3).all()
    assert lineage["origin"].iloc[-1] == "sampled"
    graph = trained.lineage_graph(child)
    assert isinstance(graph, nx.DiGraph)
    assert set(graph.nodes) == set(lineage["uid"])
    assert nx.is_directed_acyclic_graph(graph)
    for _parent, kid, data in graph.edges(data=True):
        assert data["operator"] == trained.individuals.set_index("uid").loc[kid, "operator"]


def test_operator_stats(trained):
    stats = trained.operator_stats()
    people = trained.individuals
    children = people[people["operator"] != "sample"]
    assert stats["uses"].sum() == len(children)
    assert set(stats["operator"]) == set(children["operator"])
    assert stats["beat_parent"].dropna().between(0, 1).all()
    assert {"mean_change_val_accuracy", "mean_change_params"} <= set(stats.columns)


def test_model_has_the_trained_weights(trained):
    best = trained.best()
    model = trained.model(int(best["uid"]))
    from evonas.tasks import load_task

    data = load_task(trained.config.task.model_dump())
    with torch.no_grad():
        predictions = model(torch.from_numpy(data.x_val)).argmax(1).numpy()
    assert (predictions == data.y_val).mean() == pytest.approx(best["val_accuracy"])
    dropped = trained.individuals[trained.individuals["weights"].isna()
                                  & trained.individuals["cached_from"].isna()]  # fmt: skip
    if len(dropped):
        with pytest.raises(RunDirError, match="were not kept"):
            trained.model(int(dropped.iloc[0]["uid"]))


def test_retention_keeps_population_front_and_best(trained):
    people = trained.individuals
    kept = set(people.loc[people["weights"].notna(), "uid"])
    last = set(trained.generations.iloc[-1]["population"])
    assert last <= kept | set(people.loc[people["cached_from"].notna(), "uid"])
    files = {int(p.stem) for p in (trained.path / "weights").glob("*.pt")}
    assert files == kept


@pytest.mark.parametrize("kind", FIGURES)
def test_every_figure(trained, faulty, kind):
    assert isinstance(trained.figure(kind), Figure)
    assert isinstance(faulty.figure(kind), Figure)


def test_runs_with_failures(faulty):
    people = faulty.individuals
    assert {"failed", "timeout", "oom"} <= set(people["status"])
    assert people.loc[people["status"] != "ok", "error"].notna().all()
    counts = evonas.plots.failure_data(people)
    assert counts.drop(columns="generation").to_numpy().sum() == len(people)
    assert faulty.pareto()["status"].eq("ok").all()


def test_compare(trained, faulty):
    curves = compare([trained, faulty.path])
    assert set(curves["run"]) == {"trained", "faulty"}
    for _, part in curves.groupby("run"):
        assert part["best_so_far"].dropna().is_monotonic_increasing
        assert part["evaluation"].tolist() == list(range(1, len(part) + 1))
    assert isinstance(evonas.plots.plot_compare(curves, x="seconds"), Figure)


def start_live_search(tmp_path, training: str):
    """A CLI search of 100 generations on the synthetic task with a slow user evaluator."""
    config = tmp_path / "live.yaml"
    config.write_text(
        f"task: {{name: synthetic}}\ntraining: {training}\n"
        "search: {population: 4, generations: 100}\n"
    )
    command = ["search", "--config", str(config), "--name", "live", "--runs-dir", str(tmp_path)]
    return start_cli(*command, cwd=tmp_path, env_extra={"EVONAS_TEST_SLEEP": "0.2"})


@pytest.mark.slow
def test_load_run_on_a_live_run(tmp_path):
    proc = start_live_search(tmp_path, f"{{evaluator: '{FAULTS}:slow'}}")
    try:
        wait_until(lambda: journal_rows(tmp_path / "live") >= 6)
        run = load_run(tmp_path / "live")
        assert run.running
        first = len(run.individuals)
        wait_until(lambda: len(run.individuals) > first)  # each access reads the journal anew
        assert not run.pareto().empty
        assert isinstance(run.figure("progress"), Figure)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 143


@pytest.mark.slow
def test_learning_curves_are_read_back_while_the_run_goes_on(tmp_path):
    proc = start_live_search(tmp_path, f"{{evaluator: '{FAULTS}:curve', epochs: 4}}")
    try:
        wait_until(lambda: journal_rows(tmp_path / "live") >= 1)
        run = load_run(tmp_path / "live")
        wait_until(lambda: run.curves["uid"].nunique() >= 3)
        assert run.running
        curves = run.curves
        done = curves[curves["status"] == "ok"]
        assert set(done.groupby("uid")["epoch"].max()) == {4}
        assert set(curves.columns) >= {"uid", "epoch", "val_accuracy", "train_loss", "status"}
        assert isinstance(run.figure("curves"), Figure)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 143


def test_load_run_errors(tmp_path):
    with pytest.raises(RunDirError, match="no history.sqlite here"):
        load_run(tmp_path)


def test_figures_carry_the_run_name_and_lineage_shows_both_parents(trained):
    for kind in FIGURES:
        assert trained.figure(kind)._suptitle.get_text() == "trained"
    from evonas.plots import lineage_layout

    people = trained.individuals
    two = people[people["parents"].map(len) == 2]
    for _, child in two.iterrows():
        _, edges = lineage_layout(trained.lineage(int(child["uid"])))
        mine = edges[edges["child"] == child["uid"]]
        assert mine["parent_index"].tolist() == [0, 1]  # also when both are the same individual
        assert mine["parent"].tolist() == child["parents"]


def test_timestamps_are_datetimes(trained):
    people = trained.individuals
    assert str(people["started_at"].dtype).startswith("datetime64")
    assert str(trained.generations["finished_at"].dtype).startswith("datetime64")


def test_compare_warns_when_runs_differ_in_task_or_objectives(trained, faulty, tmp_path):
    import shutil

    import yaml

    with pytest.warns(UserWarning, match="optimised"):
        other = tmp_path / "other"
        shutil.copytree(trained.path, other)
        config = yaml.safe_load((other / "config.yaml").read_text())
        config["search"]["objectives"] = config["search"]["objectives"][:1]
        config["task"]["options"]["samples"] = 100
        (other / "config.yaml").write_text(yaml.safe_dump(config))
        with pytest.warns(UserWarning, match="another task"):
            compare([trained, other])
