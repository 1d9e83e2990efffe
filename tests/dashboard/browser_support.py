"""What the real-browser dashboard tests share: a freshly started server, Chromium, and waits that
hold on a busy machine.

Nothing here sleeps for a fixed time. Every wait is for something the page or the server shows:
the server's health endpoint, an element, a text, the app's run state, a database row, or the
``script_finished`` message the server sends at the end of each script run (read off the page's
websocket by :func:`act`, so a run too quick to show in the page still counts).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
WAIT_MS = 180_000
"""Upper bound of any one wait: generous, because a busy machine is slow, not broken."""

IDLE = (
    "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
    " return !!app && app.dataset.testScriptState === 'notRunning'"
    " && app.dataset.testConnectionState === 'CONNECTED'"
    " && !document.querySelector('[data-stale=\"true\"]'); }"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)  # polling the health endpoint, not waiting for the app
    raise TimeoutError(f"streamlit did not answer {url} within {timeout_s:.0f} s")


@dataclass(frozen=True)
class Server:
    url: str
    log: Path
    review_dir: Path
    pid: int

    def output(self) -> str:
        """Everything the server has printed so far (stdout and stderr)."""
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def serve(
    root: Path,
    log_name: str,
    *,
    port: int | None = None,
    address: str = "127.0.0.1",
    host: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """A freshly started ``streamlit run`` on a free port, with the repository's own config.

    Without sign-in settings in ``extra_env`` (``CXR_AUTH_CONFIG``) the app is a single-user local
    install. ``address`` is what the server binds to, ``host`` what the browser opens (``localhost``
    for sign-in through an identity provider, whose redirect address must match).
    """
    port = port or free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "CXR_AUTH_CONFIG"},
        "CXR_CHECKPOINT_DIRS": str(root / "checkpoints"),
        "CXR_REVIEW_DIR": str(root / "review"),
        "CXR_DATA_ROOT": str(root / "data"),
        "OMP_NUM_THREADS": "1",
        **(extra_env or {}),
    }
    log = root / log_name
    handle = log.open("w")
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
            address,
            "--browser.gatherUsageStats",
            "false",
            *extra_args,
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc)
        yield Server(f"http://{host}:{port}", log, root / "review", proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        handle.close()


OPEN_PAGES: list = []
"""Pages opened by :func:`new_page` in the running test (``tests/dashboard/conftest.py`` saves a
screenshot of each when the test fails)."""


def _keep_stream(page, ws) -> None:
    if ws.url.endswith("/_stcore/stream"):
        page._cxr_stream = ws  # the latest: a reload opens a new one


def new_page(browser, width: int, height: int, **options):
    """A page in a fresh browser context (its own cookies and Streamlit session); :func:`act` reads
    its connection to the server."""
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    page = context.new_page()
    page.on("websocket", lambda ws: _keep_stream(page, ws))
    OPEN_PAGES.append(page)
    return page


def _script_finished(payload) -> bool:
    """Is this websocket frame the server's message that a script run has ended?"""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    if isinstance(payload, str):
        return False
    msg = ForwardMsg()
    msg.ParseFromString(payload)
    return msg.WhichOneof("type") == "script_finished"


def settle(page, timeout_ms: int = WAIT_MS) -> None:
    """Wait until the app is idle: no script run going, nothing stale, connected."""
    page.wait_for_function(IDLE, timeout=timeout_ms)


def act(page, action: Callable[[], object], timeout_ms: int = WAIT_MS) -> None:
    """Do something that reruns the app (a click, a key), wait for the server to say that a run has
    finished after it, then for the page to be idle."""
    settle(page, timeout_ms)
    with page._cxr_stream.expect_event(
        "framereceived", predicate=_script_finished, timeout=timeout_ms
    ):
        action()
    settle(page, timeout_ms)


def choose(page, box, option: str, *, exact: bool = True) -> None:
    """Choose ``option`` in the select box ``box`` (a locator of its combobox) and wait for the run.

    A rerun that redraws the box while its list is open (or a scroll, which closes the list)
    detaches the option under the pointer; the choice is then made again on the redrawn box, and
    only while the box does not show it yet."""
    from playwright.sync_api import Error

    def shows() -> bool:
        value = box.input_value()
        return value == option if exact else option in value

    def chosen() -> bool:
        settle(page)
        if shows():
            return True
        try:
            box.click()
            page.get_by_role("option", name=option, exact=exact).first.click(timeout=5_000)
        except Error:
            page.keyboard.press("Escape")
        return False

    wait_until(chosen, f"{option} chosen")
    settle(page)


def wait_until(check: Callable[[], object], what: str, timeout_s: float = WAIT_MS / 1000) -> object:
    """Poll ``check`` (e.g. a database query) until it returns something truthy; fail saying ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling a condition, not waiting a fixed time for the app


def screenshot_folder(default: Path) -> Path:
    folder = Path(os.environ.get("CXR_SCREENSHOT_DIR", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
