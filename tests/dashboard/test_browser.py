"""The real dashboard in a real browser: `streamlit run` + Debian's headless Chromium via playwright.

Uploads a real NIH radiograph on Predict, waits for the batch table and the findings, then
opens every page and saves a screenshot of each (to $CXR_SCREENSHOT_DIR, default pytest's
tmp_path) so a person can look at what the dashboard shows. On Review: two browser contexts read
the same film as two named readers (both calls reach the page's agreement table and its export),
and a blinded reader sees neither label nor model output until saving, marks "where" by
clicking the film, and finds the session's Agreement view closed while films remain.

Every wait is for something the page, the server or the database shows (``browser_support``),
never a fixed time, so the tests pass on a busy machine (``pytest --cpu-load 2``).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from tests.checkpoint_fixtures import build_catalog
from tests.dashboard.browser_support import (
    CHROMIUM,
    WAIT_MS,
    Server,
    act,
    new_page,
    screenshot_folder,
    serve,
    settle,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = (
    ("performance", "Performance"),
    ("thresholds", "Thresholds"),
    ("review", "Review"),
    ("models", "Models"),
)


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


@pytest.fixture(scope="module")
def server(browser_root: Path):
    with serve(browser_root, "streamlit.log") as running:
        yield running


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    return screenshot_folder(tmp_path / "screens")


PLOTS_JS = "Array.from(document.querySelectorAll('.js-plotly-plot'))"
# For each dataframe: does its grid need a scroll bar of its own (more rows or columns than shown)?
INNER_SCROLL_JS = """() => Array.from(document.querySelectorAll('[data-testid="stDataFrame"]')).map(frame => {
    const scroller = frame.querySelector('.dvn-scroller');
    if (!scroller) return null;
    return scroller.scrollHeight > scroller.clientHeight + 2 || scroller.scrollWidth > scroller.clientWidth + 2;
})"""


def test_page_url_as_first_request_gets_the_router(
    browser_root: Path, browser, screenshot_dir: Path
) -> None:
    """On a server nobody has visited, /performance shows the router's picker and disclaimer, not a file list."""

    with serve(browser_root, "fresh.log") as fresh:
        page = new_page(browser, 1440, 900)
        page.goto(f"{fresh.url}/performance", wait_until="domcontentloaded")
        page.get_by_role("heading", name="Performance").first.wait_for(timeout=WAIT_MS)
        settle(page)
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("Checkpoint", exact=True).wait_for(timeout=WAIT_MS)  # the picker
        assert sidebar.get_by_text("not a medical device", exact=False).count() == 1
        nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert (
            "Thresholds" in nav and "streamlit app" not in nav.lower()
        )  # the router's titles, no file list
        page.screenshot(path=str(screenshot_dir / "0_fresh_performance.png"), full_page=True)


