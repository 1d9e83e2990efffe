"""Predict, page addresses, narrow screens and threshold sets in a real browser (headless Chromium).

Against ``streamlit run streamlit_app.py`` on the small fixture checkpoints (one class of
``tiny_a`` flagged low-count by its card, as NIH's Hernia is), with a real NIH film, a 12-bit
DICOM ramp and a CT DICOM the input gate warns about:

- every page opens at its own address (``/`` opens ``/predict``) with no console error, no
  failed request and no truncated number, button or label, at 1440 × 900 and 1024 × 768;
- Predict shows the viewer beside the findings on the first screen; its panels zoom and pan
  together on both axes; window/level works on the 12-bit values; invert and full screen work;
- at 1024 × 768 the batch table's warnings are on screen and in the page's CSV;
- two readers: A changes the model default, B reloads, is told, and keeps their own set.

Every wait is for a state (an element, the viewer's drawn film, Streamlit's run finished),
never a fixed time. Screenshots go to ``$CXR_SCREENSHOT_DIR`` (default: pytest's tmp_path).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.checkpoint_fixtures import build_catalog
from tests.dashboard.browser_support import (
    CHROMIUM,
    WAIT_MS,
    act,
    choose,
    new_page,
    screenshot_folder,
    serve,
    settle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = (
    ("predict", "Predict"),
    ("performance", "Performance"),
    ("thresholds", "Thresholds"),
    ("review", "Review"),
    ("worklist", "Worklist"),
    ("models", "Models"),
)
FLAGGED = "Cardiomegaly"
RAMP = (1792, 2304)  # stored values across the 12-bit ramp film, left to right

# Visible elements whose text is cut: CSS ellipsis or clipping with more text than room, and
# inputs (a select box shows its value in one) whose value is wider than the box.
TRUNCATED_JS = """() => {
  const out = [];
  for (const el of document.querySelectorAll('[data-testid="stMain"] *, [data-testid="stSidebar"] *')) {
    if (!el.offsetParent || el.closest('[data-testid="stDataFrame"]')) continue;
    const wide = el.scrollWidth > el.clientWidth + 1;
    if (el.tagName === 'INPUT') {
      if (el.type !== 'file' && el.value && wide) out.push('input: ' + el.value.slice(0, 60));
      continue;
    }
    if (!el.childNodes.length) continue;
    const style = getComputedStyle(el);
    const clips = style.textOverflow === 'ellipsis' || style.overflowX === 'hidden';
    const text = (el.innerText || '').trim();
    if (clips && text && wide) out.push(text.slice(0, 60));
  }
  return out;
}"""
VIEWER = ".cxr-viewer"
ROOT_JS = (
    "document.querySelector('[data-testid=stBidiComponentIsolated]')"
    ".shadowRoot.querySelector('.cxr-viewer')"
)


def _flag_class(checkpoint: Path, name: str) -> None:
    """Make the card list ``name`` as low-count, as a small validation split would."""
    from cxr_core.models.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(checkpoint / "model.safetensors")
    validation = {**loaded.card.validation, "macro_classes_excluded": [name]}
    card = dataclasses.replace(loaded.card, validation=validation)
    save_checkpoint(checkpoint / "model.safetensors", loaded.state_dict, card)


@pytest.fixture(scope="module")
def films(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A real NIH film, a 12-bit DICOM ramp (one stored value per column) and a CT DICOM."""
    from tests.reliability.crafted import dicom_dataset

    nih = sorted((shared_data / "nih14" / "images").glob("*.png"))
    if not nih:
        pytest.skip("no NIH images in the shared data folder")
    folder = tmp_path_factory.mktemp("films")
    ramp = np.tile(np.arange(*RAMP, dtype=np.uint16), (256, 1))
    dicom_dataset(ramp, bits=12).save_as(folder / "ramp.dcm", enforce_file_format=True)
    head = np.asarray(np.random.default_rng(1).integers(0, 4096, (128, 128)), np.uint16)
    dicom_dataset(head, Modality="CT", BodyPartExamined="HEAD").save_as(
        folder / "head.dcm", enforce_file_format=True
    )
    return [nih[0], folder / "ramp.dcm", folder / "head.dcm"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("predict_browser")
    catalog = build_catalog(root)
    _flag_class(catalog["tiny_a"], FLAGGED)
    with serve(root, "streamlit.log") as running:
        yield running.url, catalog


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    return screenshot_folder(tmp_path / "screens")


def _problems(page) -> list:
    """Console errors, uncaught errors, HTTP errors and failed requests seen by ``page`` from now on
    (requests the browser itself cancels when a page is left are not failures)."""
    seen: list = []
    page.on("console", lambda m: seen.append(("console", m.text)) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.append(("pageerror", str(e))))
    page.on("response", lambda r: seen.append((r.status, r.url)) if r.status >= 400 else None)
    page.on(
        "requestfailed",
        lambda r: None if "ERR_ABORTED" in (r.failure or "") else seen.append((r.failure, r.url)),
    )
    return seen


def _open(page, url: str, title: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=WAIT_MS)
    settle(page)


def _ident(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def _drawn(page, film: Path, heat: bool = True) -> None:
    """The viewer shows ``film`` (with its heatmap when ``heat``), drawn."""
    want = f"{_ident(film)}:{'heat' if heat else 'film'}"
    page.wait_for_function(
        "(want) => { const v = document.querySelector('[data-testid=stBidiComponentIsolated]');"
        " const r = v && v.shadowRoot && v.shadowRoot.querySelector('.cxr-viewer');"
        " return r && r.dataset.drawn === want; }",
        arg=want,
        timeout=WAIT_MS,
    )


def _upload(page, url: str, films: list[Path]) -> None:
    _open(page, f"{url}/predict", "Predict")
    page.locator("input[type=file]").first.set_input_files([str(f) for f in films])
    _drawn(page, films[0])
    # drawn once the whole batch is scored
    page.get_by_role("button", name="Download all probabilities (CSV)").wait_for(timeout=WAIT_MS)
    settle(page)


def _check_page(page, name: str, shots: Path) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, name
    assert page.evaluate(TRUNCATED_JS) == [], name
    page.screenshot(path=str(shots / f"{name}.png"))


def test_every_page_has_its_own_address_and_loads_clean_at_two_sizes(
    server, browser, screenshots
) -> None:
    """At 1,024 px each page is opened by its address as a first request (a new session): it
    connects at once with no console error or failed request. At 1,440 px the same pages are
    reached from the menu. At both sizes no number, button or label is cut."""
    url, _ = server
    narrow = browser.new_context(viewport={"width": 1024, "height": 768})
    wide = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = wide.new_page()
        seen = _problems(page)
        _open(page, url + "/", "Predict")
        assert page.url.split("?")[0] == f"{url}/predict"  # the root opens Predict's address
        for path, title in PAGES:
            page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
            page.wait_for_url(f"{url}/{path}*", timeout=WAIT_MS)
            page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=WAIT_MS)
            settle(page)
            _check_page(page, f"1440_{path}", screenshots)
        assert seen == []
        for path, title in PAGES:
            page = narrow.new_page()
            seen = _problems(page)
            _open(page, f"{url}/{path}", title)
            nav = page.locator('[data-testid="stSidebarNav"] a[aria-current="page"]')
            assert nav.inner_text().strip().endswith(title)  # the menu marks the page opened
            assert seen == [], f"/{path}: {seen}"
            _check_page(page, f"1024_{path}", screenshots)
            page.close()
    finally:
        narrow.close()
        wide.close()


def _viewer(page):
    return page.locator(VIEWER)


def _views(page) -> list[str]:
    return (
        _viewer(page)
        .locator(".panel")
        .evaluate_all("ps => ps.filter(p => p.offsetParent).map(p => p.dataset.view)")
    )


def _view_changed(page, old: str) -> None:
    page.wait_for_function(
        "(old) => document.querySelector('[data-testid=stBidiComponentIsolated]')"
        ".shadowRoot.querySelector('.panel').dataset.view !== old",
        arg=old,
    )


def _pick_set(page, name: str) -> None:
    """Choose ``name`` in the Set box."""
    from playwright.sync_api import expect

    box = page.locator('[data-testid="stMain"]').get_by_role("combobox", name="Set", exact=True)
    choose(page, box, name)
    expect(box).to_have_value(name, timeout=WAIT_MS)


def _pixel_row(page, y_fraction: float) -> list[int]:
    """Red channel of one row of the first panel's canvas (the film is gray)."""
    return (
        _viewer(page)
        .locator(".panel canvas")
        .first.evaluate(
            "(c, f) => Array.from(c.getContext('2d').getImageData(0, Math.floor(c.height * f),"
            " c.width, 1).data.filter((_, i) => i % 4 === 0))",
            y_fraction,
        )
    )


def _linked_zoom_and_pan(page) -> None:
    """Zoom on the original, pan on the heatmap: both panels always show the same region."""
    panels = _viewer(page).locator(".panel")
    fitted = _views(page)
    assert len(fitted) == 2 and fitted[0] == fitted[1]
    box = panels.nth(0).bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.35)
    page.mouse.wheel(0, -300)
    page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=stBidiComponentIsolated]')"
        ".shadowRoot.querySelector('.cxr-viewer').dataset.zoom) > 1.1"
    )
    zoomed = _views(page)
    assert zoomed[0] == zoomed[1] != fitted[0]
    box = panels.nth(1).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 40, box["y"] + box["height"] / 2 - 30, steps=4)
    page.mouse.up()
    _view_changed(page, zoomed[0])
    panned = _views(page)
    x0 = [float(v.split(",")[0]) for v in (zoomed[0], panned[0])]
    y0 = [float(v.split(",")[1]) for v in (zoomed[0], panned[0])]
    assert panned[0] == panned[1] and x0[1] > x0[0] and y0[1] > y0[0]  # moved on both axes
    panels.nth(0).dblclick()
    _view_changed(page, panned[0])
    assert _views(page) == fitted


