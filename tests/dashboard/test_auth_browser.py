"""Sign-in in a real browser: the dashboard signing users in through a real OpenID Connect provider
(oidc-provider-mock on localhost), with local accounts, and behind a trusted proxy; and a local
install refusing other computers.

In each mode: a visitor who is not signed in gets the sign-in page and nothing else (no menu, no
model, no film); two users with different roles, in two browser contexts, see and may do different
things (the refusal comes from the store and is shown on the page); a signed-in reader is who
reads, whatever the address says; and the audit log records each step. Screenshots of the sign-in
pages, a refused action and the admin's audit view, at 1440x900 and 1024x768, go to
$CXR_SCREENSHOT_DIR (default: pytest's tmp_path).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.artifacts.thresholds_store import ThresholdStore
from cxr_core.models.checkpoint import read_model_card
from tests.checkpoint_fixtures import build_catalog
from tests.dashboard.browser_support import (
    CHROMIUM,
    WAIT_MS,
    act,
    choose,
    free_port,
    new_page,
    screenshot_folder,
    serve,
    settle,
    wait_until,
)
from tests.dashboard.test_review_browser import params, session_id_of, start_session, wait_for_film
from tests.oidc_fixture import oidc_provider, streamlit_secrets

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery"
SSO_USERS = {
    "alice": {"email": "alice@example.org", "name": "Alice Reader"},
    "ada": {"email": "ada@example.org", "name": "Ada Admin"},
    "eve": {"email": "eve@example.org", "name": "Eve Unknown"},
}
SIZES = ((1440, 900), (1024, 768))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("auth_catalog")
    build_catalog(root)
    checkpoint = root / "checkpoints" / "tiny_a"
    card = read_model_card(checkpoint / "model.safetensors")
    ThresholdStore(checkpoint, card.classes, card.thresholds).save(
        "screening", {c: 0.2 for c in card.classes}, method="fixed", notes="for the tests"
    )
    return root


def _site(catalog: Path, tmp_path_factory, name: str, settings: str) -> Path:
    """A server folder sharing the catalog's checkpoints and images, with its own review database."""
    root = tmp_path_factory.mktemp(name)
    for part in ("checkpoints", "data"):
        (root / part).symlink_to(catalog / part)
    (root / "auth.yaml").write_text(settings)
    return root


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screenshot_folder(tmp_path / "screens")


def _screens(page, folder: Path, name: str, show=None) -> None:
    """Screenshots at each size, with ``show`` (a locator, e.g. a refusal) scrolled into view."""
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        settle(page)
        if show is not None:
            show.scroll_into_view_if_needed()
        page.screenshot(path=str(folder / f"{name}_{width}.png"), full_page=True)


def _sidebar_text(page) -> str:
    return page.locator('[data-testid="stSidebar"]').inner_text()


def _nav(page) -> str:
    nav = page.locator('[data-testid="stSidebarNav"]')
    return nav.inner_text() if nav.count() else ""


def _assert_nothing_but_sign_in(page) -> None:
    """No menu, no model, no film, no upload: the sign-in page only."""
    settle(page)
    body = page.locator('[data-testid="stApp"]').inner_text()
    assert "Sign in" in body
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    assert page.locator('[data-testid="stFileUploader"]').count() == 0
    assert page.locator('[data-testid="stMain"] img').count() == 0
    for leak in ("tiny_a", "Checkpoint", "AUROC", "Upload", "Review session"):
        assert leak not in body


def _open(page, title: str) -> None:
    """Go to a page through the menu (a new address would be a new session: local accounts sign in
    per browser session)."""
    act(
        page,
        lambda: page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click(),
    )
    page.get_by_role("heading", name=title).first.wait_for(timeout=WAIT_MS)
    settle(page)


def _make_default(page, set_name: str) -> None:
    _open(page, "Thresholds")
    choose(page, page.get_by_role("combobox", name="Set", exact=True), set_name)
    act(page, lambda: page.get_by_role("button", name="Make default for everyone").click())


