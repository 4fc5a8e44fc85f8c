"""A progress bar for training (rich, imported lazily) that can be switched off."""

from __future__ import annotations

import time

__all__ = ["TrainProgress"]


class TrainProgress:
    """``with TrainProgress(total, start, enabled) as bar: bar.update(step, loss)``.

    Shows steps, loss, steps/s (measured since this process started training, so a resumed run
    reports its own speed) and the ETA. Disabled, or without rich installed, it does nothing.
    """

    def __init__(self, total: int, start: int, *, enabled: bool, description: str = "training"):
        self.total, self.start, self.enabled = total, start, enabled
        self.description = description
        self._progress = self._task = None
        self._began = time.perf_counter()

    def __enter__(self) -> TrainProgress:
        if not self.enabled:
            return self
        try:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )
        except ImportError:
            self.enabled = False
            return self
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]} steps/s"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._progress.__enter__()
        self._task = self._progress.add_task(
            self.description, total=self.total, completed=self.start, loss="-", speed="-"
        )
        self._began = time.perf_counter()
        return self

    def update(self, step: int, loss: float | None = None) -> None:
        """``step`` steps are done; ``loss`` (if given) is the latest logged loss."""
        if self._progress is None:
            return
        elapsed = time.perf_counter() - self._began
        done = step - self.start
        fields = {"speed": f"{done / elapsed:.1f}" if elapsed > 0 and done else "-"}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        self._progress.update(self._task, completed=step, **fields)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
