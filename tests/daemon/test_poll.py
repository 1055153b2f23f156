"""The mount's poll of the version log, in-process under trio's autojump clock."""

from __future__ import annotations

import logging
from pathlib import Path

import lmdb
import pytest
import trio

from daemon.headservice import Mounted
from daemon.mount import _poll_versions
from daemon.ops import Operations
from tests.treeutil import write
from vfs.importer import import_tree
from vfs.store import Store
from vfs.view import VersionsView


class FailsOnce(VersionsView):
    """A view whose next refresh meets an LMDB error that `vfs.index.translate` does not know
    (the injection seam: the error is raised where the real one would surface)."""

    fail_next = False
    calls = 0

    def refresh(self) -> list[bytes]:
        self.calls += 1
        if self.fail_next:
            self.fail_next = False
            raise lmdb.BadTxnError("MDB_BAD_TXN: transaction must abort")
        return super().refresh()


async def test_an_unknown_lmdb_error_in_the_poll_is_logged_and_retried(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        autojump_clock: trio.abc.Clock) -> None:
    write(tmp_path / "src/a.txt", b"a")
    import_tree(store, tmp_path / "src", "one")
    view = FailsOnce(store)
    view.fail_next = True
    view.calls = 0
    with caplog.at_level(logging.WARNING), trio.move_on_after(10):
        await _poll_versions(view, Mounted(tmp_path / "mnt", Operations(view)))
    assert view.calls > 3  # the poll went on after the error
    assert "could not re-read the version log" in caplog.text
    assert "MDB_BAD_TXN" in caplog.text
