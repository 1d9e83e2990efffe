from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_core.artifacts.catalog import discover_checkpoints
from cxr_core.data.imaging import load_image
from cxr_core.errors import CheckpointError
from cxr_core.inference.lungs import (
    DEFAULT_LUNG_CHECKPOINT,
    NOT_FRONTAL_WARNING,
    LungSegmenter,
    check_lung_fraction,
    check_lungs,
    heatmap_mass_in_mask,
    heatmap_within_mask,
    lung_area_fraction,
    lung_contours,
)
from cxr_core.inference.predictor import Predictor
from cxr_core.metrics.segmentation import dice_score

REFERENCE = {"min": 0.12, "max": 0.30}


@pytest.mark.parametrize(
    ("fraction", "status"),
    [
        (0.0, "none"),
        (0.004, "none"),
        (0.05, "tiny"),
        (0.06, "ok"),
        (0.2, "ok"),
        (0.44, "ok"),
        (0.46, "most_of_image"),
    ],
)
def test_lung_fraction_check_uses_the_training_range(fraction, status):
    check = check_lung_fraction(fraction, REFERENCE)
    assert check.status == status
    assert (check.warning is None) == (status == "ok")
    if check.warning:
        assert NOT_FRONTAL_WARNING in check.warning
        assert (f"{fraction:.1%}" in check.warning) == (status != "none")


def test_a_card_without_a_training_range_is_an_error():
    with pytest.raises(CheckpointError, match="mask_fraction"):
        check_lung_fraction(0.2, {})


def test_lung_area_fraction_ignores_specks():
    mask = np.zeros((10, 10), bool)
    mask[2:6, 2:7] = True  # 20 pixels
    mask[9, 9] = True  # a 1-pixel speck
    assert lung_area_fraction(mask) == pytest.approx(0.20)


def test_heatmap_mass_in_mask_is_the_share_of_the_total():
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0], heat[3, 3], heat[1, 1] = 2.0, 1.0, -5.0  # negative values count as 0
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    assert heatmap_mass_in_mask(heat, mask) == pytest.approx(2 / 3)
    assert np.isnan(heatmap_mass_in_mask(np.zeros((4, 4)), mask))
    big_mask = np.kron(mask, np.ones((4, 4), bool))  # the same region at 16x16
    uniform = np.ones((4, 4), np.float32)
    assert heatmap_mass_in_mask(uniform, big_mask) == pytest.approx(16 / 256)


def test_heatmap_within_mask_rescales_over_the_lungs_and_zeroes_the_rest():
    heat = np.array([[0.9, 0.2, 0.4, 1.0], [0.1, 0.3, 0.5, 0.7]], np.float32)
    mask = np.array([[0, 1, 1, 0], [0, 1, 1, 0]], bool)  # inside: 0.2, 0.4, 0.3, 0.5
    out = heatmap_within_mask(heat, mask)
    np.testing.assert_allclose(out, [[0, 0, 2 / 3, 0], [0, 1 / 3, 1, 0]], atol=1e-6)
    # a mask at a finer grid (the image's size): a cell is lung when at least half of it is
    fine = np.kron(mask, np.ones((4, 4), bool))
    fine[:, 4] = (
        False  # column 1 keeps 3 of 4 columns: still lung; a quarter-lung cell would not be
    )
    fine[:, 15] = True
    np.testing.assert_allclose(heatmap_within_mask(heat, fine), out, atol=1e-6)
    assert not heatmap_within_mask(heat, np.zeros_like(mask)).any()  # no lung: nothing to show
    assert not heatmap_within_mask(
        np.full((2, 4), 0.5, np.float32), mask
    ).any()  # flat inside the lungs
    with pytest.raises(ValueError, match="2-D"):
        heatmap_within_mask(heat[None], mask)


