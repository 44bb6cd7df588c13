import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from evonas.objectives import Objective
from evonas.plots import (
    pareto_data,
    plot_pareto,
    plot_progress,
    progress_data,
    write_generation_plots,
)

OBJECTIVES = [Objective("val_accuracy", "max"), Objective("params", "min")]


def individuals():
    return pd.DataFrame(
        {
            "uid": [0, 1, 2, 3, 4],
            "generation": [0, 0, 1, 1, 1],
            "status": ["ok", "ok", "ok", "failed", "ok"],
            "val_accuracy": [0.5, 0.9, 0.7, np.nan, 0.4],
            "params": [100.0, 1000.0, 50.0, np.nan, 500.0],
        }
    )


def generations():
    return pd.DataFrame(
        {
            "generation": [0, 1],
            "best_val_accuracy": [0.9, 0.9],
            "median_val_accuracy": [0.7, 0.8],
            "best_params": [100.0, 50.0],
            "median_params": [550.0, 100.0],
        }
    )


def test_pareto_data_skips_failures():
    data = pareto_data(individuals(), OBJECTIVES)
    assert data["uid"].tolist() == [0, 1, 2, 4]
    assert data.loc[data["on_front"], "uid"].tolist() == [1, 2]


def test_progress_data_is_long_format():
    data = progress_data(generations(), OBJECTIVES)
    assert len(data) == 4
    row = data[(data["objective"] == "params") & (data["generation"] == 1)].iloc[0]
    assert (row["best"], row["median"]) == (50.0, 100.0)


def test_figures_and_files(tmp_path):
    assert isinstance(plot_progress(progress_data(generations(), OBJECTIVES), OBJECTIVES), Figure)
    assert isinstance(plot_pareto(pareto_data(individuals(), OBJECTIVES), OBJECTIVES), Figure)
    empty = pareto_data(individuals().assign(status="failed"), OBJECTIVES)
    assert isinstance(plot_pareto(empty, OBJECTIVES[:1]), Figure)
    write_generation_plots(tmp_path, individuals(), generations(), OBJECTIVES, title="run-7")
    for name in ("progress.png", "pareto.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.png", "progress.png"]


def test_generation_colour_bars_have_integer_ticks():
    fig = plot_pareto(pareto_data(individuals(), OBJECTIVES), OBJECTIVES)
    colour_bar = fig.axes[-1]
    ticks = [t for t in colour_bar.get_yticks() if 0 <= t <= 1]
    assert ticks and all(float(t).is_integer() for t in ticks)
