"""Reading runs: `load_run(path) -> Run`, read-only and safe while the writer is still running.

Every property re-reads the journal, so a notebook cell shows the run as it is now.
"""

from __future__ import annotations

import shlex
import sqlite3
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evonas.config import Config, validate
from evonas.genome import Genome, parse_genome
from evonas.objectives import Objective, best_row, objective_for, pareto_front, successful
from evonas.records import COLUMNS, DERIVED_COLUMNS, FAILURES, PENDING, TRAINED, SupernetEpoch
from evonas.reporters import number
from evonas.store import (
    LOCK,
    RunDirError,
    is_locked,
    json_cell,
    open_readonly,
    read_meta,
    read_run_config,
    read_supernet,
    read_table,
)


class RunLookupError(LookupError):
    """A uid or metric that the run does not have; the message names it."""


class Run:
    """A run directory seen through its journal."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        open_readonly(self.path).close()  # a clear error now if this is not a run

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def _read(self) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
        db = open_readonly(self.path)
        try:
            return (
                read_meta(db),
                read_table(db, "individuals", "uid"),
                read_table(db, "generations", "generation"),
            )
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
            first = " ".join(str(exc).split())[:200]
            journal = self.path / "history.sqlite"
            raise RunDirError(f"{journal}: not an evonas journal ({first})") from None
        finally:
            db.close()

    # --- tables -------------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        return self._read()[0]

    @property
    def config(self) -> Config:
        """The run's resolved config (`config.to_dict()` for plain data)."""
        return validate(read_run_config(self.path))

    @property
    def objectives(self) -> list[Objective]:
        return list(self.config.search.objectives)

    @property
    def chance(self) -> dict[str, float]:
        """Accuracy of always predicting the most frequent class, per accuracy metric (empty
        where the task is a lookup table or a custom evaluator's)."""
        return self.meta.get("chance") or {}

    @property
    def running(self) -> bool:
        return is_locked(self.path)

    @property
    def individuals(self) -> pd.DataFrame:
        """One row per evaluation: uid, generation, parents (list), operator, origin, status,
        error, violation (how far past `search.constraints`: 0 within them, empty without any),
        every metric, timings, cached_from, weights, and the genome as JSON."""
        people = self._read()[1]
        where = f"{self.path / 'history.sqlite'}: uid"
        people["parents"] = [json_cell(p, f"{where} {u} parents")
                             for u, p in zip(people["uid"], people["parents"])]  # fmt: skip
        people["n_layers"] = [len(json_cell(g, f"{where} {u} genome").get("layers") or ())
                              for u, g in zip(people["uid"], people["genome"])]  # fmt: skip
        for column in ("started_at", "finished_at"):
            people[column] = pd.to_datetime(people[column], unit="s", utc=True)
        return people

    @property
    def generations(self) -> pd.DataFrame:
        generations = self._read()[2]
        where = f"{self.path / 'history.sqlite'}: generation"
        pairs = zip(generations["generation"], generations["population"])
        generations["population"] = [json_cell(p, f"{where} {g} population") for g, p in pairs]
        generations["finished_at"] = pd.to_datetime(generations["finished_at"], unit="s", utc=True)
        return generations

    @property
    def curves(self) -> pd.DataFrame:
        """Learning curves, one row per evaluation and epoch: uid, epoch, one column per metric
        reported after that epoch (the built-in trainer: train_loss, val_accuracy), and the
        evaluation's generation and final status (ok, stopped, a failure, or pending while it
        is still training)."""
        db = open_readonly(self.path)
        try:
            points = pd.read_sql_query("SELECT uid, epoch, metric, value FROM curves", db)
            people = pd.read_sql_query("SELECT uid, generation, status FROM individuals", db)
        except (sqlite3.DatabaseError, pd.errors.DatabaseError):  # a journal without curves
            points = pd.DataFrame(columns=["uid", "epoch", "metric", "value"])
            people = pd.DataFrame(columns=["uid", "generation", "status"])
        finally:
            db.close()
        wide = points.pivot_table(index=["uid", "epoch"], columns="metric", values="value",
                                  aggfunc="first")  # fmt: skip
        wide = wide.reset_index().rename_axis(columns=None)
        curves = wide.merge(people, on="uid", how="left").astype({"uid": int, "epoch": int})
        curves["status"] = curves["status"].fillna(PENDING)
        return curves

    @property
    def predictions(self) -> pd.DataFrame:
        """What the predictor (`search.predictor`) said before each evaluation it chose, beside
        what was measured: uid, generation, operator, status, objective, predicted, predicted_std
        and measured (empty where the evaluation failed). Empty without a predictor."""
        return prediction_table(self.individuals, self.objectives)

    @property
    def supernet(self) -> pd.DataFrame:
        """A gradient search's supernet, one row per epoch: epoch, cell (the derived genome in
        the space's notation), changed (whether the derived cell differs from the epoch
        before), train_loss, arch_loss (on the validation split), val_accuracy (the supernet's),
        tau, epoch_seconds, device, finished_at and the genome as JSON. Empty for other runs."""
        from evonas.arch_weights import supernet_table

        return supernet_table(self._supernet_epochs())

    @property
    def arch_weights(self) -> pd.DataFrame:
        """A gradient search's architecture weights after each epoch, long format: epoch, edge
        (target<-source), op, weight (the softmax probability of the op on its edge) and raw."""
        from evonas.arch_weights import arch_weight_table

        return arch_weight_table(self._supernet_epochs())

    def _supernet_epochs(self) -> list[SupernetEpoch]:
        db = open_readonly(self.path)
        try:
            return read_supernet(db)
        finally:
            db.close()

    def metric_columns(self, people: pd.DataFrame | None = None) -> list[str]:
        """The metric columns: everything the journal holds beyond its fixed columns."""
        people = self.individuals if people is None else people
        return [c for c in people.columns if c not in COLUMNS and c not in DERIVED_COLUMNS]

    # --- questions ----------------------------------------------------------------------------

    def pareto(self, generation: int | None = None) -> pd.DataFrame:
        """Non-dominated successful individuals among those evaluated up to `generation`
        (default: all), on the run's objectives."""
        people = self.individuals
        if generation is not None:
            people = people[people["generation"] <= generation]
        return pareto_front(people, self.objectives)

    def best(self, objective: str | None = None) -> pd.Series:
        """The best successful individual on `objective` (default: the first objective). On a
        further objective, such as params, it is the best among the front's models that are
        useful on the first (see `evonas.objectives.best_row`), not a model at chance level.
        LookupError when no successful individual has the metric."""
        objectives = self.objectives
        name = objective or objectives[0].name
        try:
            return best_row(self.individuals, name, objectives, self.chance.get(objectives[0].name))
        except KeyError as exc:
            raise RunLookupError(f"{self.path}: {exc.args[0]}") from None

    def genome(self, uid: int) -> Genome:
        what = f"{self.path / 'history.sqlite'}: uid {uid} genome"
        return parse_genome(json_cell(self._row(uid)["genome"], what), where=f"uid {uid}")

    def _row(self, uid: int) -> pd.Series:
        people = self.individuals.set_index("uid", drop=False)
        if uid not in people.index:
            raise RunLookupError(f"{self.path}: no individual with uid {uid}")
        return people.loc[uid]

    def lineage(self, uid: int) -> pd.DataFrame:
        """`uid` and all its ancestors, with `depth` (0 = uid itself) and the operator that made
        each; ordered from the individual back to the sampled founders."""
        people = self.individuals.set_index("uid", drop=False)
        if uid not in people.index:
            raise RunLookupError(f"{self.path}: no individual with uid {uid}")
        depth = {uid: 0}
        queue = [uid]
        while queue:
            current = queue.pop(0)
            for parent in people.loc[current, "parents"]:
                if parent not in depth:
                    depth[parent] = depth[current] + 1
                    queue.append(parent)
        lineage = people.loc[list(depth)].reset_index(drop=True)
        lineage.insert(1, "depth", [depth[u] for u in lineage["uid"]])
        return lineage.sort_values(["depth", "uid"]).reset_index(drop=True)

    def lineage_graph(self, uid: int):
        """The ancestry as a networkx DiGraph: parent -> child edges labelled with the operator."""
        import networkx as nx

        lineage = self.lineage(uid)
        graph = nx.DiGraph()
        metrics = [o.name for o in self.objectives]
        for _, row in lineage.iterrows():
            attrs = {k: row[k] for k in ["generation", "operator", "status", *metrics] if k in row}
            graph.add_node(int(row["uid"]), **attrs)
        for _, row in lineage.iterrows():
            for parent in row["parents"]:
                graph.add_edge(int(parent), int(row["uid"]), operator=row["operator"])
        return graph

    def operator_stats(self) -> pd.DataFrame:
        """Per operator: uses, failures, how often the child beat its best parent on the first
        objective, and the mean change of each objective from the parents' mean."""
        return operator_stats(self.individuals, self.objectives)

    # --- figures ------------------------------------------------------------------------------

    def figure(self, kind: str, uid: int | None = None):
        """One matplotlib Figure, titled with the run's name: one of `evonas.plots.FIGURES`
        (progress, pareto, fronts, tradeoff, lineage of `uid` (default: the best), operators,
        diversity, failures)."""
        from evonas.plots import FIGURES, titled

        if kind not in FIGURES:
            raise ValueError(f"unknown figure {kind!r}; expected one of {list(FIGURES)}")
        data, draw = FIGURES[kind]
        return titled(draw(*data(self, uid)), self.path.name)

    def model(self, uid: int):
        """The trained `nn.Module` of `uid`, with its weights when they were kept."""
        from evonas.builder import build
        from evonas.weights import load_state_dict

        row = self._row(uid)
        if pd.notna(row.get("cached_from")):
            row = self._row(int(row["cached_from"]))
        if pd.isna(row.get("weights")):
            raise RunDirError(
                f"{self.path}: weights of uid {uid} were not kept (the retention policy keeps the "
                "last population, the Pareto front and the best)"
            )
        input_shape = self.input_shape
        from evonas.tasks import load_task

        classes = load_task(self.config.task.model_dump()).num_classes
        model = build(self.genome(int(row["uid"])), input_shape, classes)
        try:
            model.load_state_dict(load_state_dict(self.path / row["weights"]))
        except RuntimeError as exc:  # the file of another individual, or a damaged one
            first = " ".join(str(exc).split())[:160]
            raise RunDirError(f"{self.path / row['weights']}: not the weights of uid {uid}'s "
                              f"genome ({first})") from None  # fmt: skip
        return model.eval()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input shape the run's task has (as journaled)."""
        shape = self.meta.get("input_shape")
        if not (
            isinstance(shape, list)
            and 0 < len(shape) <= 3
            and all(
                isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 2**16 for d in shape
            )
        ):
            raise RunDirError(f"{self.path / 'history.sqlite'}: meta input_shape {shape!r} is "
                              "not one evonas wrote")  # fmt: skip
        return tuple(shape)


def operator_stats(people: pd.DataFrame, objectives: list[Objective]) -> pd.DataFrame:
    by_uid = people.set_index("uid")
    first = objectives[0]
    sign = first.sign
    rows = []
    for operator, group in people[people["operator"] != "sample"].groupby("operator"):
        row: dict[str, Any] = {
            "operator": operator,
            "uses": len(group),
            "failures": int(group["status"].isin(FAILURES).sum()),
        }
        beats, changes = [], {o.name: [] for o in objectives}
        for _, child in group.iterrows():
            parents = by_uid.loc[child["parents"]]
            if child["status"] != "ok" or (parents["status"] != "ok").all():
                continue
            ok_parents = parents[parents["status"] == "ok"]
            best_parent = (sign * ok_parents[first.name]).max()
            beats.append(sign * child[first.name] > best_parent)
            for o in objectives:
                changes[o.name].append(child[o.name] - ok_parents[o.name].mean())
        row["beat_parent"] = float(np.mean(beats)) if beats else np.nan
        for name, values in changes.items():
            row[f"mean_change_{name}"] = float(np.mean(values)) if values else np.nan
        rows.append(row)
    columns = ["operator", "uses", "failures", "beat_parent"]
    columns += [f"mean_change_{o.name}" for o in objectives]
    return pd.DataFrame(rows, columns=columns).sort_values(
        "uses", ascending=False, ignore_index=True
    )


