"""Terminal progress bars for long commands (rich), or nothing when stderr is not a terminal.

Owns: presenting `vfs.progress.Progress` to a person. Called from the thread doing the work.
"""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)


class TerminalProgress:
    """One bar per phase, on stderr; bytes show as sizes and speed, other units as counts."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._items = 0

    def start(self, label: str, total: int | None, unit: str) -> None:
        self.finish()
        if unit.startswith("bytes"):  # "bytes", or "bytes/packs": what the items are
            items = unit.partition("/")[2] or "files"
            columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), TextColumn("{task.fields[items]} " + items),
                       TimeElapsedColumn()]
        else:
            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn(unit), TimeElapsedColumn()]
        self._bar = Progress(*columns, transient=True, refresh_per_second=8)
        self._bar.start()
        self._items = 0
        self._task = self._bar.add_task(label, total=total, items=0)

    def advance(self, amount: int, items: int = 0) -> None:
        if self._bar is not None and self._task is not None:
            self._items += items
            self._bar.update(self._task, advance=amount, items=self._items)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._task = None

