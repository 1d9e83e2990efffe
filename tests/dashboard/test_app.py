"""Every dashboard page under Streamlit's AppTest, against small real checkpoint directories.

Pages are run from their own files with the checkpoint chosen through session state, exactly as
the sidebar picker sets it.
Numbers shown are checked against scikit-learn.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from streamlit.testing.v1 import AppTest

from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.models.checkpoint import read_model_card
from tests.checkpoint_fixtures import IMAGE_SIZE, build_catalog, build_checkpoint_dir, write_images

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120
SELECTED = "cxr_selected_checkpoint"
READER = "cxr_reader"
VIEW_SET = "cxr_view_set"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dashboard")
    return {**build_catalog(root), "root": root}


@pytest.fixture
def env(catalog, tmp_path, monkeypatch) -> Path:
    """Point the app at the fixture checkpoints, a private review DB and the fixture images."""
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(catalog["root"] / "checkpoints"))
    monkeypatch.setenv("CXR_REVIEW_DIR", str(tmp_path / "review"))
    monkeypatch.setenv("CXR_DATA_ROOT", str(catalog["root"] / "data"))
    return tmp_path


def page(name: str, checkpoint: Path | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app_pages" / f"{name}.py"), default_timeout=TIMEOUT)
    if checkpoint is not None:
        at.session_state[SELECTED] = str(checkpoint.resolve())
    return at


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def element_keys(block) -> set[str]:
    """Keys of every element below ``block`` (charts have no typed accessor in AppTest)."""
    keys = {block.key} if getattr(block, "key", None) else set()
    for child in getattr(block, "children", {}).values():
        keys |= element_keys(child)
    return keys


def shown_table(at: AppTest, column: str) -> pd.DataFrame:
    """The first dataframe shown with ``column`` (AppTest does not expose dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def case_markdown(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Image**"))


def predictions(checkpoint: Path) -> pd.DataFrame:
    return pd.read_csv(checkpoint / "eval" / "val" / "predictions.csv")


def score_anyway(at: AppTest) -> AppTest:
    """Press "Score anyway" for every upload, then show the first one again. The fixture images
    are blobs, not chest films: the input gate's lung check holds their calls back."""
    several = any(box.key == "predict_pick" for box in at.selectbox)
    picks = at.selectbox(key="predict_pick").options if several else [None]
    for pick in picks:
        if pick is not None:
            at.selectbox(key="predict_pick").set_value(pick).run()
        next(b for b in at.button if (b.key or "").startswith("score_anyway_")).click().run()
    if picks[0] is not None:
        at.selectbox(key="predict_pick").set_value(picks[0]).run()
    return at


# --------------------------------------------------------------------------- router


def test_router_lists_every_checkpoint_with_its_summary(env, catalog):
    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    no_exceptions(at)
    picker = at.sidebar.selectbox(key=SELECTED)
    assert picker.options[0] == "⚠ broken (unreadable)"
    assert [o.split(" · ")[:2] for o in picker.options[1:]] == [
        ["tiny_a", "small_cnn"],
        ["tiny_b", "small_cnn"],
        ["tiny_mc", "small_cnn"],
    ]
    assert picker.value == str(
        catalog["tiny_a"].resolve()
    )  # first readable one, not the broken one
    card = read_model_card(catalog["tiny_a"] / "model.safetensors")
    assert any(
        f"val macro AUROC **{card.validation['macro_auroc']:.3f}**" in c.value
        for c in at.sidebar.caption
    )
    assert at.file_uploader(key="predict_files") is not None
    assert "Upload one or more" in at.info[0].value


def test_no_checkpoint_explains_how_to_train(env, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(tmp_path / "empty"))
    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    no_exceptions(at)
    assert any("cxr train --config configs/" in i.value for i in at.info)
    for name in ("performance", "thresholds", "review", "models"):
        at = page(name).run()
        no_exceptions(at)
        assert "cxr train --config configs/" in at.info[0].value


def test_sidebar_adds_a_checkpoint_folder(env, catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(tmp_path / "empty"))
    # The picker alone: after its first run AppTest would run the router's page without it (see module doc).
    at = AppTest.from_string(
        "from dashboard.widgets import model_picker\nmodel_picker()", default_timeout=TIMEOUT
    ).run()
    assert at.sidebar.info[0].value == "No checkpoint found yet."
    at.text_input(key="cxr_new_folder").input(str(tmp_path / "typo")).run()
    at.button(key="cxr_add_folder").click().run()
    no_exceptions(at)
    assert "does not exist" in at.error[0].value
    at.text_input(key="cxr_new_folder").input(str(catalog["tiny_b"])).run()
    at.button(key="cxr_add_folder").click().run()
    no_exceptions(at)
    assert at.sidebar.selectbox(key=SELECTED).value == str(catalog["tiny_b"].resolve())


def test_checkpoint_without_evaluation_says_how_to_evaluate(env, tmp_path, monkeypatch):
    ckpt = build_checkpoint_dir(tmp_path / "ckpts", "fresh", with_eval=False)
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(tmp_path / "ckpts"))
    for name in ("performance", "thresholds", "review"):
        at = page(name, ckpt).run()
        no_exceptions(at)
        assert (
            f"cxr evaluate --checkpoint {ckpt.resolve() / 'model.safetensors'}" in at.info[0].value
        )
    at = page("models", ckpt).run()
    no_exceptions(at)
    assert "second checkpoint" in at.info[0].value


def test_broken_checkpoint_is_an_error_message_not_a_crash(env, catalog):
    at = page("predict", catalog["broken"]).run()
    no_exceptions(at)
    assert "cannot be used" in at.error[0].value and "pickle" in at.error[0].value


# --------------------------------------------------------------------------- predict


def test_predict_bad_file_reported_and_good_files_still_predicted(env, catalog, tmp_path):
    names = write_images(tmp_path / "up", 2, seed=5)
    good = [(n, (tmp_path / "up" / n).read_bytes(), "image/png") for n in names]
    at = page("predict", catalog["tiny_a"]).run()
    at.file_uploader(key="predict_files").set_value(
        [good[0], ("notes.png", b"not an image at all", "image/png"), good[1]]
    )
    score_anyway(at.run())
    no_exceptions(at)
    assert len(at.error) == 1 and "notes.png" in at.error[0].value
    table = shown_table(at, "highest finding")
    assert table["outcome"].tolist() == ["out of domain · scored anyway"] * 2
    assert list(table["file"]) == names
    # the summary text follows the Predictor's own probabilities at the card's 0.5 thresholds
    from cxr_core.data.imaging import load_image
    from cxr_core.inference.findings import summarise_findings
    from cxr_core.inference.predictor import Predictor
    from dashboard.reading import call_text, top_findings_text

    predictor = Predictor.from_checkpoint(catalog["tiny_a"] / "model.safetensors")
    expected = predictor.predict([load_image(b, name=n) for n, b, _ in good], score_anyway=True)
    for row, pred in zip(table.itertuples(index=False), expected):
        summary = summarise_findings(pred, multilabel=True)
        assert row.findings == top_findings_text(summary) and row.call == call_text(summary)
        assert [f.name for f in summary.positives] == [
            c for c in sorted(pred.positive, key=lambda c: -pred.probabilities[c])
        ]
    assert at.download_button(key="predict_csv") is not None
    ident = f"0_{_digest(good[0][1])}"
    first = summarise_findings(expected[0], multilabel=True)
    assert (
        at.selectbox(key=f"cam_class_{ident}").value == first.findings[0].name
    )  # the top finding is explained
    method = at.selectbox(key=f"cam_method_{ident}")
    assert (
        method.value == "gradcam++" and len(method.options) == 6
    )  # a 64-px CNN: Score-CAM is quick enough
    assert all(
        label.split(" (")[1].endswith(" s)") for label in method.options
    )  # each with its estimate
    assert at.slider(key=f"cam_level_{ident}").value == 0.5  # contour overlay by default
    assert at.selectbox(key="predict_pick").options == [f"1. {names[0]}", f"2. {names[1]}"]


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(data).hexdigest()[:12]


def test_predict_multiclass_calls_the_most_probable_class(env, catalog, tmp_path):
    names = write_images(tmp_path / "up", 1, seed=7)
    at = page("predict", catalog["tiny_mc"]).run()
    at.file_uploader(key="predict_files").set_value(
        (names[0], (tmp_path / "up" / names[0]).read_bytes(), "image/png")
    )
    score_anyway(at.run())
    no_exceptions(at)
    row = shown_table(at, "highest finding").iloc[0]
    markdown = " ".join(m.value for m in at.markdown)
    top = row["call"].split(" (")[0]
    assert (
        top in ("Normal", "Pneumonia")
        and "**Most probable: :" in markdown
        and f"[{top}]**" in markdown
    )
    p_top = float(row["call"].split("(")[1].split(")")[0])
    assert p_top >= 0.5  # two classes: the most probable has at least half the probability


def test_predict_uses_the_active_threshold_set(env, catalog, tmp_path):
    store_dir = catalog["tiny_b"]
    from cxr_core.artifacts.catalog import read_entry

    store = read_entry(store_dir).threshold_store()
    store.save("everything", dict.fromkeys(store.classes, 0.0))
    store.set_active("everything")
    try:
        names = write_images(tmp_path / "up", 1, seed=9)
        at = page("predict", store_dir).run()
        at.file_uploader(key="predict_files").set_value(
            (names[0], (tmp_path / "up" / names[0]).read_bytes(), "image/png")
        )
        score_anyway(at.run())
        no_exceptions(at)
        assert (
            shown_table(at, "highest finding")["call"].item()
            == f"{len(store.classes)} findings called"
        )
        assert "everything" in at.caption[0].value
    finally:
        store.set_active("card")
        (store_dir / "thresholds" / "activations.jsonl").unlink()


# --------------------------------------------------------------------------- performance


def test_performance_numbers_match_sklearn(env, catalog):
    at = page("performance", catalog["tiny_a"]).run()
    no_exceptions(at)
    frame = predictions(catalog["tiny_a"])
    classes = ["Atelectasis", "Cardiomegaly", "Pleural Effusion"]
    aurocs = []
    for cls in classes:
        known = frame[f"label:{cls}"].notna()
        aurocs.append(
            roc_auc_score(frame.loc[known, f"label:{cls}"], frame.loc[known, f"prob:{cls}"])
        )
    assert metric(at, "Macro AUROC") == f"{np.mean(aurocs):.3f}"
    table = shown_table(at, "auroc")
    assert list(table["class"][:3]) == classes
    first = frame[frame["label:Atelectasis"].notna()]
    sens = recall_score(first["label:Atelectasis"], first["prob:Atelectasis"] >= 0.5)
    assert table["sensitivity"][0].startswith(f"{sens:.3f} (")  # value plus its 95% CI
    assert {"perf_roc", "perf_pr", "perf_calibration", "perf_loss"} <= element_keys(at.main)
    assert at.download_button(key="perf_csv") is not None


def test_performance_defaults_to_the_out_of_fold_report(env, tmp_path, monkeypatch):
    """The table opens on report.json's cross-fitted operating points; the in-sample recomputation
    at the card's thresholds stays one click away, with its caveat."""
    from cxr_core.evaluation.run import score_predictions, write_evaluation

    ckpt = build_checkpoint_dir(tmp_path / "ckpts", "crossfitted", n_cases=120, seed=5)
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(tmp_path / "ckpts"))
    frame = predictions(ckpt)
    card = read_model_card(ckpt / "model.safetensors")
    report = score_predictions(frame, card, n_boot=30, seed=0, thresholds="max_f1", split="val")
    assert report["thresholds_from"] == "val:crossfit-5"
    write_evaluation(ckpt / "eval" / "val", frame, report)
    cls = "Atelectasis"
    known = frame[frame[f"label:{cls}"].notna()]
    in_sample = recall_score(known[f"label:{cls}"], known[f"prob:{cls}"] >= card.thresholds[cls])
    out_of_fold = report["per_class"][cls]["sensitivity"]
    assert (
        f"{in_sample:.3f}" != f"{out_of_fold:.3f}"
    )  # otherwise the test could not tell the two apart

    at = page("performance", ckpt).run()
    no_exceptions(at)
    radio = at.radio(key="perf_threshold_source")
    assert radio.value == "as evaluated (report.json)" and len(radio.options) == 2
    assert (
        shown_table(at, "auroc")
        .set_index("class")
        .loc[cls, "sensitivity"]
        .startswith(f"{out_of_fold:.3f} (")
    )
    notes = " ".join(c.value for c in at.caption)
    assert "are out of sample" in notes and "in sample" not in notes.replace("out of sample", "")

    radio.set_value(radio.options[1]).run()
    no_exceptions(at)
    assert (
        shown_table(at, "auroc")
        .set_index("class")
        .loc[cls, "sensitivity"]
        .startswith(f"{in_sample:.3f} (")
    )
    assert any(
        "applied to the same cases they were fitted on — in sample" in c.value for c in at.caption
    )


