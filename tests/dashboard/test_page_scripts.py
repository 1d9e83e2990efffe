"""Page scripts show only what they mean to: Streamlit's "magic" writes any bare expression onto the page."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO_ROOT / "app_pages").glob("*.py")) + [REPO_ROOT / "streamlit_app.py"]


def magic_expressions(source: str) -> list[tuple[int, str]]:
    """(line, text) of every statement Streamlit's magic would pass to ``st.write``: a bare expression that is
    not a call, a yield/await or a docstring (the first statement of the module or of a function)."""
    found = []

    def visit(body: list[ast.stmt], docstring_allowed: bool) -> None:
        for i, node in enumerate(body):
            if isinstance(node, ast.Expr):
                value = node.value
                docstring = (
                    i == 0
                    and docstring_allowed
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                )
                if not (
                    docstring or isinstance(value, (ast.Call, ast.Yield, ast.YieldFrom, ast.Await))
                ):
                    found.append((node.lineno, ast.unparse(value)[:60]))
            for name in ("body", "orelse", "finalbody"):
                inner = getattr(node, name, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                    visit(
                        inner,
                        name == "body"
                        and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)),
                    )
            for handler in getattr(node, "handlers", []):
                visit(handler.body, False)

    visit(ast.parse(source).body, True)
    return found


def test_the_checker_finds_a_stray_string():
    assert magic_expressions('"""doc"""\nX = 1\n"""about X"""\nwith a:\n    b\n    f()\n') == [
        (3, "'about X'"),
        (5, "b"),
    ]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_bare_expression_is_written_onto_the_page(script: Path):
    assert magic_expressions(script.read_text()) == []
