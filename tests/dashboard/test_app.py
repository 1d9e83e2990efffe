"""Every dashboard page under Streamlit's AppTest, against small real checkpoint directories.

Pages are run from their own files with the checkpoint chosen through session state, exactly as
the sidebar picker sets it.
Numbers shown are checked against scikit-learn.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from streamlit.testing.v1 import AppTest

from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.models.checkpoint import read_model_card
from dashboard.state import READER_PARAM
from dashboard.widgets import picker_key, reader_box_key
from tests.checkpoint_fixtures import (
    build_catalog,
    build_checkpoint_dir,
    noisy_copy,
    write_images,
)
from tests.dashboard.viewer_data import shown_viewer

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


def router(checkpoint: Path) -> AppTest:
    """The whole app (router, sidebar, notice) opened at its root, with ``checkpoint`` chosen."""
    at = AppTest.from_file(str(REPO_ROOT / "app_pages" / "router.py"), default_timeout=TIMEOUT)
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


def score_anyway(at: AppTest) -> AppTest:
    """Press "Score anyway" on every film of the batch that offers it, back on the first film.

    The synthetic blobs these tests upload are no chest films: with the lung model the input
    gate calls them out of domain and withholds their calls until the reader scores them anyway.
    """
    picker = [s for s in at.selectbox if s.key == "predict_pick"]
    picks = picker[0].options if picker else [None]
    for pick in picks:
        if pick is not None:
            at.selectbox(key="predict_pick").set_value(pick).run()
        button = next((b for b in at.button if (b.key or "").startswith("score_anyway_")), None)
        if button is not None:
            button.click().run()
    if picks[0] is not None:
        at.selectbox(key="predict_pick").set_value(picks[0]).run()
    return at


def case_markdown(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Image**"))


def predictions(checkpoint: Path) -> pd.DataFrame:
    return pd.read_csv(checkpoint / "eval" / "val" / "predictions.csv")


# --------------------------------------------------------------------------- router


def test_router_lists_every_checkpoint_with_its_summary(env, catalog):
    at = AppTest.from_file(
        str(REPO_ROOT / "app_pages" / "router.py"), default_timeout=TIMEOUT
    ).run()
    no_exceptions(at)
    picker = at.sidebar.selectbox(key=picker_key(str(catalog["tiny_a"].resolve())))
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


def _mounted_value(picker) -> str:
    """The option a browser shows when it mounts the picker: the value the server sends with it,
    else the widget's default index (what a browser reports back on its next request)."""
    if picker.proto.set_value:
        return picker.proto.raw_value
    return picker.proto.options[picker.proto.default]


def test_picker_mounts_on_the_chosen_checkpoint_in_every_run(env, catalog):
    """A browser that (re)mounts the sidebar picker without a value from the server (a page switch,
    an interrupted run) adopts the widget's default and reports it back: that default must be this
    browser's choice, never the first option (an unreadable checkpoint here)."""
    for name in ("tiny_a", "tiny_b"):
        chosen = str(catalog[name].resolve())
        at = router(catalog[name]).run()
        for _ in range(2):  # the first run sends the value, the next ones may not
            no_exceptions(at)
            picker = at.sidebar.selectbox(key=picker_key(chosen))
            assert _mounted_value(picker).startswith(f"{name} · "), _mounted_value(picker)
            assert at.session_state[SELECTED] == chosen
            at.run()
    at = AppTest.from_file(str(REPO_ROOT / "app_pages" / "router.py"), default_timeout=TIMEOUT)
    at.run().run()  # no choice yet: the first readable checkpoint, in every run
    first = str(catalog["tiny_a"].resolve())
    picker = at.sidebar.selectbox(key=picker_key(first))
    assert _mounted_value(picker).startswith("tiny_a · ")
    picker.select(str(catalog["tiny_b"].resolve())).run()  # the reader's own pick still counts
    no_exceptions(at)
    chosen = str(catalog["tiny_b"].resolve())
    assert at.session_state[SELECTED] == chosen
    assert _mounted_value(at.sidebar.selectbox(key=picker_key(chosen))).startswith("tiny_b · ")