def test_performance_multiclass_shows_confusion_matrix(env, catalog):
    at = page("performance", catalog["tiny_mc"]).run()
    no_exceptions(at)
    assert any(h.value == "Confusion matrix" for h in at.subheader)
    report = json.loads((catalog["tiny_mc"] / "eval" / "val" / "report.json").read_text())
    assert f"accuracy {report['multiclass']['accuracy']:.3f}" in " ".join(
        c.value for c in at.caption
    )


# --------------------------------------------------------------------------- thresholds


def test_threshold_slider_updates_counts_and_metrics(env, catalog):
    at = page("thresholds", catalog["tiny_a"]).run()
    no_exceptions(at)
    frame = predictions(catalog["tiny_a"])
    labels, probs = frame["label:Atelectasis"], frame["prob:Atelectasis"]
    assert metric(at, "Sensitivity") == f"{recall_score(labels, probs >= 0.5):.3f}"
    at.slider(key="thr::tiny_a::Atelectasis").set_value(0.62).run()
    no_exceptions(at)
    assert metric(at, "Sensitivity") == f"{recall_score(labels, probs >= 0.62):.3f}"
    assert metric(at, "PPV") == f"{precision_score(labels, probs >= 0.62):.3f}"
    assert metric(at, "Called positive") == str(int((probs >= 0.62).sum()))
    row = shown_table(at, "n_pos").iloc[0]
    assert row["threshold"] == pytest.approx(0.62)
    assert row["tp"] == int(((probs >= 0.62) & (labels == 1)).sum())


