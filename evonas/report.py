"""`evonas report RUN_DIR`: a self-contained report.html (figures embedded) and a terminal summary.

Works on finished and live runs (it only reads the journal)."""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import yaml

from evonas.analysis import FIGURES, Run, run_status

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
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}
figure{display:inline-block;margin:0 1em 1em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#555}
"""


def _figure_html(run: Run, kind: str) -> str:
    try:
        fig = run.figure(kind)
    except (KeyError, ValueError) as exc:  # e.g. no successful individual yet
        return f"<p>{kind}: not available ({html.escape(str(exc))})</p>"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return (f'<figure id="fig-{kind}"><img alt="{kind}" src="data:image/png;base64,{data}">'
            f"<figcaption>{kind}</figcaption></figure>")  # fmt: skip


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, escape=True)


def summary_text(run: Run) -> str:
    people = run.individuals
    lines = [run_status(run.path)]
    front = run.pareto()
    names = [o["name"] for o in run.objectives]
    if not front.empty:
        columns = ["uid", "generation", *names]
        if "test_accuracy" in front and "test_accuracy" not in names:
            columns.append("test_accuracy")
        lines += [
            "",
            f"Pareto front ({len(front)} of {len(people)}):",
            front[columns].to_string(index=False),
        ]
    return "\n".join(lines)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    run = Run(run_dir)
    out = Path(out) if out else run.path / "report.html"
    people = run.individuals
    names = [o["name"] for o in run.objectives]
    front = run.pareto()
    sections = [
        f"<h1>evonas run {html.escape(run.path.name)}</h1>",
        f"<pre>{html.escape(run_status(run.path))}</pre>",
        "<h2>Figures</h2>",
        "".join(_figure_html(run, kind) for kind in FIGURES),
        "<h2>Pareto front</h2>",
    ]
    metric_columns = [c for c in run.metric_columns(people) if c in front]
    sections.append(_table(front[["uid", "generation", "operator", *metric_columns]])
                    if not front.empty else "<p>no successful evaluation yet</p>")  # fmt: skip
    sections.append("<h2>Best models</h2>")
    for name in names:
        try:
            best = run.best(name)
        except KeyError:
            continue
        layers = "\n".join(
            "  " + " ".join(f"{k}={v}" for k, v in layer.items())
            for layer in run.genome(int(best["uid"])).to_dict()["layers"]
        )
        title = f"best {html.escape(name)}: {best[name]:.4g} (uid {best['uid']})"
        body = html.escape(layers or "  (no layers: the head only)")
        sections.append(f"<h3>{title}</h3><pre>{body}</pre>")
    failures = people[people["status"] != "ok"][
        ["uid", "generation", "operator", "status", "error"]
    ]
    sections += ["<h2>Failures</h2>",
                 _table(failures) if not failures.empty else "<p>none</p>"]  # fmt: skip
    meta = run.meta
    sections += [
        "<h2>Config</h2>",
        f"<pre>{html.escape(yaml.safe_dump(run.config, sort_keys=False))}</pre>",
        "<h2>Versions</h2>",
        f"<pre>{html.escape(yaml.safe_dump(meta.get('versions', {})))}"
        f"device: {html.escape(str(meta.get('device', '?')))}</pre>",
        f"<p><small>written {time.strftime('%Y-%m-%d %H:%M:%S')}</small></p>",
    ]
    head = f"<meta charset='utf-8'><title>evonas {html.escape(run.path.name)}</title>"
    page = (f"<!doctype html><html><head>{head}<style>{_STYLE}</style></head>"
            f"<body>{''.join(sections)}{_CHECK}</body></html>")  # fmt: skip
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page)
    tmp.replace(out)
    return out
