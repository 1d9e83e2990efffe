"""The input gate: refusals, out-of-domain checks, the multi-layer detectors, the outcomes they give."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from cxr_core.artifacts.prediction_table import table_columns
from cxr_core.cli.main import main
from cxr_core.data.imaging import LoadedImage, load_image
from cxr_core.data.labels import NIH14
from cxr_core.data.preprocessing import PreprocessConfig, eval_tensor, to_cache_array
from cxr_core.errors import CheckpointError, UnsuitableImageError
from cxr_core.inference.domain import (
    Detector,
    LayerGaussian,
    feature_layers,
    fit_detector,
    member_heads,
)
from cxr_core.inference.explain import explain
from cxr_core.inference.gate import (
    InputGate,
    check_quality,
    dicom_age_years,
    header_refusal,
    training_age_range,
)
from cxr_core.inference.gate_fit import collect_features, fit_detectors, gate_section
from cxr_core.inference.outcome import (
    OUT_OF_DOMAIN,
    REFUSED,
    SCORED,
    UNREADABLE,
    GateVerdict,
)
from cxr_core.inference.predictor import Predictor
from cxr_core.models import create_model
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import (
    DIGEST_KEY,
    load_checkpoint,
    save_checkpoint,
    stamp_checkpoint,
)
from tests.reliability.crafted import dicom_dataset

SIZE = 64


def _film(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A gray image with smooth structure (two 'lungs' and a bright 'mediastinum'), in [0, 1]."""
    yy, xx = np.mgrid[:size, :size] / size
    lungs = np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) / 0.02) + np.exp(
        -((xx - 0.7) ** 2 + (yy - 0.5) ** 2) / 0.02
    )
    body = 0.75 - 0.45 * lungs * rng.uniform(0.7, 1.0) + 0.1 * np.exp(-((xx - 0.5) ** 2) / 0.005)
    return np.clip(body + rng.normal(0, 0.02, body.shape), 0, 1).astype(np.float32)


def test_refuses_blank_small_and_absurd_images():
    rng = np.random.default_rng(0)
    check_quality(_film(rng), "film.png")  # a radiograph-like image passes
    cases = {
        "blank": (np.zeros((256, 256), np.float32), "nearly uniform"),
        "near-constant": (
            0.5 + rng.normal(0, 0.002, (256, 256)).astype(np.float32),
            "nearly uniform",
        ),
        "one pixel": (np.ones((1, 1), np.float32), "1x1 pixels, too small"),
        "thin strip": (rng.random((1, 100000)).astype(np.float32), "too small"),
        "ribbon": (rng.random((100, 600)).astype(np.float32), "aspect ratio of 6:1"),
    }
    for name, (pixels, message) in cases.items():
        with pytest.raises(UnsuitableImageError, match=message):
            check_quality(pixels, name)


def test_a_blank_file_is_refused_as_blank(tmp_path):
    Image.fromarray(np.full((300, 300), 128, np.uint8)).save(tmp_path / "blank.png")
    image = load_image(tmp_path / "blank.png")
    with pytest.raises(UnsuitableImageError, match="blank.png: the image is blank"):
        check_quality(image.pixels, image.name, image.meta)


def test_dicom_age_strings():
    assert dicom_age_years("045Y") == 45
    assert dicom_age_years("006M") == pytest.approx(0.5)
    assert dicom_age_years("010W") == pytest.approx(70 / 365.25)
    assert dicom_age_years("003D") == pytest.approx(3 / 365.25)
    assert dicom_age_years(None) is None and dicom_age_years("unknown") is None
    assert training_age_range([30, np.nan, 2, 71]) == [2.0, 71.0]
    assert training_age_range([np.nan]) is None


def _dicom(path, **tags):
    pixels = (_film(np.random.default_rng(1), 128) * 4095).astype(np.uint16)
    dicom_dataset(pixels, **tags).save_as(path, enforce_file_format=True)
    return load_image(path)