def test_threshold_preset_save_and_activate(env, catalog):
    ckpt = catalog["tiny_b"]
    at = page("thresholds", ckpt).run()
    at.selectbox(key="thr_preset").set_value("sensitivity").run()
    at.number_input(key="thr_target").set_value(0.9).run()
    at.button(key="thr_apply").click().run()
    no_exceptions(at)
    frame = predictions(ckpt)
    for cls in ("Atelectasis", "Cardiomegaly", "Pleural Effusion"):
        known = frame[f"label:{cls}"].notna()
        value = at.slider(key=f"thr::tiny_b::{cls}").value
        assert (
            recall_score(frame.loc[known, f"label:{cls}"], frame.loc[known, f"prob:{cls}"] >= value)
            >= 0.9
        )
    at.text_input(key="thr_save_name").input("screening").run()
    at.button(key="thr_save").click().run()
    no_exceptions(at)
    saved = json.loads((ckpt / "thresholds" / "screening.json").read_text())
    assert saved["thresholds"]["Atelectasis"] == pytest.approx(
        at.slider(key="thr::tiny_b::Atelectasis").value
    )
    assert "sensitivity" in saved["method"].lower()
    at.selectbox(key="thr_pick").set_value("screening").run()
    assert at.button(
        key="thr_activate"
    ).disabled  # no reader named yet: the change could not be logged
    at.session_state[READER] = "Dr A"
    at.run()
    at.button(key="thr_activate").click().run()
    no_exceptions(at)
    assert (ckpt / "thresholds" / "active.txt").read_text().strip() == "screening"
    assert (
        "Model default: **screening** · in force in this browser: **screening**"
        in at.caption[0].value
    )
    entry = [
        json.loads(line)
        for line in (ckpt / "thresholds" / "activations.jsonl").read_text().splitlines()
    ][-1]
    assert (entry["by"], entry["from"], entry["to"]) == ("Dr A", "card", "screening")
    audit = shown_table(at, "By")
    assert audit.iloc[0].tolist()[1:] == ["Dr A", "card", "screening"]
    at.selectbox(key="thr_cmp_a").set_value("card").run()
    at.selectbox(key="thr_cmp_b").set_value("screening").run()
    compared = shown_table(at, "sensitivity (second)")
    assert list(compared.columns[:4]) == ["class", "card", "screening", "difference"]
    assert (compared["sensitivity (second)"] >= 0.9).all()
    (ckpt / "thresholds" / "active.txt").unlink()
    (ckpt / "thresholds" / "activations.jsonl").unlink()


def test_viewing_a_threshold_set_is_per_browser_session(env, catalog, tmp_path):
    ckpt = catalog["tiny_b"]
    from cxr_core.artifacts.catalog import read_entry

    store = read_entry(ckpt).threshold_store()
    store.save("everything", dict.fromkeys(store.classes, 0.0))
    try:
        mine = page("thresholds", ckpt).run()
        mine.selectbox(key="thr_pick").set_value("everything").run()
        mine.button(key="thr_view").click().run()
        no_exceptions(mine)
        assert "in force in this browser: **everything**" in mine.caption[0].value
        assert store.active_name() == "card" and store.activations() == []
        names = write_images(tmp_path / "up", 1, seed=9)
        upload = (names[0], (tmp_path / "up" / names[0]).read_bytes(), "image/png")
        predict_mine = page("predict", ckpt)
        predict_mine.session_state[VIEW_SET] = mine.session_state[VIEW_SET]
        predict_mine.run()
        predict_mine.file_uploader(key="predict_files").set_value(upload)
        predict_mine.run()
        assert "everything" in predict_mine.caption[0].value
        other = page("predict", ckpt).run()  # another browser: still the model's default
        other.file_uploader(key="predict_files").set_value(upload)
        other.run()
        assert "card" in other.caption[0].value
    finally:
        (ckpt / "thresholds" / "everything.json").unlink()


def test_multiclass_model_has_no_thresholds_to_tune(env, catalog):
    at = page("thresholds", catalog["tiny_mc"]).run()
    no_exceptions(at)
    assert "multiclass" in at.info[0].value


# --------------------------------------------------------------------------- review


