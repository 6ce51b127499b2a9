"""A progress bar for `sftdata run` on a terminal (records/s, tokens/s); silent when piped."""

from __future__ import annotations

import time


class RunProgress:
    """Context manager whose ``update(result, done, total)`` is the runner's progress callback."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.records = self.tokens = 0
        self.start = time.perf_counter()
        self._progress = None
        self._task = None

    def __enter__(self) -> RunProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("[bold]chunks"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("run", total=None, rate="")
        return self

    def update(self, result, done: int, total: int) -> None:
        self.records += result.records_read
        self.tokens += result.tokens
        if self._progress is not None:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            rate = f"{self.records / elapsed:,.0f} rec/s  {self.tokens / elapsed / 1e6:.2f} M tok/s"
            self._progress.update(self._task, completed=done, total=total, rate=rate)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
