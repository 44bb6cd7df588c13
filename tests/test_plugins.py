"""Plugins: the example operator, strategy, space and reporter of examples/plugins in real tiny
searches, and one-line errors for plugins that cannot be used."""

import json
from pathlib import Path

import pandas as pd
import pytest

from evonas.analysis import load_run
from tests.conftest import cli, tiny_config_yaml
from tests.test_evolve import MEASURED, TINY, resume_to_end, run_until_stopped, search

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "plugins"
WIDEN = f"{EXAMPLES / 'widen.py'}:widen"
TRUNCATION = f"{EXAMPLES / 'truncation.py'}:truncation"
PYRAMID = f"{EXAMPLES / 'pyramid.py'}:pyramid"
JSONL = f"{EXAMPLES / 'jsonl.py'}:jsonl"
ONE = "search.objectives=[{name: val_accuracy, goal: max}]"


def widths(genome_json):
    genes = json.loads(genome_json)["layers"]
    return [(g["id"], g.get("width", g.get("units"))) for g in genes
            if g["op"] in ("conv", "residual", "dense")]  # fmt: skip


def test_an_operator_plugin_breeds_children_the_journal_names_it_for(tmp_path):
    run = search(tmp_path, ONE, "search.strategy=tournament", "search.population=6",
                 f'search.operators={{"{WIDEN}": 1}}')  # fmt: skip
    people = run.individuals.set_index("uid")
    children = people[people["operator"] == WIDEN]
    assert len(children) == len(people[people["generation"] > 0])
    widened = 0
    for _, child in children.iterrows():
        (parent,) = json.loads(child["parents"])
        before, after = dict(widths(people.loc[parent, "genome"])), dict(widths(child["genome"]))
        changed = [i for i in after if after[i] != before.get(i)]
        assert before.keys() == after.keys() and len(changed) <= 1  # same gene ids, one wider
        widened += all(after[i] > before[i] for i in changed) and len(changed) == 1
    assert widened  # (a child whose every layer is at the widest stays its parent's copy)


def test_a_strategy_plugin_runs_the_loop_and_resumes_exactly(tmp_path):
    sets = [ONE, f"search.strategy={TRUNCATION}", "search.population=4", "search.generations=3"]
    reference = search(tmp_path, *sets, name="reference")
    assert reference.state == "finished" and len(reference.generations) == 4
    for _, generation in reference.generations.iterrows():  # survivors: the best so far
        people = reference.individuals
        so_far = people[people["generation"] <= generation["generation"]]
        best = so_far.nlargest(1, "val_accuracy")["val_accuracy"].iloc[0]
        assert generation["best_val_accuracy"] == best
    from evonas.config import resolve

    run_until_stopped(resolve(sets=[*TINY, *sets]), tmp_path / "stopped", after=6)
    resumed = resume_to_end(tmp_path / "stopped")
    pd.testing.assert_frame_equal(resumed.individuals.drop(columns=MEASURED),
                                  reference.individuals.drop(columns=MEASURED))  # fmt: skip


def test_a_space_plugin_shapes_every_genome_of_the_search(tmp_path):
    run = search(tmp_path, f"space.kind={PYRAMID}", "search.population=6",
                 "space.ops=[conv, residual, pool, dense]")  # fmt: skip
    assert run.state == "finished"
    convolutions = 0
    for genome in run.individuals["genome"]:
        layers = json.loads(genome)["layers"]
        conv = [g["width"] for g in layers if g["op"] in ("conv", "residual")]
        assert conv == sorted(conv)
        convolutions += len(conv) > 1
    assert convolutions  # some genomes had two convolutions to order


def test_a_reporter_plugin_hears_every_result_once_across_a_resume(tmp_path):
    from evonas.config import resolve

    sets = [f"reporters=[{JSONL}]"]
    run_until_stopped(resolve(sets=[*TINY, *sets]), tmp_path / "run", after=3)
    resumed = resume_to_end(tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").open()]
    results = [line for line in lines if "uid" in line]
    assert sorted(r["uid"] for r in results) == sorted(resumed.individuals["uid"])
    assert [g["generation"] for g in lines if "generation" in g] == [0, 1, 2]
    assert load_run(tmp_path / "run").individuals["status"].eq("ok").all()


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(("setting", "message"), [
    ("search:\n  population: 4\n  strategy: nowhere.py:make\n",
     "search.strategy: nowhere.py: no such file"),
    ("search:\n  population: 4\n  strategy: bad.py:missing\n",
     "search.strategy: 'bad.py' has no function 'missing'"),
    ("search:\n  population: 4\n  operators: {\"bad.py:two_args\": 1}\n",
     "search.operators.bad.py:two_args: an operator takes (genome, space, rng) or (a, b, space, "
     "rng); two_args takes 2 arguments"),
    ("search:\n  population: 4\n  operators: {teleport: 1}\nspace:\n  kind: bad.py:a_space\n",
     "search.operators.teleport: unknown operator for a sequential space"),
    ("space:\n  kind: bad.py:not_a_space\n",
     "space.kind: bad.py:not_a_space made a dict, not a Space"),
    ("reporters: [bad.py:nothing_here]\n", "reporters[0]: 'bad.py' has no function"),
    ("search:\n  population: 4\n  strategy: bad.py:boom\n",
     "search.strategy: bad.py:boom failed (RuntimeError: no strategy today)"),
    ("search:\n  population: 4\n  objectives: [{name: val_accuracy, goal: max}]\n"
     "  strategy: regularized\n  operators: {\"bad.py:cross\": 1}\n",
     "search.operators: this search breeds by mutation (strategy 'regularized'"),
    ("reporters: [mlfow]\n", "reporters: expected one of [tensorboard, mlflow] or a plugin "
                              "(pkg.module:name or path/file.py:name), got 'mlfow'; did you mean "
                              "mlflow?"),
])  # fmt: skip
def test_plugins_that_cannot_be_used_are_one_line_errors_before_anything_is_written(
    tmp_path, setting, message
):
    write(tmp_path / "bad.py", "def two_args(a, b):\n    return a\n\n"
          "def cross(a, b, space, rng):\n    return a\n\n"
          "def boom(search, variation, seen):\n    raise RuntimeError('no strategy today')\n\n"
          "def not_a_space(config, info):\n    return {}\n\n"
          "from evonas.spaces import sequential_space\n\n"
          "def a_space(config, info):\n    return sequential_space(config, info)\n")  # fmt: skip
    sections = {"search": "search:\n  population: 4\n  generations: 1\n"}
    if setting.startswith("space:"):
        sections["space"] = setting
    elif setting.startswith("reporters:"):
        sections["reporters"] = setting
    else:
        sections["search"] = setting.replace("search:\n", "search:\n  generations: 1\n")
        if "space:" in setting:
            sections["search"], sections["space"] = setting.split("space:\n")
            sections["space"] = "space:\n" + sections["space"]
    write(tmp_path / "c.yaml", tiny_config_yaml(**sections))
    done = cli("search", "--config", "c.yaml", "--name", "r", "--runs-dir", "runs", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "runs").exists()
