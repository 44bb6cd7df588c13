"""Screenshot the dashboard's run page for the README (needs Chromium and Playwright).

    .venv/bin/python docs/screenshot_dashboard.py RUNS_DIR RUN_NAME [--out docs/dashboard.png]
"""

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evonas.dashboard import make_server, serve_in_thread  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir")
    parser.add_argument("run")
    parser.add_argument("--out", default=str(Path(__file__).with_name("dashboard.png")))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    server = make_server(args.runs_dir, port=0)
    serve_in_thread(server)
    host, port = server.server_address[:2]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://{host}:{port}/#/run/{args.run}")
        page.wait_for_selector("#pareto .scatterlayer .point")
        points = page.locator("#pareto .scatterlayer .point")
        boxes = [points.nth(k).bounding_box() for k in range(points.count())]
        point = max(boxes, key=lambda box: box["y"])  # a low one: its label hides no other
        page.mouse.move(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)
        page.wait_for_selector("#pareto .hoverlayer .hovertext")
        page.screenshot(path=args.out)
        browser.close()
    server.shutdown()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
