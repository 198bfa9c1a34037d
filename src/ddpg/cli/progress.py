"""Progress and logs on stderr: an inputs bar and a sampling-steps bar with ETA and steps per second."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True, soft_wrap=True)


def setup_logging(quiet: bool = False) -> None:
    """The ``ddpg`` logger to stderr: INFO and above, WARNING and above with ``quiet``."""
    logger = logging.getLogger("ddpg")
    logger.handlers.clear()
    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


class RateColumn(ProgressColumn):
    """Items per second (``unit`` field of the task: step or img)."""

    def render(self, task) -> Text:
        unit = task.fields.get("unit", "step")
        return Text(f"{task.speed:6.1f} {unit}/s" if task.speed else f"     ? {unit}/s", style="progress.data.speed")


class RichProgress:
    """Draws the API's progress (the ``ddpg.api.NullProgress`` interface): one bar over the inputs, one over
    the sampling steps of the batch in flight."""

    def __init__(self, quiet: bool = False):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=console, disable=quiet, transient=False)
        self.inputs = None
        self.steps = None

    def __enter__(self) -> RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, total: int, what: str) -> None:
        self.inputs = self.progress.add_task(f"{what}: inputs", total=total, unit="img")

    def advance(self, count: int = 1) -> None:
        if self.inputs is not None:
            self.progress.advance(self.inputs, count)

    def step_callback(self, name: str, steps: int):
        label = name if len(name) <= 32 else name[:29] + "..."
        if self.steps is not None:
            self.progress.remove_task(self.steps)
        self.steps = self.progress.add_task(f"  {label}", total=steps, unit="step")
        task = self.steps

        def callback(step, x_t, x0) -> None:
            self.progress.update(task, completed=step + 1)

        return callback
