"""load_image on crafted bad files and seeded mutants of real radiographs, each in a worker process.

Every outcome must be an image or an ImageLoadError: no other exception (a batch would abort),
no hang, no file accepted whose pixel data is shorter than its header claims, and no mutant
accepted with flat bands its original lacks (a desynchronised JPEG scan).
"""

from __future__ import annotations

import os

import pytest

from tests.reliability import crafted

SEED = 14


@pytest.fixture(scope="module")
def sources(shared_data):
    found = crafted.real_sources(shared_data)
    if "nih.png" not in found or "kermany.jpeg" not in found:
        pytest.skip(f"real NIH PNGs / Kermany JPEGs not found under {shared_data}")
    return found


@pytest.fixture(scope="module")
def loader():
    with crafted.IsolatedLoader(timeout=20.0) as isolated:
        yield isolated


def _unclear(results):
    return [r for r in results if r[-2] in ("other", "hang", "padded", "corrupt")]


def test_crafted_files_are_refused_with_a_reason(sources, loader, tmp_path):
    cases = crafted.build_crafted_set(tmp_path, sources)
    results = crafted.run_crafted(loader, cases)
    assert len(cases) >= 40
    assert not [(c.name, o, d) for c, o, d in results if o in ("other", "hang", "padded")]
    wrong = [(c.name, o, d) for c, o, d in results if c.expect == "refuse" and o != "refused"]
    assert not wrong
    for case, outcome, detail in results:
        if outcome == "refused":
            assert str(case.path) in detail, detail  # the message names the file


def test_fuzz_50_mutants(sources, loader, tmp_path):
    results = crafted.run_fuzz(loader, crafted.fuzz_originals(sources), 50, SEED, tmp_path)
    counts = crafted.tally(outcome for _, outcome, _ in results)
    assert sum(counts.values()) == 50
    assert not _unclear(results), counts
    assert counts["refused"] > 0 and counts["accepted"] > 0  # the mutants exercise both paths


@pytest.mark.slow
def test_fuzz_1000_mutants(sources, loader, tmp_path):
    results = crafted.run_fuzz(loader, crafted.fuzz_originals(sources), 1000, SEED + 1, tmp_path)
    assert not _unclear(results), crafted.tally(outcome for _, outcome, _ in results)


def test_oracle_sees_padding_the_lenient_decoders_hide(sources):
    """Without this, 'no padded outcome' could just mean the check never fires."""
    png, jpeg = sources["nih.png"], sources["kermany.jpeg"]
    assert crafted.shortfall(png) is None and crafted.shortfall(jpeg) is None
    assert "PNG zlib data holds" in crafted.shortfall(crafted.png_lying_height(png))
    assert crafted.shortfall(crafted.jpeg_with_size(jpeg, height=2000)) is not None
    assert crafted.shortfall(jpeg[: len(jpeg) // 2] + b"\xff\xd9") is not None
    dicoms = crafted.real_dicoms(sources)
    assert all(crafted.shortfall(data) is None for data in dicoms.values())


def test_isolated_loader_reports_hangs_and_other_exceptions(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with crafted.IsolatedLoader(
        loader="builtins:open", error="builtins:LookupError", timeout=2.0
    ) as isolated:
        assert isolated.run(fifo)[0] == "hang"  # open() on a FIFO without writer blocks
        outcome, detail = isolated.run(tmp_path)  # the worker was restarted after the hang
        assert outcome == "other" and "IsADirectoryError" in detail
