"""The Review page's Read view in a real browser: one screen, keyboard-first reading, drafts that
survive leaving the film, a reload and a server restart, links, and two readers on one film.

A freshly started ``streamlit run`` and Debian's headless Chromium (playwright), on a 14-finding
checkpoint (the NIH ChestX-ray14 findings) built by ``tests/checkpoint_fixtures.py``. Every wait
is for something the page or the database shows (``browser_support``), never a fixed time, so the
tests hold on a busy machine (``pytest --cpu-load 2``). Screenshots go to $CXR_SCREENSHOT_DIR
(default: pytest's tmp_path).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from cxr_core.artifacts.review_store import ReviewStore
from tests.checkpoint_fixtures import build_checkpoint_dir
from tests.dashboard.browser_support import (
    CHROMIUM,
    WAIT_MS,
    act,
    new_page,
    screenshot_folder,
    serve,
    settle,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NIH14 = (
    "Atelectasis",
    "Cardiomegaly",
    "Pleural Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural Thickening",
    "Hernia",
)
SIZES = ((1440, 900), (1024, 768))
ACTIONS = ("Save and next", "Save", "◀ Prev", "Next ▶", "Next unread")
ROW = ".call-grid .row[data-name]"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    folder = tmp_path_factory.mktemp("review_browser")
    build_checkpoint_dir(folder / "checkpoints", "nih14_tiny", classes=NIH14, n_cases=24, seed=4)
    return folder


@pytest.fixture(scope="module")
def server(root: Path):
    with serve(root, "review_server.log") as running:
        yield running


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screenshot_folder(tmp_path / "screens")


def open_review(page, url: str, reader: str, query: str = "") -> None:
    page.goto(f"{url}/review?reader={reader}{query}", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Review").first.wait_for(timeout=WAIT_MS)
    settle(page)


def start_session(page, name: str, mode_label: str | None = None) -> None:
    """Start a session (``mode_label``: a reading mode other than the default, unblinded)."""
    page.get_by_label("Session name").fill(name)
    act(page, lambda: page.get_by_label("Session name").press("Enter"))
    if mode_label is not None:
        page.locator('[data-testid="stSelectbox"]', has_text="Reading mode").click()
        act(page, lambda: page.get_by_role("option", name=mode_label, exact=False).click())
    act(page, lambda: page.get_by_role("button", name="Start").click())
    wait_for_film(page)
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=WAIT_MS)


def params(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def wait_for_film(page, image_id: str | None = None, other_than: str | None = None) -> str:
    """Wait until the address and the page show a film (``image_id``, or any but ``other_than``)."""
    page.wait_for_function(
        """([want, old]) => {
            const film = new URLSearchParams(location.search).get('film');
            const shown = Array.from(document.querySelectorAll('[data-testid="stMarkdown"]'))
                .some(m => film && m.innerText.includes('Image ' + film));
            return film && shown && (want ? film === want : film !== old);
        }""",
        arg=[image_id, other_than],
        timeout=WAIT_MS,
    )
    film = params(page)["film"]
    page.locator(f'.call-grid[data-film="{film}"] .row[data-name]').first.wait_for(timeout=WAIT_MS)
    page.locator('[data-viewport="ready"]').wait_for(state="attached", timeout=WAIT_MS)
    settle(page)
    return film


def pressed(page) -> dict[str, str | None]:
    """Each finding's call as the grid shows it."""
    out = {}
    for name in NIH14:
        on = page.locator(f'{ROW}[data-name="{name}"] button.call[aria-pressed="true"]')
        out[name] = on.get_attribute("aria-label").split()[-1] if on.count() else None
    return out


def drafts_of(server, session_id: int, reader: str) -> dict[tuple[str, str], tuple]:
    store = ReviewStore(server.review_dir)
    return {
        (d.image_id, d.class_name): (d.finding, d.note) for d in store.drafts(session_id, reader)
    }


def session_id_of(page) -> int:
    return int(params(page)["session"])