def film_markdown(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Image**"))


def start_session(at: AppTest, name: str, mode: str, classes: list[str] | None = None) -> AppTest:
    at.text_input(key="rev_new_name").input(name)
    at.selectbox(key="rev_new_mode").set_value(mode)
    if classes is not None:
        at.multiselect(key="rev_new_classes").set_value(classes)
    at.run()
    at.button(key="rev_start").click().run()
    no_exceptions(at)
    return at


def call(at: AppTest, class_name: str, value: str, confidence: int | None = None) -> None:
    radio = next(
        r for r in at.radio if r.key.startswith("rev_call@") and r.key.endswith(f"@{class_name}")
    )
    radio.set_value(value)
    if confidence is not None:
        next(
            s for s in at.selectbox if s.key == radio.key.replace("rev_call@", "rev_conf@")
        ).set_value(confidence)


def press(at: AppTest, label: str) -> AppTest:
    at.button[[b.label for b in at.button].index(label)].click().run()
    no_exceptions(at)
    return at


def as_reader(name: str, checkpoint: Path) -> AppTest:
    at = page("review", checkpoint)
    at.session_state[READER] = name
    return at


def test_review_two_readers_never_overwrite_each_other(env, catalog):
    at = as_reader("AB", catalog["tiny_a"]).run()
    no_exceptions(at)
    assert not at.warning  # named reader, images reachable through CXR_DATA_ROOT
    start_session(at, "chest team", "unblinded", ["Atelectasis", "Cardiomegaly"])
    store = ReviewStore(env / "review")
    (session,) = store.sessions()
    assert (session.mode, session.classes) == ("unblinded", ("Atelectasis", "Cardiomegaly"))
    assert set(session.filters["thresholds"]) == {"Atelectasis", "Cardiomegaly", "Pleural Effusion"}
    calls = [r for r in at.radio if r.key.startswith("rev_call@")]
    assert len(calls) == 2 and all(r.value is None for r in calls)  # nothing pre-selected
    first = film_markdown(at).split("`")[1]
    call(at, "Atelectasis", "present", confidence=4)
    press(at, "Save and next")  # Cardiomegaly not called: stays on the film
    assert first in film_markdown(at) and "still to call" in at.error[0].value
    call(at, "Cardiomegaly", "absent")
    press(at, "Save and next")
    assert first not in film_markdown(at)
    assert "1 of" in at.get("progress")[0].proto.text
    mine = {v.class_name: v for v in store.verdicts(session.id, reviewer="AB")}
    assert (mine["Atelectasis"].finding, mine["Atelectasis"].confidence) == ("present", 4)
    assert mine["Atelectasis"].verdict in {"agree", "model_wrong", "label_wrong"}
    assert store.reader_position(session.id, "AB") == (
        1,
        store.reader_position(session.id, "AB")[1],
    )

    other = as_reader(
        "CD", catalog["tiny_a"]
    ).run()  # a second browser, another reader, same session
    other.selectbox(key="rev_session_pick").set_value(session.id).run()
    no_exceptions(other)
    assert first in film_markdown(other)  # CD starts at their own position
    assert all(
        r.value is None for r in other.radio if r.key.startswith("rev_call@")
    )  # AB's calls not shown
    call(other, "Atelectasis", "unsure")
    call(other, "Cardiomegaly", "absent")
    press(other, "Save")
    both = {
        v.reviewer: v.finding
        for v in store.verdicts(session.id)
        if v.image_id == first and v.class_name == "Atelectasis"
    }
    assert both == {"AB": "present", "CD": "unsure"}
    assert "✓ reviewed by you" in film_markdown(other)
    assert any("your call **Unsure**" in c.value for c in other.caption)
    call(other, "Atelectasis", "absent")  # CD changes their own call; history keeps both
    press(other, "Save")
    assert [v.finding for v in store.history(session.id, first, "Atelectasis", "CD")] == [
        "unsure",
        "absent",
    ]
    assert store.verdict(session.id, first, "Atelectasis", "AB").finding == "present"

    other.radio(key="rev_view").set_value("Agreement").run()
    no_exceptions(other)
    assert not [
        b for b in other.button if b.key == "rev_reveal"
    ]  # unblinded: open after one film, as before
    table = shown_table(other, "Between")
    assert (
        "AB vs CD" in table["Between"].tolist()
        and "AB vs dataset label" in table["Between"].tolist()
    )
    csv_text = other.get("download_button")[0].proto.label
    assert "Export" in csv_text
    rows = store.export_rows(session.id)
    assert {r["reviewer"] for r in rows} == {"AB", "CD"}

    fresh = as_reader("AB", catalog["tiny_a"]).run()  # AB reloads: resumes on their second film
    fresh.selectbox(key="rev_session_pick").set_value(session.id).run()
    assert first not in film_markdown(fresh)
    fresh.selectbox(key="rev_order").set_value(
        "lowest probability first"
    ).run()  # a filter change keeps the film
    no_exceptions(fresh)
    assert store.reader_position(session.id, "AB")[1] in film_markdown(fresh)


def test_review_blinded_mode_reveals_after_saving(env, catalog):
    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "blind", "blind_all", ["Atelectasis"])
    text = " ".join(m.value for m in at.markdown)
    assert "model 0." not in text and "label " not in text
    assert not [s for s in at.selectbox if s.key == "rev_method"]  # no heatmap either
    assert not [s for s in at.selectbox if s.key == "rev_focus"]  # no outcome filters
    at.select_slider(key="rev_zoom").set_value(2.0).run()
    no_exceptions(at)
    assert (
        at.select_slider(key="rev_zoom").value == 2.0 and not at.slider(key="rev_zoom_x").disabled
    )
    call(at, "Atelectasis", "present")
    press(at, "Save")
    text = " ".join(m.value for m in at.markdown)
    assert "model 0." in text and ("label present" in text or "label absent" in text)

    lab = as_reader("CD", catalog["tiny_a"]).run()
    start_session(lab, "labels hidden", "blind_labels", ["Atelectasis"])
    text = " ".join(m.value for m in lab.markdown)
    assert "model 0." in text and "label " not in text


REVEAL = "Reveal labels and model output (ends your blinded reading in this session)"
SESSION_VIEWS = ("Agreement", "Adjudicate", "Corrected metrics")


def page_text(at: AppTest) -> str:
    return " ".join(
        e.value for kind in (at.markdown, at.caption, at.info, at.warning, at.error) for e in kind
    )


