"""The real dashboard in a real browser: `streamlit run` + Debian's headless Chromium via playwright.

Uploads a real NIH radiograph on Predict, waits for the batch table and the findings, then
opens every page and saves a screenshot of each (to $CXR_SCREENSHOT_DIR, default pytest's
tmp_path) so a person can look at what the dashboard shows. On Review: two browser contexts read
the same film as two named readers (both calls reach the page's agreement table and its export),
and a blinded reader sees neither label nor model output until saving, marks "where" by
clicking the film, and finds the session's Agreement view closed while films remain.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.checkpoint_fixtures import build_catalog

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGES = (
    ("performance", "Performance"),
    ("thresholds", "Thresholds"),
    ("review", "Review"),
    ("models", "Models"),
)


_REVIEW_DIRS: dict[str, Path] = {}


def _review_dir(url: str) -> Path:
    return _REVIEW_DIRS[url]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer {url} within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def xray(shared_data: Path) -> Path:
    images = sorted((shared_data / "nih14" / "images").glob("*.png"))
    if not images:
        pytest.skip("no NIH images in the shared data folder")
    return images[0]


@pytest.fixture(scope="module")
def browser_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("browser")
    build_catalog(root)
    return root


@contextmanager
def _serve(root: Path, log_name: str):
    """A freshly started ``streamlit run`` on a free port, with the repository's own config."""
    port = _free_port()
    env = {
        **os.environ,
        "CXR_CHECKPOINT_DIRS": str(root / "checkpoints"),
        "CXR_REVIEW_DIR": str(root / "review"),
        "CXR_DATA_ROOT": str(root / "data"),
        "OMP_NUM_THREADS": "1",
    }
    log = (root / log_name).open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc)
        _REVIEW_DIRS[f"http://127.0.0.1:{port}"] = root / "review"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def dashboard_url(browser_root: Path):
    with _serve(browser_root, "streamlit.log") as url:
        yield url


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CXR_SCREENSHOT_DIR", tmp_path / "screens"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _settle(page, timeout_ms: int = 90_000) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(1500)


PLOTS_JS = "Array.from(document.querySelectorAll('.js-plotly-plot'))"
# For each dataframe: does its grid need a scroll bar of its own (more rows or columns than shown)?
INNER_SCROLL_JS = """() => Array.from(document.querySelectorAll('[data-testid="stDataFrame"]')).map(frame => {
    const scroller = frame.querySelector('.dvn-scroller');
    if (!scroller) return null;
    return scroller.scrollHeight > scroller.clientHeight + 2 || scroller.scrollWidth > scroller.clientWidth + 2;
})"""