# -- OpenID Connect --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sso(catalog, tmp_path_factory) -> Iterator[tuple[str, ReviewStore, dict[str, str]]]:
    root = _site(catalog, tmp_path_factory, "auth_oidc", "mode: oidc\nidle_minutes: 30\n")
    store = ReviewStore(root / "review")
    store.users.add(store.actor, "alice@example.org", "reader")
    store.users.add(store.actor, "ada@example.org", "admin")
    with oidc_provider(SSO_USERS) as provider:
        port = free_port()
        secrets = streamlit_secrets(root / "secrets.toml", provider, f"http://localhost:{port}")
        with serve(
            root,
            "oidc.log",
            port=port,
            host="localhost",
            extra_args=["--secrets.files", str(root / "secrets.toml")],
            extra_env={"CXR_AUTH_CONFIG": str(root / "auth.yaml")},
        ) as server:
            yield server.url, store, {**secrets, "log": str(server.log)}


def _sso_sign_in(page, url: str, sub: str, path: str = "/models") -> None:
    page.goto(url + path)
    page.get_by_role("button", name="Sign in").click(timeout=WAIT_MS)
    page.get_by_role("button", name=sub, exact=True).click(timeout=WAIT_MS)  # the provider's page
    page.get_by_text("Signed in as").wait_for(timeout=WAIT_MS)
    settle(page)


def test_sso_visitor_not_signed_in_gets_only_the_sign_in_page(sso, browser, shots) -> None:
    url, _, _ = sso
    page = new_page(browser, 1440, 900)
    page.goto(url + "/review")  # a bookmark of a page with films
    page.get_by_role("button", name="Sign in").wait_for(timeout=WAIT_MS)
    _assert_nothing_but_sign_in(page)
    assert page.get_by_text("Page not found").count() == 0  # the address is kept for after
    _screens(page, shots, "sso_sign_in")
    page.context.close()


def test_sso_roles_differ_in_two_browsers_and_each_step_is_audited(sso, browser, shots) -> None:
    url, store, secrets = sso
    reader, admin = new_page(browser, 1440, 900), new_page(browser, 1440, 900)
    _sso_sign_in(reader, url, "alice", "/review?reader=bob")
    _sso_sign_in(admin, url, "ada")
    assert "Signed in as alice@example.org" in _sidebar_text(reader)
    assert "reader · single sign-on" in _sidebar_text(reader)
    assert "reader=bob" not in reader.url  # the address cannot name someone else
    assert reader.get_by_role("textbox", name="Reader").count() == 0
    assert "Users" not in _nav(reader) and "Audit log" not in _nav(reader)
    assert "Users" in _nav(admin) and "Audit log" in _nav(admin)

    _make_default(reader, "screening")
    refusal = reader.locator('[data-testid="stAlertContentError"]')
    refusal.first.wait_for(timeout=WAIT_MS)
    assert (
        "alice@example.org (reader) may not make a threshold set the model's default for everyone: "
        "that needs the role admin" in refusal.first.inner_text()
    )
    _screens(reader, shots, "sso_refused_default", refusal.first)
    _make_default(admin, "screening")
    admin.get_by_text("is now the default threshold set").wait_for(timeout=WAIT_MS)

    _open(admin, "Audit log")
    _screens(admin, shots, "sso_audit_view")
    assert admin.get_by_text("event(s) since").count() == 1

    reader.get_by_role(
        "button", name="Sign out"
    ).click()  # leaves for the provider: no run to wait for
    end = reader.get_by_role("button", name="End session")  # the provider's own sign-out page
    end.click(timeout=WAIT_MS)
    reader.get_by_role("button", name="Sign in").wait_for(timeout=WAIT_MS)
    _assert_nothing_but_sign_in(reader)

    events = wait_until(
        lambda: [
            (e.action, e.actor, e.via)
            for e in reversed(store.audit.entries())
            if e.action in ("sign_in", "thresholds_default", "sign_out")
        ],
        "the audit events",
    )
    assert ("sign_in", "alice@example.org", "oidc") in events
    assert ("sign_in", "ada@example.org", "oidc") in events
    assert ("thresholds_default", "ada@example.org", "oidc") in events
    assert ("sign_out", "alice@example.org", "oidc") in events
    assert events.index(("sign_in", "alice@example.org", "oidc")) < events.index(
        ("sign_out", "alice@example.org", "oidc")
    )
    default = store.audit.entries(action="thresholds_default")[0]
    assert default.target == "tiny_a/screening" and default.detail["to"] == "screening"
    pages = reader.content() + admin.content() + Path(secrets["log"]).read_text()
    for secret in ("client_secret", "cookie_secret"):
        assert secrets[secret] not in pages
    reader.context.close()
    admin.context.close()


