import html
import json
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from evonas.plots import FIGURES
from evonas.report import summary_text, write_report
from tests.conftest import ROOT, cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_is_self_contained(trained, tmp_path):
    path = write_report(trained.path, tmp_path / "r.html")
    page = path.read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES) - 2  # no predictor, no supernet
    assert 'src="http' not in page and 'href="http' not in page
    for heading in ("Pareto front", "Best models", "Failures", "Config", "Versions"):
        assert f"<h2>{heading}</h2>" in page
    assert "torch" in page and "deap" in page


def test_report_lists_failures(faulty):
    page = write_report(faulty.path).read_text()
    assert "EvaluationTimeout" in page and "MemoryError" in page
    assert (faulty.path / "report.html").exists()
    assert "Pareto front" in summary_text(faulty)


def test_report_command(trained, tmp_path):
    result = cli("report", str(trained.path), "--out", str(tmp_path / "x.html"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Pareto front" in result.stdout and "report:" in result.stdout
    missing = cli("report", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2 and "no history.sqlite here" in missing.stderr


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make chromium)")
def test_report_renders_every_figure_in_headless_chromium(trained, tmp_path):
    path = write_report(trained.path, tmp_path / "r.html")
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert 'data-figures="9/9"' in result.stdout, result.stderr[-2000:]
    assert result.stdout.count('data-rendered="true"') == 9


@pytest.mark.slow
def test_notebook_executes_end_to_end(trained):
    notebook = nbformat.read(ROOT / "notebooks" / "analyze_run.ipynb", as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    os.environ["EVONAS_RUN"] = str(trained.path)
    try:
        resources = {"metadata": {"path": str(ROOT / "notebooks")}}
        NotebookClient(notebook, timeout=300, kernel_name="python3", resources=resources).execute()
    finally:
        os.environ.pop("EVONAS_RUN")
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6
    text = json.dumps([o.get("text", "") for o in outputs])
    assert "Sequential" in text  # the trained model was loaded and printed
    assert Path(trained.path).exists()


def test_report_is_readable(trained, tmp_path):
    page = write_report(trained.path, tmp_path / "r.html").read_text()
    front = page.split("<h2>Pareto front</h2>")[1].split("<h2>")[0]
    for column in ("inherited_from", "device", "weights", "cached_from", "worker", "gpu"):
        assert f"<th>{column}</th>" not in front  # no non-metric columns
    assert "<th>val_accuracy</th>" in front and "<th>params</th>" in front
    params = [cell for cell in front.split("<td>")[1:]]
    assert params and not any(cell.split("<")[0].endswith(".0") for cell in params)
    assert 'download="trained-individuals.csv"' in page and "data:text/csv;base64," in page
    assert "<details><summary>resolved config" in page  # folded
    best = trained.best()
    assert html.escape(trained.genome(int(best["uid"])).summary()) in page  # readable genome
    assert "--best --objective val_accuracy --format torchscript" in page
