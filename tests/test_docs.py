"""The guides in docs/ run as written: their Python blocks, in order, on a few real films.

A block fenced as ```python is executed; one fenced as ```yaml NAME is written to the file
NAME first (the configs the code reads). All blocks of a guide share one namespace and run in
a scratch folder holding what the guides name: ``checkpoints/`` (the bundled models),
``film.jpeg``, ``films/<CLASS>/`` to train on and ``scans/test/<CLASS>/`` to evaluate on.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from cxr_core.models import registry
from cxr_core.training import task

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
BLOCK = re.compile(r"^```(\w+)[ \t]*([^\n`]*)\n(.*?)^```", re.M | re.S)


def blocks(markdown: str) -> list[tuple[str, str, str]]:
    """(language, file name or "", code) of every fenced block, in document order."""
    return [(m[1], m[2].strip(), m[3]) for m in BLOCK.finditer(markdown)]


def run_guide(path: Path) -> dict:
    namespace: dict = {"__name__": f"guide_{path.stem.replace('-', '_')}"}
    ran = 0
    for language, name, code in blocks(path.read_text()):
        if language == "yaml" and name:
            Path(name).write_text(code)
        elif language == "python":
            exec(compile(code, f"{path.name} block {ran + 1}", "exec"), namespace)
            ran += 1
    assert ran, f"{path.name} has no python block"
    return namespace


@pytest.fixture(scope="module")
def sandbox(pneumonia_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("guides")
    (root / "checkpoints").symlink_to(REPO_ROOT / "checkpoints")
    originals = {
        c: sorted((pneumonia_root / "train" / c).glob("*.jpeg")) for c in ("NORMAL", "PNEUMONIA")
    }
    shutil.copy(originals["PNEUMONIA"][0], root / "film.jpeg")
    for cls, files in originals.items():
        for folder, chosen in (("films", files[1:13]), ("scans/test", files[13:21])):
            (root / folder / cls).mkdir(parents=True)
            for src in chosen:
                shutil.copy(src, root / folder / cls / src.name)
    return root


@pytest.fixture
def registries():
    """Guides register a model or a task; they are unregistered afterwards."""
    models, tasks = dict(registry._REGISTRY), dict(task._TASKS)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(models)
    task._TASKS.clear()
    task._TASKS.update(tasks)


def test_block_reader_keeps_order_languages_and_file_names():
    text = "x\n```yaml a.yaml\nk: 1\n```\n```python\nprint(1)\n```\n```bash\nls\n```\n"
    assert blocks(text) == [
        ("yaml", "a.yaml", "k: 1\n"),
        ("python", "", "print(1)\n"),
        ("bash", "", "ls\n"),
    ]


def test_api_quickstart(sandbox, monkeypatch):
    monkeypatch.chdir(sandbox)
    ns = run_guide(DOCS / "api.md")
    assert set(ns["prediction"].probabilities) == {"Normal", "Pneumonia"}
    assert ns["heatmap"].shape == ns["image"].pixels.shape
    written = (sandbox / "runs" / "pneumonia-on-scans" / "predictions.csv").read_text()
    assert len(written.splitlines()) == 1 + 16  # the 16 films of scans/test
    assert 0.5 < ns["report"].per_class["Pneumonia"].auroc <= 1.0
    assert ns["result"].completed and ns["result"].best_checkpoint.is_file()


def test_add_a_model_architecture(sandbox, monkeypatch, registries):
    monkeypatch.chdir(sandbox)
    ns = run_guide(DOCS / "add-a-model.md")
    assert ns["predictor"].card.architecture == "tiny_net"
    assert ns["heatmap"].shape == ns["image"].pixels.shape


def test_add_a_task(sandbox, monkeypatch, registries):
    monkeypatch.chdir(sandbox)
    ns = run_guide(DOCS / "add-a-task.md")
    result = ns["result"]
    assert result.completed and result.monitor == "val_accuracy"
    assert 0.0 <= result.report["accuracy"] <= 1.0
    from cxr_core.models.checkpoint import load_checkpoint

    card = load_checkpoint(result.best_checkpoint).card
    assert card.classes == ("upright", "turned_90", "upside_down", "turned_270")
    assert card.validation["accuracy"] == result.report["accuracy"]
    assert (sandbox / "runs" / "orientation" / "train_state.pt").is_file()
