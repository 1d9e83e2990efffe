"""How fast the dashboard answers in a real browser (headless Chromium), on the bundled models.

Starts ``streamlit run streamlit_app.py`` from ``--app-dir`` (default: this checkout), loads the
model once, then measures, as the median of ``--runs`` repetitions:

- each page's first render (URL opened → title shown and the script run finished), goal ≤ 2 s;
- Thresholds: a slider step → the sensitivity number changes, goal ≤ 0.5 s;
- Predict: a new image → its findings summary (not its heatmap), goal ≤ 1.5 s;
- Predict: another "Explain class" → the overlay redrawn for it, goal ≤ 1.5 s.

Prints each median with "met" / "NOT met". Needs Debian's chromium and the playwright package.

    python benchmarks/bench_dashboard_latency.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
GOALS = {
    "page first render": 2.0,
    "threshold slider → numbers": 0.5,
    "new image → findings": 1.5,
    "Grad-CAM class change": 1.5,
}
PAGES = (
    ("", "Predict"),
    ("performance", "Performance"),
    ("thresholds", "Thresholds"),
    ("review", "Review"),
    ("models", "Models"),
)
IDLE_JS = (
    "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
    " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _idle(page, timeout_ms: int = 300_000) -> None:
    page.wait_for_timeout(150)  # let the rerun start before waiting for it to end
    page.wait_for_function(IDLE_JS, timeout=timeout_ms, polling=50)


def _timed(action: Callable[[], None], done: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    done()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-dir", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument(
        "--images",
        default=os.path.join(
            os.environ.get("CXR_SHARED_DATA", "../shared/data"), "nih14", "images"
        ),
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--skip-pages", action="store_true", help="measure only the interactions, not page loads"
    )
    args = parser.parse_args()
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    images = sorted(Path(args.images).glob("*.png"))[: 2 * args.runs + 2]
    if len(images) < args.runs + 1:
        print(f"need at least {args.runs + 1} PNG images in {args.images}", file=sys.stderr)
        return 2
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": args.app_dir}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=args.app_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, list[float]] = {name: [] for name in GOALS}
    per_page: dict[str, list[float]] = {title: [] for _, title in PAGES}
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            cold = time.perf_counter()
            page.goto(url + "/", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Predict").wait_for(timeout=300_000)
            _idle(page)
            page.locator("input[type=file]").first.set_input_files(str(images[0]))
            page.get_by_role("heading", name="Results").wait_for(timeout=300_000)
            _idle(page)
            print(
                f"cold server → first image's results: {time.perf_counter() - cold:.1f} s (model load included)"
            )

            for _ in range(0 if args.skip_pages else args.runs):
                for path, title in PAGES:
                    seconds = _timed(
                        lambda: page.goto(f"{url}/{path}", wait_until="domcontentloaded"),
                        lambda: (
                            page.get_by_role("heading", name=title).first.wait_for(timeout=300_000),
                            _idle(page),
                        ),
                    )
                    per_page[title].append(seconds)
            results["page first render"] = [statistics.median(v) for v in per_page.values() if v]
            for title, values in () if args.skip_pages else per_page.items():
                print(
                    f"  {title:<12} first render: median {statistics.median(values):.2f} s over {len(values)} runs",
                    flush=True,
                )

            try:
                for i in range(args.runs):
                    image = images[1 + i]
                    page.goto(
                        url + "/", wait_until="domcontentloaded"
                    )  # a fresh session: no file uploaded yet
                    page.get_by_role("heading", name="Predict").wait_for(timeout=300_000)
                    _idle(page)
                    upload = page.locator("input[type=file]").first
                    # Done when the findings summary of the new image is drawn; its heatmap may still be computing.
                    results["new image → findings"].append(
                        _timed(
                            lambda: upload.set_input_files(str(image)),
                            lambda: (
                                page.get_by_role("heading", name=image.name).wait_for(
                                    timeout=300_000
                                ),
                                page.get_by_text("Abnormality score").first.wait_for(
                                    timeout=300_000
                                ),
                            ),
                        )
                    )
                    _idle(page)
                for i in range(args.runs):
                    box = (
                        page.locator('[data-testid="stSelectbox"]')
                        .filter(has_text="Explain class")
                        .first
                    )
                    box.click()
                    options = page.get_by_role("option")
                    target = options.nth(1 + i % max(1, options.count() - 1))
                    name = target.inner_text().strip()
                    start = time.perf_counter()
                    target.click()
                    page.wait_for_function(
                        "(name) => Array.from(document.querySelectorAll('.js-plotly-plot')).some(p => "
                        "(p.layout.annotations || []).some(a => (a.text || '').includes(' · ' + name + ' · ')))",
                        arg=name,
                        timeout=300_000,
                        polling=20,
                    )
                    results["Grad-CAM class change"].append(time.perf_counter() - start)
                    _idle(page)
            except PlaywrightError as exc:
                print(f"Predict: not measured ({str(exc).splitlines()[0]})", flush=True)
            try:
                page.goto(f"{url}/thresholds", wait_until="domcontentloaded")
                page.get_by_role("heading", name="Thresholds").first.wait_for(timeout=300_000)
                _idle(page)
                slider = page.get_by_role("slider").first
                slider.wait_for(timeout=300_000)
                metric = page.locator('[data-testid="stMetricValue"]').first
                for _ in range(args.runs):
                    before = metric.inner_text()
                    start = time.perf_counter()
                    slider.focus(timeout=120_000)
                    page.keyboard.press("PageUp")
                    try:
                        page.wait_for_function(
                            "([m, b]) => m.innerText !== b",
                            arg=[metric.element_handle(), before],
                            timeout=60_000,
                            polling=20,
                        )
                    except PlaywrightError:  # the number may legitimately not change for one step
                        _idle(page)
                    results["threshold slider → numbers"].append(time.perf_counter() - start)
                    _idle(page)
            except PlaywrightError as exc:
                print(f"Thresholds: not measured ({str(exc).splitlines()[0]})", flush=True)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    for name, goal in GOALS.items():
        values = results[name]
        if not values:
            print(f"{name:<28} not measured")
            continue
        median = max(values) if name == "page first render" else statistics.median(values)
        label = (
            "slowest page's median" if name == "page first render" else f"median of {len(values)}"
        )
        met = median <= goal
        print(
            f"{name:<28} {label}: {median:.2f} s (goal ≤ {goal:.1f} s) {'met' if met else 'NOT met'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
