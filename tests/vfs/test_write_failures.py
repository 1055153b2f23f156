"""A failure while writing the store aborts the operation: no version may reference it."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.treeutil import write
from vfs.errors import CorruptData, StoreWriteError
from vfs.importer import import_tree
from vfs.model import Entry
from vfs.pack import PackWriter
from vfs.store import Store
from vfs.verify import verify_store
from vfs.view import ROOT_INO, VersionsView


def test_a_failed_pack_seal_fails_the_import_and_records_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.create(tmp_path / "store")
    object.__setattr__(store.config, "pack_target_size", 1)  # seal after every object
    src = tmp_path / "src"
    for i in range(6):
        write(src / f"f{i}", os.urandom(200_000))
    real_seal = PackWriter.seal
    calls = {"n": 0}

    def flaky_seal(self: PackWriter) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            self._fail(OSError(errno.EIO, "Input/output error"))
        return real_seal(self)

    monkeypatch.setattr(PackWriter, "seal", flaky_seal)
    with pytest.raises(StoreWriteError, match="Input/output error"):
        import_tree(store, src, "must not be recorded", workers=2)
    monkeypatch.setattr(PackWriter, "seal", real_seal)
    assert store.versions() == []
    assert verify_store(store, read_data=True).ok
    version = import_tree(store, src, "retry").version
    for i in range(6):
        e = store.lookup(version, f"f{i}".encode())
        assert store.read(e, 0, e.size) == (src / f"f{i}").read_bytes()
    store.close()


def test_readdir_after_a_failed_page_read_resumes_instead_of_ending(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    for i in range(300):
        write(src / f"{i:03d}", b"x")
    import_tree(store, src, "one")
    view = VersionsView(store)
    v1, _ = view.lookup(ROOT_INO, b"@v1")
    real = store.trees.entries_from
    failed = {"done": False}

    def flaky(tree: bytes, index: int, wait: bool = True) -> Iterator[Entry]:
        for n, e in enumerate(real(tree, index, wait)):  # type: ignore[arg-type]
            if n == 49 and not failed["done"]:
                failed["done"] = True
                raise CorruptData("page unreadable once")
            yield e

    monkeypatch.setattr(store.trees, "entries_from", flaky)
    handle = view.opendir(v1.ino)
    got = []
    with pytest.raises(CorruptData):
        for name, _, _ in view.readdir(handle, 0):
            got.append(name)
    got += [name for name, _, _ in view.readdir(handle, len(got))]
    assert got == [f"{i:03d}".encode() for i in range(300)]
