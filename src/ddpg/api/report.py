"""What a batch call reports: :class:`Report`, the progress interface and failure messages (the versions a
sidecar records are ``ddpg.versions``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Report:
    """What a batch call did: outputs written, inputs skipped and failed (path, reason), and notes (path, a
    sentence naming it) on every skipped input and every file of an input folder not read, with the reason."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    extra: dict = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, path: str | Path, reason: str) -> None:
        """Skip input ``path``, noting why."""
        self.skipped.append(str(path))
        self.notes.append((str(path), f"{path}: skipped: {reason}"))

    @property
    def exit_code(self) -> int:
        """130 interrupted, 1 when an input failed, else 0."""
        return 130 if self.interrupted else (1 if self.failed else 0)


class NullProgress:
    """The progress interface the API reports to (the CLI draws it; this one draws nothing)."""

    def start(self, total: int, what: str) -> None:
        """``total`` inputs are about to be processed."""

    def step_callback(self, name: str, steps: int):
        """A sampler callback ``(step, x_t, x0)`` for a batch named ``name`` of ``steps`` steps, or None."""
        return None

    def advance(self, count: int = 1) -> None:
        """``count`` inputs finished (done, skipped or failed)."""


def failure_reason(exc: BaseException, path: Path, outdir: Path | None = None) -> str:
    """A failure message that names the file (for an OSError with ``outdir``: the output folder)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and outdir is not None:
        return f"cannot write outputs to {outdir}: {exc.strerror or text}" + \
            (f" ({exc.filename})" if exc.filename else "")
    return text if str(path) in text else f"{path}: {text}"