def assert_closed(at: AppTest, left: int, films: int) -> None:
    """Every session view shows why it is closed and the reader's films left, and nothing of any film."""
    for name in SESSION_VIEWS:
        at.radio(key="rev_view").set_value(name).run()
        no_exceptions(at)
        text = page_text(at)
        assert "Closed while you read blinded" in at.info[0].value, name
        assert f"You have **{left} of {films} films** left to read" in at.info[0].value, name
        assert not at.dataframe and not at.get("download_button") and not at.get("plotly_chart"), (
            name
        )
        for hidden in ("dataset label **", "model **", "Corrected label"):
            assert hidden not in text, (name, hidden)
        assert (
            at.button(key="rev_reveal").label == REVEAL and not at.button(key="rev_reveal").disabled
        )


def test_review_blinded_session_views_open_only_after_a_reveal(env, catalog):
    store = ReviewStore(env / "review")
    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "blind", "blind_all", ["Atelectasis"])
    (session,) = store.sessions()
    films = sorted(
        {
            str(f)
            for f in predictions(catalog["tiny_a"]).dropna(subset=["label:Atelectasis"])["image_id"]
        }
    )
    first = film_markdown(at).split("`")[1]
    call(at, "Atelectasis", "present")
    press(at, "Save")
    store.record(
        session.id, first, "Atelectasis", reviewer="CD", finding="present"
    )  # another reader's call
    assert_closed(at, len(films) - 1, len(films))
    assert store.revealed_at(session.id, "AB") is None

    press(at, REVEAL)  # still on Corrected metrics
    when = store.revealed_at(session.id, "AB")
    assert when is not None and shown_table(at, "Corrected labels").iloc[0]["Finding"].startswith(
        "Atelectasis"
    )
    assert "Open to you since you revealed the labels and model output on" in page_text(at)
    at.radio(key="rev_view").set_value("Agreement").run()
    assert "AB vs CD" in shown_table(at, "Between")["Between"].tolist() and at.get(
        "download_button"
    )

    at.radio(key="rev_view").set_value("Read").run()
    press(
        at, "Next unreviewed"
    )  # a film AB had not read: shown, but a call on it could not be blinded
    text = page_text(at)
    assert "You revealed the labels and model output of this session on" in text
    assert "model 0." in text and ("label present" in text or "label absent" in text)
    assert next(r for r in at.radio if r.key.startswith("rev_call@")).disabled
    assert at.button(key="rev_save").disabled and at.button(key="rev_save_next").disabled
    picker = at.selectbox(key="rev_film_pick")
    picker.set_value(next(i for i, label in enumerate(picker.options) if first in label)).run()
    assert (
        first in film_markdown(at) and not at.button(key="rev_save").disabled
    )  # own earlier call: may change
    call(at, "Atelectasis", "absent")
    press(at, "Save")
    assert [v.finding for v in store.history(session.id, first, "Atelectasis", "AB")] == [
        "present",
        "absent",
    ]

    again = as_reader("AB", catalog["tiny_a"]).run()  # a reload: the reveal is in the database
    again.selectbox(key="rev_session_pick").set_value(session.id).run()
    again.radio(key="rev_view").set_value("Adjudicate").run()
    no_exceptions(again)
    assert shown_table(again, "Readers' calls")["Film"].tolist() == [first]
    other = as_reader("CD", catalog["tiny_a"]).run()  # per reader: CD is still blinded
    other.selectbox(key="rev_session_pick").set_value(session.id).run()
    assert_closed(other, len(films) - 1, len(films))
    nobody = page(
        "review", catalog["tiny_a"]
    ).run()  # no reader name: closed, and nobody to reveal for
    nobody.selectbox(key="rev_session_pick").set_value(session.id).run()
    nobody.radio(key="rev_view").set_value("Agreement").run()
    assert (
        "Enter your name as **Reader**" in nobody.info[0].value
        and nobody.button(key="rev_reveal").disabled
    )


def test_review_blinded_session_views_open_once_every_film_is_read(env, catalog):
    store = ReviewStore(env / "review")
    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "labels hidden", "blind_labels", ["Atelectasis", "Cardiomegaly"])
    (session,) = store.sessions()
    last = film_markdown(at).split("`")[1]
    frame = predictions(catalog["tiny_a"])
    known = {
        c: set(frame.loc[frame[f"label:{c}"].notna(), "image_id"].astype(str))
        for c in ("Atelectasis", "Cardiomegaly")
    }
    films = sorted(known["Atelectasis"] | known["Cardiomegaly"])
    for film in films:
        for class_name in ("Atelectasis", "Cardiomegaly"):
            if film != last and film in known[class_name]:
                store.record(session.id, film, class_name, reviewer="AB", finding="absent")
    assert_closed(at, 1, len(films))
    at.radio(key="rev_view").set_value("Read").run()
    for class_name in ("Atelectasis", "Cardiomegaly"):
        call(at, class_name, "present")
    press(at, "Save")
    at.radio(key="rev_view").set_value("Agreement").run()
    no_exceptions(at)
    assert "Open to you: you have saved your calls on every film" in page_text(at)
    assert "AB vs dataset label" in shown_table(at, "Between")["Between"].tolist() and at.get(
        "download_button"
    )
    assert store.revealed_at(session.id, "AB") is None  # opened by reading, not by a reveal


def test_review_needs_a_reader_name(env, catalog):
    at = page("review", catalog["tiny_a"]).run()
    start_session(at, "anon", "unblinded", ["Atelectasis"])
    assert "Reader" in at.warning[0].value
    assert at.button[[b.label for b in at.button].index("Save")].disabled


