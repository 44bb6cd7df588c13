"""Figures of a run. Each figure has a data function (testable, reusable) and a drawing function
that returns a matplotlib Figure; the per-generation PNGs call the same functions."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; notebooks choose their own backend before importing pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

LOG_SCALE = {"params", "flops", "size_bytes", "latency_ms"}


def progress_data(generations: pd.DataFrame, objectives: list[dict[str, str]]) -> pd.DataFrame:
    """Long table: generation, objective, best, median (from the journal's generations table)."""
    rows = []
    for objective in objectives:
        name = objective["name"]
        for _, row in generations.iterrows():
            rows.append(
                {
                    "generation": int(row["generation"]),
                    "objective": name,
                    "best": row.get(f"best_{name}", np.nan),
                    "median": row.get(f"median_{name}", np.nan),
                }
            )
    return pd.DataFrame(rows, columns=["generation", "objective", "best", "median"])


def plot_progress(data: pd.DataFrame, objectives: list[dict[str, str]]) -> Figure:
    fig, axes = plt.subplots(
        1, len(objectives), figsize=(4.5 * len(objectives), 3.4), squeeze=False
    )
    for ax, objective in zip(axes[0], objectives):
        part = data[data["objective"] == objective["name"]]
        ax.plot(part["generation"], part["best"], marker="o", label="best")
        ax.plot(part["generation"], part["median"], marker=".", linestyle="--", label="median")
        ax.set_title(f"{objective['name']} ({objective['goal']})")
        ax.set_xlabel("generation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if objective["name"] in LOG_SCALE and (part["best"] > 0).all():
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def pareto_mask(values: np.ndarray, goals: list[str]) -> np.ndarray:
    """True for rows not dominated by any other row (objectives oriented by their goals)."""
    signed = values * np.array([1.0 if g == "max" else -1.0 for g in goals])
    mask = np.ones(len(signed), dtype=bool)
    for i, row in enumerate(signed):
        dominated = np.all(signed >= row, axis=1) & np.any(signed > row, axis=1)
        mask[i] = not dominated.any()
    return mask


def pareto_data(individuals: pd.DataFrame, objectives: list[dict[str, str]]) -> pd.DataFrame:
    """Successful individuals with their objective values and an `on_front` flag."""
    names = [o["name"] for o in objectives]
    ok = individuals[individuals["status"] == "ok"].dropna(subset=names)
    data = ok[["uid", "generation", *names]].copy()
    data["on_front"] = pareto_mask(data[names].to_numpy(float), [o["goal"] for o in objectives])
    return data.reset_index(drop=True)


def plot_pareto(data: pd.DataFrame, objectives: list[dict[str, str]]) -> Figure:
    """Objective 1 against objective 2 (or against uid with one objective), coloured by
    generation, with the current front drawn."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    y_name = objectives[0]["name"]
    x_name = objectives[1]["name"] if len(objectives) > 1 else "uid"
    if data.empty:
        ax.text(0.5, 0.5, "no successful evaluations yet", ha="center", transform=ax.transAxes)
    else:
        points = ax.scatter(data[x_name], data[y_name], c=data["generation"], cmap="viridis", s=18)
        fig.colorbar(points, ax=ax, label="generation")
        front = data[data["on_front"]].sort_values(x_name)
        ax.step(front[x_name], front[y_name], where="post", color="crimson", label="front")
        ax.scatter(front[x_name], front[y_name], facecolors="none", edgecolors="crimson", s=40)
        ax.legend()
        if x_name in LOG_SCALE:
            ax.set_xscale("log")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> None:
    """Write atomically, so a reader never sees a half-written PNG."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_generation_plots(
    plots_dir: str | Path,
    individuals: pd.DataFrame,
    generations: pd.DataFrame,
    objectives: list[dict[str, str]],
) -> None:
    plots_dir = Path(plots_dir)
    save_figure(
        plot_progress(progress_data(generations, objectives), objectives),
        plots_dir / "progress.png",
    )
    save_figure(
        plot_pareto(pareto_data(individuals, objectives), objectives), plots_dir / "pareto.png"
    )
