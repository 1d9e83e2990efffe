"""``cxr users``, ``cxr audit export`` and ``cxr review export/agreement --as USER``: the operator is an
admin; --as runs with a listed user's role and blinding; exports are pseudonymised by default."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.cli.main import main
from cxr_core.utils.csv_safe import read_table
from tests.checkpoint_fixtures import build_checkpoint_dir

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint_dir(
        tmp_path_factory.mktemp("cli_users") / "checkpoints", "tiny", seed=5, n_cases=16
    )


def _cli(args: list[str], capsys, stdin: str = "", monkeypatch=None) -> tuple[int, str, str]:
    if monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def team(tmp_path, checkpoint):
    """A database with an admin, an adjudicator, a reader and a blinded session the reader called half of."""
    store = ReviewStore(tmp_path / "db")
    for name, role in (("root", "admin"), ("ada", "adjudicator"), ("rita", "reader")):
        store.users.add(store.actor, name, role)
    frame = pd.read_csv(checkpoint / "eval" / "val" / "predictions.csv")
    images = frame["image_id"].astype(str).tolist()
    cls = [c.split(":", 1)[1] for c in frame.columns if c.startswith("prob:")][0]
    session = store.create_session("blind", str(checkpoint), "val", mode="blind_all", classes=[cls])
    for image_id in images[: len(images) // 2]:
        store.record(session.id, image_id, cls, reviewer="rita", finding="present")
    for image_id in images:
        store.record(session.id, image_id, cls, reviewer="ada", finding="absent")
    return store, session, images, cls


def test_users_are_managed_from_the_command_line(tmp_path, capsys, monkeypatch) -> None:
    db = str(tmp_path / "db")
    code, out, _ = _cli(["users", "list", "--db", db], capsys)
    assert code == 0 and "add the first admin" in out
    code, out, _ = _cli(
        ["users", "add", "boss", "--role", "admin", "--password-stdin", "--db", db],
        capsys,
        PASSWORD + "\n",
        monkeypatch,
    )
    assert (code, out.strip()) == (0, "added boss as admin (local account)")
    assert (
        _cli(["users", "add", "a@b.org", "--role", "viewer", "--no-password", "--db", db], capsys)[
            0
        ]
        == 0
    )
    assert (
        _cli(["users", "role", "a@b.org", "reader", "--db", db], capsys)[1].strip()
        == "a@b.org is now reader"
    )
    code, out, _ = _cli(["users", "list", "--db", db], capsys)
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["a@b.org", "reader", "SSO"],
        ["boss", "admin", "password"],
    ]
    assert PASSWORD not in out and "argon2" not in out
    code, _, err = _cli(["users", "remove", "boss", "--db", db], capsys)
    assert code == 2 and "only admin" in err
    code, _, err = _cli(
        ["users", "add", "eve", "--role", "admin", "--no-password", "--db", db, "--as", "a@b.org"],
        capsys,
    )
    assert code == 2 and "a@b.org (reader) may not add, remove or change users" in err
    code, _, err = _cli(
        ["users", "passwd", "boss", "--password-stdin", "--db", db], capsys, "short\n", monkeypatch
    )
    assert code == 2 and "at least 10 characters" in err
    store = ReviewStore(db)
    assert store.users.sign_in("boss", PASSWORD).role == "admin"


def test_review_export_is_pseudonymised_unless_asked_and_allowed(team, tmp_path, capsys) -> None:
    store, session, images, _ = team
    db = str(store.folder)
    out = tmp_path / "export.csv"
    code, printed, _ = _cli(
        ["review", "export", "--db", db, "--session", str(session.id), "--out", str(out)], capsys
    )
    assert code == 0 and "(films pseudonymised)" in printed
    pseudo = store.pseudonymiser()
    exported = set(read_table(out)["image_id"])
    assert exported == {pseudo.pseudonym(i) for i in images}
    assert not exported & set(images)
    plain = tmp_path / "plain.csv"
    args = [
        "review",
        "export",
        "--db",
        db,
        "--session",
        str(session.id),
        "--out",
        str(plain),
        "--identifiable",
    ]
    assert _cli(args, capsys)[0] == 0
    assert set(read_table(plain)["image_id"]) == set(images)


def test_review_export_and_agreement_as_a_user_follow_their_role_and_blinding(
    team, tmp_path, capsys
) -> None:
    store, session, images, cls = team
    db, sid = str(store.folder), str(session.id)
    out = str(tmp_path / "x.csv")
    code, _, err = _cli(
        ["review", "export", "--db", db, "--session", sid, "--out", out, "--as", "rita"], capsys
    )
    assert code == 2 and "rita (reader) may not export review verdicts" in err
    code, _, err = _cli(
        ["review", "agreement", "--db", db, "--session", sid, "--bootstrap", "0", "--as", "rita"],
        capsys,
    )
    assert (
        code == 2
        and f"rita has {len(images) - len(images) // 2} of {len(images)} film(s) still to call"
        in err
    )
    code, printed, _ = _cli(
        ["review", "agreement", "--db", db, "--session", sid, "--bootstrap", "0", "--as", "ada"],
        capsys,
    )
    assert code == 0 and "readers: ada, rita" in printed  # ada called every film
    assert (
        _cli(
            ["review", "export", "--db", db, "--session", sid, "--out", out, "--as", "ada"], capsys
        )[0]
        == 0
    )
    store.reveal(session.id, "rita")
    code, _, _ = _cli(
        ["review", "agreement", "--db", db, "--session", sid, "--bootstrap", "0", "--as", "rita"],
        capsys,
    )
    assert code == 0
    code, _, err = _cli(
        ["review", "export", "--db", db, "--session", sid, "--out", out, "--as", "nobody"], capsys
    )
    assert code == 2 and "there is no user named nobody" in err


def test_audit_export_has_every_step_with_films_pseudonymised(team, tmp_path, capsys) -> None:
    store, session, images, _ = team
    db = str(store.folder)
    store.audit.record(store.actor, "film_viewed", film=images[0])
    out = tmp_path / "x.csv"
    _cli(["review", "export", "--db", db, "--session", str(session.id), "--out", str(out)], capsys)
    audit = tmp_path / "audit.jsonl"
    code, printed, _ = _cli(["audit", "export", "--db", db, "--out", str(audit)], capsys)
    assert code == 0 and "audit event(s)" in printed
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    actions = [e["action"] for e in events]
    assert actions[:3] == ["user_added"] * 3 and actions[-2:] == ["film_viewed", "export"]
    viewed = events[-2]
    assert viewed["film"] == store.pseudonymiser().pseudonym(images[0])
    assert events[-1]["detail"] == {"pseudonymised": True, "rows": len(images) + len(images) // 2}
    code, _, err = _cli(["audit", "export", "--db", db, "--out", str(audit), "--as", "ada"], capsys)
    assert code == 2 and "may not read the audit log" in err