OUTSIDE_JS = """([vw, vh]) => {
    const shadow = Array.from(document.querySelectorAll('[data-testid="stBidiComponentIsolated"]'))
        .map(host => host.shadowRoot).filter(Boolean);
    const grid = shadow.map(root => root.querySelector('.call-grid')).filter(Boolean)[0];
    const boxes = {film: document.querySelector('[data-testid="stPlotlyChart"]')};
    grid.querySelectorAll('.row[data-name]').forEach(r => boxes['row ' + r.dataset.name] = r);
    grid.querySelectorAll('.actions button, .details')
        .forEach((b, i) => boxes['control ' + i + ' ' + b.innerText.slice(0, 20)] = b);
    const out = [];
    for (const [name, el] of Object.entries(boxes)) {
        const r = el.getBoundingClientRect();
        if (r.width === 0 || r.left < 0 || r.top < 0 || r.right > vw + 0.5 || r.bottom > vh + 0.5) {
            const at = [r.left, r.top, r.right, r.bottom].map(Math.round).join(',');
            out.push(`${name}: ${at}`);
        }
    }
    return out;
}"""
TRUNCATED_JS = """() => {
    const roots = [document.querySelector('[data-testid="stMain"]'),
        ...Array.from(document.querySelectorAll('[data-testid="stBidiComponentIsolated"]'))
            .map(host => host.shadowRoot).filter(Boolean)];
    const out = [];
    for (const root of roots) {
        for (const button of root.querySelectorAll('button, .name, [data-testid="stCaptionContainer"]')) {
            for (const el of [button, ...button.querySelectorAll('*')]) {
                if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
                    out.push(button.innerText.trim().slice(0, 40)); break;
                }
            }
        }
    }
    return out;
}"""


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_reading_view_fits_one_screen_with_14_findings(server, browser, shots, size):
    """Film, every finding's row, the highlighted finding's details and every action inside the window,
    nothing truncated; in an unblinded session (the widest grid) and a blinded one (an extra line)."""
    width, height = size
    page = new_page(browser, width, height)
    open_review(page, server.url, f"screen{width}")
    for mode, label in (("unblinded", None), ("blind_all", "Blinded to labels and model")):
        start_session(page, f"screen {width} {mode}", label)
        page.wait_for_function(
            "() => document.querySelector('[data-testid=\"stPlotlyChart\"]')"
            ".getBoundingClientRect().bottom > 0"
        )
        settle(page)  # the film is sized to the window once the page has measured it
        assert page.locator(ROW).count() == 14
        outside = page.evaluate(OUTSIDE_JS, [width, height])
        assert outside == [], f"{mode}: outside the {width}x{height} window: {outside}"
        assert page.evaluate(TRUNCATED_JS) == [], mode
        for name in ACTIONS:
            button = page.get_by_role("button", name=name, exact=True)
            assert button.count() == 1 and button.is_visible(), name
        page.screenshot(path=str(shots / f"review_one_screen_{mode}_{width}x{height}.png"))
        page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').first.click()
        act(page, lambda: page.get_by_role("option", name="New session…").click())
    assert "deprecat" not in server.output().lower()


