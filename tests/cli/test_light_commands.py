"""The command line loads torch only for the commands that run a model.

torch alone takes ~500 MB of memory and seconds to import on a busy machine; ``cxr --help``
and ``cxr data inspect`` on a million-row label file need none of it.
"""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from cxr_core.cli.main import build_parser, main
build_parser()
assert "torch" not in sys.modules, "building the parser loaded torch"
assert main(["data", "inspect", sys.argv[1], "--labels-only"]) == 0
assert "torch" not in sys.modules, "cxr data inspect loaded torch"
"""


def test_the_parser_and_data_inspect_do_not_load_torch(tmp_path):
    labels = tmp_path / "Data_Entry_2017.csv"
    labels.write_text(
        "Image Index,Finding Labels,Patient ID\n"
        + "".join(f"{i:08d}_000.png,{'Mass' if i % 3 else 'No Finding'},{i}\n" for i in range(30))
    )
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(labels)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "images:      30" in done.stdout
