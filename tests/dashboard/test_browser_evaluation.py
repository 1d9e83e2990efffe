"""Galleries and the paired comparison in a real browser (`streamlit run` + Debian's Chromium).

Performance page: clicking a finding's row opens the gallery of its films, "Heatmap" shows a
film's map, the gallery becomes a review session; clicking an ROC operating point opens the
films that threshold gets wrong; a multiclass model's confusion cell opens its films and its
sidebar offers no threshold set. Models page: two runs on the same images are compared case by
case. Screenshots at 1440x900 and 1024x768 go to $CXR_SCREENSHOT_DIR (default: pytest's tmp_path).
Waits are for elements and for Streamlit to be idle, never for a fixed time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.checkpoint_fixtures import build_catalog, noisy_copy
from tests.dashboard.browser_support import choose, settle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SIZES = {"1440": {"width": 1440, "height": 900}, "1024": {"width": 1024, "height": 768}}
DIALOG = '[role="dialog"]'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    folder = tmp_path_factory.mktemp("browser_evaluation")
    catalog = build_catalog(folder)
    noisy_copy(catalog["tiny_a"], folder / "checkpoints" / "tiny_noisy")
    return folder


@contextmanager
def _serve(root: Path):
    port = _free_port()
    env = {
        **os.environ,
        "CXR_CHECKPOINT_DIRS": str(root / "checkpoints"),
        "CXR_REVIEW_DIR": str(root / "review"),
        "CXR_DATA_ROOT": str(root / "data"),
        "CXR_THUMBNAIL_DIR": str(root / "thumbnails"),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless"]
    command += ["true", "--server.port", str(port), "--server.address", "127.0.0.1"]
    command += ["--browser.gatherUsageStats", "false"]
    with (root / "streamlit.log").open("w") as log:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("streamlit did not start; see streamlit.log")
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/_stcore/health", timeout=2
                    ):
                        break
                except OSError:
                    time.sleep(0.5)  # polling a server that is starting, not waiting on the app
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def url(root: Path):
    with _serve(root) as address:
        yield address


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CXR_SCREENSHOT_DIR", tmp_path / "screens"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _idle(page) -> None:
    """Streamlit's run has finished and its page holds nothing stale: the status widget's
    "Running" shows only after a delay, so a page that lacks it may still hold the last run's
    elements (a sidebar box the new run no longer draws)."""
    settle(page)


def _open(page, url: str, path: str, heading: str) -> None:
    page.goto(f"{url}/{path}", wait_until="domcontentloaded")
    page.get_by_role("heading", name=heading).first.wait_for(timeout=180_000)
    _idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0


def _click_row(page, table_index: int, row: int) -> None:
    """Click row ``row``'s selection box in the ``table_index``-th dataframe (a canvas grid)."""
    frame = page.locator('[data-testid="stDataFrame"]').nth(table_index)
    frame.scroll_into_view_if_needed()
    box = frame.bounding_box()
    frame.hover()
    page.mouse.click(box["x"] + 18, box["y"] + 38 + 35 * row + 17)


def _point_position(page, trace: str) -> tuple[float, float]:
    """Screen position of the first point of the Plotly trace named ``trace``."""
    return tuple(
        page.evaluate(
            """(name) => {
                const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
                    .find(p => p.data.some(t => t.name === name));
                const trace = gd.data.find(t => t.name === name);
                const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                gd.scrollIntoView({block: 'center'});
                const r = gd.getBoundingClientRect();
                return [r.left + xa._offset + xa.l2p(trace.x[0]), r.top + ya._offset + ya.l2p(trace.y[0])];
            }""",
            trace,
        )
    )


def _gallery(page, text: str):
    """The open dialog once ``text`` shows in it and every image in it has loaded."""
    dialog = page.locator(DIALOG)
    dialog.get_by_text(text, exact=False).first.wait_for(timeout=180_000)
    _idle(page)
    page.wait_for_function(
        f"() => Array.from(document.querySelectorAll('{DIALOG} img'))"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=180_000,
    )
    return dialog


