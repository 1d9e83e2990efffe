"""The tree stays clean under ruff (lint and format), configured in pyproject.toml.

Pinned in requirements-dev.txt: another ruff release may format differently.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    local = Path(sys.executable).with_name("ruff")
    if local.exists():
        return [str(local)]
    if found := shutil.which("ruff"):
        return [found]
    pytest.skip("ruff is not installed (pip install -r requirements-dev.txt)")


@pytest.mark.parametrize(
    "args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"]
)
def test_tree_is_clean_under_ruff(args: list[str]) -> None:
    done = subprocess.run([*_ruff(), *args], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _declared_distributions() -> set[str]:
    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    return {Requirement(s).name.lower().replace("_", "-") for s in specs}


def test_every_imported_third_party_package_is_declared() -> None:
    """A package the product imports must be a direct dependency, not one that arrives by chance
    through another (as scikit-learn once did through grad-cam)."""
    import ast
    from importlib.metadata import packages_distributions

    ours = {"cxr_core", "dashboard", "app_pages", "streamlit_app"}
    files = [*(REPO_ROOT / "cxr_core").rglob("*.py"), *(REPO_ROOT / "dashboard").rglob("*.py")]
    files += [*(REPO_ROOT / "app_pages").rglob("*.py"), REPO_ROOT / "streamlit_app.py"]
    imported: dict[str, str] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ours:
                    imported.setdefault(top, str(path.relative_to(REPO_ROOT)))
    dists = packages_distributions()
    declared = _declared_distributions()
    missing = {
        f"{top} (imported in {where})"
        for top, where in imported.items()
        if not {d.lower().replace("_", "-") for d in dists.get(top, [top])} & declared
    }
    assert not missing, f"declare these in pyproject.toml dependencies: {sorted(missing)}"
