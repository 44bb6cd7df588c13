"""`evonas dashboard`: a local web app over a folder of runs, read-only, live while they run.

The server is the standard library's threaded HTTP server; the page is one static HTML file with
plain JavaScript (`evonas/web/`) that polls a small JSON API every two seconds, and draws its
interactive figures with plotly.js, served from the `plotly` package (the `dashboard` extra), so
it works offline, without a CDN or a build step. Journals are opened read-only (`evonas.analysis`):
the dashboard can watch a run that is being written, and never changes one.

    GET /api/runs                          the runs: state, progress, evaluations, best values
    GET /api/run/NAME                      one run: generations, individuals, operators, failures
    GET /api/run/NAME/individual/UID       one individual: genome graph, lineage, curve, export
    GET /api/run/NAME/individuals.csv      the individuals table as CSV
    GET /api/compare?runs=A,B              best so far per evaluation, for several runs
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

from evonas.analysis import Run, RunLookupError, compare, load_run
from evonas.config import ConfigError
from evonas.genome import Genome
from evonas.objectives import best_row, front_flags
from evonas.records import FAILURES
from evonas.store import RunDirError, is_locked

WEB = Path(__file__).with_name("web")
POLL_SECONDS = 2.0  # how often the page asks again (in the page's script too)
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}  # fmt: skip


class NotFound(LookupError):
    """A run, an individual or a path the dashboard does not serve."""


# --- data (plain JSON-ready dicts) --------------------------------------------------------------


def run_dirs(runs_dir: Path) -> dict[str, Path]:
    """The runs directly inside `runs_dir`, by name (a folder with a journal)."""
    return {p.name: p for p in sorted(runs_dir.iterdir())
            if p.is_dir() and (p / "history.sqlite").is_file()}  # fmt: skip


def _state(run: Run) -> str:
    if is_locked(run.path):
        return "running"
    state = run.meta.get("state", "unknown")
    return "died" if state == "running" else state  # its process is gone: resume it


def runs_overview(runs_dir: Path) -> list[dict[str, Any]]:
    """One row per run: name, state, progress, evaluations, failures and best values."""
    rows = []
    for name, path in run_dirs(runs_dir).items():
        try:
            run = load_run(path)
            people, generations = run.individuals, run.generations
            objectives = run.objectives
        except (RunDirError, ValueError) as exc:  # another version's journal, a broken config
            rows.append({"name": name, "state": "unreadable", "error": str(exc)})
            continue
        search = run.meta.get("config", {}).get("search", {})
        best = {}
        for objective in objectives:
            metric = objective.name
            with contextlib.suppress(KeyError):  # nothing has it yet
                best[metric] = best_row(people, metric, objectives, run.chance.get(metric))[metric]
        rows.append({
            "name": name, "state": _state(run),
            "generation": int(generations["generation"].max()) if len(generations) else None,
            "generations": search.get("generations"),
            "evaluations": len(people),
            "failed": int(people["status"].isin(FAILURES).sum()) if len(people) else 0,
            "objectives": [o.to_dict() for o in objectives], "best": best,
        })  # fmt: skip
    return rows


def run_detail(path: Path) -> dict[str, Any]:
    """Everything the run page shows."""
    run = load_run(path)
    people, generations = run.individuals, run.generations
    objectives = run.objectives
    metrics = run.metric_columns(people)
    feasible, on_front = front_flags(people, objectives)
    individuals = []
    for (_, row), good, front in zip(people.iterrows(), feasible, on_front):
        individuals.append({
            "uid": int(row["uid"]), "generation": int(row["generation"]),
            "status": row["status"], "operator": row["operator"],
            "parents": [int(p) for p in row["parents"]], "error": row["error"],
            "violation": row.get("violation"), "feasible": bool(good), "on_front": bool(front),
            "metrics": {m: row[m] for m in metrics},
            "genome": Genome.from_dict(json.loads(row["genome"])).summary(),
        })  # fmt: skip
    stats = run.operator_stats() if len(people) else None
    return {
        "name": path.name, "state": _state(run), "reason": run.meta.get("reason"),
        "objectives": [o.to_dict() for o in objectives], "metrics": metrics,
        "generations": generations.drop(columns=["population", "finished_at"]).to_dict("records"),
        "individuals": individuals,
        "operators": stats.to_dict("records") if stats is not None else [],
        "failures": [i for i in individuals if i["status"] in FAILURES],
    }  # fmt: skip


def individual_detail(path: Path, uid: int) -> dict[str, Any]:
    """One individual: its genome as a graph, its lineage, its learning curve, how to export it."""
    run = load_run(path)
    lineage = run.lineage(uid)  # RunLookupError when there is no such uid
    row = lineage.iloc[0]
    genome = run.genome(uid)
    names = [o.name for o in run.objectives]
    curves = run.curves
    curve = curves[curves["uid"] == uid].drop(columns=["uid", "generation", "status"])
    return {
        "uid": uid,
        "run": path.name,
        "status": row["status"],
        "error": row["error"],
        "operator": row["operator"],
        "generation": int(row["generation"]),
        "metrics": {m: row[m] for m in run.metric_columns(lineage) if m != "depth"},
        "summary": genome.summary(),
        "graph": genome_graph(genome),
        "lineage": [
            {
                "uid": int(r["uid"]),
                "depth": int(r["depth"]),
                "operator": r["operator"],
                "status": r["status"],
                "generation": int(r["generation"]),
                **{n: r.get(n) for n in names},
            }
            for _, r in lineage.iterrows()
        ],  # fmt: skip
        "curve": curve.to_dict("records"),
        "export": f"evonas export {shlex.quote(str(path))} --individual {uid}",
        "trained": row["status"] in ("ok", "stopped"),
    }


def genome_graph(genome: Genome) -> dict[str, Any]:
    """Nodes (input, each gene, the head) and edges, for drawing: a chain is a path; a graph's
    edges are its genes' inputs."""
    nodes = [{"id": 0, "label": "input", "op": "input"}]
    edges = []
    previous = 0
    for gene in genome.genes:
        nodes.append({"id": gene.id, "label": gene.summary(), "op": gene.op})
        for source in gene.inputs if gene.inputs is not None else (previous,):
            edges.append([source, gene.id])
        previous = gene.id
    if not genome.is_graph:  # chains end in evonas's classifier head
        nodes.append({"id": -1, "label": "head (pool, linear)", "op": "head"})
        edges.append([previous, -1])
    return {"nodes": nodes, "edges": edges}