def _invert_and_full_screen(page, screenshots: Path) -> None:
    before = _pixel_row(page, 0.5)
    _viewer(page).focus()
    page.keyboard.press("i")
    page.wait_for_function(f"() => {ROOT_JS}.dataset.invert === 'true'")
    after = _pixel_row(page, 0.5)
    assert max(abs(a + b - 255) for a, b in zip(before, after)) <= 1  # inverted
    _viewer(page).get_by_role("button", name="Full screen").click()
    page.wait_for_function(f"() => {ROOT_JS}.dataset.fullscreen === 'true'")
    stage = _viewer(page).locator(".stage").bounding_box()
    assert stage["height"] > 0.8 * 900  # the panels fill the screen
    page.screenshot(path=str(screenshots / "predict_fullscreen.png"))
    _viewer(page).get_by_role("button", name="Exit full screen").click()
    page.wait_for_function("() => document.fullscreenElement === null")
    page.keyboard.press("i")  # back to normal


def _window_on_stored_values(page) -> None:
    """A 128-value window on the 12-bit ramp: an 8-bit copy would hold 8 of those values."""
    level, width = (RAMP[0] + RAMP[1]) / 2, 128
    _viewer(page).get_by_label("Level").fill(str(level))
    _viewer(page).get_by_label("Width").fill(str(width))
    _viewer(page).get_by_label("Width").press("Enter")
    page.wait_for_function(
        f"(w) => {ROOT_JS}.dataset.width === w", arg=f"{width:.1f}", timeout=WAIT_MS
    )
    row = [v for v in _pixel_row(page, 0.5) if 0 < v < 255]
    assert len(set(row)) >= 40, sorted(set(row))
    assert row == sorted(row)  # dark to bright, left to right