def test_review_adjudication_and_corrected_metrics(env, catalog):
    store = ReviewStore(env / "review")
    a = as_reader("A", catalog["tiny_a"]).run()
    start_session(a, "adj", "blind_all", ["Atelectasis"])
    (session,) = store.sessions()
    film = film_markdown(a).split("`")[1]
    for reader, value in (("A", "present"), ("B", "absent")):
        at = as_reader(reader, catalog["tiny_a"]).run()
        at.selectbox(key="rev_session_pick").set_value(session.id).run()
        call(at, "Atelectasis", value)
        press(at, "Save")
    at.radio(key="rev_view").set_value("Adjudicate").run()
    press(at, REVEAL)  # B adjudicates before reading the other films
    listed = shown_table(at, "Readers' calls")
    assert (
        listed.iloc[0]["Readers' calls"] == "A: present, B: absent"
        and listed.iloc[0]["Majority"] == "tie"
    )
    at.radio(key="rev_adj_label").set_value("present")
    press(at, "Record final label")
    (decided,) = store.adjudications(session.id)
    assert (decided.image_id, decided.label, decided.adjudicator) == (film, 1, "B")
    at.radio(key="rev_view").set_value("Corrected metrics").run()
    no_exceptions(at)
    table = shown_table(at, "Corrected labels")
    atelectasis = table[table["Finding"].str.startswith("Atelectasis")].set_index("Metric")
    frame = predictions(catalog["tiny_a"])
    known = frame["label:Atelectasis"].notna()
    assert float(atelectasis.loc["AUROC", "Original labels"]) == pytest.approx(
        roc_auc_score(frame.loc[known, "label:Atelectasis"], frame.loc[known, "prob:Atelectasis"]),
        abs=5e-4,
    )
    truth = frame.set_index("image_id").loc[film, "label:Atelectasis"]
    changed = 0 if truth == 1 else 1
    assert f"{changed} label(s) changed" in atelectasis["Finding"].iloc[0]
    positives = atelectasis.loc["Positives"]
    assert int(positives["Corrected labels"]) - int(positives["Original labels"]) == changed


def plotly_traces(at: AppTest, key_prefix: str) -> list[dict]:
    """The traces of the first Plotly chart whose element id carries ``key_prefix`` (AppTest has no accessor),
    with x and y as lists (Plotly sends numpy arrays as base64 typed arrays)."""
    import base64

    chart = next(c for c in at.get("plotly_chart") if key_prefix in c.proto.id)
    traces = json.loads(chart.proto.spec)["data"]
    for trace in traces:
        for axis in ("x", "y"):
            if isinstance(trace.get(axis), dict):
                encoded = trace[axis]
                trace[axis] = np.frombuffer(
                    base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"]
                ).tolist()
    return traces


def where_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("Where:")]


def test_review_mark_on_the_film_is_saved_with_the_call_and_drawn(env, catalog):
    """The viewer's click/drag callback leaves an unsaved mark in session state; Save stores it with the call."""
    from dashboard.marks import Mark

    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "where", "blind_all", ["Atelectasis", "Cardiomegaly"])
    store = ReviewStore(env / "review")
    (session,) = store.sessions()
    film = film_markdown(at).split("`")[1]
    form_key = f"{session.id}@AB@{film}"
    assert (
        at.selectbox(key="rev_mark_class").value == "Atelectasis"
        and at.radio(key="rev_mark_by").value == "point"
    )
    traces = plotly_traces(at, "rev_where")
    assert [t["type"] for t in traces] == [
        "image",
        "scatter",
    ]  # the film and its click grid, no mark yet
    at.session_state["rev_marks"] = {
        (form_key, "Atelectasis"): Mark(point=(0.25, 0.75)),
        (form_key, "Cardiomegaly"): Mark(box=(0.5, 0.1, 0.9, 0.4)),
    }
    at.run()
    assert where_captions(at) == [
        "Where: point 25% across, 75% down · not saved yet",
        "Where: box 50–90% across, 10–40% down · not saved yet",
    ]
    call(at, "Atelectasis", "present")
    call(at, "Cardiomegaly", "absent")
    press(at, "Save")
    mine = {v.class_name: v for v in store.verdicts(session.id, reviewer="AB")}
    assert (mine["Atelectasis"].point, mine["Atelectasis"].box) == ((0.25, 0.75), None)
    assert (mine["Cardiomegaly"].point, mine["Cardiomegaly"].box) == (None, (0.5, 0.1, 0.9, 0.4))
    assert where_captions(at) == [
        "Where: point 25% across, 75% down",
        "Where: box 50–90% across, 10–40% down",
    ]
    traces = plotly_traces(at, "rev_where")
    width = IMAGE_SIZE  # the fixture films are square
    assert len(traces[1]["x"]) == 64 * 64 and max(traces[1]["x"]) < width
    drawn = {t["name"]: t for t in traces[2:]}
    assert set(drawn) == {"Atelectasis", "Cardiomegaly"}
    assert (
        drawn["Atelectasis"]["x"] == [0.25 * width]
        and drawn["Atelectasis"]["marker"]["line"]["dash"] == "solid"
    )
    at.button(key="rev_clear_mark").click().run()  # clears the focused finding's mark (Atelectasis)
    assert where_captions(at)[0] == "Where: mark cleared, saved without one"
    press(at, "Save")
    assert store.verdict(session.id, film, "Atelectasis", "AB").point is None
    assert [v.point for v in store.history(session.id, film, "Atelectasis", "AB")] == [
        (0.25, 0.75),
        None,
    ]
    assert store.verdict(session.id, film, "Cardiomegaly", "AB").box == (0.5, 0.1, 0.9, 0.4)  # kept


def test_review_adjudication_shows_the_film_with_each_readers_mark(env, catalog):
    store = ReviewStore(env / "review")
    at = as_reader("ADJ", catalog["tiny_a"]).run()
    start_session(at, "marks", "blind_all", ["Atelectasis", "Cardiomegaly"])
    (session,) = store.sessions()
    film = film_markdown(at).split("`")[1]
    for cls in ("Atelectasis", "Cardiomegaly"):
        store.record(
            session.id, film, cls, reviewer="A", finding="present", confidence=4, point=(0.25, 0.5)
        )
        store.record(
            session.id,
            film,
            cls,
            reviewer="B",
            finding="absent",
            box=(0.5, 0.5, 0.75, 0.75),
            note="clear",
        )
    at.radio(key="rev_view").set_value("Adjudicate").run()
    press(at, REVEAL)  # an adjudicator who never reads
    assert at.selectbox(key="rev_adj_pick").options == [
        f"{film} · Atelectasis",
        f"{film} · Cardiomegaly",
    ]
    calls_shown = shown_table(at, "Where")
    assert calls_shown[["Reader", "Call", "Confidence", "Where"]].values.tolist() == [
        ["A", "Present", "4", "point 25% across, 50% down"],
        ["B", "Absent", "—", "box 50–75% across, 50–75% down"],
    ]
    traces = plotly_traces(at, "rev_adj_film")
    assert [t["type"] for t in traces] == [
        "image",
        "scatter",
        "scatter",
    ]  # no click grid: nothing to select here
    marks_by = {t["name"]: t for t in traces[1:]}
    quarter = IMAGE_SIZE / 4
    assert marks_by["A"]["x"] == [quarter] and marks_by["B"]["x"] == [
        2 * quarter,
        3 * quarter,
        3 * quarter,
        2 * quarter,
        2 * quarter,
    ]
    assert (
        "A: Present · confidence 4" in marks_by["A"]["hovertext"]
        and "clear" in marks_by["B"]["hovertext"]
    )
    # the second finding is picked, then decided: the adjudication lands on it, not on the first one listed
    at.selectbox(key="rev_adj_pick").set_value(1).run()
    at.radio(key="rev_adj_label").set_value("present")
    press(at, "Record final label")
    assert [(a.class_name, a.label, a.adjudicator) for a in store.adjudications(session.id)] == [
        ("Cardiomegaly", 1, "ADJ")
    ]