def test_reader_box_mounts_on_the_readers_name_in_every_run(env, catalog):
    """A browser that (re)mounts the Reader box without a value from the server reports the box's
    default back: that default must be the reader's name, else the reader silently becomes nobody
    mid-session (their calls refused, the grid read only)."""
    at = router(catalog["tiny_a"])
    at.query_params[READER_PARAM] = "EF"
    at.run()
    for _ in range(2):  # the first run sends the value, the next ones may not
        no_exceptions(at)
        box = at.sidebar.text_input(key=reader_box_key("EF"))
        assert box.proto.default == "EF" and at.session_state[READER] == "EF"
        at.run()
    box = at.sidebar.text_input(key=reader_box_key("EF"))
    box.input("  Dr   B ").run()  # the reader's own edit
    no_exceptions(at)
    assert at.session_state[READER] == "  Dr   B " and at.query_params[READER_PARAM] == "Dr B"
    assert at.sidebar.text_input(key=reader_box_key("Dr B")).proto.default == "Dr B"


def test_no_checkpoint_explains_how_to_train(env, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(tmp_path / "empty"))
    at = AppTest.from_file(
        str(REPO_ROOT / "app_pages" / "router.py"), default_timeout=TIMEOUT
    ).run()
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
    chosen = str(catalog["tiny_b"].resolve())
    assert at.session_state[SELECTED] == chosen
    assert at.sidebar.selectbox(key=picker_key(chosen)).value == chosen


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
    at.run()
    no_exceptions(at)
    assert not at.error  # the film on screen is readable; the bad file is a row of the batch
    table = shown_table(at, "abnormality")
    assert list(table["outcome"]) == ["out of domain", "unreadable", "out of domain"]
    assert list(table["called"]) == ["withheld (out of domain)", "", "withheld (out of domain)"]
    assert any("Out of domain." in w.value for w in at.warning)
    score_anyway(at)
    no_exceptions(at)
    table = shown_table(at, "abnormality")
    assert list(table["file"]) == [names[0], "notes.png", names[1]]
    assert list(table["outcome"]) == ["out of domain", "unreadable", "out of domain"]
    assert table["warnings"][1].startswith("the content is text, not an image")
    assert np.isnan(table["abnormality"][1])
    # the calls follow the Predictor's own probabilities at the card's 0.5 thresholds
    from cxr_core.data.imaging import load_image
    from cxr_core.inference.findings import summarise_findings
    from cxr_core.inference.predictor import Predictor
    from dashboard.reading import called_text

    predictor = Predictor.from_checkpoint(catalog["tiny_a"] / "model.safetensors")
    expected = predictor.predict([load_image(b, name=n) for n, b, _ in good])
    for row, pred in zip(table.drop(index=1).itertuples(index=False), expected):
        summary = summarise_findings(pred, multilabel=True)
        assert row.called == called_text(summary) + " · scored anyway"
        assert row.abnormality == pytest.approx(summary.abnormality, abs=1e-6)
        assert [f.name for f in summary.positives] == [
            c for c in sorted(pred.positive, key=lambda c: -pred.probabilities[c])
        ]
    assert at.download_button(key="predict_csv") is not None
    ident = _digest(good[0][1])
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
    picks = [f"1/3 · {names[0]}", "2/3 · notes.png", f"3/3 · {names[1]}"]
    assert at.selectbox(key="predict_pick").options == picks
    at.button(key="predict_next").click().run()  # the next film: the unreadable one, and why
    assert at.selectbox(key="predict_pick").value == picks[1]
    assert len(at.error) == 1 and "notes.png" in at.error[0].value


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
    row = shown_table(at, "abnormality").iloc[0]
    markdown = " ".join(m.value for m in at.markdown)
    top, p_top = row["called"].split(" ")[0], float(row["called"].split(" ")[1])
    assert (
        top in ("Normal", "Pneumonia")
        and "**Most probable: :" in markdown
        and f"[{top}]**" in markdown
    )
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
        called = shown_table(at, "abnormality")["called"].item().removesuffix(" · scored anyway")
        assert len(store.classes) == 3 and len(called.split("; ")) == 3  # every class called
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
    keys = {k.split("@")[0] for k in element_keys(at.main)}
    assert {"perf_roc", "perf_pr", "perf_calibration", "perf_loss", "perf_truth"} <= keys
    assert at.download_button(key="perf_csv") is not None
    assert not [c for c in at.caption if "⚠" in c.value]


