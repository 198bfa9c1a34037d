"""The one map from the API's parameter names to the command line's flags: an error that names a parameter
(``sigma_y``) is printed with the flag that sets it (``--sigma-y``), read from the Typer command itself."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

from typer.models import OptionInfo

from ddpg.errors import DdpgError, ParameterError


def flags_of(command: Callable) -> dict[str, str]:
    """{parameter name: its flags as help shows them, e.g. ``"-o/--outdir"``} of a Typer command's options
    (an option without declared names is Typer's ``--name-with-dashes``)."""
    flags = {}
    for name, param in inspect.signature(command).parameters.items():
        if isinstance(param.default, OptionInfo):
            declared = [d for d in param.default.param_decls if d.startswith("-")]
            flags[name] = "/".join(declared) or "--" + name.replace("_", "-")
    return flags


def flag_message(exc: DdpgError, flags: Mapping[str, str] | None = None) -> str:
    """An error's message, naming a bad parameter by its flag in ``flags`` (a :func:`flags_of` map; a parameter
    it lacks is shown as ``--name-with-dashes``)."""
    if isinstance(exc, ParameterError):
        flag = (flags or {}).get(exc.param) or "--" + exc.param.replace("_", "-")
        return f"{flag} {exc.value}: {exc.problem}"
    return str(exc)