def test_review_migrated_verdicts_show_under_an_explicit_reader_name(env, catalog):
    """A single-reader database (empty reader names) on this checkpoint: its verdicts appear, named, everywhere."""
    from cxr_core.artifacts.review_store import LEGACY_READER
    from tests.review_fixtures import old_database

    frame = predictions(catalog["tiny_a"])
    films = frame["image_id"].astype(str).tolist()[:6]
    old = ["agree" if i % 2 else "model_wrong" for i in range(6)]
    old_database(
        env / "review",
        "INSERT INTO sessions (name, checkpoint, eval_run, filters, created, position) VALUES "
        f"('before readers', '{catalog['tiny_a'].resolve()}', 'val', '{{}}', '2026-12-01T20:05:11.120+00:00', 0);"
        "INSERT INTO verdicts VALUES "
        + ", ".join(
            f"(1, '{f}', 'Atelectasis', '{v}', '', '', '2026-12-01T20:1{i}:00.000+00:00')"
            for i, (f, v) in enumerate(zip(films, old))
        )
        + ";",
    )
    store = ReviewStore(env / "review")
    for f in films:
        store.record(1, f, "Atelectasis", reviewer="CD", finding="present")
    at = as_reader("CD", catalog["tiny_a"]).run()
    at.selectbox(key="rev_session_pick").set_value(1).run()
    no_exceptions(at)
    assert f"readers so far: CD, {LEGACY_READER}" in " ".join(c.value for c in at.caption)
    at.radio(key="rev_view").set_value("Agreement").run()
    no_exceptions(at)
    between = shown_table(at, "Between")["Between"].tolist()
    assert f"CD vs {LEGACY_READER}" in between and f"{LEGACY_READER} vs dataset label" in between
    at.radio(key="rev_view").set_value("Adjudicate").run()
    no_exceptions(at)
    listed = shown_table(at, "Readers' calls")
    assert (
        len(listed) >= 1
        and listed["Readers' calls"].str.contains(f"{LEGACY_READER}: ", regex=False).all()
    )
    assert LEGACY_READER in shown_table(at, "Where")["Reader"].tolist()


def test_review_without_reachable_images_says_how_to_fix(env, catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DATA_ROOT", str(tmp_path / "nowhere"))
    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "no images", "unblinded")
    no_exceptions(at)
    assert "not reachable" in at.warning[0].value and "Data root" in at.warning[0].value


# --------------------------------------------------------------------------- models


def test_models_page_cards_and_comparison(env, catalog):
    at = page("models", catalog["tiny_a"]).run()
    no_exceptions(at)
    overview = shown_table(at, "architecture")
    assert list(overview["name"]) == ["broken", "tiny_a", "tiny_b", "tiny_mc"]
    assert "pickle" in overview.loc[overview["name"] == "broken", "error"].item()
    assert metric(at, "Architecture") == "small_cnn"
    table = shown_table(at, "difference")
    report_a = json.loads((catalog["tiny_a"] / "eval" / "val" / "report.json").read_text())
    report_b = json.loads((catalog["tiny_b"] / "eval" / "val" / "report.json").read_text())
    for row in table.itertuples(index=False):
        assert row.tiny_a == pytest.approx(report_a["per_class"][row[0]]["auroc"])
        assert row.difference == pytest.approx(
            report_b["per_class"][row[0]]["auroc"] - report_a["per_class"][row[0]]["auroc"]
        )
    at.selectbox(key="models_cmp_b").set_value("tiny_mc").run()
    no_exceptions(at)
    assert any("share no classes" in w.value for w in at.warning)
    # fixture cards record no dataset manifest, so no comparison is presented as like-for-like
    assert any("Not a like-for-like comparison" in w.value for w in at.warning)


def test_predict_shows_each_uploads_outcome_and_why(env, catalog, tmp_path):
    import io

    import numpy as np
    from PIL import Image

    from tests.inference.test_gate import _dicom

    names = write_images(tmp_path / "up", 1, seed=11)
    blank = io.BytesIO()
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(blank, format="PNG")
    _dicom(tmp_path / "head.dcm", Modality="CT", BodyPartExamined="HEAD")
    uploads = [
        (names[0], (tmp_path / "up" / names[0]).read_bytes(), "image/png"),
        ("blank.png", blank.getvalue(), "image/png"),
        ("head.dcm", (tmp_path / "head.dcm").read_bytes(), "application/dicom"),
    ]
    at = page("predict", catalog["tiny_a"]).run()
    at.file_uploader(key="predict_files").set_value(uploads)
    at.run()
    no_exceptions(at)
    table = shown_table(at, "warnings")
    assert list(table["file"]) == [names[0], "blank.png", "head.dcm"]
    assert table["outcome"].tolist() == ["out of domain", "refused", "refused"]
    # the synthetic blob is no chest film: the lung check's sentence is why its calls are withheld
    assert table["call"].tolist() == ["withheld (out of domain)", "refused", "refused"]
    assert table["warnings"][0].startswith(
        "This image does not look like a frontal chest radiograph"
    )
    assert "blank.png: the image is blank" in table["warnings"][1]
    assert "Modality is CT" in table["warnings"][2]
    assert any("Out of domain." in w.value for w in at.warning)
    assert at.button(key=f"score_anyway_0_{_digest(uploads[0][1])}") is not None
    at.selectbox(key="predict_pick").set_value(
        "3. head.dcm"
    ).run()  # the refused film: why, no numbers
    no_exceptions(at)
    assert len(at.error) == 1 and "Refused: not scored" in at.error[0].value
    assert "Modality is CT" in at.error[0].value and not at.get("plotly_chart")


