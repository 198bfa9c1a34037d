"""Rich progress bars on stderr: one bar per image with ETA and steps per second."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

console = Console(stderr=True, soft_wrap=True)


class StepRateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:5.1f} step/s" if task.speed else "  ?   step/s")


class StepProgress:
    """Context manager handing out ``step_callback(name, steps)`` callables for the samplers."""

    def __init__(self, quiet: bool = False):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 StepRateColumn(),
                                 TimeRemainingColumn(), console=console, disable=quiet, transient=False)

    def __enter__(self) -> StepProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def step_callback(self, name: str, steps: int):
        task = self.progress.add_task(name, total=steps)

        def callback(step, x_t, x0):
            self.progress.update(task, completed=step + 1)

        return callback
