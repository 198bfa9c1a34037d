"""No code outside ``ddpg/operators`` asks which task or operator it holds: a comparison with a task, CLI or
alias name (``op.name == "inpainting"``, ``task in ("sr_bicubic", …)``, ``case "colorize":``) fails here. What
such a branch stands for belongs in the task table's hooks (``operators/tasks.py``) or in the operator."""

from __future__ import annotations

import ast
from pathlib import Path

from ddpg.operators.tasks import ALIASES, OPERATOR_OF_TASK, TASK_TABLE

SRC = Path(__file__).resolve().parents[1] / "src" / "ddpg"
NAMES = set(TASK_TABLE) | set(OPERATOR_OF_TASK) | set(ALIASES)


def names_in(node: ast.AST) -> list[str]:
    """The task names a compared operand is, or holds (a tuple, list or set of strings)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [n.value for n in items if isinstance(n, ast.Constant) and n.value in NAMES]


def task_branches(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every comparison (==, !=, in, not in, is) and match case against a task name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            found += [(node.lineno, name) for operand in (node.left, *node.comparators) for name in names_in(operand)]
        elif isinstance(node, ast.MatchValue):
            found += [(node.lineno, name) for name in names_in(node.value)]
    return found


def test_no_module_outside_the_operators_branches_on_a_task_name():
    hits = [f"{path.relative_to(SRC.parent)}:{line}: compares with {name!r}"
            for path in sorted(SRC.rglob("*.py")) if path.relative_to(SRC).parts[0] != "operators"
            for line, name in task_branches(ast.parse(path.read_text(), str(path)))]
    assert not hits, "branches on a task name (give the task table or the operator a hook instead):\n" + \
        "\n".join(hits)


def test_every_form_of_a_task_branch_is_found():
    code = ('if op.name == "inpainting": pass\nif task in ("sr_bicubic", "x"): pass\nok = "sr4" != t\n'
            'if t not in {"deblur_motion"}: pass\nmatch t:\n    case "colorize": pass\nx = {"denoise": 1}\n')
    assert [name for _, name in task_branches(ast.parse(code))] == [
        "inpainting", "sr_bicubic", "sr4", "deblur_motion", "colorize"]