PREDICTION_COLUMNS = ["uid", "generation", "operator", "status", "objective", "predicted",
                      "predicted_std", "measured"]  # fmt: skip


def prediction_table(people: pd.DataFrame, objectives: list[Objective]) -> pd.DataFrame:
    """One row per predicted evaluation and objective (see `Run.predictions`)."""
    rows = []
    predicted = people[people["prediction"].notna()] if "prediction" in people else people[:0]
    for _, row in predicted.iterrows():
        prediction = json_cell(row["prediction"], f"uid {row['uid']} prediction")
        for objective in objectives:
            if objective.name not in prediction:
                continue
            mean, std = prediction[objective.name]
            measured = row.get(objective.name) if row["status"] in TRAINED else None
            rows.append([row["uid"], row["generation"], row["operator"], row["status"],
                         objective.name, mean, std, measured])  # fmt: skip
    table = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
    return table.astype({"predicted": float, "predicted_std": float, "measured": float})


def load_run(path: str | Path) -> Run:
    """Open a run directory for analysis (read-only; fine while the run is still going)."""
    return Run(path)


def compare(runs: Iterable[Run | str | Path], objective: str | None = None) -> pd.DataFrame:
    """Best-so-far of one objective per evaluation and per training second, for several runs.

    Columns: run, evaluation (1-based, in completion order), seconds (cumulative evaluation
    time), value, best_so_far.
    """
    frames = []
    runs = [run if isinstance(run, Run) else Run(run) for run in runs]
    _warn_if_not_comparable(runs)
    for run in runs:
        name = objective or run.objectives[0].name
        goal = objective_for(name, run.objectives).goal
        people = run.individuals.sort_values(["finished_at", "uid"], na_position="last")
        worst = -np.inf if goal == "max" else np.inf
        counted = people.index.isin(successful(people, [objective_for(name, run.objectives)]).index)
        values = people[name].where(counted, worst) if name in people else worst
        values = pd.Series(values, index=people.index, dtype=float).fillna(worst)
        best = values.cummax() if goal == "max" else values.cummin()
        frames.append(
            pd.DataFrame(
                {
                    "run": run.path.name,
                    "evaluation": np.arange(1, len(people) + 1),
                    "seconds": people["eval_seconds"].fillna(0).cumsum().to_numpy(),
                    "value": values.replace([np.inf, -np.inf], np.nan).to_numpy(),
                    "best_so_far": best.replace([np.inf, -np.inf], np.nan).to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _warn_if_not_comparable(runs: list[Run]) -> None:
    """Curves of runs on other tasks or objectives are not comparable: say so."""
    if len(runs) < 2:
        return
    first = runs[0].config
    for run in runs[1:]:
        config = run.config
        if config.task != first.task:
            warnings.warn(f"evonas.compare: {run.path.name} searched another task "
                          f"({config.task.name}) than {runs[0].path.name} ({first.task.name}); "
                          "its curve is not comparable", stacklevel=3)  # fmt: skip
        if config.search.objectives != first.search.objectives:
            names = [o.name for o in config.search.objectives]
            theirs = [o.name for o in first.search.objectives]
            warnings.warn(f"evonas.compare: {run.path.name} optimised {names}, "
                          f"{runs[0].path.name} optimised {theirs}", stacklevel=3)  # fmt: skip


def run_status(run_dir: str | Path) -> str:
    """A few lines that say where a run is: state, generation, evaluations, best so far."""
    run_dir = Path(run_dir)
    db = open_readonly(run_dir)
    try:
        meta = read_meta(db)
        individuals = read_table(db, "individuals", "uid")
        generations = read_table(db, "generations", "generation")
        supernet = read_supernet(db)
    except sqlite3.DatabaseError as exc:
        raise RunDirError(f"{run_dir / 'history.sqlite'}: unreadable journal ({exc})") from None
    finally:
        db.close()
    config = meta.get("config", {})
    search = config.get("search", {})
    gradient = search.get("strategy") == "gradient"
    total = 0 if gradient else search.get("generations", "?")
    done = int(generations["generation"].max()) if len(generations) else None
    failed = int(individuals["status"].isin(FAILURES).sum())
    infeasible = int((individuals["status"] == "infeasible").sum()) if len(individuals) else 0
    resume = f"evonas resume {shlex.quote(str(run_dir))}"
    if is_locked(run_dir):
        pid = (run_dir / LOCK).read_text().strip()
        state = f"running (pid {pid})"
    elif meta.get("state") == "running":
        state = f"not running: the process died; resume with: {resume}"
    elif meta.get("state") == "interrupted":
        state = f"interrupted ({meta.get('reason')}); resume with: {resume}"
    else:
        state = f"{meta.get('state', 'unknown')} ({meta.get('reason', '')})"
    lines = [
        f"{run_dir}: {state}",
        f"generation {'-' if done is None else done}/{total}; {len(individuals)} evaluations, "
        f"{failed} failed{f', {infeasible} infeasible' if infeasible else ''}; "
        f"{meta.get('elapsed_seconds', 0):.0f} s",
    ]
    if gradient:  # the supernet trains before generation 0, the derived cells
        settings = search.get("gradient", {})
        loss = f", train loss {supernet[-1].metrics['train_loss']:.4g}" if supernet else ""
        lines.append(f"supernet ({settings.get('method')}): {len(supernet)} of "
                     f"{settings.get('epochs', '?')} epochs{loss}")  # fmt: skip
    objectives = [Objective(o["name"], o["goal"]) for o in search.get("objectives", [])]
    chance = (meta.get("chance") or {}).get(objectives[0].name) if objectives else None
    for objective in objectives:
        try:
            best = best_row(individuals, objective.name, objectives, chance)
        except KeyError:
            continue
        lines.append(f"best {objective.name}: {number(best[objective.name])} (uid {best['uid']})")
    return "\n".join(lines)