def test_predict_dicom_shows_header_fields_without_identifiers_by_default(env, catalog, tmp_path):
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        SecondaryCaptureImageStorage,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.ViewPosition, ds.PatientAge, ds.PatientSex = "DX", "PA", "063Y", "F"
    ds.StudyDate, ds.PatientID, ds.PatientName = "20240131", "SECRET-ID-42", "Doe^Jane"
    ds.set_pixel_data(
        np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8), "MONOCHROME2", 8
    )
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    at = page("predict", catalog["tiny_a"]).run()
    at.file_uploader(key="predict_files").set_value(
        ("study.dcm", buffer.getvalue(), "application/dicom")
    )
    at.run()
    no_exceptions(at)
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "View: PA · Age: 063Y · Sex: F · Modality: DX · Study date: 31 Jan 2024" in text
    assert "divided by 255 (stored bit depth)" in text
    assert "SECRET-ID-42" not in text and "Doe" not in text
    ident = next(t.key for t in at.toggle if t.key and t.key.startswith("ids_"))
    at.toggle(key=ident).set_value(True).run()
    assert "Patient ID: SECRET-ID-42" in " ".join(m.value for m in at.markdown)
    assert "Doe" not in " ".join(m.value for m in at.markdown)


def viewer_traces(at: AppTest) -> list[dict]:
    """The traces of the Predict page's image viewer (the plotly chart that shows an image)."""
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    return next(spec["data"] for spec in specs if any(t["type"] == "image" for t in spec["data"]))


def plotted(value) -> np.ndarray:
    """A trace's array as plotly serialises numpy (base64 with dtype and shape) or as a plain list."""
    import base64

    if isinstance(value, dict):
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        return array.reshape([int(n) for n in str(shape).split(",")]) if shape else array
    return np.asarray(value, dtype=float)


def test_predict_draws_the_lungs_of_a_real_film(env, catalog, nih14_root):
    """Lung area, outline on both panels, in-lung share of the heatmap and the within-lungs map, each
    checked against the library computed here independently."""
    from cxr_core.data.imaging import load_image
    from cxr_core.inference.explain import DEFAULT_LAYER, DEFAULT_METHOD, explain
    from cxr_core.inference.lungs import (
        DEFAULT_LUNG_CHECKPOINT,
        LungSegmenter,
        heatmap_mass_in_mask,
        heatmap_within_mask,
        lung_contours,
    )
    from cxr_core.inference.predictor import Predictor
    from dashboard.viewer import outline_for_view

    source = sorted((nih14_root / "images").glob("*.png"))[0]
    data = source.read_bytes()
    at = page("predict", catalog["tiny_a"]).run()
    at.file_uploader(key="predict_files").set_value((source.name, data, "image/png"))
    at.run()
    no_exceptions(at)
    assert (
        shown_table(at, "warnings")["warnings"].tolist() == [""] and not at.warning
    )  # a frontal film passes
    image = load_image(source)
    lungs = LungSegmenter.from_path(DEFAULT_LUNG_CHECKPOINT).segment(image.pixels)
    captions = " ".join(c.value for c in at.caption)
    assert f"Lungs: {lungs.fraction:.1%} of the image" in captions
    ident = f"0_{_digest(data)}"
    assert at.download_button(key=f"lung_png_{ident}") is not None
    assert [t["type"] for t in viewer_traces(at)] == [
        "image",
        "image",
        "contour",
    ]  # outline off by default

    at.toggle(key=f"lung_show_{ident}").set_value(True).run()
    no_exceptions(at)
    outlines = [t for t in viewer_traces(at) if t.get("name") == "lung outline"]
    assert [t["xaxis"] for t in outlines] == ["x", "x2"]  # on the original and on the overlay
    polygons = outline_for_view(lung_contours(lungs.mask), image.pixels.shape)
    assert len(polygons) == 2
    expected_x = np.concatenate([np.append(p[:, 0], np.nan) for p in polygons])
    np.testing.assert_array_equal(plotted(outlines[0]["x"]), expected_x)
    np.testing.assert_array_equal(
        plotted(outlines[1]["y"]), np.concatenate([np.append(p[:, 1], np.nan) for p in polygons])
    )

    class_name = at.selectbox(key=f"cam_class_{ident}").value
    heat = explain(
        Predictor.from_checkpoint(catalog["tiny_a"] / "model.safetensors"),
        image,
        class_name,
        DEFAULT_METHOD,
        layer=DEFAULT_LAYER,
    )  # 256 px: the page keeps it at that grid
    share = heatmap_mass_in_mask(heat, lungs.mask)
    shown = next(c.value for c in at.caption if "of the map inside the lungs" in c.value)
    assert abs(int(shown.split("%")[0]) - 100 * share) <= 0.5 + 1e-6
    assert f"would put {lungs.fraction:.0%} there" in shown

    at.toggle(key=f"lung_norm_{ident}").set_value(True).run()
    no_exceptions(at)
    contour = next(t for t in viewer_traces(at) if t["type"] == "contour")
    np.testing.assert_allclose(
        plotted(contour["z"]), heatmap_within_mask(heat, lungs.mask), atol=1e-5
    )
    assert not plotted(contour["z"])[~lungs.mask].any()  # nothing outside the lungs
    assert any("rescaled within the lungs" in c.value for c in at.caption)


def test_predict_works_without_the_lung_model_and_says_so(env, catalog, tmp_path, monkeypatch):
    monkeypatch.setattr(
        "cxr_core.inference.lungs.DEFAULT_LUNG_CHECKPOINT", tmp_path / "lungs" / "model.safetensors"
    )
    names = write_images(tmp_path / "up", 1, seed=13)
    data = (tmp_path / "up" / names[0]).read_bytes()
    at = page("predict", catalog["tiny_a"]).run()
    at.file_uploader(key="predict_files").set_value((names[0], data, "image/png"))
    at.run()
    no_exceptions(at)
    assert shown_table(at, "warnings")["warnings"].tolist() == [""]  # no lung model: no lung check
    assert any(
        c.value.startswith("No lung outline, lung area or in-lung share")
        and str(tmp_path) in c.value
        for c in at.caption
    )
    assert not [t.key for t in at.toggle if t.key and t.key.startswith("lung_")]
    assert not any("inside the lungs" in c.value for c in at.caption)
    assert [t["type"] for t in viewer_traces(at)] == ["image", "image", "contour"]
