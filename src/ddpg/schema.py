"""Option fields: a dataclass field that also documents the option it is, so the dataclass (``RestoreRequest``,
``ServeOptions``, ``BenchConfig``) is the one home of each option's default, help, flags and entry points. The
command line builds its Typer options from them (``ddpg.cli.schema``) and ``ddpg serve`` its request fields.

Torch-free: the command line reads these before it imports anything heavy. A help text may hold ``{tasks}``,
``{method_defaults}`` or ``{graph_methods}``, filled in when the command line shows its help (their values come
from the task and method tables).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields

OPTION = "ddpg.option"  # the key of an option field's OptionDoc in its metadata


@dataclass(frozen=True)
class OptionDoc:
    """How a field is offered (a field without one is the API's own). ``help``: one line; ``flags``: the command
    line's spellings (default ``--name-with-dashes``; ``--x/--no-x`` for a two-way switch); ``served``: a
    ``ddpg serve`` request may set it; ``kind``: the command line's type where the field's is not one it reads
    (e.g. ``list[str]`` of KEY=VALUE items for a mapping); ``hidden``: left out of the help (test switches);
    ``parse``: checks and converts the command line's text (raising :class:`~ddpg.errors.ParameterError`), so a bad
    value is refused as the command line reads it (exit 2, naming the flag)."""

    help: str
    flags: tuple[str, ...] = ()
    served: bool = False
    kind: object = None
    hidden: bool = False
    parse: typing.Callable[[str], object] | None = None


def option(default: object = MISSING, *, help: str, flags: tuple[str, ...] = (), served: bool = False,
           kind: object = None, hidden: bool = False, parse: typing.Callable[[str], object] | None = None,
           **field_options) -> typing.Any:
    """A dataclass field (``default`` and any other :func:`dataclasses.field` keyword) documented as an option."""
    return field(default=default, metadata={OPTION: OptionDoc(help, tuple(flags), served, kind, hidden, parse)},
                 **field_options)


def option_fields(cls: type) -> list[tuple[Field, OptionDoc]]:
    """(field, its OptionDoc) of every option field of dataclass ``cls``, in field order."""
    return [(f, f.metadata[OPTION]) for f in fields(cls) if OPTION in f.metadata]


def field_default(f: Field) -> object:
    """A field's default value (its factory called), or ``...`` for a required field."""
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else ...


def value_type(cls: type, name: str) -> type:
    """The type of field ``name`` of ``cls`` without ``None`` (``int | None`` → ``int``); a mapping is ``dict``."""
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [k for k in typing.get_args(hint) if k is not type(None)]
        hint = kinds[0] if len(kinds) == 1 else hint
    origin = typing.get_origin(hint) or hint
    return dict if isinstance(origin, type) and issubclass(origin, Mapping) else hint
