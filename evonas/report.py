"""`evonas report RUN_DIR`: a self-contained report.html (figures embedded, the individuals table
downloadable as CSV) and a terminal summary. Works on finished and live runs (it only reads the
journal)."""

from __future__ import annotations

import base64
import html
import io
import shlex
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import yaml

from evonas.analysis import Run, RunLookupError, run_status
from evonas.plots import FIGURES
from evonas.records import FAILURES
from evonas.reporters import number, number_formats
from evonas.store import RunDirError, writable

# Marks each figure once the browser has decoded it, and flags any that failed to render.
_CHECK = """<script>
window.addEventListener('load', () => {
  const images = [...document.querySelectorAll('figure img')];
  images.forEach(img => { img.dataset.rendered = img.complete && img.naturalWidth > 0; });
  const broken = images.filter(img => img.dataset.rendered !== 'true').length;
  document.body.dataset.figures = images.length - broken + '/' + images.length;
});
</script>"""

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em;max-width:100%}
.wide{overflow-x:auto} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}
figure{display:inline-block;margin:0 1em 1em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#555} code{background:#f3f3f3;padding:1px 4px}
.model{margin:0 0 1.2em} .model p{margin:.2em 0}
"""


def _figures(run: Run) -> list[str]:
    """The figures worth a place: the predictions one only for a run that had a predictor, the
    architecture weights only for a gradient search."""
    search = run.config.search
    skip = {"predictions"} if search.predictor == "none" else set()
    if search.strategy != "gradient":
        skip.add("arch_weights")
    return [kind for kind in FIGURES if kind not in skip]


def _figure_html(run: Run, kind: str) -> str:
    try:
        fig = run.figure(kind)
    except (RunLookupError, ValueError) as exc:  # e.g. no successful individual yet
        return f"<p>{kind}: not available ({html.escape(str(exc))})</p>"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return (f'<figure id="fig-{kind}"><img alt="{kind}" src="data:image/png;base64,{data}">'
            f"<figcaption>{kind}</figcaption></figure>")  # fmt: skip


def _table(frame: pd.DataFrame) -> str:
    formats = number_formats(frame)
    body = frame.to_html(index=False, border=0, escape=True, formatters=formats, na_rep="")
    return f'<div class="wide">{body}</div>'


# Metrics worth a column of the Pareto table (beside the objectives); the rest is in the CSV.
FRONT_METRICS = ("test_accuracy", "val_accuracy", "params", "flops", "latency_ms", "epochs")


def front_table(run: Run, people: pd.DataFrame) -> pd.DataFrame:
    """The Pareto front for reading: uid, generation, the objectives, then the metrics of
    FRONT_METRICS it has (none empty on the front); a user evaluator's metrics when it has no
    built-in ones."""
    front = run.pareto()
    if front.empty:
        return front
    names = [o.name for o in run.objectives]
    present = [c for c in run.metric_columns(people) if c in front and front[c].notna().any()]
    extra = [c for c in FRONT_METRICS if c in present and c not in names]
    if not any(c in FRONT_METRICS for c in present):
        extra = [c for c in present if c not in names][:4]
    return front[["uid", "generation", *names, *extra]]


def summary_text(run: Run) -> str:
    people = run.individuals
    lines = [run_status(run.path)]
    front = front_table(run, people)
    if not front.empty:
        names = [o.name for o in run.objectives]
        extra = (
            ["test_accuracy"] if "test_accuracy" in front and "test_accuracy" not in names else []
        )
        table = front[["uid", "generation", *names, *extra]]
        numeric = number_formats(table)
        lines += ["", f"Pareto front ({len(front)} of {len(people)}):",
                  table.to_string(index=False, formatters=numeric)]  # fmt: skip
    return "\n".join(lines)


def _best_models(run: Run, people: pd.DataFrame) -> list[str]:
    sections = []
    for objective in run.objectives:
        try:
            best = run.best(objective.name)
        except RunLookupError:
            continue
        uid = int(best["uid"])
        facts = ", ".join(
            f"{name} {number(best[name])}"
            for name in ("val_accuracy", "test_accuracy", "params", "flops", "latency_ms")
            if name in best and pd.notna(best[name]) and name != objective.name
        )
        export = (f"evonas export {shlex.quote(str(run.path))} --best --objective "
                  f"{shlex.quote(objective.name)} --format torchscript")  # fmt: skip
        sections.append(
            f'<div class="model"><h3>best {html.escape(objective.name)}: '
            f"{number(best[objective.name])} (uid {uid})</h3>"
            f"<p><code>{html.escape(run.genome(uid).summary())}</code></p>"
            f"<p>{html.escape(facts)}</p>"
            f"<p>export: <code>{html.escape(export)}</code></p></div>"
        )
    return sections


def _csv_link(people: pd.DataFrame, name: str) -> str:
    data = base64.b64encode(people.to_csv(index=False).encode()).decode()
    return (
        f'<p><a download="{html.escape(name)}-individuals.csv" '
        f'href="data:text/csv;base64,{data}">Download every individual as CSV</a> '
        f"({len(people)} rows: genome, parents, operator, status, metrics, timings)</p>"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    run = Run(run_dir)
    out = Path(out) if out else run.path / "report.html"
    if out.is_dir():
        raise RunDirError(f"--out {out}: a folder; give the .html file to write")
    writable(out, "--out")
    people = run.individuals
    front = front_table(run, people)
    name = html.escape(run.path.name)
    sections = [
        f"<h1>evonas run {name}</h1>",
        f"<pre>{html.escape(run_status(run.path))}</pre>",
        _csv_link(people, run.path.name),
        "<h2>Figures</h2>",
        "".join(_figure_html(run, kind) for kind in _figures(run)),
        "<h2>Pareto front</h2>",
        _table(front) if not front.empty else "<p>no successful evaluation yet</p>",
        "<h2>Best models</h2>",
        *_best_models(run, people),
    ]
    supernet = run.supernet
    if not supernet.empty:
        shown = [c for c in ("epoch", "cell", "changed", "train_loss", "arch_loss",
                             "val_accuracy", "tau", "epoch_seconds") if c in supernet]  # fmt: skip
        sections += ["<h2>Supernet</h2>",
                     "<p>The gradient search's derived cell after each epoch (val_accuracy: "
                     "the supernet's own, on the validation split).</p>",
                     _table(supernet[shown])]  # fmt: skip
    failures = people[people["status"].isin(FAILURES)][
        ["uid", "generation", "operator", "status", "error"]
    ]
    sections += ["<h2>Failures</h2>", _table(failures) if not failures.empty else "<p>none</p>"]
    meta = run.meta
    config = yaml.safe_dump(run.config.to_dict(), sort_keys=False)
    sections += [
        "<h2>Config</h2>",
        f"<details><summary>resolved config (config.yaml)</summary><pre>{html.escape(config)}"
        "</pre></details>",
        "<h2>Versions</h2>",
        f"<pre>{html.escape(yaml.safe_dump(meta.get('versions', {})))}"
        f"device: {html.escape(str(meta.get('device', '?')))}</pre>",
        f"<p><small>written {time.strftime('%Y-%m-%d %H:%M:%S')}</small></p>",
    ]
    head = f"<meta charset='utf-8'><title>evonas {name}</title>"
    page = (f"<!doctype html><html><head>{head}<style>{_STYLE}</style></head>"
            f"<body>{''.join(sections)}{_CHECK}</body></html>")  # fmt: skip
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page)
    tmp.replace(out)
    return out