def test_rows_and_curve_points_open_galleries_and_a_gallery_becomes_a_review_session(
    url: str, root: Path, shots: Path
) -> None:
    from playwright.sync_api import sync_playwright

    from cxr_core.artifacts.review_store import ReviewStore
    from cxr_core.evaluation.review import session_films

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for size, viewport in SIZES.items():
                page = browser.new_page(viewport=viewport)
                _open(page, url, "performance", "Performance")
                page.wait_for_function(
                    "() => document.querySelectorAll('.js-plotly-plot').length >= 2"
                    " && Array.from(document.querySelectorAll('.js-plotly-plot'))"
                    ".some(p => p.data.some(t => t.fill === 'tonexty'))",
                    timeout=180_000,
                )  # the curves and their bands
                page.screenshot(path=str(shots / f"eval_performance_{size}.png"), full_page=True)
                page.evaluate(
                    "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                    ".find(p => p.data.some(t => t.fill === 'tonexty')).scrollIntoView()"
                )
                page.screenshot(path=str(shots / f"eval_curves_{size}.png"))
                _click_row(page, 0, 0)
                dialog = _gallery(page, "Atelectasis: all films")
                page.screenshot(path=str(shots / f"eval_gallery_{size}.png"))
                dialog.locator("img").nth(9).wait_for(timeout=180_000)
                assert dialog.get_by_text("most wrong first", exact=False).count() == 1
                page.screenshot(path=str(shots / f"eval_gallery_{size}.png"))
                dialog.get_by_role("button", name="Heatmap").first.click()
                _gallery(page, "where the evidence for Atelectasis lies")
                page.screenshot(path=str(shots / f"eval_gallery_heatmap_{size}.png"))
                page.keyboard.press("Escape")
                page.locator(DIALOG).wait_for(state="detached", timeout=60_000)
                page.close()

            page = browser.new_page(viewport=SIZES["1440"])
            _open(page, url, "performance", "Performance")
            counts = page.locator('[data-testid="stDataFrame"]').nth(1)
            counts.scroll_into_view_if_needed()
            box = counts.bounding_box()
            # Cardiomegaly's last cell (n_neg: opens nothing), then two cells left: its FN count
            page.mouse.click(box["x"] + box["width"] - 12, box["y"] + 38 + 35 + 17)
            _idle(page)
            page.keyboard.press("ArrowLeft")
            page.keyboard.press("ArrowLeft")
            _gallery(page, "Cardiomegaly: false negatives at the report's operating point")
            page.screenshot(path=str(shots / "eval_gallery_from_count_cell_1440.png"))
            page.keyboard.press("Escape")
            page.locator(DIALOG).wait_for(state="detached", timeout=60_000)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".some(p => p.data.some(t => t.name === 'Atelectasis operating point'))",
                timeout=180_000,
            )
            x, y = _point_position(page, "Atelectasis operating point")
            page.mouse.click(x, y)
            # the click lands on the marker or the curve point next to it: either names a threshold
            dialog = _gallery(page, "Atelectasis: false positives and false negatives at threshold")
            page.screenshot(path=str(shots / "eval_gallery_from_roc_point_1440.png"))
            films = dialog.get_by_role("button", name="Heatmap").count()
            dialog.get_by_label("Session name").fill("Atelectasis errors at 0.5")
            dialog.get_by_role("button", name="Start the review session").click()
            _gallery(page, "started with")
            sessions = ReviewStore(root / "review").sessions()
            session = next(s for s in sessions if s.name == "Atelectasis errors at 0.5")
            assert len(session_films(session)) == films > 0
        finally:
            browser.close()


def test_multiclass_confusion_cell_opens_its_films_and_offers_no_threshold_set(
    url: str, shots: Path
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=SIZES["1440"])
            _open(page, url, "performance", "Performance")
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.locator('[data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name="tiny_mc", exact=False).click()
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".some(p => p.data.some(t => t.type === 'heatmap'))",
                timeout=180_000,
            )
            _idle(page)
            assert sidebar.get_by_text("Threshold set", exact=False).count() == 0
            assert "None" not in page.locator('[data-testid="stMain"]').inner_text()
            page.screenshot(
                path=str(shots / "eval_performance_multiclass_1440.png"), full_page=True
            )
            position = page.evaluate(
                """() => {
                    const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
                        .find(p => p.data.some(t => t.type === 'heatmap'));
                    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                    gd.scrollIntoView({block: 'center'});
                    const r = gd.getBoundingClientRect();
                    return [r.left + xa._offset + xa.l2p(1), r.top + ya._offset + ya.l2p(0)];
                }"""
            )
            page.mouse.click(*position)
            _gallery(page, "Normal films called Pneumonia")
            page.screenshot(path=str(shots / "eval_gallery_confusion_cell_1440.png"))
        finally:
            browser.close()