def compare_runs(runs_dir: Path, names: list[str]) -> list[dict[str, Any]]:
    known = run_dirs(runs_dir)
    missing = [n for n in names if n not in known]
    if missing or not names:
        raise NotFound(f"no run named {missing[0] if missing else '(none given)'}")
    return compare([known[n] for n in names]).to_dict("records")


# --- the server ---------------------------------------------------------------------------------


def plotly_js() -> Path:
    """plotly.js as the plotly package ships it; ConfigError naming the extra when it is absent."""
    try:
        import plotly
    except ImportError:
        raise ConfigError(
            "evonas dashboard needs plotly (its figures, served offline): "
            "pip install 'evonas[dashboard]'"
        ) from None
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _clean(value: Any) -> Any:
    """JSON-ready: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy and pandas scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is not None and not isinstance(value, (str, int, float, bool)):
        return str(value)  # timestamps
    return value


class Handler(BaseHTTPRequestHandler):
    runs_dir: Path
    plotly: Path

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        try:
            self.route(parts, parse_qs(url.query))
        except (NotFound, RunDirError, RunLookupError, KeyError) as exc:
            self.send(HTTPStatus.NOT_FOUND, json.dumps({"error": str(exc)}), ".json")
        except BrokenPipeError:
            pass  # the page went away
        except Exception as exc:  # e.g. a journal caught mid-migration: say so, keep serving
            error = {"error": f"{type(exc).__name__}: {exc}"}
            self.send(HTTPStatus.INTERNAL_SERVER_ERROR, json.dumps(error), ".json")

    def route(self, parts: list[str], query: dict[str, list[str]]) -> None:
        if not parts:
            return self.file(WEB / "index.html")
        if parts[0] == "static" and len(parts) == 2:
            if parts[1] == "plotly.min.js":
                return self.file(self.plotly)
            if parts[1] in ("app.js", "style.css"):
                return self.file(WEB / parts[1])
        if parts[:2] == ["api", "runs"] and len(parts) == 2:
            return self.json(runs_overview(self.runs_dir))
        if parts[:2] == ["api", "compare"]:
            names = [n for n in ",".join(query.get("runs", [])).split(",") if n]
            return self.json(compare_runs(self.runs_dir, names))
        if parts[:2] == ["api", "run"] and len(parts) >= 3:
            path = run_dirs(self.runs_dir).get(parts[2])
            if path is None:
                raise NotFound(f"no run named {parts[2]!r}")
            if len(parts) == 3:
                return self.json(run_detail(path))
            if parts[3:] == ["individuals.csv"]:
                csv = load_run(path).individuals.to_csv(index=False)
                return self.send(
                    HTTPStatus.OK, csv, ".csv", download=f"{path.name}-individuals.csv"
                )
            if len(parts) == 5 and parts[3] == "individual" and parts[4].isdigit():
                return self.json(individual_detail(path, int(parts[4])))
        raise NotFound(f"no page {'/'.join(parts)!r}")

    def json(self, data: Any) -> None:
        self.send(HTTPStatus.OK, json.dumps(_clean(data), allow_nan=False), ".json")

    def file(self, path: Path) -> None:
        self.send(HTTPStatus.OK, path.read_bytes(), path.suffix)

    def send(self, status: HTTPStatus, body: str | bytes, kind: str, download: str = "") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        types = {**CONTENT_TYPES, ".json": "application/json", ".csv": "text/csv; charset=utf-8"}
        self.send_header("Content-Type", types[kind])
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")  # live data
        if download:  # headers are Latin-1: an ASCII name, and the real one encoded (RFC 6266)
            plain = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_"
                            for c in download)  # fmt: skip
            value = f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(download)}"
            self.send_header("Content-Disposition", value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the terminal shows the address, not every poll


def make_server(
    runs_dir: str | Path, host: str = "127.0.0.1", port: int = 8050
) -> ThreadingHTTPServer:
    """A server for the runs in `runs_dir` (port 0: any free port; `server.server_address` says
    which). ConfigError for a folder that is not there or a port that cannot be bound."""
    folder = Path(runs_dir)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such runs directory")
    handler = type("DashboardHandler", (Handler,), {"runs_dir": folder, "plotly": plotly_js()})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise ConfigError(
            f"--host/--port: cannot listen on {host}:{port} ({exc.strerror})"
        ) from None
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Serve in a daemon thread (tests, notebooks); `server.shutdown()` stops it."""
    thread = threading.Thread(target=server.serve_forever, name="evonas-dashboard", daemon=True)
    thread.start()
    return thread
