"""The role x action table, done through the stores themselves (not the pages): each role tries
each action on a real review database and threshold folder; an allowed action lands and is
audited, a refused one raises AccessDeniedError naming the role it needs and leaves no trace.

The expected table is written out by hand (it is the README's, "Deploy for a team"). Every test
runs on both engines (``[sqlite]``: a review file and threshold files; ``[postgres]``: both stores
in one PostgreSQL database, the server started by ``postgres_server``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cxr_core.access.roles import ROLES, Actor
from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.artifacts.thresholds_store import ThresholdStore
from cxr_core.errors import AccessDeniedError
from cxr_core.evaluation.review import release_export

CLASSES = ("Atelectasis", "Effusion")
ALLOWED = {  # action -> the roles that may do it, by hand
    "save a threshold set": {"reader", "adjudicator", "admin"},
    "call a film": {"reader", "adjudicator", "admin"},
    "reveal a blinded session": {"reader", "adjudicator", "admin"},
    "start a review session": {"adjudicator", "admin"},
    "change a review session": {"adjudicator", "admin"},
    "adjudicate": {"adjudicator", "admin"},
    "export verdicts (pseudonymised)": {"adjudicator", "admin"},
    "export verdicts with patient identifiers": {"adjudicator", "admin"},
    "make a threshold set the default": {"admin"},
    "add a user": {"admin"},
    "export the audit log": {"admin"},
}


class Site:
    """One install: a review database with one blinded session, and a checkpoint's threshold folder."""

    def __init__(self, root: Path, db: str) -> None:
        self.store = ReviewStore(db)
        self.session = self.store.create_session("s", "tiny", "val", mode="blind_all").id
        self.thresholds = ThresholdStore(
            root / "checkpoint",
            CLASSES,
            dict.fromkeys(CLASSES, 0.5),
            db=db if self.store.folder is None else None,
        )
        self.thresholds.save("shared", dict.fromkeys(CLASSES, 0.3), method="fixed")

    def as_(self, actor: Actor) -> tuple[ReviewStore, ThresholdStore]:
        store = self.store.acting(actor)
        return store, self.thresholds.acting(actor, store.audit)


@pytest.fixture(params=["sqlite", "postgres"])
def site(request, tmp_path) -> Site:
    if request.param == "postgres":
        return Site(tmp_path, request.getfixturevalue("postgres_db"))
    return Site(tmp_path, str(tmp_path / "review"))


def _actions(site: Site, actor: Actor) -> dict[str, Callable[[], object]]:
    store, thresholds = site.as_(actor)
    sid, rows = site.session, [{"image_id": "00000001_000.png", "reviewer": actor.name}]
    return {
        "save a threshold set": lambda: thresholds.save("mine", dict.fromkeys(CLASSES, 0.4)),
        "call a film": lambda: store.record(
            sid, "00000001_000.png", "Atelectasis", finding="present", reviewer=actor.name
        ),
        "reveal a blinded session": lambda: store.reveal(sid, actor.name),
        "start a review session": lambda: store.create_session("new", "tiny", "val"),
        "change a review session": lambda: store.update_filters(sid, {"outcome": "FN"}),
        "adjudicate": lambda: store.adjudicate(sid, "00000001_000.png", "Atelectasis", 1, ""),
        "export verdicts (pseudonymised)": lambda: release_export(store, rows, what="test"),
        "export verdicts with patient identifiers": lambda: release_export(
            store, rows, what="test", identifiable=True
        ),
        "make a threshold set the default": lambda: thresholds.set_active("shared"),
        "add a user": lambda: store.users.add(actor, "newcomer", "viewer"),
        "export the audit log": lambda: store.audit.export_text(
            actor, pseudonymiser=store.pseudonymiser()
        ),
    }


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(ALLOWED))
def test_role_x_action(site, role: str, action: str) -> None:
    actor = Actor(f"{role}-user", role, "password")
    before = len(site.store.audit.entries())
    do = _actions(site, actor)[action]
    if role in ALLOWED[action]:
        do()
        mine = [e for e in site.store.audit.entries() if e.actor == actor.name]
        assert mine, f"{action} by {role} left no audit event"
        assert all(e.role == role and e.via == "password" for e in mine)
    else:
        with pytest.raises(AccessDeniedError, match=rf"^{actor.name} \({role}\) may not .*needs"):
            do()
        assert len(site.store.audit.entries()) == before  # nothing done, nothing recorded
        assert site.store.verdicts(site.session) == []
        assert "mine" not in site.thresholds.names()
        assert site.thresholds.active_name() != "shared"


def test_a_reader_cannot_call_reveal_or_move_as_another(site) -> None:
    alice, _ = site.as_(Actor("alice", "reader", "oidc"))
    for attempt in (
        lambda: alice.record(site.session, "f.png", "Effusion", finding="absent", reviewer="bob"),
        lambda: alice.reveal(site.session, "bob"),
        lambda: alice.save_position(site.session, 3, reviewer="bob", image_id="f.png"),
    ):
        with pytest.raises(AccessDeniedError, match="signed in as alice; .* not as bob"):
            attempt()
    assert site.store.verdicts(site.session) == []
    assert site.store.revealed_at(site.session, "bob") is None
    assert site.store.reader_position(site.session, "bob") is None
    saved = alice.record(site.session, "f.png", "Effusion", finding="absent")  # no name: her own
    assert saved.reviewer == "alice"
    call = site.store.audit.entries(action="call_saved")[0]
    assert (call.actor, call.role, call.film, call.target) == (
        "alice",
        "reader",
        "f.png",
        f"review session {site.session}",
    )
    assert call.detail["reader"] == "alice" and call.detail["call"] == "absent"


def test_the_operator_and_a_local_install_name_any_reader(site) -> None:
    saved = site.store.record(site.session, "f.png", "Effusion", finding="absent", reviewer="bob")
    assert saved.reviewer == "bob"
    call = site.store.audit.entries(action="call_saved")[0]
    assert call.via == "cli" and call.detail["reader"] == "bob"