def test_contours_trace_each_component_along_its_border():
    mask = np.zeros((30, 40), bool)
    mask[5:20, 4:14] = True  # 150 px, larger
    yy, xx = np.mgrid[0:30, 0:40]
    mask |= ((yy - 15) / 6.0) ** 2 + ((xx - 30) / 5.0) ** 2 <= 1  # ellipse, smaller
    contours = lung_contours(mask)
    assert len(contours) == 2
    rect = contours[0]
    assert set(map(tuple, rect)) == {
        (x, y) for y in range(5, 20) for x in range(4, 14) if y in (5, 19) or x in (4, 13)
    }
    for poly in contours:
        steps = np.abs(np.diff(np.vstack([poly, poly[:1]]), axis=0)).max(axis=1)
        assert steps.max() == 1  # consecutive points are 8-neighbours, and the polygon closes
        assert mask[poly[:, 1], poly[:, 0]].all()
    assert lung_contours(np.zeros((5, 5), bool)) == []


def test_a_segmentation_checkpoint_is_not_accepted_as_a_classifier():
    with pytest.raises(CheckpointError, match="segmentation model"):
        Predictor.from_checkpoint(DEFAULT_LUNG_CHECKPOINT, device="cpu")
    bundled = DEFAULT_LUNG_CHECKPOINT.parent.parent
    assert "lungs" not in {e.name for e in discover_checkpoints([bundled])}
    assert [e.name for e in discover_checkpoints([bundled], segmentation=True)] == ["lungs"]


@pytest.fixture(scope="module")
def segmenter() -> LungSegmenter:
    return LungSegmenter.from_path(DEFAULT_LUNG_CHECKPOINT)


def test_bundled_segmenter_finds_the_lungs_of_a_validation_film(segmenter, montgomery_root):
    name = segmenter.checkpoint.card.data["val_ids"][0]
    image = load_image(montgomery_root / "images" / f"{name}.png")
    reference = np.asarray(Image.open(montgomery_root / "masks" / f"{name}.png")) > 127
    result = segmenter.segment(image.pixels)
    assert result.mask.shape == image.pixels.shape
    assert dice_score(result.mask, reference) > 0.9
    assert result.check.ok and result.check.warning is None
    assert len(result.contours()) == 2


def test_bundled_segmenter_warns_about_images_that_are_not_chest_films(segmenter):
    blank = np.zeros((256, 256), np.float32)
    assert "no lung was found" in segmenter.segment(blank).check.warning
    noise = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    result = segmenter.segment(noise)
    assert result.check.status == "most_of_image" and NOT_FRONTAL_WARNING in result.check.warning


def test_cli_predict_writes_lung_masks_and_fractions(montgomery_root, tmp_path):
    from cxr_core.cli.main import main

    sources = sorted((montgomery_root / "images").glob("*.png"))[:2]
    turned = tmp_path / "turned.png"
    Image.fromarray(np.rot90(np.asarray(Image.open(sources[0])))).save(turned)
    classifier = Path(DEFAULT_LUNG_CHECKPOINT).parent.parent / "pneumonia" / "model.safetensors"
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            *map(str, sources),
            str(turned),
            "--checkpoint",
            str(classifier),
            "--out",
            str(out),
            "--lungs",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))
    assert [Path(r["path"]).name for r in rows] == [p.name for p in sources] + [turned.name]
    for row, src in zip(rows, sources):
        written = np.asarray(Image.open(out / "lungs" / src.name)) == 255
        assert float(row["lung_fraction"]) == pytest.approx(written.mean(), abs=1e-6)
        assert 0.1 < float(row["lung_fraction"]) < 0.35 and row["lung_warning"] == ""
        assert NOT_FRONTAL_WARNING not in row["warnings"]
    # the lung check is one of the input gate's warnings: the turned film has it in both columns
    assert "side by side" in rows[2]["lung_warning"] and rows[2]["lung_warning"] in rows[2][
        "warnings"
    ].split(" | ")


