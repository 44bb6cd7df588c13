"""Figures of a run. Each figure has a data function (testable, reusable) and a drawing function
that returns a matplotlib Figure; the per-generation PNGs, the report and `Run.figure` call the
same functions. The Pareto front is `evonas.objectives`' (the only definition)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import matplotlib

if "IPython" not in sys.modules:
    matplotlib.use("Agg")  # files only; a notebook keeps its inline backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from evonas.objectives import Objective, front_flags, pareto_mask, successful  # noqa: E402
from evonas.records import FAILURES  # noqa: E402

LOG_SCALE = {"params", "flops", "size_bytes", "latency_ms"}
Objectives = list[Objective]


def titled(fig: Figure, run_name: str | None) -> Figure:
    """Put the run's name on a figure (figures travel alone: a PNG, a slide)."""
    if run_name:
        fig.suptitle(run_name, fontsize=9, color="dimgray", x=0.01, ha="left")
        fig.tight_layout()
    return fig


def _generation_colourbar(fig: Figure, points, ax) -> None:
    bar = fig.colorbar(points, ax=ax, label="generation")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()


def progress_data(generations: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """Long table: generation, objective, best, median (from the journal's generations table)."""
    rows = []
    for objective in objectives:
        name = objective.name
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


def plot_progress(data: pd.DataFrame, objectives: Objectives) -> Figure:
    fig, axes = plt.subplots(
        1, len(objectives), figsize=(4.5 * len(objectives), 3.4), squeeze=False
    )
    for ax, objective in zip(axes[0], objectives):
        part = data[data["objective"] == objective.name]
        ax.plot(part["generation"], part["best"], marker="o", label="best")
        ax.plot(part["generation"], part["median"], marker=".", linestyle="--", label="median")
        ax.set_title(f"{objective.name} ({objective.goal})")
        ax.set_xlabel("generation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if objective.name in LOG_SCALE and (part["best"] > 0).all():
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def pareto_data(individuals: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """Fully trained individuals with their objective values, a `feasible` flag (within the
    run's constraints) and an `on_front` flag (the front of the feasible ones)."""
    names = [o.name for o in objectives]
    columns = ["uid", "generation", *names, "feasible", "on_front"]
    if not set(names) <= set(individuals.columns):  # no evaluation has produced them yet
        return pd.DataFrame(columns=columns)
    trained = individuals[individuals["status"] == "ok"].dropna(subset=names)
    data = trained[["uid", "generation", *names]].copy()
    data["feasible"], data["on_front"] = front_flags(trained, objectives)
    return data.reset_index(drop=True)[columns]


def plot_pareto(data: pd.DataFrame, objectives: Objectives) -> Figure:
    """Objective 1 against objective 2 (or against uid with one objective), coloured by
    generation, with the current front drawn; models that break the run's constraints are grey
    crosses."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    y_name = objectives[0].name
    x_name = objectives[1].name if len(objectives) > 1 else "uid"
    infeasible, data = data[~data["feasible"].astype(bool)], data[data["feasible"].astype(bool)]
    if not infeasible.empty:
        ax.scatter(infeasible[x_name], infeasible[y_name], marker="x", color="0.6", s=18,
                   label="infeasible (search.constraints)")  # fmt: skip
    if data.empty:
        ax.text(0.5, 0.5, "no successful evaluations yet", ha="center", transform=ax.transAxes)
    else:
        points = ax.scatter(data[x_name], data[y_name], c=data["generation"], cmap="viridis", s=18)
        _generation_colourbar(fig, points, ax)
        front = data[data["on_front"].astype(bool)].sort_values(x_name)
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
    objectives: Objectives,
    title: str | None = None,
) -> None:
    plots_dir = Path(plots_dir)
    progress = plot_progress(progress_data(generations, objectives), objectives)
    save_figure(titled(progress, title), plots_dir / "progress.png")
    pareto = plot_pareto(pareto_data(individuals, objectives), objectives)
    save_figure(titled(pareto, title), plots_dir / "pareto.png")


# --- analysis figures (each: a data function, then a drawing function) ---------------------


def fronts_data(
    individuals: pd.DataFrame,
    objectives: Objectives,
    generations: list[int] | None = None,
) -> pd.DataFrame:
    """The Pareto front among individuals evaluated up to each generation (long format)."""
    names = [o.name for o in objectives]
    ok = successful(individuals, objectives)
    cuts = generations if generations is not None else sorted(ok["generation"].unique())
    frames = []
    for cut in cuts:
        seen = ok[ok["generation"] <= cut]
        if seen.empty:
            continue
        mask = pareto_mask(seen[names].to_numpy(float), objectives)
        frames.append(seen[mask][["uid", *names]].assign(front_of=cut))
    columns = ["front_of", "uid", *names]
    return (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )


def plot_fronts(data: pd.DataFrame, objectives: Objectives) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    y_name = objectives[0].name
    x_name = objectives[1].name if len(objectives) > 1 else "uid"
    cuts = sorted(data["front_of"].unique()) if not data.empty else []
    colours = plt.cm.viridis(np.linspace(0, 1, max(2, len(cuts))))
    for colour, cut in zip(colours, cuts):
        front = data[data["front_of"] == cut].sort_values(x_name)
        ax.step(front[x_name], front[y_name], where="post", color=colour, marker="o", ms=3,
                label=f"gen {cut}")  # fmt: skip
    if x_name in LOG_SCALE and not data.empty:
        ax.set_xscale("log")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title("Pareto front by generation")
    if cuts:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def tradeoff_data(individuals: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    return pareto_data(individuals, objectives)


def plot_tradeoff(data: pd.DataFrame, objectives: Objectives) -> Figure:
    """Every pair of objectives against each other, coloured by generation, front circled,
    infeasible models as grey crosses."""
    names = [o.name for o in objectives]
    if len(names) < 2:
        return plot_pareto(data, objectives)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.5 * len(pairs), 3.8), squeeze=False)
    feasible = data["feasible"].astype(bool)
    for ax, (y_name, x_name) in zip(axes[0], pairs):
        ax.scatter(data[x_name][~feasible], data[y_name][~feasible], marker="x", color="0.6", s=14)
        ax.scatter(data[x_name][feasible], data[y_name][feasible], c=data["generation"][feasible],
                   cmap="viridis", s=14)  # fmt: skip
        front = data[data["on_front"].astype(bool)]
        ax.scatter(front[x_name], front[y_name], facecolors="none", edgecolors="crimson", s=40)
        if x_name in LOG_SCALE:
            ax.set_xscale("log")
        ax.set_xlabel(x_name)
        ax.set_ylabel(y_name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def lineage_layout(lineage: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Nodes (uid, x = generation, y = rank within its generation) and edges (parent, child,
    operator, parent_index) of an ancestry table from `Run.lineage`: one edge per parent, so
    a crossover has two, also when both parents are the same individual."""
    nodes = lineage[["uid", "generation", "operator", "status"]].copy()
    nodes["x"] = nodes["generation"]
    nodes["y"] = nodes.groupby("generation")["uid"].rank(method="first") - 1
    known = set(lineage["uid"])
    edges = [
        {"parent": parent, "child": row["uid"], "operator": row["operator"], "parent_index": i}
        for _, row in lineage.iterrows()
        for i, parent in enumerate(row["parents"])
        if parent in known
    ]
    columns = ["parent", "child", "operator", "parent_index"]
    return nodes.reset_index(drop=True), pd.DataFrame(edges, columns=columns)


def plot_lineage(nodes: pd.DataFrame, edges: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * (nodes["x"].max() + 1)), 3.8))
    position = {row.uid: (row.x, row.y) for row in nodes.itertuples()}
    for edge in edges.itertuples():
        (x0, y0), (x1, y1) = position[edge.parent], position[edge.child]
        bend = 0.25 if edge.parent_index else -0.1  # a second parent's edge curves the other way
        arrow = {"arrowstyle": "->", "color": "grey", "connectionstyle": f"arc3,rad={bend}"}
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=arrow)
        label = edge.operator + (" (2nd parent)" if edge.parent_index else "")
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + (0.12 if edge.parent_index else 0), label,
                fontsize=7, ha="center", color="darkslateblue")  # fmt: skip
    colours = np.where(nodes["status"] == "ok", "tab:blue", "tab:red")
    ax.scatter(nodes["x"], nodes["y"], s=220, c=colours, zorder=3)
    for row in nodes.itertuples():
        ax.text(row.x, row.y, str(row.uid), color="white", fontsize=7, ha="center", va="center",
                zorder=4)  # fmt: skip
    ax.set_xlabel("generation")
    ax.set_yticks([])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"lineage of uid {nodes.iloc[0]['uid']}" if len(nodes) else "lineage")
    ax.margins(0.15)
    fig.tight_layout()
    return fig


