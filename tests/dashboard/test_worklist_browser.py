"""The Worklist page in a real browser: 50 real films scored by a small 14-finding model.

`streamlit run` plus Debian's headless Chromium. A reader opens a folder of 50 films (46 NIH PNGs,
DICOM films of an adult and a child, a blank DICOM and a damaged file) from the page address,
sees rows while the rest are scored, then all 50 sorted; opens the top row in the reading view.
A second reader (another browser context, 1024x768) opens the same worklist: it is already scored.
Screenshots at 1440x900 and 1024x768 go to $CXR_SCREENSHOT_DIR (default: pytest's tmp_path).
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

import numpy as np
import pytest

from cxr_core.data.labels import NIH14
from tests.dicom_fixtures import film_dataset, new_ids, write_film
from tests.report_fixtures import tiny_nih14_checkpoint

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
FILMS = 50


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _serve(root: Path):
    port = _free_port()
    env = {
        **os.environ,
        "CXR_CHECKPOINT_DIRS": str(root / "checkpoints"),
        "CXR_REVIEW_DIR": str(root / "review"),
        "CXR_WORKLIST_CACHE": str(root / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    for name in ("CXR_PACS_URL", "CXR_PACS_CONFIG"):
        env.pop(name, None)
    log = (root / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true"]
        + ["--server.port", str(port), "--server.address", "127.0.0.1"]
        + ["--browser.gatherUsageStats", "false"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"streamlit exited: {(root / 'streamlit.log').read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def root(nih14_root, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("worklist_browser")
    # thresholds at 0.5: the untrained network's probabilities scatter around it, so some films
    # are called (and flagged critical) and some not, as on a real worklist
    tiny_nih14_checkpoint(root / "checkpoints", thresholds={c: 0.5 for c in NIH14.classes})
    films = root / "films"
    films.mkdir()
    pngs = sorted((nih14_root / "images").glob("*.png"))
    for png in pngs[: FILMS - 4]:
        (films / png.name).symlink_to(png)
    write_film(pngs[FILMS], films / "adult_P100.dcm", new_ids("P100", "A100"))
    write_film(pngs[FILMS + 1], films / "child_P101.dcm", new_ids("P101", "A101", age="002Y"))
    blank = film_dataset(pngs[0], new_ids("P102", "A102"))
    blank.PixelData = np.full((blank.Rows, blank.Columns), 9, np.uint16).tobytes()
    blank.save_as(films / "blank_P102.dcm", enforce_file_format=True)
    (films / "damaged.png").write_bytes(pngs[1].read_bytes()[:400])
    return root


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CXR_SCREENSHOT_DIR", tmp_path / "screens"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _settle(page, timeout_ms: int = 120_000) -> None:
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout_ms,
    )


def _open(page, url: str, films: Path) -> float:
    """Open the worklist of ``films`` from the page address; seconds until the first row shows."""
    page.goto(f"{url}/", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Predict").first.wait_for(timeout=120_000)  # the router first
    _settle(page)
    start = time.perf_counter()
    page.goto(f"{url}/worklist?folder={films}", wait_until="domcontentloaded")
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=180_000)
    page.get_by_text("films shown", exact=False).first.wait_for(timeout=180_000)
    return time.perf_counter() - start


def test_worklist_of_50_films_in_two_browsers(root, screenshot_dir):
    from playwright.sync_api import sync_playwright

    films = root / "films"
    with _serve(root) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            a = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
            first_row_s = _open(a, url, films)
            a.get_by_text(f"Scored {FILMS} of {FILMS} films", exact=False).wait_for(timeout=600_000)
            a.get_by_text(f"{FILMS} of {FILMS} films shown", exact=False).wait_for(timeout=60_000)
            _settle(a)
            assert a.locator('[data-testid="stException"]').count() == 0
            a.screenshot(path=str(screenshot_dir / "worklist_1440.png"))
            a.screenshot(path=str(screenshot_dir / "worklist_1440_full.png"), full_page=True)

            b = browser.new_context(viewport={"width": 1024, "height": 768}).new_page()
            _open(b, url, films)
            b.get_by_text(f"Scored {FILMS} of {FILMS} films", exact=False).wait_for(timeout=60_000)
            _settle(b)
            b.screenshot(path=str(screenshot_dir / "worklist_1024.png"))

            grid = a.locator('[data-testid="stDataFrame"]').first
            box = grid.bounding_box()
            a.mouse.click(box["x"] + 12, box["y"] + 38 + 17)  # the first row's selection cell
            a.get_by_role("button", name="in the reading view").wait_for(timeout=60_000)
            name = a.get_by_role("button", name="in the reading view").inner_text()
            a.get_by_role("button", name="in the reading view").click()
            film = name.replace("Open ", "").replace(" in the reading view", "").strip()
            a.get_by_role("heading", name=film).wait_for(timeout=180_000)
            _settle(a)
            assert a.get_by_role("heading", name=film).count() == 1
            assert a.get_by_text("Opened from the worklist", exact=False).count() == 1
            a.screenshot(path=str(screenshot_dir / "worklist_opened_in_predict.png"))
            assert b.get_by_text(f"{FILMS} of {FILMS} films shown", exact=False).count() == 1
        finally:
            browser.close()
    print(f"worklist: first rows after {first_row_s:.1f} s (page load included)")
    for name in ("worklist_1440", "worklist_1024", "worklist_opened_in_predict"):
        assert (screenshot_dir / f"{name}.png").stat().st_size > 10_000
