"""The package layout is the architecture: imports only go down the data flow, never in a circle.

Layers, lowest first (a module may import its own layer's package and anything lower):
errors -> utils -> data, metrics, access -> models -> artifacts -> evaluation, inference -> training, reporting
-> triage -> pacs -> cli.
Packages that share a layer stay independent of each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "cxr_core"

LAYERS: dict[str, int] = {
    "errors": 0,
    "version": 0,
    "utils": 1,
    "data": 2,
    "metrics": 2,
    "access": 2,  # roles, sign-in settings, password hashes, pseudonyms
    "models": 3,
    "artifacts": 4,
    "evaluation": 5,
    "inference": 5,
    "training": 6,
    "reporting": 6,  # DICOM SR / SC / SEG and PDF of a scored film
    "triage": 7,  # the worklist: films scored in the background, cached, sorted
    "pacs": 8,  # DICOMweb: query, retrieve, score, store back
    "cli": 9,
    "__main__": 10,  # python -m cxr_core: the entry point above everything
    # cxr_core/__init__.py: the public API (Predictor, explain, load_image, evaluate_checkpoint,
    # train), re-exported lazily from the layers below; nothing in the library imports it.
    "": 11,
}


def module_name(path: Path) -> str:
    parts = ["cxr_core", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in a file (top level, inside functions, or under
    ``if TYPE_CHECKING:``).

    Imports for annotations only never run, but they still tie two modules together: a circle
    through one is a circle a reader has to untangle, and the next refactoring makes it real.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the submodule; `from pkg import name` the package itself
            subs = [
                f"{node.module}.{a.name}"
                for a in node.names
                if f"{node.module}.{a.name}" in modules
            ]
            names = subs if len(subs) == len(node.names) else [node.module, *subs]
        for name in names:
            if name in modules:
                found.add(name)
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def test_every_package_has_a_layer() -> None:
    unknown = sorted({package_of(m) for m in project_modules()} - set(LAYERS))
    assert not unknown, f"add these cxr_core packages to LAYERS: {unknown}"


def test_no_module_imports_a_layer_above_it_or_a_sibling_package() -> None:
    offences = []
    for module, targets in import_graph().items():
        here = package_of(module)
        for target in targets:
            there = package_of(target)
            if there == here:
                continue
            if LAYERS[there] > LAYERS[here] or (
                LAYERS[there] == LAYERS[here] and there not in ("errors", "version")
            ):
                offences.append(f"{module} -> {target}")
    assert not offences, "imports against the layering:\n" + "\n".join(sorted(offences))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in colour and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for start in sorted(graph):
        if start not in colour and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_import_check_sees_imports_made_for_annotations_only(tmp_path: Path) -> None:
    source = tmp_path / "typed.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from cxr_core.models.registry import create_model\n"
    )
    modules = {"cxr_core.models.registry": source}
    assert imports_of(source, modules) == {"cxr_core.models.registry"}


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "path", sorted(PACKAGE_ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE_ROOT))
)
def test_library_code_logs_instead_of_printing(path: Path) -> None:
    if package_of(module_name(path)) in ("cli", "__main__"):
        return
    calls = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "print"
    ]
    assert not calls, f"{path.name} prints on lines {calls}; use logging (the CLI configures it)"


def test_library_never_imports_streamlit() -> None:
    users = [
        str(p.relative_to(PACKAGE_ROOT))
        for p in PACKAGE_ROOT.rglob("*.py")
        if any(
            (
                isinstance(n, ast.Import)
                and any(a.name.split(".")[0] == "streamlit" for a in n.names)
            )
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "streamlit")
            for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert not users, f"cxr_core must not import Streamlit: {users}"


def test_exception_classes_live_in_errors() -> None:
    outside = []
    for path in PACKAGE_ROOT.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if any(b.endswith(("Error", "Exception")) for b in bases):
                    outside.append(f"{path.relative_to(PACKAGE_ROOT)}:{node.name}")
    assert not outside, f"exception types outside errors.py: {outside}"


# The dashboard sits above the library: app_pages/ (layout) -> dashboard/ (Streamlit helpers and
# view-models) -> cxr_core. Nothing lower imports anything higher.
REPO_ROOT = PACKAGE_ROOT.parent
APP_TIERS = {"cxr_core": 0, "dashboard": 1, "app_pages": 2, "streamlit_app": 3}


def top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def app_files() -> dict[Path, str]:
    files = {p: "cxr_core" for p in PACKAGE_ROOT.rglob("*.py")}
    files.update({p: "dashboard" for p in (REPO_ROOT / "dashboard").rglob("*.py")})
    files.update({p: "app_pages" for p in (REPO_ROOT / "app_pages").rglob("*.py")})
    files[REPO_ROOT / "streamlit_app.py"] = "streamlit_app"
    return files


def test_dashboard_tiers_import_downwards_only() -> None:
    offences = []
    for path, tier in app_files().items():
        for name in top_level_imports(path) & set(APP_TIERS):
            if APP_TIERS[name] > APP_TIERS[tier] or (name == tier == "app_pages"):
                offences.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert not offences, "pages -> dashboard -> cxr_core only:\n" + "\n".join(sorted(offences))


def test_tier_check_sees_an_upward_import(tmp_path: Path) -> None:
    upward = tmp_path / "bad.py"
    upward.write_text("import dashboard.state\nfrom app_pages import review\n")
    assert top_level_imports(upward) & set(APP_TIERS) == {"dashboard", "app_pages"}


# A function over 80 lines does several things; name them.
MAX_FUNCTION_LINES = 80


def function_lengths(path: Path) -> dict[str, int]:
    """``Class.method`` / ``function`` -> lines from its ``def`` to its last line, nested ones too."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[prefix + child.name] = child.end_lineno - child.lineno + 1
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text(), filename=str(path)), "")
    return lengths


def long_functions() -> dict[str, int]:
    return {
        f"{path.relative_to(PACKAGE_ROOT)}:{name}": n
        for path in PACKAGE_ROOT.rglob("*.py")
        for name, n in function_lengths(path).items()
        if n > MAX_FUNCTION_LINES
    }


def test_no_library_function_is_longer_than_80_lines() -> None:
    too_long = long_functions()
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines; split them: {too_long}"


def test_function_lengths_count_methods_and_nested_functions(tmp_path: Path) -> None:
    source = tmp_path / "shapes.py"
    body = "\n".join(f"        x{i} = {i}" for i in range(81))
    source.write_text(
        f"class A:\n    def long(self):\n{body}\n        def inner():\n            pass\n"
    )
    lengths = function_lengths(source)
    assert lengths == {"A.long": 84, "A.long.inner": 2}
