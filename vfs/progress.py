"""A progress-reporting interface for long operations, implemented at the process edge.

Owns: the Protocol the core calls; the CLI supplies a terminal bar or nothing. Never imports:
daemon, trio, pyfuse3. Called from the thread running the operation.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, label: str, total: int | None, unit: str) -> None:
        """Begin a phase; `total` is None when it is not known in advance. `unit` "bytes"
        counts bytes (items are files), "bytes/packs" bytes whose items are packs; any other
        unit is a count of that unit."""

    def advance(self, amount: int, items: int = 0) -> None:
        """Record `amount` units (bytes, objects) and `items` files (or packs) done. May be
        called from several threads at once (transfers run in parallel)."""

    def finish(self) -> None:
        """End the current phase."""


class NoProgress:
    def start(self, label: str, total: int | None, unit: str) -> None:
        pass

    def advance(self, amount: int, items: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass
