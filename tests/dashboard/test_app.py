"""Every dashboard page under Streamlit's AppTest, against small real checkpoint directories.

Pages are run from their own files with the checkpoint chosen through session state, exactly as
the sidebar picker sets it. Why not ``switch_page``: AppTest re-detects the ``pages/`` folder
before every run, and Streamlit then runs the requested page file directly (its pre-navigation
multipage mode) instead of the router, so only the router's first run is the real thing.
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
from tests.checkpoint_fixtures import build_catalog, build_checkpoint_dir, write_images

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120
SELECTED = "cxr_selected_checkpoint"


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
    at = AppTest.from_file(str(REPO_ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
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


# --------------------------------------------------------------------------- router


def test_router_lists_every_checkpoint_with_its_summary(env, catalog):
    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    no_exceptions(at)
    picker = at.sidebar.selectbox(key=SELECTED)
    assert picker.options[0] == "⚠ broken (unreadable)"
    assert [o.split(" · ")[:2] for o in picker.options[1:]] == [["tiny_a", "small_cnn"], ["tiny_b", "small_cnn"],
                                                              ["tiny_mc", "small_cnn"]]
    assert picker.value == str(catalog["tiny_a"].resolve())  # first readable one, not the broken one
    card = read_model_card(catalog["tiny_a"] / "model.safetensors")
    assert any(f"val macro AUROC **{card.validation['macro_auroc']:.3f}**" in c.value for c in at.sidebar.caption)
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
    at = AppTest.from_string("from dashboard.widgets import model_picker\nmodel_picker()", default_timeout=TIMEOUT).run()
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
        assert f"cxr evaluate --checkpoint {ckpt.resolve() / 'model.safetensors'}" in at.info[0].value
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
    at.file_uploader(key="predict_files").set_value([good[0], ("notes.png", b"not an image at all", "image/png"), good[1]])
    at.run()
    no_exceptions(at)
    assert len(at.error) == 1 and "notes.png" in at.error[0].value
    table = shown_table(at, "highest finding")
    assert list(table["file"]) == names
    # the summary text follows the Predictor's own probabilities at the card's 0.5 thresholds
    from cxr_core.data.imaging import load_image
    from cxr_core.inference.findings import summarise_findings
    from cxr_core.inference.predictor import Predictor
    from dashboard.reading import call_text, top_findings_text

    predictor = Predictor.from_checkpoint(catalog["tiny_a"] / "model.safetensors")
    expected = predictor.predict([load_image(b, name=n) for n, b, _ in good])
    for row, pred in zip(table.itertuples(index=False), expected):
        summary = summarise_findings(pred, multilabel=True)
        assert row.findings == top_findings_text(summary) and row.call == call_text(summary)
        assert [f.name for f in summary.positives] == [c for c in sorted(pred.positive, key=lambda c: -pred.probabilities[c])]
    assert at.download_button(key="predict_csv") is not None
    ident = f"0_{_digest(good[0][1])}"
    first = summarise_findings(expected[0], multilabel=True)
    assert at.selectbox(key=f"cam_class_{ident}").value == first.findings[0].name  # the top finding is explained
    assert at.slider(key=f"cam_level_{ident}").value == 0.5  # contour overlay by default
    assert at.selectbox(key="predict_pick").options == [f"1. {names[0]}", f"2. {names[1]}"]


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(data).hexdigest()[:12]


def test_predict_multiclass_calls_the_most_probable_class(env, catalog, tmp_path):
    names = write_images(tmp_path / "up", 1, seed=7)
    at = page("predict", catalog["tiny_mc"]).run()
    at.file_uploader(key="predict_files").set_value((names[0], (tmp_path / "up" / names[0]).read_bytes(), "image/png"))
    at.run()
    no_exceptions(at)
    row = shown_table(at, "highest finding").iloc[0]
    markdown = " ".join(m.value for m in at.markdown)
    top = row["call"].split(" (")[0]
    assert top in ("Normal", "Pneumonia") and "**Most probable: :" in markdown and f"[{top}]**" in markdown
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
        at.file_uploader(key="predict_files").set_value((names[0], (tmp_path / "up" / names[0]).read_bytes(), "image/png"))
        at.run()
        no_exceptions(at)
        assert shown_table(at, "highest finding")["call"].item() == f"{len(store.classes)} findings called"
        assert "everything" in at.caption[0].value
    finally:
        store.set_active("card")


# --------------------------------------------------------------------------- performance


def test_performance_numbers_match_sklearn(env, catalog):
    at = page("performance", catalog["tiny_a"]).run()
    no_exceptions(at)
    frame = predictions(catalog["tiny_a"])
    classes = ["Atelectasis", "Cardiomegaly", "Pleural Effusion"]
    aurocs = []
    for cls in classes:
        known = frame[f"label:{cls}"].notna()
        aurocs.append(roc_auc_score(frame.loc[known, f"label:{cls}"], frame.loc[known, f"prob:{cls}"]))
    assert metric(at, "Macro AUROC") == f"{np.mean(aurocs):.3f}"
    table = shown_table(at, "auroc")
    assert list(table["class"][:3]) == classes
    first = frame[frame["label:Atelectasis"].notna()]
    sens = recall_score(first["label:Atelectasis"], first["prob:Atelectasis"] >= 0.5)
    assert table["sensitivity"][0].startswith(f"{sens:.3f} (")  # value plus its 95% CI
    assert {"perf_roc", "perf_pr", "perf_calibration", "perf_loss"} <= element_keys(at.main)
    assert at.download_button(key="perf_csv") is not None


def test_performance_multiclass_shows_confusion_matrix(env, catalog):
    at = page("performance", catalog["tiny_mc"]).run()
    no_exceptions(at)
    assert any(h.value == "Confusion matrix" for h in at.subheader)
    report = json.loads((catalog["tiny_mc"] / "eval" / "val" / "report.json").read_text())
    assert f"accuracy {report['multiclass']['accuracy']:.3f}" in " ".join(c.value for c in at.caption)


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
        assert recall_score(frame.loc[known, f"label:{cls}"], frame.loc[known, f"prob:{cls}"] >= value) >= 0.9
    at.text_input(key="thr_save_name").input("screening").run()
    at.button(key="thr_save").click().run()
    no_exceptions(at)
    saved = json.loads((ckpt / "thresholds" / "screening.json").read_text())
    assert saved["thresholds"]["Atelectasis"] == pytest.approx(at.slider(key="thr::tiny_b::Atelectasis").value)
    assert "sensitivity" in saved["method"].lower()
    at.selectbox(key="thr_pick").set_value("screening").run()
    at.button(key="thr_activate").click().run()
    no_exceptions(at)
    assert (ckpt / "thresholds" / "active.txt").read_text().strip() == "screening"
    at.selectbox(key="thr_cmp_a").set_value("card").run()
    at.selectbox(key="thr_cmp_b").set_value("screening").run()
    compared = shown_table(at, "sensitivity (second)")
    assert list(compared.columns[:4]) == ["class", "card", "screening", "difference"]
    assert (compared["sensitivity (second)"] >= 0.9).all()
    (ckpt / "thresholds" / "active.txt").unlink()


def test_multiclass_model_has_no_thresholds_to_tune(env, catalog):
    at = page("thresholds", catalog["tiny_mc"]).run()
    no_exceptions(at)
    assert "multiclass" in at.info[0].value


# --------------------------------------------------------------------------- review


def test_review_verdict_is_written_and_session_resumes(env, catalog):
    at = page("review", catalog["tiny_a"]).run()
    no_exceptions(at)
    assert not at.warning  # images reachable through CXR_DATA_ROOT
    at.text_input(key="rev_new_name").input("AB test").run()
    at.button(key="rev_start").click().run()
    no_exceptions(at)
    store = ReviewStore(env / "review")
    (session,) = store.sessions()
    assert session.name == "AB test" and session.filters["outcomes"] == ["FP", "FN"]
    at.button(key="rev_next").click().run()
    image_id = case_markdown(at).split("`")[1]
    at.radio[0].set_value("label_wrong")
    at.text_area[0].input("label missed the finding")
    at.button[[b.label for b in at.button].index("Save and next")].click().run()
    no_exceptions(at)
    (verdict,) = store.verdicts(session.id)
    assert (verdict.image_id, verdict.class_name, verdict.verdict, verdict.note) == (
        image_id, "Atelectasis", "label_wrong", "label missed the finding")
    assert store.session(session.id).position == 2
    assert image_id not in case_markdown(at)  # moved on to the third case
    at.button(key="rev_prev").click().run()
    assert image_id in case_markdown(at) and at.radio[0].value == "label_wrong"  # the verdict is shown again
    at.radio[0].set_value("unsure")
    at.button[[b.label for b in at.button].index("Save verdict")].click().run()
    assert [v.verdict for v in store.verdicts(session.id)] == ["unsure"]  # upserted, not duplicated
    assert store.session(session.id).position == 1

    fresh = page("review", catalog["tiny_a"]).run()  # another browser session
    fresh.selectbox(key="rev_session_pick").set_value(session.id).run()
    no_exceptions(fresh)
    assert fresh.number_input(key="rev_goto").value == 2
    assert image_id in case_markdown(fresh)
    assert any("Unsure" in c.value for c in fresh.caption)


def test_review_without_reachable_images_says_how_to_fix(env, catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DATA_ROOT", str(tmp_path / "nowhere"))
    at = page("review", catalog["tiny_a"]).run()
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
        assert row.difference == pytest.approx(report_b["per_class"][row[0]]["auroc"] - report_a["per_class"][row[0]]["auroc"])
    at.selectbox(key="models_cmp_b").set_value("tiny_mc").run()
    no_exceptions(at)
    assert any("share no classes" in w.value for w in at.warning)
    # fixture cards record no dataset manifest, so no comparison is presented as like-for-like
    assert any("Not a like-for-like comparison" in w.value for w in at.warning)


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
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.PatientAge, ds.PatientSex = "DX", "PA", "063Y", "F"
    ds.StudyDate, ds.PatientID, ds.PatientName = "20240131", "SECRET-ID-42", "Doe^Jane"
    ds.set_pixel_data(np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8), "MONOCHROME2", 8)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    at = page("predict", catalog["tiny_a"]).run()
    at.file_uploader(key="predict_files").set_value(("study.dcm", buffer.getvalue(), "application/dicom"))
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