def test_upload_predict_and_visit_every_page(
    server: Server, browser, xray: Path, screenshot_dir: Path
) -> None:

    page = new_page(browser, 1400, 2200)
    page.goto(server.url + "/", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Predict").wait_for(timeout=WAIT_MS)
    settle(page)
    page.locator("input[type=file]").first.set_input_files(str(xray))
    page.get_by_role("heading", name="Batch · 1 film").wait_for(timeout=WAIT_MS)
    table = page.locator('[data-testid="stDataFrame"]').first
    table.wait_for(timeout=WAIT_MS)
    settle(page)
    assert table.is_visible()
    assert page.get_by_role("heading", name=xray.name).count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    bars = page.evaluate(
        f"() => {PLOTS_JS}.map(p => p.data.find(t => t.type === 'bar')).filter(Boolean)"
        ".map(t => t.x)"
    )
    assert len(bars) == 1 and len(bars[0]) == 3
    top_first = bars[0][::-1]  # plotly draws the first bar at the bottom
    assert top_first == sorted(top_first, reverse=True), "findings not sorted by probability"
    page.screenshot(path=str(screenshot_dir / "1_predict.png"), full_page=True)
    # The film viewer itself (linked panels, window/level, lungs) is tested in
    # test_browser_predict.py.

    for i, (path, title) in enumerate(PAGES, start=2):
        page.goto(f"{server.url}/{path}", wait_until="domcontentloaded")
        page.get_by_role("heading", name=title).first.wait_for(timeout=WAIT_MS)
        settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {title}"
        if path == "performance":
            page.wait_for_function(
                "() => document.querySelectorAll("
                "'[data-testid=\"stDataFrame\"] .dvn-scroller').length >= 2",
                timeout=WAIT_MS,
            )
            _wait_for_layout(page, INNER_SCROLL_JS)
            scrolling = page.evaluate(INNER_SCROLL_JS)
            assert len(scrolling) >= 2 and None not in scrolling[:2], (
                f"grid scroller not found: {scrolling}"
            )
            assert not any(scrolling[:2]), f"per-class tables scroll inside: {scrolling}"
        page.screenshot(path=str(screenshot_dir / f"{i}_{path}.png"), full_page=True)
    for name in (
        "1_predict",
        "2_performance",
        "3_thresholds",
        "4_review",
        "5_models",
    ):
        assert (screenshot_dir / f"{name}.png").stat().st_size > 10_000


def _wait_for_layout(page, inner_scroll_js: str) -> None:
    """The tables lay themselves out after they appear: wait (up to 30 s) until none needs a scroll bar
    of its own; the assertion after this says what is wrong when one still does."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            f"() => {{ const s = ({inner_scroll_js})(); return s.length >= 2 && s.slice(0, 2)"
            ".every(v => v === false); }",
            timeout=30_000,
        )
    except PlaywrightTimeout:
        pass


FINDINGS = ("Atelectasis", "Cardiomegaly", "Pleural Effusion")


def _call_all(page, value: str) -> None:
    """Click the call ``value`` on every finding of the grid (one run each)."""
    for name in FINDINGS:
        act(page, lambda name=name: page.get_by_role("button", name=f"{name} {value}").click())


def _open_review(page, url: str, reader: str) -> None:
    """Open the router first (a page URL on a fresh server skips it), then Review from the sidebar."""
    page.goto(f"{url}/?reader={reader}", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Predict").first.wait_for(timeout=WAIT_MS)
    settle(page)
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Review").click()
    page.get_by_role("heading", name="Review").first.wait_for(timeout=WAIT_MS)
    settle(page)


def _film(page) -> str:
    """The film shown: the one the address names, once the page shows it and the grid is its."""
    page.wait_for_function(
        "() => { const film = new URLSearchParams(location.search).get('film');"
        " return film && Array.from(document.querySelectorAll('[data-testid=\"stMarkdown\"]'))"
        ".some(m => m.innerText.includes('Image ' + film)); }",
        timeout=WAIT_MS,
    )
    film = page.evaluate("() => new URLSearchParams(location.search).get('film')")
    page.locator(f'.call-grid[data-film="{film}"] .row[data-name]').first.wait_for(timeout=WAIT_MS)
    page.locator('[data-viewport="ready"]').wait_for(state="attached", timeout=WAIT_MS)
    settle(page)
    return film


def _next_film(page, old: str) -> str:
    page.wait_for_function(
        "(old) => new URLSearchParams(location.search).get('film') !== old",
        arg=old,
        timeout=WAIT_MS,
    )
    return _film(page)


def _start_session(page, name: str, mode_label: str | None = None) -> None:
    """Start a session (``mode_label``: a reading mode other than the default, unblinded)."""
    page.get_by_label("Session name").fill(name)
    act(page, lambda: page.get_by_label("Session name").press("Enter"))
    if mode_label is not None:
        page.locator('[data-testid="stSelectbox"]', has_text="Reading mode").click()
        act(page, lambda: page.get_by_role("option", name=mode_label, exact=False).click())
    act(page, lambda: page.get_by_role("button", name="Start").click())
    _film(page)


def test_two_readers_record_different_verdicts_on_the_same_film(
    server: Server, browser, screenshot_dir: Path, tmp_path: Path
) -> None:
    """Two browser contexts as two named readers: both verdicts are kept, exported and in the kappa table."""

    from cxr_core.artifacts.review_store import ReviewStore
    from cxr_core.cli.main import main

    store = ReviewStore(server.review_dir)
    a = new_page(browser, 1400, 1800)
    _open_review(a, server.url, "AB")
    assert "AB" in a.locator('[data-testid="stSidebar"]').inner_text()
    _start_session(a, "two readers")
    first = _film(a)
    _call_all(a, "present")
    a.get_by_role("button", name="Save", exact=True).click()
    a.get_by_text("reviewed by you", exact=False).first.wait_for(timeout=WAIT_MS)
    settle(a)
    a.screenshot(path=str(screenshot_dir / "review_reader_ab.png"), full_page=True)
    a.keyboard.press("ArrowRight")  # keyboard flow: next film
    _next_film(a, first)

    b = new_page(browser, 1400, 1800, accept_downloads=True)
    _open_review(b, server.url, "CD")
    b.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').first.click()
    act(b, lambda: b.get_by_role("option", name="two readers", exact=False).click())
    assert _film(b) == first
    assert _grid_head(b)[-3:] == ["Model", "Label", ""]  # unblinded
    _call_all(b, "absent")
    start = time.perf_counter()
    b.get_by_role("button", name="Save and next").click()
    _next_film(b, first)
    latency = time.perf_counter() - start
    b.screenshot(path=str(screenshot_dir / "review_reader_cd.png"), full_page=True)
    act(b, lambda: b.get_by_text("Agreement", exact=True).first.click())
    cell = b.locator('[data-testid="stDataFrame"]').first.locator('[role="gridcell"]')
    cell.first.wait_for(state="attached", timeout=WAIT_MS)
    settle(b)
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
    b.get_by_role("heading", name="Review").first.wait_for(timeout=WAIT_MS)
    settle(b)
    assert "Reading as CD" in b.locator('[data-testid="stSidebar"]').inner_text()
    print(f"save-and-next in the browser: {latency:.2f} s")
    on_film = [r for r in exported if r["image_id"] == first]
    assert {(r["reviewer"], r["reader_call"]) for r in on_film} == {
        ("AB", "present"),
        ("CD", "absent"),
    }
    assert len(on_film) == 6 and all(r["probability"] and r["outcome"] for r in on_film)
    session = next(s for s in store.sessions() if s.name == "two readers")
    calls = {v.reviewer: v.finding for v in store.verdicts(session.id) if v.image_id == first}
    assert calls == {"AB": "present", "CD": "absent"}
    out = tmp_path / "export.csv"
    db = str(store.folder)
    assert (
        main(["review", "export", "--db", db, "--session", str(session.id), "--out", str(out)]) == 0
    )
    text = out.read_text()
    assert ",AB," in text and ",CD," in text
    kappa = tmp_path / "kappa.csv"
    args = ["review", "agreement", "--db", db, "--session", str(session.id), "--csv", str(kappa)]
    assert main(args) == 0
    assert "AB,CD" in kappa.read_text()
    assert "deprecat" not in server.output().lower()


def _click_film(page, fx: float, fy: float) -> None:
    """Click the film at (fx, fy), fractions of its width and height, as a reader would: move onto the
    spot, wait until Plotly has found the grid point under the pointer, click."""
    film = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
    film.scroll_into_view_if_needed()
    box = film.bounding_box()
    x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    page.mouse.move(x - 5, y - 5)
    page.mouse.move(x, y, steps=3)
    page.wait_for_function(
        "() => { const gd = document.querySelector('[data-testid=\"stPlotlyChart\"] .js-plotly-plot');"
        " return gd && gd._hoverdata && gd._hoverdata.length > 0; }",
        timeout=WAIT_MS,
    )
    page.mouse.down()
    page.mouse.up()


def _mark_film(page, fx: float, fy: float) -> None:
    """Mark where the armed finding is by a click on the film, until the grid says "Where: point".

    A click that lands while the film is being redrawn (a rerun the page's viewport probe starts
    after the page looked idle) reaches no chart and starts no run: the reader would click again,
    and so does this. A click that did start a run is waited for, never repeated."""
    from playwright.sync_api import Error

    where = page.get_by_text("Where: point", exact=False).first

    def marked() -> bool:
        settle(page)
        if where.is_visible():
            return True
        _click_film(page, fx, fy)
        try:
            where.wait_for(timeout=15_000)
        except Error:
            return False  # no run yet: settle, look again, click again only if still unmarked
        return True

    wait_until(marked, "the click on the film to mark where Atelectasis is")


def _grid_head(page) -> list[str]:
    """The grid's column titles."""
    return page.locator(".call-grid .row.head span").all_inner_texts()


def test_blinded_reader_sees_label_and_model_only_after_saving_and_marks_where_by_click(
    server: Server, browser, screenshot_dir: Path
) -> None:

    from cxr_core.artifacts.review_store import ReviewStore

    store = ReviewStore(server.review_dir)
    page = new_page(browser, 1440, 900)
    _open_review(page, server.url, "EF")
    _start_session(page, "blinded", "Blinded to labels and model")
    assert "Blinded: the model's output and the label appear once you save" in (
        page.locator('[data-testid="stMain"]').inner_text()
    )
    assert page.locator(".call-grid .model, .call-grid .label").count() == 0
    assert _grid_head(page) == ["Finding", "P", "A", "U", "Where"]
    page.get_by_role("button", name="View").click()
    page.get_by_text("Heatmap hidden until you save", exact=False).wait_for(timeout=WAIT_MS)
    page.keyboard.press("Escape")
    page.screenshot(path=str(screenshot_dir / "review_blind_all_before_save.png"))

    session = next(s for s in store.sessions() if s.name == "blinded")
    act(page, lambda: page.get_by_role("button", name="Atelectasis where").click())
    page.wait_for_function(
        f"() => {PLOTS_JS}.some(p => p.data.some(t => t.name === 'grid'))", timeout=WAIT_MS
    )  # armed: the film takes a click for Atelectasis
    settle(page)
    _mark_film(page, 0.25, 0.75)
    wait_until(lambda: store.drafts(session.id, "EF"), "the mark to be kept as a draft")
    settle(page)
    _call_all(page, "present")
    page.get_by_role("button", name="Save", exact=True).click()
    page.get_by_text("reviewed by you", exact=False).first.wait_for(timeout=WAIT_MS)
    settle(page)
    models = page.locator(".call-grid .row[data-name] .model").all_inner_texts()
    assert len(models) == 3 and all(m.startswith("0.") for m in models)
    assert page.locator(".call-grid .row[data-name] .label").count() == 3
    names = page.evaluate(f"() => {PLOTS_JS}[0].data.map(t => t.name || '')")
    assert "Atelectasis" in names, names  # the saved mark is drawn on the film
    page.screenshot(path=str(screenshot_dir / "review_blind_all_after_save.png"))
    act(page, lambda: page.get_by_text("Agreement", exact=True).first.click())
    page.get_by_text("Closed while you read blinded", exact=False).first.wait_for(
        timeout=WAIT_MS
    )  # one film read of many: still closed
    assert page.locator('[data-testid="stDataFrame"]').count() == 0
    assert page.get_by_role("button", name="Export verdicts (CSV)").count() == 0
    reveal = page.get_by_role("button", name="Reveal labels and model output", exact=False)
    assert reveal.count() == 1
    page.screenshot(path=str(screenshot_dir / "review_blind_all_agreement_closed.png"))

    labels = new_page(browser, 1440, 900)
    _open_review(labels, server.url, "GH")
    _start_session(labels, "labels hidden", "Blinded to labels (model")
    assert labels.locator(".call-grid .row[data-name] .model").count() == 3
    assert labels.locator(".call-grid .row[data-name] .label").count() == 0
    labels.screenshot(path=str(screenshot_dir / "review_blind_labels_before_save.png"))
    (marked,) = [v for v in store.verdicts(session.id, reviewer="EF") if v.point is not None]
    assert marked.class_name == "Atelectasis" and marked.box is None
    # a click lands on the nearest point of the 64 x 64 grid: within one cell of where it was aimed
    assert marked.point == pytest.approx((0.25, 0.75), abs=1.5 / 64)
    assert "deprecat" not in server.output().lower()