def test_explain_eval_reports_the_heatmap_mass_inside_the_lungs(
    segmenter, nih14_root, tmp_path, capsys
):
    import shutil

    import pandas as pd
    import torch

    from cxr_core.cli.main import main
    from cxr_core.data.labels import NIH14
    from cxr_core.data.preprocessing import PreprocessConfig
    from cxr_core.inference.explain import explain_batch
    from cxr_core.inference.localisation import load_bboxes
    from cxr_core.models import create_model
    from cxr_core.models.card import ModelCard
    from cxr_core.models.checkpoint import save_checkpoint

    boxes = load_bboxes(nih14_root / "BBox_List_2017.csv")
    chosen = boxes.drop_duplicates("finding").head(2)
    images = tmp_path / "images"
    images.mkdir()
    for name in chosen["image_id"]:
        shutil.copy(nih14_root / "images" / name, images / name)
    torch.manual_seed(0)
    preprocess = PreprocessConfig(cache_size=64, input_size=64, in_chans=1)
    card = ModelCard(
        architecture="small_cnn",
        num_classes=14,
        label_space=NIH14.to_dict(),
        preprocess=preprocess.to_dict(),
        in_chans=1,
    )
    ckpt = save_checkpoint(
        tmp_path / "m.safetensors", create_model("small_cnn", 14, in_chans=1).state_dict(), card
    )
    out = tmp_path / "per_box.csv"
    code = main(
        [
            "explain-eval",
            "--checkpoint",
            str(ckpt),
            "--images",
            str(images),
            "--bbox",
            str(nih14_root / "BBox_List_2017.csv"),
            "--out",
            str(out),
            "--lungs",
            "--device",
            "cpu",
        ]
    )
    assert code == 0 and "mean_in_lung" in capsys.readouterr().out
    per_box = pd.read_csv(out)
    scored = per_box.dropna(subset=["in_lung"])  # NaN: an all-zero heatmap has no mass to place
    assert len(scored) and scored["in_lung"].between(0, 1).all()
    row = scored.iloc[0]
    image = load_image(images / row.image_id)
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    heatmap = explain_batch(predictor, [image], [row.finding], "gradcam")[0]
    expected = heatmap_mass_in_mask(heatmap, segmenter.segment(image.pixels).mask)
    assert row.in_lung == pytest.approx(expected, abs=1e-6)


def _two_blobs(dx: int, dy: int, second: int = 20) -> np.ndarray:
    mask = np.zeros((100, 100), bool)
    mask[30:60, 20:40] = True  # 30 x 20 = 600 px
    mask[30 + dy : 30 + dy + second, 20 + dx : 40 + dx] = True
    return mask


def test_the_layout_check_wants_two_lungs_side_by_side():
    reference = {"min": 0.05, "max": 0.30}
    assert check_lungs(_two_blobs(dx=40, dy=0, second=30), reference).ok
    stacked = check_lungs(_two_blobs(dx=0, dy=45, second=30), reference)
    assert stacked.status == "not_two_lungs" and "side by side" in stacked.warning
    assert (
        check_lungs(_two_blobs(dx=40, dy=0, second=4), reference).status == "not_two_lungs"
    )  # one lung and a scrap
    one = np.zeros((100, 100), bool)
    one[20:70, 20:60] = True
    assert check_lungs(one, reference).status == "not_two_lungs"


def test_bundled_segmenter_flags_a_rotated_film(segmenter, montgomery_root):
    name = segmenter.checkpoint.card.data["val_ids"][0]
    film = load_image(montgomery_root / "images" / f"{name}.png").pixels
    assert segmenter.segment(film).check.ok
    assert segmenter.segment(np.rot90(film).copy()).check.status == "not_two_lungs"


def test_the_one_pass_check_agrees_with_dropping_specks_then_checking():
    """check_lungs labels the mask once; it must decide exactly as area, then layout, of the
    mask without specks."""
    from cxr_core.data.lung_mask import drop_specks
    from cxr_core.inference.lungs import LungCheck, two_lungs_side_by_side

    reference = {"min": 0.05, "max": 0.30}
    rng = np.random.default_rng(0)
    statuses = set()
    for trial in range(40):
        mask = _two_blobs(dx=int(rng.integers(0, 50)), dy=int(rng.integers(0, 50)), second=30)
        mask |= rng.random(mask.shape) < 0.002 * (trial % 4)  # specks
        if trial % 5 == 0:
            mask[:, : int(rng.integers(0, 60))] = False  # one lung cut off
        fraction = check_lung_fraction(lung_area_fraction(mask), reference)
        expected = fraction
        if fraction.ok and not two_lungs_side_by_side(drop_specks(mask)):
            expected = LungCheck(fraction.fraction, "not_two_lungs", fraction.low, fraction.high)
        got = check_lungs(mask, reference)
        assert got == expected
        statuses.add(got.status)
    assert {"ok", "not_two_lungs"} <= statuses
