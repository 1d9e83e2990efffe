"""How fast the dashboard answers in a real browser (headless Chromium), on real film sizes.

Starts ``streamlit run streamlit_app.py`` from ``--app-dir`` (default: this checkout) on the
bundled models, makes 2,500 × 2,048 px films (height × width) from the shared NIH images
(upscaled) as 8-bit PNG and as 16-bit DICOM (MONOCHROME2, BitsStored 12), and measures the median
of ``--runs`` (≥ 5) repetitions of:

- each page's first render (URL opened → title shown and the script run finished), goal ≤ 2 s;
- Thresholds: a slider step → the sensitivity number changes, goal ≤ 0.5 s;
- per film kind (PNG, DICOM), on Predict:
  - a new film → its findings shown, goal ≤ 1.5 s;
  - a new film → its heatmap drawn in the viewer, goal ≤ 2 s;
  - another "Explain" class → the viewer redrawn with it, goal ≤ 1.5 s;
  - 8 films uploaded at once → the first film's findings, goal ≤ 3 s (the rest fill in);
  - switching film in that batch (▶) → the next film and its findings shown, goal ≤ 0.5 s;
- Review: save and next → the next film readable, goal ≤ 0.5 s, after ``READ_SECONDS`` spent
  on each film (the page computes the next film meanwhile, as it would while a radiologist
  reads); also printed without a goal: the same back to back, with no time to read (films of
  the same size; the selectors of this step are in ``REVIEW`` below, as the Review page changes).

Every new-film measurement uses films the server has not seen. Prints each median with "met" /
"NOT met". Needs Debian's chromium and the playwright package.

    python benchmarks/bench_dashboard_latency.py --runs 5
    python benchmarks/bench_dashboard_latency.py --parts predict --kinds dcm   # one part, one kind
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
FILM_SHAPE = (2500, 2048)  # rows × columns: a 14 × 17 inch film at ~0.17 mm per pixel
BATCH = 8
WAIT_MS = 300_000
GOALS = {
    "page first render": 2.0,
    "threshold slider → numbers": 0.5,
    "new film → findings": 1.5,
    "new film → heatmap": 2.0,
    "explain another class": 1.5,
    "8-film upload → first findings": 3.0,
    "switch film in a batch": 0.5,
    "save and next → next film": 0.5,
}
READ_SECONDS = 3.0
"""Time a benchmark reader spends on a film before saving: less than any radiologist gives a
chest film, so the next film's preparation must fit in it."""
KINDS = ("png", "dcm")
PARTS = ("predict", "pages", "slider", "review")
PAGES = (
    ("predict", "Predict"),
    ("performance", "Performance"),
    ("thresholds", "Thresholds"),
    ("review", "Review"),
    ("worklist", "Worklist"),
    ("models", "Models"),
)
IDLE_JS = (
    "() => document.querySelector('[data-testid=stApp]')?.dataset.testScriptState === 'notRunning'"
)
VIEWER_JS = (
    "document.querySelector('[data-testid=stBidiComponentIsolated]')?.shadowRoot"
    "?.querySelector('.cxr-viewer')"
)
# The Review page's controls this benchmark uses (change them here when the page changes).
REVIEW = {
    "checkpoint": "nih14_films",  # the sidebar's Checkpoint option holding the big films
    "session name": "Session name",  # text box
    "start": "Start",  # button
    "all absent": "n",  # key: every finding not called yet is absent (the Read view's key map)
    "save and next": "Enter",  # key: save and go to the next film
}
# The film the address names (?film=) is on screen: its line, its call grid and its image.
REVIEW_READABLE_JS = """(old) => {
    const film = new URLSearchParams(location.search).get('film');
    if (!film || film === old) return false;
    const shown = Array.from(document.querySelectorAll('[data-testid="stMarkdown"]'))
        .some(m => m.innerText.includes('Image ' + film));
    const hosts = Array.from(document.querySelectorAll('[data-testid="stBidiComponentIsolated"]'));
    const grid = hosts.map(h => h.shadowRoot && h.shadowRoot.querySelector('.call-grid')).find(Boolean);
    const image = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot image');
    return shown && grid && grid.dataset.film === film && image ? film : false;
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_film(source: Path, target: Path) -> Path:
    """A 2,500 × 2,048 film from a 256 px NIH image: PNG (8-bit) or DICOM (12 bits stored in 16)."""
    small = np.asarray(Image.open(source).convert("L"), dtype=np.float32)
    big = cv2.resize(small, FILM_SHAPE[::-1], interpolation=cv2.INTER_CUBIC)
    if target.suffix == ".png":
        Image.fromarray(np.clip(np.rint(big), 0, 255).astype(np.uint8)).save(target)
        return target
    dither = np.random.default_rng(len(target.name)).normal(0.0, 1.5, big.shape)
    stored = np.clip(np.rint(big * (4095 / 255) + dither), 0, 4095).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "DX", "PA", "CHEST"
    ds.set_pixel_data(stored, "MONOCHROME2", 12)
    ds.save_as(target, enforce_file_format=True)
    return target


def review_checkpoint(bundled: Path, root: Path, films: list[Path], sources: list[Path]) -> None:
    """``root/nih14_films``: the bundled NIH model with an evaluation run over ``films`` (each the
    upscaled copy of the NIH image in the same row, with that image's labels and probabilities)."""
    folder = root / "nih14_films"
    (folder / "eval" / "val").mkdir(parents=True)
    (folder / "model.safetensors").symlink_to(bundled / "nih14" / "model.safetensors")
    run = bundled / "nih14" / "eval" / "val"
    (folder / "eval" / "val" / "report.json").symlink_to(run / "report.json")
    with open(run / "predictions.csv", newline="", encoding="utf-8") as handle:
        rows = {r["image_id"]: r for r in csv.DictReader(handle)}
    out = []
    for film, source in zip(films, sources):
        row = dict(rows[source.name])
        row["image_id"], row["path"] = film.name, str(film)
        out.append(row)
    with open(folder / "eval" / "val" / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)


def _idle(page) -> None:
    page.wait_for_function(IDLE_JS, timeout=WAIT_MS, polling=20)


def _timed(action: Callable[[], None], done: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    done()
    return time.perf_counter() - start


def _ident(film: Path) -> str:
    return hashlib.sha1(film.read_bytes()).hexdigest()[:12]


ANSWERED = re.compile(r"Abnormality score|Out of domain\.|Refused: not scored")
"""What the findings panel shows once a film is read: its findings, or why its calls are withheld
(an upscaled NIH film may fall outside the model's domain) or it was refused."""


def _findings_shown(page, film: Path) -> None:
    page.get_by_role("heading", name=film.name, exact=True).wait_for(timeout=WAIT_MS)
    page.get_by_text(ANSWERED).first.wait_for(timeout=WAIT_MS)


def _drawn(page, film: Path, what: str = "heat") -> None:
    page.wait_for_function(
        f"(want) => {VIEWER_JS}?.dataset.drawn === want",
        arg=f"{_ident(film)}:{what}",
        timeout=WAIT_MS,
        polling=20,
    )


def _fresh_predict(page, url: str) -> None:
    page.goto(f"{url}/predict", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Predict", exact=True).wait_for(timeout=WAIT_MS)
    _idle(page)


def measure_new_film(page, url: str, film: Path, results: dict, kind: str) -> None:
    """One new film: findings, then heatmap, from the moment it is uploaded."""
    _fresh_predict(page, url)
    upload = page.locator("input[type=file]").first
    start = time.perf_counter()
    upload.set_input_files(str(film))
    _findings_shown(page, film)
    results[f"new film → findings ({kind})"].append(time.perf_counter() - start)
    _drawn(page, film)
    results[f"new film → heatmap ({kind})"].append(time.perf_counter() - start)
    _idle(page)


def measure_class_change(page, film: Path, results: dict, kind: str, i: int) -> None:
    """Another class in "Explain" → the heatmap panel titled and drawn with it."""
    page.locator('[data-testid="stMain"]').get_by_role("combobox", name="Explain class").click()
    options = page.get_by_role("option")
    target = options.nth(1 + i % max(1, options.count() - 1))
    name = target.inner_text().strip().removeprefix("Explain: ")
    seconds = _timed(
        target.click,
        lambda: page.wait_for_function(
            f"(name) => Array.from({VIEWER_JS}?.querySelectorAll('.title') || [])"
            ".some(t => t.textContent.includes(' · ' + name + ' · '))"
            f" && {VIEWER_JS}.dataset.drawn.endsWith(':heat')",
            arg=name,
            timeout=WAIT_MS,
            polling=20,
        ),
    )
    results[f"explain another class ({kind})"].append(seconds)
    _idle(page)


def measure_batch(
    page, url: str, batch: list[Path], results: dict, kind: str, switches: int
) -> None:
    """8 films at once → the first one's findings; then ▶ through the batch once it is scored."""
    _fresh_predict(page, url)
    seconds = _timed(
        lambda: page.locator("input[type=file]").first.set_input_files([str(f) for f in batch]),
        lambda: _findings_shown(page, batch[0]),
    )
    results[f"8-film upload → first findings ({kind})"].append(seconds)
    page.get_by_role("button", name="Download all probabilities (CSV)").wait_for(timeout=WAIT_MS)
    _idle(page)  # the batch scored and every film's opening heatmap computed
    for film in batch[1 : 1 + switches]:
        seconds = _timed(
            lambda: page.get_by_role("button", name="▶").click(),
            lambda: (_findings_shown(page, film), _drawn(page, film)),
        )
        results[f"switch film in a batch ({kind})"].append(seconds)
        _idle(page)


def measure_pages(page, url: str, runs: int, per_page: dict) -> None:
    for _ in range(runs):
        for path, title in PAGES:
            per_page[title].append(
                _timed(
                    lambda: page.goto(f"{url}/{path}", wait_until="domcontentloaded"),
                    lambda: (
                        page.get_by_role("heading", name=title).first.wait_for(timeout=WAIT_MS),
                        _idle(page),
                    ),
                )
            )


def measure_slider(page, url: str, runs: int, results: dict) -> None:
    page.goto(f"{url}/thresholds", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Thresholds").first.wait_for(timeout=WAIT_MS)
    _idle(page)
    slider = page.get_by_role("slider").first
    # "<class> at threshold <t>" above the numbers: redrawn with them, and changed by every step
    shown = page.locator('[data-testid="stMarkdown"]', has_text="at threshold").first
    for _ in range(runs):
        before = shown.inner_text()
        start = time.perf_counter()
        slider.focus(timeout=WAIT_MS)
        page.keyboard.press("PageUp")
        page.wait_for_function(
            "([m, b]) => m.innerText !== b",
            arg=[shown.element_handle(), before],
            timeout=WAIT_MS,
            polling=20,
        )
        results["threshold slider → numbers"].append(time.perf_counter() - start)
        _idle(page)


def _review_film(page, old: str = "") -> str:
    """The film the Review page shows once it is readable and differs from ``old``."""
    handle = page.wait_for_function(REVIEW_READABLE_JS, arg=old, timeout=WAIT_MS, polling=20)
    return handle.json_value()


def measure_review(page, url: str, runs: int, results: dict) -> None:
    """Save and next on the Review page's Read view, over the big films of ``nih14_films``: every
    finding called absent by its key (not timed), then the time from the save key to the next
    film readable (its line, its call grid and its image on screen); alternately after
    ``READ_SECONDS`` on the film and at once."""
    page.goto(f"{url}/review?reader=bench", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Review").first.wait_for(timeout=WAIT_MS)
    _idle(page)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=REVIEW["checkpoint"]).first.click()
    _idle(page)
    page.get_by_label(REVIEW["session name"]).fill("bench")
    page.get_by_label(REVIEW["session name"]).press("Enter")
    _idle(page)
    page.get_by_role("button", name=REVIEW["start"]).click()
    shown = _review_film(page)
    _idle(page)
    for run in range(2 * runs):
        read = run % 2 == 0
        if read:
            time.sleep(READ_SECONDS)
        page.keyboard.press(REVIEW["all absent"])
        start = time.perf_counter()
        page.keyboard.press(REVIEW["save and next"])
        shown = _review_film(page, shown)
        name = "save and next → next film" + ("" if read else " (no time to read)")
        results[name].append(time.perf_counter() - start)
        _idle(page)


def _serve(app_dir: str, root: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": app_dir,
        "CXR_CHECKPOINT_DIRS": str(root / "checkpoints"),
        "CXR_REVIEW_DIR": str(root / "review"),
    }
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py"]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    command += ["--server.headless", "true", "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(
        command, cwd=app_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(480):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.25)
    proc.terminate()
    raise RuntimeError(f"streamlit did not start on {url}")


def prepare(
    app_dir: str, images: list[Path], root: Path, runs: int, kinds: tuple[str, ...] = KINDS
) -> dict[str, list[Path]]:
    """The films (none seen by the server yet) and the checkpoint folder the server reads: Review's
    films come from the NIH model's validation images, Predict's from the others."""
    run = Path(app_dir) / "checkpoints" / "nih14" / "eval" / "val" / "predictions.csv"
    with open(run, newline="", encoding="utf-8") as handle:
        validation = [r["image_id"] for r in csv.DictReader(handle)]
    by_name = {image.name: image for image in images}
    review_sources = [by_name[n] for n in validation if n in by_name][: 2 * runs + 2]
    others = [image for image in images if image.name not in set(validation)]
    per_kind = runs + BATCH * runs
    films: dict[str, list[Path]] = {}
    for k, kind in enumerate(kinds):
        folder = root / kind
        folder.mkdir()
        films[kind] = [
            make_film(s, folder / f"{s.stem}_big.{kind}")
            for s in others[k * per_kind : (k + 1) * per_kind]
        ]
    (root / "review_films").mkdir()
    films["review"] = [
        make_film(s, root / "review_films" / f"{s.stem}_big.png") for s in review_sources
    ]
    warm = others[len(kinds) * per_kind]
    films["warm-up"] = [make_film(warm, root / f"{warm.stem}_warm.png")]
    bundled = Path(app_dir) / "checkpoints"
    nih14 = root / "checkpoints" / "nih14"
    (nih14 / "thresholds").mkdir(parents=True)  # the server's own: readers' choices land here
    for name in ("model.safetensors", "config.yaml", "eval"):
        (nih14 / name).symlink_to(bundled / "nih14" / name)
    for saved in (bundled / "nih14" / "thresholds").glob("*.json"):
        (nih14 / "thresholds" / saved.name).write_bytes(saved.read_bytes())
    review_checkpoint(bundled, root / "checkpoints", films["review"], review_sources)
    return films


def measure_predict(page, url: str, films: dict[str, list[Path]], runs: int, results: dict) -> None:
    """Predict on each film kind: single new films (findings, heatmap, another class), then
    8-film uploads (first findings, switching films); the first film warms the server."""
    cold = time.perf_counter()
    measure_new_film(page, url, films["warm-up"][0], {k: [] for k in _keys("png")}, "png")
    print(
        f"cold server → first film's heatmap: {time.perf_counter() - cold:.1f} s (model load included)"
    )
    for kind in (k for k in KINDS if k in films):
        results |= {k: [] for k in _keys(kind)}
        singles, batches = films[kind][:runs], films[kind][runs:]
        for i, film in enumerate(singles):
            measure_new_film(page, url, film, results, kind)
            measure_class_change(page, film, results, kind, i)
            print(f"  {kind} film {i + 1}: " + _latest(results, kind), flush=True)
        for r in range(runs):
            batch = batches[r * BATCH : (r + 1) * BATCH]
            measure_batch(page, url, batch, results, kind, switches=1 if r else BATCH - 1)
            print(f"  {kind} batch {r + 1}: " + _latest(results, kind), flush=True)
        print(_summary(results, kind), flush=True)


def run_all(url: str, films: dict[str, list[Path]], runs: int, parts: set[str]) -> dict:
    from playwright.sync_api import sync_playwright

    results: dict[str, list[float]] = {}
    per_page: dict[str, list[float]] = {title: [] for _, title in PAGES}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        if "predict" in parts:
            measure_predict(page, url, films, runs, results)
        if "pages" in parts:
            measure_pages(page, url, runs, per_page)
            results["page first render"] = [statistics.median(v) for v in per_page.values()]
        if "slider" in parts:
            results["threshold slider → numbers"] = []
            measure_slider(page, url, runs, results)
        if "review" in parts:
            results["save and next → next film"] = []
            results["save and next → next film (no time to read)"] = []
            measure_review(page, url, runs, results)
        browser.close()
    for title, values in per_page.items():
        if values:
            print(f"  {title:<12} first render: median {statistics.median(values):.2f} s")
    return results


def _keys(kind: str) -> list[str]:
    return [f"{name} ({kind})" for name in list(GOALS)[2:7]]


def _latest(results: dict, kind: str) -> str:
    return ", ".join(f"{k.split(' (')[0]} {v[-1]:.2f} s" for k in _keys(kind) if (v := results[k]))


def _summary(results: dict, kind: str) -> str:
    return f"{kind}: " + ", ".join(
        f"{k.split(' (')[0]} {statistics.median(v):.2f} s" for k in _keys(kind) if (v := results[k])
    )


def report(results: dict) -> None:
    for name, values in results.items():
        goal = None if name.endswith("(no time to read)") else GOALS[name.split(" (")[0]]
        if not values:
            print(f"{name:<42} not measured")
            continue
        slowest = name == "page first render"
        median = max(values) if slowest else statistics.median(values)
        label = "slowest page's median" if slowest else f"median of {len(values)}"
        if goal is None:
            print(f"{name:<42} {label}: {median:.2f} s (no goal)")
            continue
        verdict = "met" if median <= goal else "NOT met"
        print(f"{name:<42} {label}: {median:.2f} s (goal ≤ {goal:.1f} s) {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-dir", default=str(Path(__file__).resolve().parents[1]))
    shared = os.environ.get("CXR_SHARED_DATA", "../shared/data")
    parser.add_argument("--images", default=os.path.join(shared, "nih14", "images"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {', '.join(PARTS)} (default: all)",
    )
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"film kinds Predict is timed on, a subset of {', '.join(KINDS)} (default: both)",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    kinds = tuple(k for k in KINDS if k in args.kinds.split(","))
    if not kinds or set(args.kinds.split(",")) - set(KINDS):
        parser.error(f"--kinds: choose from {', '.join(KINDS)}")
    if "predict" not in parts:
        kinds = ()
    if parts - set(PARTS):
        parser.error(f"unknown parts {sorted(parts - set(PARTS))}; choose from {', '.join(PARTS)}")
    if args.runs < 5:
        parser.error("--runs must be at least 5: every figure is a median of 5 or more")
    images = sorted(Path(args.images).glob("*.png"))
    needed = len(kinds) * (args.runs + BATCH * args.runs) + 1 + 312  # + the validation images
    if len(images) < needed:
        print(f"need at least {needed} PNG images in {args.images}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        films = prepare(args.app_dir, images, root, args.runs, kinds)
        print(
            f"made {sum(len(v) for v in films.values())} films of {FILM_SHAPE[0]} × {FILM_SHAPE[1]} px "
            f"in {time.perf_counter() - started:.0f} s"
        )
        proc, url = _serve(args.app_dir, root)
        try:
            results = run_all(url, films, args.runs, parts)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
