"""Surrogate-assisted breeding: encodings, predictors and acquisitions, and the loop with a
predictor (journaled predictions, determinism for any number of workers, exact resume, several
objectives, bad settings)."""

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evonas.analysis import load_run
from evonas.config import ConfigError, resolve
from evonas.encodings import NB201_PATHS, FeatureIndex, encode
from evonas.predictors import PREDICTORS, expected_improvement, make_predictor, upper_confidence
from evonas.spaces import NB201_OPS, Nb201Space
from tests.conftest import cli
from tests.test_evolve import NB201, SLOW, TINY, copy_run, resume_to_end, same_journal, search

CELL_OPS = st.lists(st.sampled_from(NB201_OPS), min_size=6, max_size=6)


@settings(max_examples=200, deadline=None)
@given(CELL_OPS)
def test_a_cell_encodes_its_edges_and_exactly_its_live_paths(ops):
    features = encode(Nb201Space().genome(ops), "nb201")
    assert sum(v for k, v in features.items() if k.startswith("edge")) == 6
    live = [p for p in NB201_PATHS if all(ops[e] != "none" for e in p)]
    paths = [k for k in features if k.startswith("path:")]
    assert len(paths) == len(set(">".join(ops[e] for e in p) for p in live))
    assert features["connected"] == (2.0 if live else 0.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(CELL_OPS, min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_a_genome_has_the_same_row_whatever_comes_before_it(cells, rnd):
    space = Nb201Space()
    genomes = [space.genome(ops) for ops in cells]
    index = FeatureIndex("nb201")
    first = index.matrix(genomes)
    shuffled = genomes[:]
    rnd.shuffle(shuffled)
    again = index.matrix(shuffled + genomes)[len(shuffled) :]
    np.testing.assert_array_equal(first, again[:, : first.shape[1]])
    assert not again[:, first.shape[1] :].any()  # columns added since are 0 for these


def test_chain_genomes_encode_per_gene_features():
    from evonas.spaces import make_space

    space, _ = make_space(resolve(sets=TINY))
    genome = space.sample(random.Random(0))
    features = encode(genome, "sequential")
    assert features["genes"] == len(genome.genes)
    assert sum(v for k, v in features.items() if k.startswith("n:")) == len(genome.genes)
    assert "training.lr" in features


@pytest.mark.parametrize("name", list(PREDICTORS))
def test_predictors_learn_a_function_and_are_deterministic_for_a_seed(name):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 2, size=(120, 10)).astype(float)
    y = X @ np.arange(10.0)
    train, test = slice(0, 100), slice(100, 120)
    a, b = make_predictor(name, 3), make_predictor(name, 3)
    a.fit(X[train], y[train])
    b.fit(X[train], y[train])
    mean, std = a.predict(X[test])
    np.testing.assert_array_equal(mean, b.predict(X[test])[0])
    assert np.corrcoef(mean, y[test])[0, 1] > 0.8
    assert (std >= 0).all() and std.shape == mean.shape


def test_a_gaussian_process_is_sure_where_it_has_measured():
    X = np.eye(6)
    model = make_predictor("gp", 0)
    model.fit(X[:4], np.array([1.0, 2.0, 3.0, 4.0]))
    mean, std = model.predict(X)
    np.testing.assert_allclose(mean[:4], [1, 2, 3, 4], atol=0.1)
    assert std[:4].max() < std[4:].min()


def test_acquisitions_prefer_better_means_and_more_uncertainty():
    mean, std = np.array([1.0, 2.0, 2.0]), np.array([0.5, 0.5, 1.0])
    ei = expected_improvement(mean, std, best=2.0, beta=0)
    assert (ei >= 0).all() and ei[0] < ei[1] < ei[2]
    ucb = upper_confidence(mean, std, best=2.0, beta=2.0)
    np.testing.assert_allclose(ucb, [0.0, 1.0, 2.0])


# --- in the loop ---------------------------------------------------------------------------------

SURROGATE = [*NB201, "search.strategy=local", "search.predictor=gp", "search.generations=40"]


def test_predictions_are_journaled_beside_what_was_measured(tmp_path):
    result = search(tmp_path, *SURROGATE)
    people = result.individuals
    predicted = people[people["prediction"].notna()]
    assert len(predicted) >= 35  # every child once 5 results are in
    first = json.loads(predicted["prediction"].iloc[0])
    mean, std = first["c10valid_val_12ep"]
    assert 0 < mean < 100 and std >= 0
    run = load_run(tmp_path / "run")
    table = run.predictions
    assert len(table) == len(predicted)
    assert table["measured"].notna().all() and table["predicted"].notna().all()
    fig = run.figure("predictions")
    assert "rank correlation" in fig.axes[0].get_title()


def test_without_a_predictor_nothing_is_predicted(tmp_path):
    run_dir = tmp_path / "run"
    search(tmp_path, *NB201, "search.strategy=local", "search.generations=10")
    assert load_run(run_dir).predictions.empty
    fig = load_run(run_dir).figure("predictions")
    assert "search.predictor: none" in fig.axes[0].get_title()


def test_a_predictor_finds_better_cells_than_local_search_at_equal_evaluations(tmp_path):
    """Over a few seeds, at 60 evaluations: the mean of the best found is higher."""
    plain, assisted = [], []
    for seed in range(4):
        for sets, found in (([], plain), (["search.predictor=gp"], assisted)):
            run = search(tmp_path, *NB201, "search.strategy=local", "search.population=10",
                         "search.generations=50", f"seed={seed}", *sets,
                         name=f"{seed}-{len(sets)}")  # fmt: skip
            found.append(run.individuals["c10valid_val_12ep"].max())
    assert np.mean(assisted) > np.mean(plain)


def test_same_seed_same_history_for_any_number_of_workers(tmp_path):
    sets = [*SLOW, "search.population=6", "search.generations=3", "search.predictor=trees",
            "search.surrogate.min_observations=3"]  # fmt: skip
    one = search(tmp_path, *sets, name="one").individuals
    two = search(tmp_path, *sets, "parallel.backend=loky", "parallel.n_jobs=2", name="two")
    same_journal(one, two.individuals)
    assert one["prediction"].notna().sum() >= 12


def test_a_surrogate_run_resumes_exactly(tmp_path):
    sets = [*SURROGATE, "search.predictor=trees"]
    reference = search(tmp_path, *sets, name="reference")
    for keep in (3, 17):
        copy_run(tmp_path / "reference", tmp_path / f"cut-{keep}", keep)
        same_journal(resume_to_end(tmp_path / f"cut-{keep}").individuals, reference.individuals)


def test_several_objectives_are_screened_by_predicted_dominance(tmp_path):
    """Default objectives (val_accuracy up, params down) with NSGA-II and a trees predictor:
    every child after the first results carries a prediction of both."""
    result = search(tmp_path, *SLOW, "search.population=6", "search.generations=3",
                    "search.predictor=trees")  # fmt: skip
    children = result.individuals[result.individuals["generation"] > 0]
    predictions = [json.loads(p) for p in children["prediction"]]
    assert all(set(p) == {"val_accuracy", "params"} for p in predictions)
    assert all(p["params"][0] > 0 for p in predictions)  # in the metric's own units


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("search.predictor=forest", "search.predictor"),
        ("search.surrogate.acquisition=pi", "search.surrogate.acquisition"),
        ("search.surrogate.candidates=0", "search.surrogate.candidates"),
        ("search.surrogate.samples=-1", "search.surrogate.samples"),
    ],
)
def test_bad_surrogate_settings_are_one_line_errors(tmp_path, setting, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        resolve(sets=[*TINY, setting])
    result = cli("search", "--preset", "nb201", "--set", setting, "--name", "bad", cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "bad").exists()


def test_the_report_shows_the_predictions_figure_only_for_a_run_with_a_predictor(tmp_path):
    search(tmp_path, *SURROGATE, "search.generations=10", name="assisted")
    search(tmp_path, *NB201, "search.generations=10", name="plain")
    for name, shown in (("assisted", True), ("plain", False)):
        assert cli("report", tmp_path / name, cwd=tmp_path).returncode == 0
        page = (tmp_path / name / "report.html").read_text()
        assert ('id="fig-predictions"' in page) == shown
