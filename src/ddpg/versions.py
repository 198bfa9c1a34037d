"""The one record of versions a result carries (a restore sidecar, an export's metadata, an engine's sidecar,
a bench report, ``ddpg doctor``), and ddpg's own version (``ddpg.__version__`` reads it)."""

from __future__ import annotations

import importlib
import platform

__version__ = "0.1.0"
DISTRIBUTION = "ddpg-restore"  # the name on PyPI ("ddpg" there is another project); the import name is ddpg


def install_hint(extra: str) -> str:
    """How to install the optional dependencies of ``extra`` (a ``[project.optional-dependencies]`` key), from
    PyPI or from a checkout, for error messages (plain text: print it with Rich's markup escaped)."""
    return f"pip install '{DISTRIBUTION}[{extra}]' (in a checkout: pip install -e '.[{extra}]')"


def missing_modules(names: tuple[str, ...]) -> list[str]:
    """The modules of ``names`` that do not import, in order (to refuse work needing an extra before it starts)."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def versions(device: str = "cpu", libraries: tuple[str, ...] = ("numpy",)) -> dict[str, str]:
    """``ddpg``, ``torch``, each module in ``libraries`` (its ``__version__``; it must import), ``python``,
    ``platform``, and ``gpu`` (the device's name) when ``device`` (e.g. "cpu", "cuda:0") is a visible CUDA
    device."""
    import torch

    info = {"ddpg": __version__, "torch": torch.__version__}
    info.update({name: str(importlib.import_module(name).__version__) for name in libraries})
    info.update(python=platform.python_version(), platform=platform.platform())
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
