"""The input gate: refusals, DICOM warnings, the feature-distance statistics and their use by the Predictor."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from cxr_core.cli.main import main
from cxr_core.data.imaging import LoadedImage, load_image
from cxr_core.data.labels import NIH14
from cxr_core.data.preprocessing import PreprocessConfig, eval_tensor, to_cache_array
from cxr_core.errors import UnsuitableImageError
from cxr_core.inference.explain import explain
from cxr_core.inference.gate import (
    FeatureReference,
    InputGate,
    check_quality,
    dicom_age_years,
    fit_gate,
    fit_reference,
    training_age_range,
)
from cxr_core.inference.predictor import Predictor
from cxr_core.models import create_model
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import (
    DIGEST_KEY,
    head_modules,
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


def test_dicom_metadata_warnings(tmp_path):
    card = ModelCard(
        architecture="small_cnn",
        num_classes=14,
        label_space=NIH14.to_dict(),
        in_chans=1,
        preprocess=PreprocessConfig(cache_size=SIZE, input_size=SIZE, in_chans=1).to_dict(),
        gate={"age_range": [18.0, 90.0]},
    )
    gate = InputGate(card)
    assert (
        gate.metadata_warnings(
            _dicom(tmp_path / "ok.dcm", BodyPartExamined="CHEST", PatientAge="045Y")
        )
        == []
    )
    ct = gate.metadata_warnings(_dicom(tmp_path / "ct.dcm", Modality="CT", BodyPartExamined="HEAD"))
    assert len(ct) == 2 and "Modality is CT" in ct[0] and "BodyPartExamined is HEAD" in ct[1]
    assert "Modality is MG" in gate.metadata_warnings(_dicom(tmp_path / "mg.dcm", Modality="MG"))[0]
    assert (
        "lateral view (LL)"
        in gate.metadata_warnings(_dicom(tmp_path / "ll.dcm", ViewPosition="LL"))[0]
    )
    assert (
        "age 5 years is outside the training ages (18-90"
        in gate.metadata_warnings(_dicom(tmp_path / "kid.dcm", PatientAge="005Y"))[0]
    )
    assert (
        InputGate(None).metadata_warnings(_dicom(tmp_path / "kid2.dcm", PatientAge="005Y")) == []
    )  # no range known


def test_distance_is_the_mahalanobis_distance_of_the_low_rank_covariance():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(5, 40))
    train = rng.normal(size=(300, 5)) @ basis * 3 + rng.normal(size=(300, 40)) * 0.5 + 2.0
    val = rng.normal(size=(200, 5)) @ basis * 3 + rng.normal(size=(200, 40)) * 0.5 + 2.0
    ref, val_distances = fit_reference(train, val, dims=5)
    # the same distance from the full covariance W diag(var) W^T + s2 (I - W W^T), inverted densely
    w = ref.components
    cov = w @ np.diag(ref.variances) @ w.T + ref.residual_variance * (np.eye(40) - w @ w.T)
    centred = val - train.mean(axis=0)
    dense = np.sqrt(np.einsum("ij,jk,ik->i", centred, np.linalg.inv(cov), centred) / 40)
    np.testing.assert_allclose(val_distances, dense, rtol=1e-8)
    np.testing.assert_allclose(
        ref.variances, np.sort(np.linalg.eigvalsh(np.cov(train.T)))[::-1][:5], rtol=1e-8
    )
    assert (val_distances > ref.threshold).mean() <= 0.05
    shifted = val + 3.0 * rng.normal(size=40)  # another distribution: almost all flagged
    assert (ref.distances(shifted) > ref.threshold).mean() > 0.9
    tensors = ref.to_tensors()
    again = FeatureReference.from_checkpoint(
        tensors, {"residual_variance": ref.residual_variance, "distance_threshold": ref.threshold}
    )
    np.testing.assert_allclose(again.distances(val), val_distances, rtol=1e-4)


@pytest.fixture(scope="module")
def gated_checkpoint(tmp_path_factory):
    """A small model whose gate was fitted on radiograph-like images, stamped into its checkpoint."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gated")
    preprocess = PreprocessConfig(
        cache_size=SIZE, input_size=SIZE, in_chans=1, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    card = ModelCard(
        architecture="small_cnn",
        num_classes=14,
        label_space=NIH14.to_dict(),
        in_chans=1,
        preprocess=preprocess.to_dict(),
        thresholds={c: 0.5 for c in NIH14.classes},
    )
    path = save_checkpoint(
        folder / "model.safetensors", create_model("small_cnn", 14, in_chans=1).state_dict(), card
    )
    ckpt = load_checkpoint(path)
    model = ckpt.build_model()
    rng = np.random.default_rng(0)
    films = {
        split: [to_cache_array(_film(rng), SIZE) for _ in range(n)]
        for split, n in (("train", 120), ("val", 60))
    }

    def batches(split):
        arrays = np.stack(films[split])
        for start in range(0, len(arrays), 32):
            yield eval_tensor(arrays[start : start + 32], preprocess)

    gated, tensors, val_distances = fit_gate(
        card, model, head_modules(card, model), batches, ages=[20, 80], dims=16
    )
    before = hashlib.sha256(
        b"".join(v.numpy().tobytes() for _, v in sorted(ckpt.state_dict.items()))
    ).hexdigest()
    with safe_open(str(path), "pt") as handle:
        digest = handle.metadata()[DIGEST_KEY]
    stamp_checkpoint(path, gated, tensors)
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()[DIGEST_KEY] == digest  # weights untouched
    after = load_checkpoint(path)
    assert (
        hashlib.sha256(
            b"".join(v.numpy().tobytes() for _, v in sorted(after.state_dict.items()))
        ).hexdigest()
        == before
    )
    assert after.card.thresholds == card.thresholds and after.card.gate["age_range"] == [20.0, 80.0]
    assert set(after.gate) == {"mean", "components", "variances"}
    return path, folder


def test_predictor_warns_on_noise_and_keeps_films_clean(gated_checkpoint):
    path, _ = gated_checkpoint
    predictor = Predictor.from_checkpoint(path, device="cpu")
    rng = np.random.default_rng(7)
    films = [_film(rng) for _ in range(20)]
    noise = [rng.random((SIZE, SIZE)).astype(np.float32) for _ in range(10)]
    checker = [np.kron((np.indices((8, 8)).sum(axis=0) % 2), np.ones((8, 8))).astype(np.float32)]
    predictions = predictor.predict(films + noise + checker)
    flagged = [bool(p.warnings) for p in predictions]
    assert sum(flagged[:20]) <= 3  # ~5% of in-distribution images are flagged by design
    assert all(flagged[20:])
    assert "unlike the training images" in predictions[-1].warnings[0]
    # the same probabilities as without the gate: the features come from the same forward pass
    plain = Predictor(
        predictor.model,
        label_space=predictor.label_space,
        preprocess=predictor.preprocess,
        target_layer=lambda m: m,
        device="cpu",
    )
    np.testing.assert_allclose(
        plain.predict_probabilities(films + noise), predictor.predict_probabilities(films + noise)
    )
    with pytest.raises(UnsuitableImageError):
        predictor.predict([np.zeros((SIZE, SIZE), np.float32)])
    # Grad-CAM works on a copy of the model, which carries the feature hooks along
    heat = explain(predictor, LoadedImage(films[0], "film"), "Mass", "gradcam")
    assert heat.shape == films[0].shape and np.isfinite(heat).all()
    # (a batch of one may take other kernels than the batch of 30: equal to float tolerance, not bit for bit)
    assert predictor.predict(films[:1])[0].probabilities == pytest.approx(
        predictions[0].probabilities, rel=1e-4, abs=1e-6
    )


def test_cxr_predict_refuses_blank_and_warns_on_noise_in_their_rows(
    gated_checkpoint, tmp_path, capsys
):
    path, _ = gated_checkpoint
    rng = np.random.default_rng(3)
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray((_film(rng) * 255).astype(np.uint8)).save(images / "a_film.png")
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(images / "b_blank.png")
    Image.fromarray((rng.random((256, 256)) * 255).astype(np.uint8)).save(images / "c_noise.png")
    Image.fromarray(np.zeros((1, 1), np.uint8) + 9).save(images / "d_pixel.png")
    out = tmp_path / "out"
    assert main(["predict", str(images), "--checkpoint", str(path), "--out", str(out)]) == 0
    frame = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    frame.index = [p.rsplit("/", 1)[-1] for p in frame["path"]]
    assert list(frame.columns[-2:]) == ["warnings", "error"]
    assert "blank" in frame.loc["b_blank.png", "error"]
    assert frame.loc["b_blank.png", "prob:Mass"] == ""
    assert "too small" in frame.loc["d_pixel.png", "error"]
    assert "unlike the training images" in frame.loc["c_noise.png", "warnings"]
    assert frame.loc["c_noise.png", "error"] == "" and frame.loc["a_film.png", "error"] == ""
    assert "2 unreadable or refused" in capsys.readouterr().err


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


def test_the_gate_warns_when_the_lungs_are_not_those_of_a_frontal_film(
    lung_predictor, nih14_root, pneumonia_root
):
    from cxr_core.inference.lungs import NOT_FRONTAL_WARNING

    films = [
        load_image(sorted((nih14_root / "images").glob("*.png"))[0]),
        load_image(sorted((pneumonia_root / "train" / "NORMAL").glob("*.jpeg"))[0]),
    ]
    odd = _not_chest_inputs(films[0].pixels)
    predictions = lung_predictor.predict(films + [pixels for pixels, _ in odd.values()])
    assert [p.warnings for p in predictions[:2]] == [
        [],
        [],
    ]  # real adult and pediatric frontal films pass
    for prediction, (name, (_, found)) in zip(predictions[2:], odd.items()):
        assert len(prediction.warnings) == 1 and NOT_FRONTAL_WARNING in prediction.warnings[0], name
        assert found in prediction.warnings[0], (name, prediction.warnings[0])
    # the warning is the lung check's own sentence, and the gate adds it to the header's warnings
    rotated = odd["film turned by 90 degrees"][0]
    lungs = lung_predictor.segment_lungs(rotated)
    assert predictions[-1].warnings == [lungs.check.warning]
    assert lung_predictor.gate.image_warnings(rotated, lungs) == [lungs.check.warning]
    assert (
        lung_predictor.gate.image_warnings(rotated) == []
    )  # no lung result given: header checks only
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
        and plain.predict(films[:1] + [rotated])[1].warnings == []
    )
    precomputed = [lung_predictor.segment_lungs(im) for im in films] + [lungs]
    assert lung_predictor.assess(films + [rotated], lungs=precomputed)[1] == [
        [],
        [],
        [lungs.check.warning],
    ]


def test_file_results_carry_the_lung_mask_the_gate_checked(lung_predictor, nih14_root, tmp_path):
    from PIL import Image as PILImage

    source = sorted((nih14_root / "images").glob("*.png"))[0]
    film = load_image(source).pixels
    PILImage.fromarray(np.round(np.rot90(film) * 255).astype(np.uint8)).save(
        tmp_path / "turned.png"
    )
    results = lung_predictor.predict_files([source, tmp_path / "turned.png"], workers=2)
    assert [r.error for r in results] == ["", ""]
    upright, turned = results
    assert (
        upright.lungs.check.ok and upright.warnings == [] and upright.lungs.mask.shape == film.shape
    )
    np.testing.assert_array_equal(
        upright.lungs.mask, lung_predictor.segment_lungs(load_image(source)).mask
    )
    assert not turned.lungs.check.ok and turned.warnings == [turned.lungs.check.warning]
