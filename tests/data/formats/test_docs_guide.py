"""The "add a dataset format" guide in docs/datasets.md: its code registers a working format."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cxr_core.cli.main import main
from cxr_core.data.formats import detect_format, list_formats, load_dataset
from cxr_core.data.formats.registry import unregister_format
from cxr_core.errors import DatasetError
from tests.data.formats.conftest import write_image

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "datasets.md"


@pytest.fixture
def guide_format():
    code = re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(code, str(GUIDE), "exec"), namespace)
    yield namespace
    unregister_format("acme")


def test_the_guide_registers_a_working_format(guide_format, tmp_path, capsys):
    assert list_formats().index("acme") == list_formats().index("folders") - 1
    (tmp_path / "acme_labels.csv").write_text(
        "file,patient,view,findings\n"
        "a.png,p1,pa,Effusion;cardiomegaly\n"
        "b.png,p1,lateral,normal\n"
        "c.png,p2,PA,Pneumothorax\n"
    )
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        write_image(tmp_path / "films" / name, seed=i)
    assert detect_format(tmp_path) == ("acme", tmp_path / "acme_labels.csv")
    manifest = load_dataset(tmp_path)
    assert manifest.classes == ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "No Finding")
    frame = manifest.frame.set_index("image_id")
    assert frame.loc["a.png", "Pleural Effusion"] == 1 and frame.loc["b.png", "No Finding"] == 1
    assert frame["view"].tolist() == ["PA", "LATERAL", "PA"] and frame["patient_id"].nunique() == 2
    (tmp_path / "films" / "c.png").unlink()
    with pytest.raises(DatasetError, match="1 of 3 images"):
        load_dataset(tmp_path)
    assert main(["data", "inspect", str(tmp_path), "--format", "acme", "--missing", "drop"]) == 0
    assert "1 rows without an image file dropped" in capsys.readouterr().out