def test_models_page_compares_two_runs_on_the_same_images(url: str, shots: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for size, viewport in SIZES.items():
                page = browser.new_page(viewport=viewport)
                _open(page, url, "models", "Models")
                second = page.get_by_label("Second", exact=True)
                second.scroll_into_view_if_needed()
                choose(page, second, "tiny_noisy", exact=False)
                page.get_by_text("Paired comparison on the same 60 val images").wait_for(
                    timeout=180_000
                )
                _idle(page)
                page.wait_for_function(
                    "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                    ".some(p => JSON.stringify(p.layout.title || '').includes('AUROC per finding'))",
                    timeout=180_000,
                )  # the forest plot
                assert page.locator('[data-testid="stException"]').count() == 0
                # the paired view's last element: the run that drew it has finished
                page.get_by_role("button", name="Download the table (CSV)").wait_for(
                    timeout=180_000
                )
                _idle(page)
                tables = page.locator('[data-testid="stDataFrame"]')
                tables.nth(tables.count() - 2).evaluate("e => e.scrollIntoView({block: 'start'})")
                page.screenshot(path=str(shots / f"eval_models_paired_{size}.png"))
                second.evaluate("e => e.scrollIntoView({block: 'center'})")
                choose(page, second, "tiny_b", exact=False)
                page.get_by_text("No paired comparison", exact=False).wait_for(timeout=180_000)
                _idle(page)
                assert page.get_by_text("different label sources", exact=False).count() >= 1
                page.screenshot(path=str(shots / f"eval_models_refused_{size}.png"), full_page=True)
                page.close()
        finally:
            browser.close()


def _session_with_calls(root: Path, name: str, films: int) -> None:
    """An unblinded session on tiny_a in which readers A and B called ``films`` films."""
    import pandas as pd

    from cxr_core.artifacts.review_store import ReviewStore

    frame = pd.read_csv(root / "checkpoints" / "tiny_a" / "eval" / "val" / "predictions.csv")
    store = ReviewStore(root / "review")
    checkpoint = str((root / "checkpoints" / "tiny_a").resolve())
    session = store.create_session(name, checkpoint, "val", classes=["Atelectasis"])
    for i, image_id in enumerate(frame["image_id"].astype(str)[:films]):
        store.record(session.id, image_id, "Atelectasis", reviewer="A", finding="present")
        call = "present" if i % 3 else "absent"
        store.record(session.id, image_id, "Atelectasis", reviewer="B", finding=call)


def test_review_agreement_and_corrected_metrics_say_not_enough_films(
    url: str, root: Path, shots: Path
) -> None:
    """Three films called: no kappa, "not enough films"; corrected metrics with their intervals."""
    from playwright.sync_api import sync_playwright

    _session_with_calls(root, "three films", 3)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for size, viewport in SIZES.items():
                page = browser.new_page(viewport=viewport)
                _open(page, url, "review?reader=A", "Review")
                page.get_by_label("Review session").click()
                page.get_by_role("option", name="three films", exact=False).click()
                _idle(page)
                page.get_by_text("Agreement", exact=True).click()
                page.get_by_text("not enough films (fewer than 10 shared)").first.wait_for(
                    state="attached", timeout=180_000
                )  # a cell of the grid (its accessible copy; the grid itself is drawn)
                _idle(page)
                assert (
                    "0.000 (0.00 to 0.00)"
                    not in page.locator('[data-testid="stMain"]').inner_text()
                )
                page.screenshot(path=str(shots / f"eval_review_agreement_{size}.png"))
                page.get_by_text("Corrected metrics", exact=True).click()
                page.get_by_text("patient-level bootstrap intervals", exact=False).wait_for(
                    timeout=180_000
                )
                _idle(page)
                page.screenshot(path=str(shots / f"eval_review_corrected_{size}.png"))
                page.close()
        finally:
            browser.close()