def test_keyboard_reading_with_drafts_kept_across_moves_reloads_and_a_server_restart(
    root, browser, shots
):
    """Blinded read of 14 findings by keys, right after a mouse click on a call; unsaved calls kept as
    a draft through Next/Prev, a reload, a fresh server and a link, then saved by keys."""
    with serve(root, "keys_server.log") as first:
        page = new_page(browser, 1440, 900)
        open_review(page, first.url, "KB")
        start_session(page, "keys", "Blinded to labels and model")
        sid, film = session_id_of(page), params(page)["film"]
        act(page, lambda: page.get_by_role("button", name="Cardiomegaly present").click())
        page.keyboard.press("a")  # focus stayed on the clicked row: Cardiomegaly absent, then next
        page.keyboard.press("u")  # Pleural Effusion unsure, then next (Infiltration)
        wait_until(
            lambda: (
                drafts_of(first, sid, "KB")
                == {
                    (film, "Cardiomegaly"): ("absent", ""),
                    (film, "Pleural Effusion"): ("unsure", ""),
                }
            ),
            "the two keyed calls to be kept as drafts",
        )
        page.keyboard.press("?")
        page.get_by_role("dialog", name="Reading keys").wait_for(timeout=WAIT_MS)
        assert "Every finding not called yet: absent" in page.get_by_role("dialog").inner_text()
        page.screenshot(path=str(shots / "review_keys_help.png"))
        page.keyboard.press("Escape")
        page.get_by_role("dialog", name="Reading keys").wait_for(state="hidden", timeout=WAIT_MS)

        page.keyboard.press("e")  # a note on the highlighted finding: typed keys call nothing
        page.keyboard.type("pa u")
        page.keyboard.press("Enter")
        wait_until(
            lambda: drafts_of(first, sid, "KB").get((film, "Infiltration")) == (None, "pa u"),
            "the note to be kept as a draft",
        )
        assert pressed(page)["Infiltration"] is None and pressed(page)["Mass"] is None

        page.keyboard.press("ArrowRight")  # leave the film unsaved
        wait_for_film(page, other_than=film)
        assert all(v is None for v in pressed(page).values())
        page.keyboard.press("ArrowLeft")
        wait_for_film(page, film)
        calls = pressed(page)
        assert (calls["Cardiomegaly"], calls["Pleural Effusion"]) == ("absent", "unsure")
        assert page.locator(f'{ROW}[data-name="Cardiomegaly"].unsaved').count() == 1
        page.reload(wait_until="domcontentloaded")
        wait_for_film(page, film)
        assert pressed(page)["Cardiomegaly"] == "absent"
        page.screenshot(path=str(shots / "review_draft_restored.png"))
        first_log = first.output()

    with serve(root, "keys_server_2.log") as second:  # a server restart, opened by its link
        page = new_page(browser, 1024, 768)
        open_review(page, second.url, "KB", f"&session={sid}&film={film}")
        wait_for_film(page, film)
        calls = pressed(page)
        assert (calls["Cardiomegaly"], calls["Pleural Effusion"]) == ("absent", "unsure")
        page.keyboard.press("n")  # every finding not called yet: absent
        page.keyboard.press("Enter")  # save and next
        nxt = wait_for_film(page, other_than=film)
        store = ReviewStore(second.review_dir)
        saved = {v.class_name: v.finding for v in store.verdicts(sid, reviewer="KB", image_id=film)}
        assert len(saved) == 14 and saved["Cardiomegaly"] == "absent"
        assert saved["Pleural Effusion"] == "unsure" and saved["Hernia"] == "absent"
        assert drafts_of(second, sid, "KB") == {}
        assert params(page) == {"reader": "KB", "session": str(sid), "film": nxt}
        page.keyboard.press("n")
        page.keyboard.press("Enter")
        wait_for_film(page, other_than=nxt)
        assert len(store.verdicts(sid, reviewer="KB")) == 28  # two films, 2 keys each
        page.screenshot(path=str(shots / "review_keys_after_two_films_1024.png"))
        second_log = second.output()
    for log in (first_log, second_log):
        assert "deprecat" not in log.lower() and "Traceback" not in log


def test_two_readers_on_the_same_film_keep_drafts_private_and_verdicts_apart(
    server, browser, shots
):
    ab = new_page(browser, 1440, 900)
    open_review(ab, server.url, "AB")
    start_session(ab, "pair", "Blinded to labels and model")
    sid, film = session_id_of(ab), params(ab)["film"]
    act(ab, lambda: ab.get_by_role("button", name="Atelectasis present").click())
    wait_until(lambda: drafts_of(server, sid, "AB"), "AB's draft")

    cd = new_page(browser, 1024, 768)  # another browser: the same film by link
    open_review(cd, server.url, "CD", f"&session={sid}&film={film}")
    wait_for_film(cd, film)
    assert all(v is None for v in pressed(cd).values())  # AB's draft is not shown to CD
    cd.keyboard.press("n")
    cd.keyboard.press("s")  # save, stay
    store = ReviewStore(server.review_dir)
    wait_until(lambda: len(store.verdicts(sid, reviewer="CD")) == 14, "CD's 14 verdicts")
    cd.screenshot(path=str(shots / "review_reader_cd_saved.png"))

    ab.keyboard.press("n")  # AB: Atelectasis stays present, the rest absent
    ab.keyboard.press("s")
    wait_until(lambda: len(store.verdicts(sid, reviewer="AB")) == 14, "AB's 14 verdicts")
    by_reader = {
        (v.reviewer, v.class_name): v.finding
        for v in store.verdicts(sid, image_id=film)
        if v.class_name == "Atelectasis"
    }
    assert by_reader == {("AB", "Atelectasis"): "present", ("CD", "Atelectasis"): "absent"}
    assert store.drafts(sid, "AB") == [] and store.drafts(sid, "CD") == []
    cd.reload(wait_until="domcontentloaded")
    wait_for_film(cd, film)
    assert pressed(cd)["Atelectasis"] == "absent"  # CD sees their own verdict, not AB's
    ab.screenshot(path=str(shots / "review_reader_ab_saved.png"))
    assert re.search(r"deprecat", server.output(), re.IGNORECASE) is None
