"""`evonas dashboard`: its JSON API on a real run (fast), and the page in a real headless
Chromium against a running search (slow; skipped where Chromium or Playwright is absent)."""

import hashlib
import io
import json
import shutil
import signal
import socket
import urllib.error
import urllib.request

import pandas as pd
import pytest

from evonas.objectives import pareto_front
from tests.conftest import FAULTS, cli

pytest.importorskip("plotly")


@pytest.fixture(scope="module")
def board(trained):
    from evonas.dashboard import make_server, serve_in_thread

    server = make_server(trained.path.parent, port=0)
    serve_in_thread(server)
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}", trained
    server.shutdown()
    server.server_close()


def get(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read(), response.headers


def get_json(url):
    return json.loads(get(url)[0])


def test_the_runs_page_data_says_state_progress_and_best(board):
    url, run = board
    (row,) = get_json(f"{url}/api/runs")
    assert row["name"] == "trained" and row["state"] == "finished"
    assert row["evaluations"] == len(run.individuals) and row["failed"] == 0
    assert row["generation"] == row["generations"] == 3
    assert row["best"]["val_accuracy"] == run.individuals["val_accuracy"].max()


def test_the_run_data_marks_the_front_and_lists_every_individual(board):
    url, run = board
    data = get_json(f"{url}/api/run/trained")
    assert [i["uid"] for i in data["individuals"]] == list(run.individuals["uid"])
    front = set(pareto_front(run.individuals, run.objectives)["uid"])
    assert {i["uid"] for i in data["individuals"] if i["on_front"]} == front
    assert len(data["generations"]) == 4 and data["operators"]


def test_an_individual_has_its_genome_graph_lineage_and_export_command(board):
    url, run = board
    child = int(run.individuals[run.individuals["generation"] == 3]["uid"].iloc[0])
    data = get_json(f"{url}/api/run/trained/individual/{child}")
    genome = run.genome(child)
    assert len(data["graph"]["nodes"]) == len(genome.genes) + 2  # the input and the head
    assert len(data["graph"]["edges"]) == len(genome.genes) + 1  # a chain
    assert data["lineage"][0]["uid"] == child and len(data["lineage"]) > 1
    assert data["export"].endswith(f"trained --individual {child}")
    assert [p["epoch"] for p in data["curve"]] == [1, 2]


def test_the_csv_download_is_the_individuals_table(board):
    url, run = board
    body, headers = get(f"{url}/api/run/trained/individuals.csv")
    assert "attachment" in headers["Content-Disposition"]
    table = pd.read_csv(io.BytesIO(body))
    assert list(table["uid"]) == list(run.individuals["uid"])
    assert table["val_accuracy"].tolist() == pytest.approx(run.individuals["val_accuracy"].tolist())


OUTSIDE = ["/api/run/nope", "/api/run/trained/individual/999", "/api/run/..%2F..%2Fetc",
           "/etc/passwd", "/static/../cli.py"]  # fmt: skip


@pytest.mark.parametrize("path", OUTSIDE)
def test_what_is_not_there_is_a_404_and_nothing_outside_is_served(board, path):
    url, _ = board
    with pytest.raises(urllib.error.HTTPError) as error:
        get(url + path)
    assert error.value.code == 404


def test_the_dashboard_never_writes_to_a_journal(board):
    url, run = board
    journal = run.path / "history.sqlite"
    before = hashlib.sha256(journal.read_bytes()).hexdigest()
    uid = int(run.individuals["uid"].iloc[-1])
    for path in ["/api/runs", "/api/run/trained", f"/api/run/trained/individual/{uid}",
                 "/api/run/trained/individuals.csv", "/api/compare?runs=trained"]:  # fmt: skip
        get(url + path)
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == before


def test_bad_dashboard_arguments_are_one_line_errors(tmp_path):
    done = cli("dashboard", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"evonas: error: {tmp_path / 'nowhere'}: no such runs directory"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("dashboard", str(tmp_path), "--port", str(port), cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"--host/--port: cannot listen on 127.0.0.1:{port}" in done.stderr


# --- the page, in a real browser --------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make chromium)")
def test_the_page_follows_a_running_search_and_hover_click_and_csv_work(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.test_analysis import start_live_search
    from tests.test_cli_processes import journal_rows, start_cli, wait_until

    search = start_live_search(tmp_path, f"{{evaluator: '{FAULTS}:slow'}}")
    board = start_cli("dashboard", str(tmp_path), "--port", "0", cwd=tmp_path)
    try:
        wait_until(lambda: journal_rows(tmp_path / "live") >= 5)
        url = board.stdout.readline().split()[2]  # "evonas dashboard: http://...:PORT/ ..."
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(accept_downloads=True, viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#runs td.state.running")  # the running search is listed
            page.click("#runs a:text('live')")
            page.wait_for_selector("#individuals tbody tr")
            shown = page.locator("#individuals tbody tr").count()
            # new evaluations appear without a reload
            rows = "document.querySelectorAll('#individuals tbody tr').length"
            page.wait_for_function(f"{rows} > {shown}", timeout=60_000)

            point = page.locator("#pareto .scatterlayer .point").first
            box = point.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            hover = page.wait_for_selector("#pareto .hoverlayer .hovertext")
            assert "uid" in hover.text_content() and "val_accuracy" in hover.text_content()

            with page.expect_download() as download:
                page.click("#csv")
            table = pd.read_csv(download.value.path())
            assert len(table) >= shown and {"uid", "status", "val_accuracy"} <= set(table.columns)

            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector("svg.genome g.node")  # the individual's page, genome drawn
            assert "/live/" in page.url and page.locator("#export").count() == 1
            assert page.locator("svg.genome g.node.head").count() == 1
            browser.close()
    finally:
        for process in (board, search):
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