def test_predict_reads_beside_a_linked_full_bit_depth_viewer(
    server, browser, films, screenshots
) -> None:
    url, _ = server
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    try:
        seen = _problems(page)
        _upload(page, url, films)
        viewer = _viewer(page).bounding_box()
        bars = page.locator('[data-testid="stPlotlyChart"]').first.bounding_box()
        headline = page.get_by_text("Abnormality score").first.bounding_box()
        assert viewer["x"] >= bars["x"] + bars["width"] - 1  # beside the findings, not below
        assert viewer["y"] + viewer["height"] <= 900 and headline["y"] < 900  # first screen
        assert page.evaluate(TRUNCATED_JS) == []
        text = page.locator('[data-testid="stMain"]').inner_text()
        assert "Not trusted, never called" in text and FLAGGED in text
        calls = page.locator('[data-testid="stMarkdown"]', has_text="Abnormality score").first
        assert "Called:" in calls.inner_text() or "No finding called" in calls.inner_text()
        assert FLAGGED not in calls.inner_text()  # listed apart, never among the calls
        page.screenshot(path=str(screenshots / "predict_1440.png"))

        _linked_zoom_and_pan(page)
        _invert_and_full_screen(page, screenshots)
        page.get_by_role("button", name="▶").click()  # the 12-bit ramp
        _drawn(page, films[1])
        settle(page)
        _window_on_stored_values(page)
        page.screenshot(path=str(screenshots / "predict_ramp_window.png"))
        assert seen == []
    finally:
        context.close()


