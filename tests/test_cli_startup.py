"""The command line starts without torch: importing it, ``ddpg --help``, ``ddpg --version`` and the help of
commands whose options need no table import neither torch nor the runtime (each checked in a fresh interpreter,
as this one has torch loaded). The packages that stay light for it (``ddpg``, ``ddpg.api``, ``ddpg.bench``,
``ddpg.export``) still offer every public name they list."""

import importlib
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "ddpg.runtime", "ddpg.api.restoration", "ddpg.bench.harness", "ddpg.export.onnx_export")
RUN = """
import sys
from ddpg.cli.main import app
if {args!r} is not None:
    try:
        app({args!r}, prog_name="ddpg")
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
print(sorted(name for name in {heavy!r} if name in sys.modules))
"""


def heavy_modules_after(*args: str) -> str:
    """The HEAVY modules a fresh interpreter holds after importing the command line and running ``ddpg *args``
    (nothing for no arguments), as it prints them."""
    code = RUN.format(args=list(args) if args else None, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "120"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("args", [(), ("--help",), ("--version",), ("serve", "--help"), ("bench", "--help"),
                                  ("export", "--help"), ("build-engine", "--help"), ("doctor", "--help")],
                         ids=lambda args: " ".join(args) or "import only")
def test_the_command_line_answers_without_torch(args):
    assert heavy_modules_after(*args) == "[]"


def test_help_that_names_the_tasks_reads_the_task_table():
    assert "'torch'" in heavy_modules_after("restore", "--help")  # filled in from the table, not a copy of it


@pytest.mark.parametrize("package", ["ddpg", "ddpg.api", "ddpg.bench", "ddpg.export"])
def test_every_public_name_of_a_light_package_resolves(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing and set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018