def plot_operator_stats(stats: pd.DataFrame) -> Figure:
    fig, (ax_uses, ax_rate) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax_uses.barh(stats["operator"], stats["uses"], color="tab:blue", label="uses")
    ax_uses.barh(stats["operator"], stats["failures"], color="tab:red", label="failures")
    ax_uses.set_xlabel("children")
    ax_uses.legend()
    ax_rate.barh(stats["operator"], stats["beat_parent"].fillna(0), color="tab:green")
    ax_rate.set_xlabel("share of children that beat their best parent")
    ax_rate.set_xlim(0, 1)
    for ax in (ax_uses, ax_rate):
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def _layer_signature(genome_json: str) -> tuple[str, ...]:
    import json

    return tuple(
        f"{layer['op']}:{layer.get('width', layer.get('units', ''))}"
        for layer in json.loads(genome_json)["layers"]
    )


def diversity_data(individuals: pd.DataFrame, generations: pd.DataFrame) -> pd.DataFrame:
    """Per generation: distinct architectures in the population and the mean pairwise
    dissimilarity (1 - difflib ratio) of their layer sequences."""
    from difflib import SequenceMatcher
    from itertools import combinations

    genome_of = individuals.set_index("uid")["genome"]
    rows = []
    for _, row in generations.iterrows():
        population = row["population"]
        if isinstance(population, str):
            import json

            population = json.loads(population)
        genomes = [genome_of[uid] for uid in population]
        signatures = [_layer_signature(g) for g in genomes]
        pairs = list(combinations(signatures, 2))
        distance = (
            np.mean([1 - SequenceMatcher(None, a, b).ratio() for a, b in pairs]) if pairs else 0
        )
        rows.append({"generation": int(row["generation"]), "distinct": len(set(genomes)),
                     "size": len(genomes), "mean_distance": float(distance)})  # fmt: skip
    return pd.DataFrame(rows, columns=["generation", "distinct", "size", "mean_distance"])