def test_predict_at_1024_keeps_viewer_and_warnings_on_screen_and_in_the_csv(
    server, browser, films, screenshots
) -> None:
    url, _ = server
    page = new_page(browser, 1024, 768, accept_downloads=True)
    try:
        _upload(page, url, films)
        viewer = _viewer(page).bounding_box()
        assert viewer["y"] < 768 and viewer["x"] + viewer["width"] <= 1024  # film on screen
        assert page.evaluate(TRUNCATED_JS) == []
        page.screenshot(path=str(screenshots / "predict_1024.png"))
        table = page.locator('[data-testid="stDataFrame"]').first
        table.scroll_into_view_if_needed()
        scroller = table.locator(".dvn-scroller")
        fits = scroller.evaluate("s => s.scrollWidth <= s.clientWidth + 2")
        assert fits  # every column, warnings last, without scrolling sideways
        cell = table.locator('[role="gridcell"]', has_text="Modality is CT").first
        cell.wait_for(state="attached", timeout=WAIT_MS)  # the accessible copy of the canvas grid
        page.screenshot(path=str(screenshots / "predict_1024_batch.png"), full_page=True)
        rows = _downloaded_rows(page)  # by default file names are pseudonymised
        assert not {f.name for f in films} & set(rows) and len(rows) == len(films)
        names = page.get_by_text("Keep file names in the download")
        act(page, names.click)
        rows = _downloaded_rows(page)
        head = rows["head.dcm"]  # refused: the reason, no probabilities
        assert head["outcome"] == "refused" and "Modality is CT" in head["reason"]
        assert FLAGGED not in rows[films[0].name]["findings"]
    finally:
        page.context.close()


def _downloaded_rows(page) -> dict[str, dict[str, str]]:
    """The Predict page's CSV, as {image id: row}."""
    with page.expect_download() as download:
        page.get_by_role("button", name="Download all probabilities (CSV)").click()
    with open(download.value.path(), newline="", encoding="utf-8") as handle:
        return {r["image_id"]: r for r in csv.DictReader(handle)}


def _sidebar(page) -> str:
    return page.locator('[data-testid="stSidebar"]').inner_text()


def test_two_readers_keep_their_sets_and_are_told_of_a_new_default(
    server, browser, screenshots
) -> None:
    url, catalog = server
    from cxr_core.artifacts.catalog import read_entry

    store = read_entry(catalog["tiny_a"]).threshold_store()
    store.save("mine", dict.fromkeys(store.classes, 0.3))
    store.save("screening", dict.fromkeys(store.classes, 0.1))
    a = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    b = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    try:
        _open(b, f"{url}/thresholds?reader=B", "Thresholds")
        _pick_set(b, "mine")
        b.get_by_role("button", name="Use for me").click()
        b.get_by_text("in force for you: mine").first.wait_for(timeout=WAIT_MS)
        settle(b)

        _open(a, f"{url}/thresholds?reader=A", "Thresholds")
        _pick_set(a, "screening")
        a.get_by_role("button", name="Make default for everyone").click()
        a.get_by_text("is now the default threshold set", exact=False).wait_for(timeout=WAIT_MS)
        settle(a)
        assert a.get_by_text("changed since you last saw it").count() == 0  # A made it

        b.reload(wait_until="domcontentloaded")
        notice = b.get_by_text("changed since you last saw it", exact=False).first
        notice.wait_for(timeout=WAIT_MS)
        settle(b)
        text = b.locator('[data-testid="stMain"]').inner_text()
        assert "A made screening the default" in text and "(was card)" in text
        assert "your own set mine, which is unchanged" in text
        assert "Thresholds in force: mine" in _sidebar(b)  # B's choice survived A's change
        b.screenshot(path=str(screenshots / "threshold_notice_reader_b.png"))
        b.get_by_role("button", name="Understood").click()
        notice.wait_for(state="detached", timeout=WAIT_MS)
        b.reload(wait_until="domcontentloaded")
        b.get_by_role("heading", name="Thresholds").first.wait_for(timeout=WAIT_MS)
        settle(b)
        assert b.get_by_text("changed since you last saw it").count() == 0
        assert "Thresholds in force: mine" in _sidebar(b)
    finally:
        a.context.close()
        b.context.close()