def test_performance_defaults_to_the_out_of_fold_report(env, tmp_path, monkeypatch):
    """The table opens on report.json's cross-fitted operating points; the in-sample recomputation
    at the card's thresholds stays one click away, with its caveat."""
    from cxr_core.evaluation.run import score_predictions, write_evaluation

    ckpt = build_checkpoint_dir(tmp_path / "ckpts", "crossfitted", n_cases=120, seed=5)
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(tmp_path / "ckpts"))
    frame = predictions(ckpt)
    card = read_model_card(ckpt / "model.safetensors")
    report = score_predictions(frame, card, n_boot=30, seed=0, thresholds="max_f1", split="val")
    assert report.thresholds_from == "val:crossfit-5"
    write_evaluation(ckpt / "eval" / "val", frame, report)
    cls = "Atelectasis"
    known = frame[frame[f"label:{cls}"].notna()]
    in_sample = recall_score(known[f"label:{cls}"], known[f"prob:{cls}"] >= card.thresholds[cls])
    out_of_fold = report.per_class[cls].sensitivity
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


def test_performance_multiclass_shows_confusion_matrix_and_no_none(env, catalog):
    at = page("performance", catalog["tiny_mc"]).run()
    no_exceptions(at)
    assert any(h.value == "Confusion matrix" for h in at.subheader)
    report = json.loads((catalog["tiny_mc"] / "eval" / "val" / "report.json").read_text())
    assert f"accuracy {report['multiclass']['accuracy']:.3f}" in " ".join(
        c.value for c in at.caption
    )
    for table in at.dataframe:
        cells = table.value.astype(str).to_numpy().ravel().tolist()
        assert not {"None", "nan", "NaN", "<NA>"} & set(cells), table.value.columns
        assert "threshold" not in table.value.columns  # the argmax class is called: no threshold
    assert "perf_threshold_source" not in {r.key for r in at.radio}


def test_sidebar_offers_a_threshold_set_only_for_multilabel_models(env, catalog):
    for name, offered in (("tiny_a", True), ("tiny_mc", False)):
        at = AppTest.from_file(str(REPO_ROOT / "app_pages" / "router.py"), default_timeout=TIMEOUT)
        at.session_state[SELECTED] = str(catalog[name].resolve())
        at.run()
        no_exceptions(at)
        pickers = [s.key for s in at.sidebar.selectbox if s.key.startswith("cxr_view_set@")]
        assert bool(pickers) == offered, name
        captions = " ".join(c.value for c in at.sidebar.caption)
        assert ("Thresholds in force" in captions) == offered


def open_gallery_at(checkpoint: Path, selection) -> AppTest:
    at = page("performance", checkpoint)
    at.session_state["perf_gallery"] = selection
    return at.run()


def test_performance_gallery_holds_the_films_of_a_count_most_wrong_first(env, catalog):
    from cxr_core.evaluation.gallery import GallerySelection

    report = json.loads((catalog["tiny_a"] / "eval" / "val" / "report.json").read_text())
    at = open_gallery_at(catalog["tiny_a"], GallerySelection("Atelectasis", ("TN",)))
    no_exceptions(at)
    films = [b.key.split("@", 1)[1] for b in at.button if b.key and b.key.startswith("gal_heat@")]
    assert len(films) == min(report["per_class"]["Atelectasis"]["tn"], 50) > 0
    frame = predictions(catalog["tiny_a"]).set_index("image_id")
    probs = frame.loc[films, "prob:Atelectasis"].to_numpy()
    assert list(probs) == sorted(probs, reverse=True)  # negatives: the highest probability first
    assert (frame.loc[films, "label:Atelectasis"] == 0).all()
    assert any("Atelectasis: true negatives" in c.value for c in at.caption)
    # AppTest does not redraw a dialog after a click inside it (the browser test clicks for real):
    # the state the "Heatmap" button sets, then a run
    at.session_state["perf_gallery_film"] = films[0]
    at.run()
    no_exceptions(at)
    captions = [c.value for c in at.caption] + [m.value for m in at.markdown]
    assert any(films[0] in text for text in captions)
    keys = {b.key for b in at.button}
    assert "gal_back" in keys and f"gal_heat@{films[1]}" not in keys  # one film, its heatmap
    captions = [c for image in at.get("image") for c in image.captions]
    assert any("where the evidence for Atelectasis lies" in c for c in captions), captions


