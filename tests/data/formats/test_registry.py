"""The format registry: detection order, forced formats, what an unknown layout is told, options."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxr_core.data.formats import (
    DatasetFormat,
    detect_format,
    get_format,
    list_formats,
    load_dataset,
    load_mask_set,
    register_format,
)
from cxr_core.data.formats.registry import unregister_format
from cxr_core.data.labels import LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.errors import ConfigError, DatasetError


def test_every_adapter_is_registered_with_what_it_reads():
    names = list_formats()
    assert names[: len(set(names))] == names  # no duplicates
    for name in ("nih", "chexpert", "folders", "disease-folders", "masks"):
        assert name in names
        fmt = get_format(name)
        assert fmt.summary and fmt.looks_for
    assert "masks" in list_formats("masks") and "masks" not in list_formats("labels")
    assert "nih" in list_formats("boxes")
    with pytest.raises(
        DatasetError, match="unknown dataset format 'nope'; use auto or one of: nih"
    ):
        get_format("nope")


def test_detection_on_the_real_layouts(shared_data):
    assert detect_format(shared_data / "nih14") == (
        "nih",
        shared_data / "nih14" / "Data_Entry_2017.csv",
    )
    assert detect_format(shared_data / "covid19")[0] == "folders"
    labels = shared_data / "labels"
    assert detect_format(labels / "chexpert_train.csv.gz")[0] == "chexpert"
    assert detect_format(labels / "Data_Entry_2017_v2020.csv.gz")[0] == "nih"
    montgomery = shared_data / "lungmasks" / "montgomery"
    assert detect_format(montgomery, "masks") == (
        "nlm-tb",
        montgomery,
    )  # TB names: the more specific


def test_an_unknown_layout_lists_what_each_format_looks_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError) as err:
        detect_format(tmp_path)
    message = str(err.value)
    for name in list_formats("labels"):
        assert f"\n  {name}: {get_format(name).looks_for}" in message
    assert "masks:" not in message  # only formats that give labels are candidates
    with pytest.raises(DatasetError, match="image\\+mask dataset"):
        load_mask_set(tmp_path)


def test_a_forced_format_is_used_and_a_wrong_kind_refused(tmp_path, make_image):
    for cls in ("images", "masks"):  # image+mask folders are no class-folder set...
        make_image(tmp_path / cls / "a.png")
    with pytest.raises(DatasetError, match="not a labelled dataset"):
        load_dataset(tmp_path)
    forced = load_dataset(tmp_path, fmt="folders")  # ...unless asked for by name
    assert set(forced.classes) == {"Images", "Masks"}
    with pytest.raises(DatasetError, match="the masks format has no labels"):
        load_dataset(tmp_path, fmt="masks")


def test_unknown_options_are_config_errors_naming_the_known_ones(tmp_path, make_image):
    make_image(tmp_path / "A" / "a.png")
    make_image(tmp_path / "B" / "b.png")
    with pytest.raises(
        ConfigError, match=r"no option\(s\) \['labelfrom'\].*classes, task, label_from"
    ):
        load_dataset(tmp_path, labelfrom="kermany3")


def test_a_new_format_registers_before_a_general_one(tmp_path, make_image):
    make_image(tmp_path / "A" / "a.png")
    make_image(tmp_path / "B" / "b.png")
    (tmp_path / "MARKER").write_text("")

    def load(target: Path) -> Manifest:
        frame = pd.DataFrame(
            {
                "image_id": ["a"],
                "path": [str(target / "A" / "a.png")],
                "patient_id": ["p"],
                "view": [""],
                "split": [""],
                "Marked": [1.0],
            }
        )
        return Manifest(frame, LabelSpace("marked", ("Marked",)), "marked")

    fmt = DatasetFormat(
        name="marked",
        summary="test",
        looks_for="a MARKER file",
        recognise=lambda p: p if (p / "MARKER").is_file() else None,
        load=load,
    )
    register_format(fmt, before="folders")
    try:
        assert list_formats().index("marked") == list_formats().index("folders") - 1
        assert detect_format(tmp_path) == ("marked", tmp_path)
        assert load_dataset(tmp_path).classes == ("Marked",)
        with pytest.raises(ValueError, match="registered twice"):
            register_format(fmt)
    finally:
        unregister_format("marked")
    assert detect_format(tmp_path)[0] == "folders"
