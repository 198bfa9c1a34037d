"""No function or method in src/ddpg is longer than 80 lines (from its ``def`` to its last line, decorators
excluded): a longer one is two functions."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 80


def long_functions(source: str, path: str, limit: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function or method in ``source`` longer than ``limit`` lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append(f"{path}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_80_lines() -> None:
    offenders = []
    for file in sorted((SRC / "ddpg").rglob("*.py")):
        offenders += long_functions(file.read_text(), str(file.relative_to(SRC.parent)))
    assert not offenders, f"functions longer than {MAX_LINES} lines:\n" + "\n".join(offenders)


def test_the_counter_names_a_long_method_and_skips_decorators() -> None:
    body = "".join(f"        x{i} = {i}\n" for i in range(79))
    source = (f"class A:\n    @staticmethod\n    @property\n    def f():\n{body}        return x0\n\n"
              f"    def g():\n{body}\n")
    assert long_functions(source, "a.py") == ["a.py:4 f (81 lines)"]