def plot_diversity(data: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(data["generation"], data["distinct"] / data["size"], marker="o",
            label="distinct architectures (share)")  # fmt: skip
    ax.plot(data["generation"], data["mean_distance"], marker=".", linestyle="--",
            label="mean layer-sequence distance")  # fmt: skip
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("generation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("population diversity")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def failure_data(individuals: pd.DataFrame) -> pd.DataFrame:
    """Evaluations per generation and status (wide: one column per status)."""
    counts = individuals.groupby(["generation", "status"]).size().unstack(fill_value=0)
    return counts.reset_index()


def plot_failures(data: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    bottom = np.zeros(len(data))
    colours = {"ok": "tab:green", "stopped": "tab:olive", "infeasible": "0.6", "failed": "tab:red",
               "timeout": "tab:orange", "crashed": "black", "oom": "tab:purple"}  # fmt: skip
    for status in [c for c in data.columns if c != "generation"]:
        ax.bar(data["generation"], data[status], bottom=bottom, label=status,
               color=colours.get(status))  # fmt: skip
        bottom += data[status].to_numpy()
    ax.set_xlabel("generation")
    ax.set_ylabel("evaluations")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("evaluations by status")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curves_data(curves: pd.DataFrame, metric: str = "val_accuracy") -> pd.DataFrame:
    """Per evaluation and epoch, `metric` and the evaluation's outcome: ok, stopped, failed
    (every failure status) or pending. Empty when no curve has `metric`."""
    if metric not in curves:
        curves = curves.assign(**{metric: pd.Series(dtype=float)})
    data = curves[["uid", "epoch", metric, "status"]].dropna(subset=[metric])
    outcome = data["status"].where(~data["status"].isin(FAILURES), "failed")
    return data.assign(outcome=outcome).rename(columns={metric: "value"}).assign(metric=metric)


OUTCOME_COLOURS = {"ok": "tab:blue", "stopped": "tab:orange", "failed": "tab:red",
                   "pending": "tab:gray"}  # fmt: skip


def plot_curves(data: pd.DataFrame) -> Figure:
    """Learning curves coloured by outcome."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    labelled = set()
    for (_uid, outcome), part in data.groupby(["uid", "outcome"], sort=False):
        label = None if outcome in labelled else outcome
        labelled.add(outcome)
        ax.plot(part["epoch"], part["value"], color=OUTCOME_COLOURS.get(outcome, "black"),
                alpha=0.5, lw=1, marker="." if len(part) == 1 else None, label=label)  # fmt: skip
    if data.empty:
        ax.text(0.5, 0.5, "no learning curves journaled", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel(data["metric"].iloc[0] if len(data) else "")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("learning curves")
    if labelled:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_compare(data: pd.DataFrame, x: str = "evaluation") -> Figure:
    """Best-so-far curves from `analysis.compare` against evaluations or seconds."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, part in data.groupby("run", sort=False):
        ax.step(part[x], part["best_so_far"], where="post", label=name)
    ax.set_xlabel("evaluations" if x == "evaluation" else "evaluation seconds (cumulative)")
    ax.set_ylabel("best so far")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def prediction_data(predictions: pd.DataFrame, window: int = 20) -> pd.DataFrame:
    """The predictions of the first objective that have a measurement, in evaluation order,
    with the rank correlation (Spearman) of predicted and measured over the last `window`."""
    if predictions.empty:
        return predictions.assign(rank_correlation=pd.Series(dtype=float))
    first = predictions[predictions["objective"] == predictions["objective"].iloc[0]]
    data = first[first["measured"].notna()].sort_values("uid").reset_index(drop=True)
    ranks = data[["predicted", "measured"]].rank()
    data["rank_correlation"] = (
        ranks["predicted"].rolling(window, min_periods=window // 2).corr(ranks["measured"])
    )
    return data


def plot_predictions(data: pd.DataFrame) -> Figure:
    objective = data["objective"].iloc[0] if len(data) else "objective"
    fig, (scatter, over_run) = plt.subplots(1, 2, figsize=(10, 4))
    points = scatter.scatter(data["predicted"], data["measured"], c=data["uid"], cmap="viridis",
                             s=14)  # fmt: skip
    if len(data):
        low = min(data["predicted"].min(), data["measured"].min())
        high = max(data["predicted"].max(), data["measured"].max())
        scatter.plot([low, high], [low, high], color="grey", linestyle=":", linewidth=1)
    overall = data["predicted"].corr(data["measured"], method="spearman") if len(data) > 2 else None
    title = f"rank correlation {overall:.2f}" if overall is not None else "too few to correlate"
    scatter.set(xlabel=f"predicted {objective}", ylabel=f"measured {objective}", title=title)
    fig.colorbar(points, ax=scatter, label="uid")
    over_run.plot(data["uid"], data["rank_correlation"], color="tab:blue")
    over_run.axhline(0, color="grey", linewidth=0.8)
    over_run.set(xlabel="uid (evaluation order)", ylabel="rank correlation, last 20",
                 ylim=(-1.05, 1.05), title="predictor accuracy over the run")  # fmt: skip
    over_run.grid(alpha=0.3)
    if data.empty:
        scatter.set_title("no predictions (search.predictor: none)")
    fig.tight_layout()
    return fig


def plot_arch_weights(data: pd.DataFrame) -> Figure:
    """A gradient search's architecture weights (`Run.arch_weights`): one panel per edge, the
    probability of each op after each supernet epoch."""
    edges = list(dict.fromkeys(data["edge"])) or ["1<-0"]
    columns = min(3, len(edges))
    rows = math.ceil(len(edges) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False,
                             sharex=True, sharey=True)  # fmt: skip
    for ax, edge in zip(axes.flat, edges):
        on_edge = data[data["edge"] == edge]
        for op, points in on_edge.groupby("op", sort=False):
            ax.plot(points["epoch"], points["weight"], marker="o", markersize=3, label=op)
        ax.set(title=f"edge {edge}", ylabel="op probability")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("supernet epoch")
    for ax in list(axes.flat)[len(edges) :]:
        ax.set_visible(False)
    if data.empty:
        axes.flat[0].set_title("no supernet (search.strategy is not gradient)")
    else:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


# --- every figure of a run: what it shows (from a `Run`) and how it is drawn --------------------


def _lineage_of(run, uid: int | None) -> tuple:
    return lineage_layout(run.lineage(int(run.best()["uid"]) if uid is None else uid))


FIGURES = {
    "progress": (lambda run, uid: (progress_data(run.generations, run.objectives), run.objectives),
                 plot_progress),
    "pareto": (lambda run, uid: (pareto_data(run.individuals, run.objectives), run.objectives),
               plot_pareto),
    "fronts": (lambda run, uid: (fronts_data(run.individuals, run.objectives), run.objectives),
               plot_fronts),
    "tradeoff": (lambda run, uid: (tradeoff_data(run.individuals, run.objectives),
                                   run.objectives), plot_tradeoff),
    "lineage": (_lineage_of, plot_lineage),
    "operators": (lambda run, uid: (run.operator_stats(),), plot_operator_stats),
    "diversity": (lambda run, uid: (diversity_data(run.individuals, run.generations),),
                  plot_diversity),
    "failures": (lambda run, uid: (failure_data(run.individuals),), plot_failures),
    "curves": (lambda run, uid: (curves_data(run.curves),), plot_curves),
    "predictions": (lambda run, uid: (prediction_data(run.predictions),), plot_predictions),
    "arch_weights": (lambda run, uid: (run.arch_weights,), plot_arch_weights),
}  # fmt: skip