def test_page_url_as_first_request_gets_the_router(
    browser_root: Path, screenshot_dir: Path
) -> None:
    """On a server nobody has visited, /performance shows the router's picker and disclaimer, not a file list."""
    from playwright.sync_api import sync_playwright

    with _serve(browser_root, "fresh.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{url}/performance", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Performance").first.wait_for(timeout=120_000)
            _settle(page)
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.get_by_text("Checkpoint", exact=True).wait_for(
                timeout=60_000
            )  # the model picker
            assert sidebar.get_by_text("not a medical device", exact=False).count() == 1
            nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
            assert (
                "Thresholds" in nav and "streamlit app" not in nav.lower()
            )  # the router's titles, no file list
            page.screenshot(path=str(screenshot_dir / "0_fresh_performance.png"), full_page=True)
        finally:
            browser.close()


def test_upload_predict_and_visit_every_page(
    dashboard_url: str, xray: Path, screenshot_dir: Path
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.goto(dashboard_url + "/", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Predict").wait_for(timeout=90_000)
            _settle(page)
            page.locator("input[type=file]").first.set_input_files(str(xray))
            page.get_by_role("heading", name="Batch · 1 film").wait_for(timeout=90_000)
            table = page.locator('[data-testid="stDataFrame"]').first
            table.wait_for(timeout=60_000)
            _settle(page)
            assert table.is_visible()
            assert page.get_by_role("heading", name=xray.name).count() == 1
            assert page.locator('[data-testid="stException"]').count() == 0
            bars = page.evaluate(
                f"() => {PLOTS_JS}.map(p => p.data.find(t => t.type === 'bar')).filter(Boolean)"
                ".map(t => t.x)"
            )
            assert len(bars) == 1 and len(bars[0]) == 3
            top_first = bars[0][::-1]  # plotly draws the first bar at the bottom
            assert top_first == sorted(top_first, reverse=True), (
                "findings not sorted by probability"
            )
            page.screenshot(path=str(screenshot_dir / "1_predict.png"), full_page=True)
            # The film viewer itself (linked panels, window/level, lungs) is tested in
            # test_browser_predict.py.

            for i, (path, title) in enumerate(PAGES, start=2):
                page.goto(f"{dashboard_url}/{path}", wait_until="domcontentloaded")
                page.get_by_role("heading", name=title).first.wait_for(timeout=90_000)
                _settle(page)
                assert page.locator('[data-testid="stException"]').count() == 0, (
                    f"exception on {title}"
                )
                if path == "performance":
                    page.wait_for_function(
                        "() => document.querySelectorAll("
                        "'[data-testid=\"stDataFrame\"] .dvn-scroller').length >= 2",
                        timeout=120_000,
                    )
                    page.wait_for_timeout(1000)
                    scrolling = page.evaluate(INNER_SCROLL_JS)
                    assert len(scrolling) >= 2 and None not in scrolling[:2], (
                        f"grid scroller not found: {scrolling}"
                    )
                    assert not any(scrolling[:2]), f"per-class tables scroll inside: {scrolling}"
                page.screenshot(path=str(screenshot_dir / f"{i}_{path}.png"), full_page=True)
        finally:
            browser.close()
    for name in (
        "1_predict",
        "2_performance",
        "3_thresholds",
        "4_review",
        "5_models",
    ):
        assert (screenshot_dir / f"{name}.png").stat().st_size > 10_000


def _call_all(page, value: str, n: int) -> None:
    for i in range(n):
        page.get_by_text(value, exact=True).nth(i).click()


def _open_review(page, url: str, reader: str) -> None:
    """Open the router first (a page URL on a fresh server skips it), then Review from the sidebar."""
    page.goto(f"{url}/?reader={reader}", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Predict").first.wait_for(timeout=90_000)
    _settle(page)
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Review").click()
    page.get_by_role("heading", name="Review").first.wait_for(timeout=90_000)
    _settle(page)


def _film(page) -> str:
    return page.locator("p", has_text="Image").filter(has_text="patient").first.inner_text()


def test_two_readers_record_different_verdicts_on_the_same_film(
    dashboard_url: str, screenshot_dir: Path, tmp_path: Path
) -> None:
    """Two browser contexts as two named readers: both verdicts are kept, exported and in the kappa table."""
    from playwright.sync_api import sync_playwright

    from cxr_core.artifacts.review_store import ReviewStore
    from cxr_core.cli.main import main

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            a = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
            _open_review(a, dashboard_url, "AB")
            assert "AB" in a.locator('[data-testid="stSidebar"]').inner_text()
            a.get_by_label("Session name").fill("two readers")
            a.get_by_label("Session name").press("Enter")
            _settle(a)
            a.get_by_role("button", name="Start").click()
            _settle(a)
            first = _film(a)
            _call_all(a, "Present", 3)
            a.get_by_role("button", name="Save", exact=True).click()
            _settle(a)
            assert "reviewed by you" in _film(a)
            a.screenshot(path=str(screenshot_dir / "review_reader_ab.png"), full_page=True)
            a.keyboard.press("Alt+ArrowRight")  # keyboard flow: next film
            a.wait_for_function(
                "(old) => !document.body.innerText.includes(old)",
                arg=first.split("·")[0].strip(),
                timeout=60_000,
            )
            _settle(a)

            b = browser.new_context(
                viewport={"width": 1400, "height": 1800}, accept_downloads=True
            ).new_page()
            _open_review(b, dashboard_url, "CD")
            b.locator('[data-testid="stSelectbox"]', has_text="Review session").click()
            b.get_by_role("option", name="two readers", exact=False).click()
            _settle(b)
            assert _film(b).split("·")[0] == first.split("·")[0]
            _call_all(b, "Absent", 3)
            start = time.perf_counter()
            b.get_by_role("button", name="Save and next").click()
            b.wait_for_function(
                "(old) => !document.body.innerText.includes(old)",
                arg=first.split("·")[0].strip(),
                timeout=60_000,
            )
            latency = time.perf_counter() - start
            _settle(b)
            b.screenshot(path=str(screenshot_dir / "review_reader_cd.png"), full_page=True)
            b.get_by_text("Agreement", exact=True).first.click()
            b.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=90_000)
            _settle(b)
            assert b.locator('[data-testid="stException"]').count() == 0
            cells = (
                b.locator('[data-testid="stDataFrame"]')
                .first.locator('[role="gridcell"]')
                .all_inner_texts()
            )
            assert "AB vs CD" in cells, cells[:20]  # both readers in the page's kappa table
            assert not {"None", "nan", "NaN"} & set(cells), cells  # an undefined kappa says why
            b.screenshot(path=str(screenshot_dir / "review_agreement.png"), full_page=True)
            with b.expect_download() as download:
                b.get_by_role("button", name="Export verdicts (CSV)").click()
            with open(download.value.path(), newline="", encoding="utf-8") as handle:
                exported = list(csv.DictReader(handle))
            assert "reader=CD" in b.url
            b.reload(wait_until="domcontentloaded")  # the reader is kept across a reload
            b.get_by_role("heading", name="Review").first.wait_for(timeout=90_000)
            _settle(b)
            assert "Reading as CD" in b.locator('[data-testid="stSidebar"]').inner_text()
        finally:
            browser.close()
    print(f"save-and-next in the browser: {latency:.2f} s")
    film = first.split("·")[0].replace("Image", "", 1).strip()
    on_film = [r for r in exported if r["image_id"] == film]
    assert {(r["reviewer"], r["reader_call"]) for r in on_film} == {
        ("AB", "present"),
        ("CD", "absent"),
    }
    assert len(on_film) == 6 and all(
        r["probability"] and r["outcome"] for r in on_film
    )  # the page's export
    store = ReviewStore(_review_dir(dashboard_url))
    session = next(s for s in store.sessions() if s.name == "two readers")
    calls = {v.reviewer: v.finding for v in store.verdicts(session.id) if v.image_id in first}
    assert calls == {"AB": "present", "CD": "absent"}
    out = tmp_path / "export.csv"
    assert (
        main(
            [
                "review",
                "export",
                "--db",
                str(store.folder),
                "--session",
                str(session.id),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = out.read_text()
    assert ",AB," in text and ",CD," in text
    assert (
        main(
            [
                "review",
                "agreement",
                "--db",
                str(store.folder),
                "--session",
                str(session.id),
                "--csv",
                str(tmp_path / "kappa.csv"),
            ]
        )
        == 0
    )
    kappa = (tmp_path / "kappa.csv").read_text()
    assert "AB,CD" in kappa


def _main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _start_session(page, name: str, mode_label: str) -> None:
    page.get_by_label("Session name").fill(name)
    page.get_by_label("Session name").press("Enter")
    _settle(page)
    page.locator('[data-testid="stSelectbox"]', has_text="Reading mode").click()
    page.get_by_role("option", name=mode_label, exact=False).click()
    _settle(page)
    page.get_by_role("button", name="Start").click()
    _settle(page)


def _click_film(page, fx: float, fy: float) -> None:
    """Click the film at (fx, fy), fractions of its width and height, as a reader would (hover, then click)."""
    film = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
    film.scroll_into_view_if_needed()
    box = film.bounding_box()
    x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    page.mouse.move(x - 5, y - 5)
    page.mouse.move(x, y, steps=3)
    page.wait_for_timeout(300)
    page.mouse.down()
    page.mouse.up()


def test_blinded_reader_sees_label_and_model_only_after_saving_and_marks_where_by_click(
    dashboard_url: str, screenshot_dir: Path
) -> None:
    from playwright.sync_api import sync_playwright

    from cxr_core.artifacts.review_store import ReviewStore

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
            _open_review(page, dashboard_url, "EF")
            _start_session(page, "blinded", "Blinded to labels and model")
            text = _main_text(page)
            assert "Blinded: the model's output and the dataset label appear" in text
            for hidden in (
                "model 0.",
                "threshold 0.",
                "label present",
                "label absent",
                "Outcome of the focus",
            ):
                assert hidden not in text, hidden
            assert page.get_by_text("Heatmap", exact=True).count() == 0
            assert "Heatmap hidden until you save" in text
            page.screenshot(path=str(screenshot_dir / "review_blind_all_before_save.png"))

            _click_film(page, 0.25, 0.75)  # "where" for the focused finding, Atelectasis
            page.get_by_text("not saved yet", exact=False).first.wait_for(timeout=60_000)
            _settle(page)
            _call_all(page, "Present", 3)
            page.get_by_role("button", name="Save", exact=True).click()
            page.get_by_text("reviewed by you", exact=False).first.wait_for(timeout=60_000)
            _settle(page)
            text = _main_text(page)
            assert "model 0." in text and ("label present" in text or "label absent" in text)
            assert page.get_by_text("Heatmap", exact=True).count() == 1
            names = page.evaluate(f"() => {PLOTS_JS}[0].data.map(t => t.name || '')")
            assert "Atelectasis" in names, names  # the saved mark is drawn on the film
            page.screenshot(path=str(screenshot_dir / "review_blind_all_after_save.png"))
            page.get_by_text(
                "Agreement", exact=True
            ).first.click()  # one film read of many: still closed
            page.get_by_text("Closed while you read blinded", exact=False).first.wait_for(
                timeout=60_000
            )
            _settle(page)
            assert page.locator('[data-testid="stDataFrame"]').count() == 0
            assert page.get_by_role("button", name="Export verdicts (CSV)").count() == 0
            assert (
                page.get_by_role(
                    "button", name="Reveal labels and model output", exact=False
                ).count()
                == 1
            )
            page.screenshot(path=str(screenshot_dir / "review_blind_all_agreement_closed.png"))

            labels = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
            _open_review(labels, dashboard_url, "GH")
            _start_session(labels, "labels hidden", "Blinded to labels (model")
            text = _main_text(labels)
            assert "model 0." in text and "label present" not in text and "label absent" not in text
            labels.screenshot(path=str(screenshot_dir / "review_blind_labels_before_save.png"))
        finally:
            browser.close()
    store = ReviewStore(_review_dir(dashboard_url))
    session = next(s for s in store.sessions() if s.name == "blinded")
    (marked,) = [v for v in store.verdicts(session.id, reviewer="EF") if v.point is not None]
    assert marked.class_name == "Atelectasis" and marked.box is None
    # a click lands on the nearest point of the 64 x 64 grid: within one cell of where it was aimed
    assert marked.point == pytest.approx((0.25, 0.75), abs=1.5 / 64)