def test_dicom_headers_refuse_other_modalities_and_flag_laterals_and_ages(tmp_path):
    card = ModelCard(
        architecture="small_cnn",
        num_classes=14,
        label_space=NIH14.to_dict(),
        in_chans=1,
        preprocess=PreprocessConfig(cache_size=SIZE, input_size=SIZE, in_chans=1).to_dict(),
        gate={"age_range": [18.0, 90.0]},
    )
    gate = InputGate(card)
    ok = _dicom(tmp_path / "ok.dcm", BodyPartExamined="CHEST", PatientAge="045Y")
    assert header_refusal(ok.meta) is None and gate.header_warnings(ok.meta) == []
    ct = _dicom(tmp_path / "ct.dcm", Modality="CT", BodyPartExamined="HEAD")
    assert "Modality is CT" in header_refusal(ct.meta)
    with pytest.raises(UnsuitableImageError, match="ct.dcm: its DICOM Modality is CT"):
        gate.refuse_early(ct.pixels, ct.name, ct.meta)
    assert "BodyPartExamined is HAND" in header_refusal(
        _dicom(tmp_path / "hand.dcm", BodyPartExamined="HAND").meta
    )
    assert "Modality is MG" in header_refusal(_dicom(tmp_path / "mg.dcm", Modality="MG").meta)
    lateral = _dicom(tmp_path / "ll.dcm", ViewPosition="LL")
    assert (
        header_refusal(lateral.meta) is None
    )  # a lateral chest film is out of domain, not refused
    assert "lateral view (LL)" in gate.header_warnings(lateral.meta)[0]
    kid = _dicom(tmp_path / "kid.dcm", PatientAge="005Y")
    assert "age 5 years is outside the training ages (18-90" in gate.header_warnings(kid.meta)[0]
    assert InputGate(None).header_warnings(kid.meta) == []  # no range known
    verdict = gate.verdict(kid.meta)
    assert verdict.outcome == OUT_OF_DOMAIN and verdict.reason.startswith("patient age 5 years")
    assert gate.verdict(ok.meta) == GateVerdict(SCORED)


def test_layer_distance_is_the_mahalanobis_distance_of_the_low_rank_covariance():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(5, 40))
    train = rng.normal(size=(300, 5)) @ basis * 3 + rng.normal(size=(300, 40)) * 0.5 + 2.0
    val = rng.normal(size=(200, 5)) @ basis * 3 + rng.normal(size=(200, 40)) * 0.5 + 2.0
    layer = LayerGaussian.fit(train, dims=5)
    # the same distance from the full covariance W diag(var) W^T + s2 (I - W W^T), inverted densely
    w = layer.components
    cov = w @ np.diag(layer.variances) @ w.T + layer.residual_variance * (np.eye(40) - w @ w.T)
    centred = val - train.mean(axis=0)
    dense = np.sqrt(np.einsum("ij,jk,ik->i", centred, np.linalg.inv(cov), centred) / 40)
    np.testing.assert_allclose(layer.distances(val), dense, rtol=1e-8)
    eigen = np.sort(np.linalg.eigvalsh(np.cov(train.T)))[::-1]
    np.testing.assert_allclose(layer.variances, eigen[:5], rtol=1e-8)
    assert layer.residual_variance == pytest.approx(eigen[5:].mean(), rel=1e-8)  # ML isotropic part


def _layered(rng, n, shift=0.0, widths=(6, 10, 4)):
    """Features of ``n`` images for three layers (correlated within each layer)."""
    return [
        rng.normal(size=(n, 2)) @ rng.normal(size=(2, w)) * 0.1 + rng.normal(size=(n, w)) + shift
        for w in widths
    ]


def test_detector_standardises_each_layer_on_validation_and_round_trips_through_a_card():
    rng = np.random.default_rng(1)
    train, val = _layered(rng, 400), _layered(rng, 300)
    detector, val_scores = fit_detector(train, val, dims=3)
    layer_scores = detector.layer_scores(val)
    np.testing.assert_allclose(layer_scores.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(layer_scores.std(axis=0), 1, atol=1e-9)
    np.testing.assert_allclose(val_scores, layer_scores.mean(axis=1))
    detector = detector.with_threshold(np.quantile(val_scores, 0.98))
    assert detector.flagged(_layered(rng, 200, shift=2.5)).mean() > 0.95
    assert detector.flagged(_layered(rng, 500)).mean() < 0.06
    partial, _ = fit_detector(train, val, dims=3, index=[0, 2])  # reads layers 0 and 2 only
    assert partial.index == (0, 2) and partial.layer_scores(val).shape == (300, 2)

    tensors = {GATE_KEY + k: v for k, v in detector.to_tensors("domain").items()}
    again = Detector.from_storage(
        {k[len(GATE_KEY) :]: v for k, v in tensors.items()}, detector.to_section(), "domain"
    )
    np.testing.assert_allclose(again.scores(val), val_scores, rtol=1e-4, atol=1e-4)
    broken = detector.to_section() | {"scales": [1.0]}
    with pytest.raises(CheckpointError, match="inconsistent; re-run `cxr gate fit`"):
        Detector.from_storage(detector.to_tensors("domain"), broken, "domain")
    with pytest.raises(CheckpointError, match="lack"):
        Detector.from_storage({}, detector.to_section(), "domain")


GATE_KEY = "cxr_gate/"


def _small_card(preprocess: PreprocessConfig) -> ModelCard:
    return ModelCard(
        architecture="small_cnn",
        num_classes=14,
        label_space=NIH14.to_dict(),
        in_chans=1,
        preprocess=preprocess.to_dict(),
        thresholds={c: 0.5 for c in NIH14.classes},
    )


@pytest.fixture(scope="module")
def gated_checkpoint(tmp_path_factory):
    """A small model whose gate was fitted on radiograph-like images (references: inverted
    films, another 'population'), stamped into its checkpoint."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gated")
    preprocess = PreprocessConfig(
        cache_size=SIZE, input_size=SIZE, in_chans=1, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    card = _small_card(preprocess)
    path = save_checkpoint(
        folder / "model.safetensors", create_model("small_cnn", 14, in_chans=1).state_dict(), card
    )
    ckpt = load_checkpoint(path)
    model = ckpt.build_model()
    named = feature_layers(card, model)
    rng = np.random.default_rng(0)

    def features(n, make):
        arrays = np.stack([to_cache_array(make(rng), SIZE) for _ in range(n)])
        batches = [eval_tensor(arrays[i : i + 32], preprocess) for i in range(0, n, 32)]
        return collect_features(model, [m for _, m in named], batches)

    train, val = features(150, _film), features(60, _film)
    inverted = (features(40, _inverted), features(40, _inverted))
    domain, chest, rates = fit_detectors(
        train, val, {"inverted": inverted}, heads=member_heads([n for n, _ in named]), dims=16
    )
    section, tensors = gate_section(
        [n for n, _ in named], domain, chest, rates, counts={"train": 150}, ages=[20, 80], dims=16
    )
    with safe_open(str(path), "pt") as handle:
        digest = handle.metadata()[DIGEST_KEY]
    stamp_checkpoint(path, replace(card, gate=section), tensors)
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()[DIGEST_KEY] == digest  # weights untouched
    after = load_checkpoint(path)
    assert after.card.thresholds == card.thresholds and after.card.gate["age_range"] == [20.0, 80.0]
    assert rates["validation"]["out_of_domain"] <= 0.05 and rates["validation"]["refused"] == 0
    assert rates["references"]["inverted"] == {"images": 40, "refused": 0.0, "out_of_domain": 1.0}
    return path, folder


def _inverted(rng: np.random.Generator) -> np.ndarray:
    return (1.0 - _film(rng)).astype(np.float32)


def _noise(rng: np.random.Generator) -> np.ndarray:
    return rng.random((SIZE, SIZE)).astype(np.float32)


def test_predictor_gives_every_image_one_outcome_and_calls_only_what_it_may(gated_checkpoint):
    path, _ = gated_checkpoint
    predictor = Predictor.from_checkpoint(path, device="cpu")
    rng = np.random.default_rng(7)
    films = [_film(rng) for _ in range(20)]
    other = [_inverted(rng) for _ in range(6)]
    noise = [_noise(rng) for _ in range(6)]
    blank = [np.zeros((SIZE, SIZE), np.float32)]
    predictions = predictor.predict(films + other + noise + blank)
    outcomes = [p.outcome for p in predictions]
    assert outcomes[:20].count(SCORED) >= 18  # ~2% of films like the training ones are held back
    assert outcomes[20:26] == [OUT_OF_DOMAIN] * 6 and outcomes[26:] == [REFUSED] * 7
    for p in predictions[20:26]:  # out of domain: numbers shown, nothing called
        assert len(p.probabilities) == 14 and p.positive == [] and not p.scored_anyway
        assert "unlike the films this model was trained on" in p.reason
    for p in predictions[26:]:  # refused: no numbers at all, the reason
        assert p.probabilities == {} and p.positive == [] and p.reason
    assert "does not look like a chest radiograph" in predictions[26].reason
    assert "image #33: the image is nearly uniform" in predictions[-1].reason
    anyway = predictor.predict(other + noise[:1], score_anyway=True)
    assert [p.scored_anyway for p in anyway] == [True] * 6 + [False]
    expected = [[c for c, v in p.probabilities.items() if v >= 0.5] for p in anyway[:6]]
    assert [p.positive for p in anyway[:6]] == expected and any(expected)
    assert anyway[-1].outcome == REFUSED and anyway[-1].positive == []
    assert all(not p.scored_anyway for p in predictor.predict(films[:3], score_anyway=True))

    # the gate changes no probability: the features come from the same forward pass
    plain = Predictor(
        predictor.model,
        label_space=predictor.label_space,
        preprocess=predictor.preprocess,
        target_layer=lambda m: m,
        device="cpu",
    )
    with_gate = predictor.predict_probabilities(films + noise)
    np.testing.assert_allclose(plain.predict_probabilities(films + noise), with_gate)
    assert not np.isnan(with_gate).any()
    assert np.isnan(predictor.predict_probabilities(blank)).all()  # refused before the model: NaN
    # Grad-CAM works on a copy of the model, which carries the feature hooks along
    heat = explain(predictor, LoadedImage(films[0], "film"), "Mass", "gradcam")
    assert heat.shape == films[0].shape and np.isfinite(heat).all()


def test_predictor_files_and_cxr_predict_agree_on_every_outcome(gated_checkpoint, tmp_path, capsys):
    path, _ = gated_checkpoint
    rng = np.random.default_rng(3)
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray((_film(rng) * 255).astype(np.uint8)).save(images / "a_film.png")
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(images / "b_blank.png")
    Image.fromarray((_noise(rng) * 255).astype(np.uint8)).save(images / "c_noise.png")
    Image.fromarray((_inverted(rng) * 255).astype(np.uint8)).save(images / "d_other.png")
    Image.fromarray(np.zeros((1, 1), np.uint8) + 9).save(images / "e_pixel.png")
    (images / "f_broken.png").write_bytes(b"not a png")
    _dicom(images / "g_ct.dcm", Modality="CT")
    expected = {
        "a_film.png": SCORED,
        "b_blank.png": REFUSED,
        "c_noise.png": REFUSED,
        "d_other.png": OUT_OF_DOMAIN,
        "e_pixel.png": REFUSED,
        "f_broken.png": UNREADABLE,
        "g_ct.dcm": REFUSED,
    }
    results = Predictor.from_checkpoint(path, device="cpu").predict_files(sorted(images.iterdir()))
    assert {Path(r.path).name: r.outcome for r in results} == expected
    broken = next(r for r in results if r.outcome == UNREADABLE)
    assert broken.prediction is None and broken.reason == broken.error != ""

    for flag, anyway in (([], "false"), (["--score-anyway"], "true")):
        out = tmp_path / f"out{len(flag)}"
        argv = ["predict", str(images), "--checkpoint", str(path), "--out", str(out), *flag]
        assert main(argv) == 0
        frame = pd.read_csv(out / "predictions.csv", keep_default_na=False, dtype=str)
        frame.index = [p.rsplit("/", 1)[-1] for p in frame["path"]]
        assert list(frame.columns) == table_columns(NIH14.classes, labels=False, thresholds=True)
        assert frame["outcome"].to_dict() == expected
        for name in ("b_blank.png", "c_noise.png", "e_pixel.png", "g_ct.dcm", "f_broken.png"):
            assert frame.loc[name, "prob:Mass"] == "" and frame.loc[name, "findings"] == ""
            assert frame.loc[name, "reason"] != ""
        assert "blank" in frame.loc["b_blank.png", "reason"]
        assert "Modality is CT" in frame.loc["g_ct.dcm", "reason"]
        assert frame.loc["f_broken.png", "error"] == frame.loc["f_broken.png", "reason"] != ""
        other = frame.loc["d_other.png"]
        assert other["prob:Mass"] != "" and other["scored_anyway"] == anyway
        assert (other["findings"] != "") == (anyway == "true")
        assert frame.loc["a_film.png", "scored_anyway"] == "false"
    err = capsys.readouterr().err
    assert "7 images: 1 scored, 1 out of domain, 4 refused by the input gate, 1 unreadable" in err


# --------------------------------------------------------------------------- the lung check in the gate


@pytest.fixture(scope="module")
def lung_predictor(tmp_path_factory):
    """A small classifier without feature statistics whose gate has the bundled lung model, so
    every warning it gives comes from the image's header or its lungs."""
    from cxr_core.inference.lungs import DEFAULT_LUNG_CHECKPOINT, LungSegmenter

    torch.manual_seed(0)
    preprocess = PreprocessConfig(cache_size=SIZE, input_size=SIZE, in_chans=1)
    card = ModelCard(
        architecture="small_cnn",
        num_classes=14,
        label_space=NIH14.to_dict(),
        in_chans=1,
        preprocess=preprocess.to_dict(),
        thresholds={c: 0.5 for c in NIH14.classes},
    )
    path = save_checkpoint(
        tmp_path_factory.mktemp("lunggate") / "model.safetensors",
        create_model("small_cnn", 14, in_chans=1).state_dict(),
        card,
    )
    return Predictor.from_checkpoint(
        path, device="cpu", lungs=LungSegmenter.from_path(DEFAULT_LUNG_CHECKPOINT)
    )


def _not_chest_inputs(film: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
    """Images that pass the quality refusal but are not frontal chest films, and what the lung check finds."""
    import cv2

    yy, xx = np.mgrid[:256, :256] / 255.0
    blurred = cv2.GaussianBlur(
        np.random.default_rng(0).random((256, 256)).astype(np.float32), (0, 0), 12
    )
    side = film.shape[0] * 3 // 8
    return {
        "blank but for a gradient": ((0.2 + 0.6 * xx).astype(np.float32), "no lung was found"),
        "photo-like blobs": (
            ((blurred - blurred.min()) / np.ptp(blurred)).astype(np.float32),
            "no lung was found",
        ),
        "film cropped to a corner": (
            cv2.resize(film[:side, :side], film.shape[::-1]),
            "the lungs cover only",
        ),
        "film turned by 90 degrees": (np.rot90(film).copy(), "not two lungs side by side"),
    }


def test_lungs_that_are_not_those_of_a_frontal_film_make_the_image_out_of_domain(
    lung_predictor, nih14_root, pneumonia_root
):
    from cxr_core.inference.lungs import NOT_FRONTAL_WARNING

    films = [
        load_image(sorted((nih14_root / "images").glob("*.png"))[0]),
        load_image(sorted((pneumonia_root / "train" / "NORMAL").glob("*.jpeg"))[0]),
    ]
    odd = _not_chest_inputs(films[0].pixels)
    predictions = lung_predictor.predict(films + [pixels for pixels, _ in odd.values()])
    # real adult and pediatric frontal films pass (this model has no fitted detectors)
    assert [(p.outcome, p.warnings) for p in predictions[:2]] == [(SCORED, [])] * 2
    for prediction, (name, (_, found)) in zip(predictions[2:], odd.items()):
        assert prediction.outcome == OUT_OF_DOMAIN and prediction.positive == [], name
        assert len(prediction.warnings) == 1 and NOT_FRONTAL_WARNING in prediction.warnings[0], name
        assert found in prediction.reason, (name, prediction.reason)
    # the reason is the lung check's own sentence, and the gate adds it to the header's findings
    rotated = odd["film turned by 90 degrees"][0]
    lungs = lung_predictor.segment_lungs(rotated)
    assert predictions[-1].warnings == [lungs.check.warning]
    assert lung_predictor.gate.verdict(None, lungs=lungs).warnings == (lungs.check.warning,)
    assert lung_predictor.gate.verdict(None).outcome == SCORED  # no lung result: header checks only
    # probabilities do not depend on the lung check, and precomputed lung results give the same warnings
    plain = Predictor(
        lung_predictor.model,
        label_space=lung_predictor.label_space,
        preprocess=lung_predictor.preprocess,
        target_layer=lambda m: m,
        device="cpu",
    )
    np.testing.assert_array_equal(
        plain.predict_probabilities(films), lung_predictor.predict_probabilities(films)
    )
    assert (
        plain.segment_lungs(films[0]) is None
        and plain.predict(films[:1] + [rotated])[1].outcome == SCORED
    )
    precomputed = [lung_predictor.segment_lungs(im) for im in films] + [lungs]
    verdicts = lung_predictor.assess(films + [rotated], lungs=precomputed)[1]
    assert [v.warnings for v in verdicts] == [(), (), (lungs.check.warning,)]


def test_file_results_carry_the_lung_mask_the_gate_checked(lung_predictor, nih14_root, tmp_path):
    from PIL import Image as PILImage

    source = sorted((nih14_root / "images").glob("*.png"))[0]
    film = load_image(source).pixels
    PILImage.fromarray(np.round(np.rot90(film) * 255).astype(np.uint8)).save(
        tmp_path / "turned.png"
    )
    results = lung_predictor.predict_files([source, tmp_path / "turned.png"], workers=2)
    assert [r.outcome for r in results] == [SCORED, OUT_OF_DOMAIN]
    upright, turned = results
    assert (
        upright.lungs.check.ok and upright.warnings == [] and upright.lungs.mask.shape == film.shape
    )
    np.testing.assert_array_equal(
        upright.lungs.mask, lung_predictor.segment_lungs(load_image(source)).mask
    )
    assert not turned.lungs.check.ok and turned.warnings == [turned.lungs.check.warning]
