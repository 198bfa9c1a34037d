"""Typer options built from an option dataclass (:mod:`ddpg.schema`): ``restore``, ``serve`` and ``bench`` take one
option per option field of ``RestoreRequest``, ``ServeOptions`` and ``BenchConfig``, with the field's default,
help and flags, so a command and its dataclass cannot disagree. Typer reads a command's options from its
signature; :func:`with_options` writes that signature."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TypeVar

import typer
from typer.core import TyperCommand
from typer.models import ArgumentInfo

from ddpg.errors import ParameterError
from ddpg.schema import field_default, option_fields, value_type

Command = TypeVar("Command", bound=Callable)


def typer_options(cls: type) -> list[inspect.Parameter]:
    """One keyword parameter per option field of dataclass ``cls``, its default a ``typer.Option`` (a bool without
    flags is a one-way ``--name`` switch, as every switch of ``ddpg`` is)."""
    params = []
    for f, doc in option_fields(cls):
        flags = doc.flags or ("--" + f.name.replace("_", "-"),)
        parser = None if doc.parse is None else _bad_parameter_on_error(doc.parse)
        option = typer.Option(field_default(f), *flags, help=doc.help, hidden=doc.hidden, parser=parser)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=doc.kind or value_type(cls, f.name)))
    return params


def _bad_parameter_on_error(parse: Callable[[str], object]) -> Callable[[str], object]:
    """``parse`` with its ParameterError turned into Typer's BadParameter: ``Invalid value for '--flag': VALUE:
    problem``, exit 2."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except ParameterError as exc:
            raise typer.BadParameter(f"{exc.value}: {exc.problem}") from None

    return convert


def with_options(cls: type) -> Callable[[Command], Command]:
    """A decorator: the command (taking ``**options``) gets the options of ``cls``'s option fields, after its own
    arguments and before its own options; it is called with every one of them by name."""

    def decorate(command: Command) -> Command:
        own = [p.replace(kind=p.KEYWORD_ONLY) for p in inspect.signature(command).parameters.values()
               if p.kind is not p.VAR_KEYWORD]
        arguments = [p for p in own if isinstance(p.default, ArgumentInfo)]
        options = [p for p in own if p not in arguments]
        command.__signature__ = inspect.Signature(arguments + typer_options(cls) + options)
        return command

    return decorate


def _task_names() -> str:
    from ddpg.operators.tasks import CLI_TASKS  # the task table imports torch: read only when help is shown

    return " | ".join(CLI_TASKS)


def _method_defaults() -> str:
    from ddpg.api.settings import describe_method_defaults  # the presets: read only when help is shown

    return describe_method_defaults("sr4", "gaussian")


def _graph_methods() -> str:
    from ddpg.runtime.graph_runner import GRAPH_METHODS  # the method table imports torch: read only when shown

    return "/".join(GRAPH_METHODS)


HELP_FIELDS = {"{tasks}": _task_names, "{method_defaults}": _method_defaults, "{graph_methods}": _graph_methods}


def fill_help_fields(params: Iterable[object]) -> None:
    """Fill in, in place, the :data:`HELP_FIELDS` that ``params``' help names (each value read from its table
    when a help names it)."""
    for param in params:
        for name, value in HELP_FIELDS.items():
            if name in (getattr(param, "help", None) or ""):
                param.help = param.help.replace(name, value())


class TableHelp(TyperCommand):
    """A command whose option help may name ``{tasks}`` (the task table's names), ``{method_defaults}`` (each
    method's σ_y, steps and operator for sr4 with the gaussian prior) or ``{graph_methods}`` (the methods whose
    whole step a CUDA graph captures): filled in (:func:`fill_help_fields`) where the help is read — its help page
    and shell completion's option descriptions — and not when the command line is parsed (no torch then)."""

    def format_help(self, ctx: typer.Context, formatter: object) -> None:
        fill_help_fields(self.params)
        super().format_help(ctx, formatter)

    def shell_complete(self, ctx: typer.Context, incomplete: str) -> list:
        fill_help_fields(self.params)
        return super().shell_complete(ctx, incomplete)