def test_sso_user_without_a_role_is_refused(sso, browser) -> None:
    url, store, _ = sso
    page = new_page(browser, 1440, 900)
    page.goto(url + "/models")
    page.get_by_role("button", name="Sign in").click(timeout=WAIT_MS)
    page.get_by_role("button", name="eve", exact=True).click(timeout=WAIT_MS)
    page.get_by_text("has no role on this server").wait_for(timeout=WAIT_MS)
    settle(page)
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    refused = store.audit.entries(action="sign_in_refused")[0]
    assert (refused.actor, refused.detail["why"]) == ("eve@example.org", "no role")
    page.context.close()


# -- local accounts --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(catalog, tmp_path_factory) -> Iterator[tuple[str, ReviewStore, Path]]:
    root = _site(catalog, tmp_path_factory, "auth_local", "mode: local\nidle_minutes: 30\n")
    store = ReviewStore(root / "review")
    for name, role in (("rita", "reader"), ("vic", "viewer"), ("root", "admin")):
        store.users.add(store.actor, name, role, PASSWORD)
    with serve(root, "local.log", extra_env={"CXR_AUTH_CONFIG": str(root / "auth.yaml")}) as server:
        yield server.url, store, root


def _password_sign_in(
    page, url: str, name: str, password: str = PASSWORD, path: str = "/models"
) -> None:
    page.goto(url + path)
    page.get_by_role("textbox", name="Name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    act(page, lambda: page.get_by_role("button", name="Sign in").click())


def test_local_visitor_gets_only_the_form_and_a_wrong_password_nothing(
    local, browser, shots
) -> None:
    url, store, _ = local
    page = new_page(browser, 1440, 900)
    page.goto(url + "/review")
    page.get_by_role("textbox", name="Password").wait_for(timeout=WAIT_MS)
    _assert_nothing_but_sign_in(page)
    _screens(page, shots, "local_sign_in")
    _password_sign_in(page, url, "rita", "not the password")
    page.get_by_text("Wrong name or password").wait_for(timeout=WAIT_MS)
    _assert_nothing_but_sign_in(page)
    assert PASSWORD not in page.content() and "not the password" not in page.content()
    assert store.audit.entries(action="sign_in_failed")[0].actor == "rita"
    page.context.close()


def test_local_roles_differ_in_two_browsers_and_each_step_is_audited(local, browser, shots) -> None:
    url, store, _ = local
    viewer, reader = new_page(browser, 1440, 900), new_page(browser, 1440, 900)
    _password_sign_in(viewer, url, "vic")
    _password_sign_in(reader, url, "rita")
    assert "vic" in _sidebar_text(viewer) and "viewer · local account" in _sidebar_text(viewer)
    for page in (viewer, reader):
        _open(page, "Thresholds")
        name = page.get_by_role("textbox", name="Name").last
        name.fill("mine")
        act(page, lambda name=name: name.press("Enter"))
        act(page, lambda page=page: page.get_by_role("button", name="Save set").click())
    refusal = viewer.get_by_text("vic (viewer) may not save a threshold set")
    refusal.wait_for(timeout=WAIT_MS)
    _screens(viewer, shots, "local_refused_save", refusal)
    reader.get_by_text("Saved “mine”").wait_for(timeout=WAIT_MS)
    saved = store.audit.entries(action="thresholds_saved")
    assert [(e.actor, e.target) for e in saved] == [("rita", "tiny_a/mine")]
    act(reader, lambda: reader.get_by_role("button", name="Sign out").click())
    reader.get_by_role("textbox", name="Password").wait_for(timeout=WAIT_MS)
    _assert_nothing_but_sign_in(reader)
    actions = [(e.action, e.actor) for e in reversed(store.audit.entries())]
    assert ("sign_in", "vic") in actions and ("sign_in", "rita") in actions
    assert actions.index(("thresholds_saved", "rita")) < actions.index(("sign_out", "rita"))
    viewer.context.close()
    reader.context.close()


def test_review_calls_are_the_signed_in_readers_own_and_a_viewer_may_not_call(
    local, browser, shots
) -> None:
    """An admin starts a session; a reader opens a film by link naming another reader and calls it:
    the calls are hers; a viewer opening the same film gets it read only (disabled call buttons,
    the reason shown): a key press calls nothing, leaves no draft and no pressed button."""
    url, store, _ = local
    admin = new_page(browser, 1440, 900)
    _password_sign_in(admin, url, "root", path="/review")
    start_session(admin, "team read")
    sid, film = session_id_of(admin), params(admin)["film"]
    link = f"/review?session={sid}&film={film}&reader=bob"

    reader = new_page(browser, 1440, 900)
    _password_sign_in(reader, url, "rita", path=link)
    wait_for_film(reader, film)
    assert "reader=bob" not in reader.url
    reader.keyboard.press("n")  # every finding absent
    reader.keyboard.press("s")  # save, stay
    classes = store.session(sid).classes
    wait_until(lambda: len(store.verdicts(sid, reviewer="rita")) == len(classes), "rita's calls")
    assert store.verdicts(sid, reviewer="bob") == []

    viewer = new_page(browser, 1024, 768)
    _password_sign_in(viewer, url, "vic", path=link)
    wait_for_film(viewer, film)
    viewer.get_by_text("vic (viewer) may not call films").first.wait_for(timeout=WAIT_MS)
    calls_buttons = viewer.locator("button.call, button.where")
    assert calls_buttons.count() > 0
    assert all(calls_buttons.nth(i).is_disabled() for i in range(calls_buttons.count()))
    viewer.keyboard.press("n")  # would call every finding absent: nothing happens
    assert viewer.locator("button[aria-pressed='true']").count() == 0
    assert viewer.get_by_text("Draft: unsaved").count() == 0
    _screens(viewer, shots, "local_refused_call")
    assert store.drafts(sid, "vic") == [] and store.verdicts(sid, reviewer="vic") == []

    calls = store.audit.entries(action="call_saved")
    assert {(e.actor, e.role, e.film) for e in calls} == {("rita", "reader", film)}
    assert sorted(e.detail["finding_of"] for e in calls) == sorted(classes)
    created = store.audit.entries(action="session_created")[0]
    assert (created.actor, created.target) == ("root", f"review session {sid}")
    viewed = {(e.actor, e.film) for e in store.audit.entries(action="film_viewed")}
    assert {("rita", film), ("vic", film)} <= viewed
    for page in (admin, reader, viewer):
        page.context.close()


def test_an_idle_screen_is_cleared_without_a_click(local, browser) -> None:
    url, store, root = local
    page = new_page(browser, 1024, 768)
    _password_sign_in(page, url, "root")
    (root / "auth.yaml").write_text("mode: local\nidle_minutes: 0.05\n")  # 3 seconds
    try:
        # A full run reads the new time: it signs out at once if 3 s have passed since the sign-in,
        # or draws the idle watcher that clears the screen when they have, without a click.
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Models", exact=True).click()
        page.get_by_text("without activity").wait_for(timeout=WAIT_MS)
        _assert_nothing_but_sign_in(page)
    finally:
        (root / "auth.yaml").write_text("mode: local\nidle_minutes: 30\n")
    last = store.audit.entries(action="sign_out")[0]
    assert last.actor == "root" and "without activity" in last.detail["why"]
    page.context.close()


# -- no sign-in, and a trusted proxy, on a server bound to every interface -----------------


def _other_address() -> str:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("this machine has no address other than loopback to connect from")
    return address


def _refused(page, url: str, why: str) -> None:
    """The web server itself refuses the connection (403, the reason, no app, no film)."""
    response = page.goto(url)
    assert response is not None and response.status == 403
    text = page.locator("body").inner_text()
    assert why in text and "tiny_a" not in page.content()
    assert page.locator('[data-testid="stApp"]').count() == 0


@pytest.fixture(scope="module")
def open_server(catalog, tmp_path_factory) -> Iterator[tuple[str, int, Path, ReviewStore]]:
    root = _site(catalog, tmp_path_factory, "auth_open", "mode: none\n")
    store = ReviewStore(root / "review")
    port = free_port()
    with serve(
        root,
        "open.log",
        port=port,
        address="0.0.0.0",
        extra_env={"CXR_AUTH_CONFIG": str(root / "auth.yaml"), "FORWARDED_ALLOW_IPS": ""},
    ) as server:
        yield server.url, port, root, store


def test_a_local_install_refuses_other_computers_and_proxies(open_server, browser, shots) -> None:
    url, port, root, _ = open_server
    (root / "auth.yaml").write_text("mode: none\n")
    here = new_page(browser, 1440, 900)
    here.goto(url + "/models")
    here.get_by_role("heading", name="Models").first.wait_for(timeout=WAIT_MS)
    assert "Single-user local install" in _sidebar_text(here)
    away = new_page(browser, 1440, 900)
    _refused(away, f"http://{_other_address()}:{port}/models", "single-user local install")
    for width, height in SIZES:
        away.set_viewport_size({"width": width, "height": height})
        away.screenshot(path=str(shots / f"local_install_refused_{width}.png"))
    proxied = new_page(browser, 1440, 900, extra_http_headers={"X-Forwarded-For": "203.0.113.8"})
    _refused(proxied, url + "/models", "single-user local install")
    for page in (here, away, proxied):
        page.context.close()


def test_proxy_mode_believes_its_trusted_proxy_only(open_server, browser) -> None:
    url, port, root, store = open_server
    (root / "auth.yaml").write_text(
        "mode: proxy\ntrusted_proxies: [127.0.0.1]\ndefault_role: viewer\n"
        "proxy_user_header: X-Forwarded-Email\n"
    )
    try:
        header = {"X-Forwarded-Email": "pat@example.org"}
        via_proxy = new_page(browser, 1440, 900, extra_http_headers=header)
        via_proxy.goto(url + "/models")
        via_proxy.get_by_text("Signed in as").wait_for(timeout=WAIT_MS)
        settle(via_proxy)
        assert "pat@example.org" in _sidebar_text(via_proxy)
        assert "viewer · sign-in proxy" in _sidebar_text(via_proxy)
        forged = new_page(browser, 1440, 900, extra_http_headers=header)
        _refused(
            forged, f"http://{_other_address()}:{port}/models", "only through its sign-in proxy"
        )
        assert "pat@example.org" not in forged.content()
        signed = store.audit.entries(action="sign_in")[0]
        assert (signed.actor, signed.via, signed.role) == ("pat@example.org", "proxy", "viewer")
        for page in (via_proxy, forged):
            page.context.close()
    finally:
        (root / "auth.yaml").write_text("mode: none\n")
