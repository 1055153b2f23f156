"""A store another user could tamper with is refused, with one line that says what to do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vfs.errors import UnsafeStore
from vfs.store import Store


def test_store_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    Store.create(tmp_path / "s").close()
    os.chown(tmp_path / "s" / "locks", 65534, 65534)
    with pytest.raises(UnsafeStore, match="belongs to uid 65534"):
        Store.open(tmp_path / "s")


def test_group_writable_store_is_refused(tmp_path: Path) -> None:
    Store.create(tmp_path / "s").close()
    os.chmod(tmp_path / "s" / "index", 0o770)
    with pytest.raises(UnsafeStore, match="writable by other users"):
        Store.open(tmp_path / "s")


def test_a_lock_directory_replaced_by_a_symlink_is_refused(tmp_path: Path) -> None:
    Store.create(tmp_path / "s").close()
    os.rename(tmp_path / "s" / "locks", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", tmp_path / "s" / "locks")
    with pytest.raises(UnsafeStore, match="symlink"):
        Store.open(tmp_path / "s")