def test_performance_gallery_sends_its_films_to_a_review_session(env, catalog):
    from cxr_core.evaluation.gallery import GallerySelection
    from cxr_core.evaluation.review import session_films

    at = open_gallery_at(catalog["tiny_a"], GallerySelection("Cardiomegaly", ("FN", "FP")))
    films = [b.key.split("@", 1)[1] for b in at.button if b.key and b.key.startswith("gal_heat@")]
    at.text_input(key="gal_send_name").input("errors of Cardiomegaly")
    at.selectbox(key="gal_mode").set_value("blind_all")
    at.button[[b.label for b in at.button].index("Start the review session")].click().run()
    no_exceptions(at)
    (session,) = ReviewStore(env / "review").sessions()
    assert session.name == "errors of Cardiomegaly" and session.mode == "blind_all"
    assert set(session_films(session)) == set(films) and session.classes == ("Cardiomegaly",)
    assert any("started with" in s.value for s in at.success)


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
    assert "Model default: **screening** · in force for you: **screening**" in at.caption[0].value
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
    (ckpt / "thresholds" / "readers.json").unlink()


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
        assert "in force for you: **everything**" in mine.caption[0].value
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


def test_a_readers_set_survives_reloads_and_another_readers_default_change(env, catalog):
    """Reader B keeps their own set across new sessions; reader A's default change is reported to
    B (who, what) on every page until B acknowledges it, and leaves B's choice alone."""
    ckpt = catalog["tiny_b"]
    from cxr_core.artifacts.catalog import read_entry

    store = read_entry(ckpt).threshold_store()
    store.save("mine", dict.fromkeys(store.classes, 0.3))
    store.save("screening", dict.fromkeys(store.classes, 0.1))

    def as_reader(name: str, script: str = "thresholds") -> AppTest:
        at = page(script, ckpt) if script != "router" else router(ckpt)
        at.session_state[READER] = name
        return at.run()

    try:
        b = as_reader("B")
        b.selectbox(key="thr_pick").set_value("mine").run()
        b.button(key="thr_view").click().run()
        no_exceptions(b)
        assert "in force for you: **mine**" in as_reader("B").caption[0].value  # a reload
        a = as_reader("A")
        a.selectbox(key="thr_pick").set_value("screening").run()
        a.button(key="thr_activate").click().run()
        no_exceptions(a)
        assert not [w for w in as_reader("A", "router").warning if "changed" in w.value]

        again = as_reader("B", "router")
        no_exceptions(again)
        (notice,) = [w.value for w in again.warning if "default threshold set" in w.value]
        assert "**A** made **screening** the default" in notice and "(was **card**)" in notice
        assert "Atelectasis 0.500 → 0.100" in notice  # what changed
        assert "your own set **mine**, which is unchanged" in notice
        assert "thresholds: **mine**" in " ".join(c.value for c in again.caption)
        again.button(key="cxr_default_ack").click().run()
        assert not [w for w in again.warning if "default threshold set" in w.value]
        assert not [
            w for w in as_reader("B", "router").warning if "default threshold set" in w.value
        ]
        assert store.reader_choice("B").set_name == "mine"
    finally:
        for name in (
            "mine.json",
            "screening.json",
            "active.txt",
            "activations.jsonl",
            "readers.json",
        ):
            (ckpt / "thresholds" / name).unlink(missing_ok=True)


def test_multiclass_model_has_no_thresholds_to_tune(env, catalog):
    at = page("thresholds", catalog["tiny_mc"]).run()
    no_exceptions(at)
    assert "multiclass" in at.info[0].value


# --------------------------------------------------------------------------- review


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
    # same images, labels drawn with another seed: the paired comparison is refused, and says why
    assert any("different label sources" in e.value for e in at.error)
    assert any("No paired comparison" in w.value for w in at.warning)
    at.selectbox(key="models_cmp_b").set_value("tiny_mc").run()
    no_exceptions(at)
    assert any("share no classes" in w.value for w in at.warning)
    # fixture cards record no dataset manifest, so no comparison is presented as like-for-like
    assert any("Not a like-for-like comparison" in w.value for w in at.warning)


def test_models_page_pairs_two_runs_on_the_same_images(env, catalog, tmp_path, monkeypatch):
    """A second model scored on tiny_a's very images and labels: ΔAUROC, DeLong, McNemar per finding."""
    other = noisy_copy(catalog["tiny_a"], tmp_path / "more" / "tiny_noisy")
    frame = predictions(other)
    classes = [c[len("prob:") :] for c in frame.columns if c.startswith("prob:")]
    roots = [str(catalog["root"] / "checkpoints"), str(other.parent)]
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", os.pathsep.join(roots))
    at = page("models", catalog["tiny_a"]).run()
    at.selectbox(key="models_cmp_b").set_value("tiny_noisy").run()
    no_exceptions(at)
    table = shown_table(at, "ΔAUROC (95% CI)").set_index("Finding")
    original = predictions(catalog["tiny_a"])
    known = original["label:Cardiomegaly"].notna()
    y = original.loc[known, "label:Cardiomegaly"]
    delta = roc_auc_score(y, original.loc[known, "prob:Cardiomegaly"]) - roc_auc_score(
        y, frame.loc[known, "prob:Cardiomegaly"]
    )
    cell = table.loc["Cardiomegaly", "ΔAUROC (95% CI)"]
    assert cell.startswith(f"{delta:+.3f} (") and " to " in cell
    assert table.loc["Cardiomegaly", "DeLong p"] != "–"
    assert len(shown_table(at, "McNemar p (sens.)")) == len(classes)
    assert any("Paired comparison on the same 60 val images" in c.value for c in at.caption)


def test_predict_refuses_a_blank_image_and_shows_the_gates_warnings(env, catalog, tmp_path):
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
    assert list(table["outcome"]) == ["out of domain", "refused", "refused"]
    assert table["called"].tolist() == ["withheld (out of domain)", "", ""]
    assert table["warnings"][1].startswith("the image is blank")
    # the synthetic blob is no chest film: the lung check's sentence is why its calls are withheld
    assert table["warnings"][0].startswith(
        "This image does not look like a frontal chest radiograph"
    )
    assert "Modality is CT" in table["warnings"][2]
    assert any("Out of domain." in w.value for w in at.warning)
    assert at.button(key=f"score_anyway_{_digest(uploads[0][1])}") is not None
    at.selectbox(key="predict_pick").set_value("3/3 · head.dcm").run()  # refused: why, no numbers
    no_exceptions(at)
    assert len(at.error) == 1 and "Modality is CT" in at.error[0].value
    assert not at.get("plotly_chart")
    csv = at.download_button(key="predict_csv")
    assert csv is not None


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
    ident = _digest(data)
    assert at.download_button(key=f"lung_png_{ident}") is not None
    header, pixels, heat_shown = shown_viewer(at)
    assert header["heat"]["mode"] == "contour" and header["lungs"] == []  # outline off by default
    np.testing.assert_array_equal(pixels, np.rint(image.pixels * 255))  # 256 px: shown as is

    at.toggle(key=f"lung_show_{ident}").set_value(True).run()
    no_exceptions(at)
    header = shown_viewer(at)[0]  # one outline list, drawn on every panel
    polygons = outline_for_view(lung_contours(lungs.mask), image.pixels.shape)
    assert len(polygons) == 2 and len(header["lungs"]) == 2
    for shown, polygon in zip(header["lungs"], polygons):
        np.testing.assert_allclose(np.reshape(shown, (-1, 2)), polygon, atol=0.05)

    class_name = at.selectbox(key=f"cam_class_{ident}").value
    heat = explain(
        Predictor.from_checkpoint(catalog["tiny_a"] / "model.safetensors"),
        image,
        class_name,
        DEFAULT_METHOD,
        layer=DEFAULT_LAYER,
    )  # 256 px: the page keeps it at that grid
    np.testing.assert_array_equal(heat_shown, np.rint(np.clip(heat, 0, 1) * 255))
    share = heatmap_mass_in_mask(heat, lungs.mask)
    shown = next(c.value for c in at.caption if "of the map inside the lungs" in c.value)
    assert abs(int(shown.split("%")[0]) - 100 * share) <= 0.5 + 1e-6
    assert f"would put {lungs.fraction:.0%} there" in shown

    at.toggle(key=f"lung_norm_{ident}").set_value(True).run()
    no_exceptions(at)
    header, _, within = shown_viewer(at)
    expected = np.rint(heatmap_within_mask(heat, lungs.mask) * 255)
    assert np.abs(within.astype(int) - expected).max() <= 1
    assert not within[~lungs.mask].any()  # nothing outside the lungs
    assert header["titles"][1].endswith("within lungs")
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
    header, _, heat = shown_viewer(at)
    assert header["lungs"] == [] and heat is not None
