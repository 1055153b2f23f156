"""The protocol-neutral view behind the mount: names, inodes, listings, reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.treeutil import write
from vfs.errors import NoEntry, ReadOnly
from vfs.importer import import_tree
from vfs.store import Store
from vfs.view import ROOT_INO, VersionsView


def walk(view: VersionsView, *names: bytes) -> int:
    ino = ROOT_INO
    for name in names:
        node, _ = view.lookup(ino, name)
        view.remember(node)
        ino = node.ino
    return ino


@pytest.fixture
def view(store: Store, tmp_path: Path) -> VersionsView:
    src = tmp_path / "src"
    write(src / "same.txt", b"unchanged", mtime_ns=10**18)
    write(src / "edit.txt", b"old", mtime_ns=10**18)
    for i in range(500):
        write(src / "many" / f"{i:04d}", str(i).encode())
    import_tree(store, src, "one", tag="first")
    write(src / "edit.txt", b"new", mtime_ns=2 * 10**18)
    import_tree(store, src, "two")
    return VersionsView(store)


def test_root_lists_links_then_versions(view: VersionsView) -> None:
    handle = view.opendir(ROOT_INO)
    names = [n for n, _, _ in view.readdir(handle, 0)]
    assert names == [b"@latest", b"@first", b"@v1", b"@v2"]
    assert view.readlink(walk(view, b"@latest")) == b"@v2"


def test_inodes_are_stable_per_path_and_files_cost_no_table_entry(view: VersionsView) -> None:
    before = len(view.inodes)
    first = walk(view, b"@v1", b"many", b"0042")
    assert walk(view, b"@v1", b"many", b"0042") == first
    assert walk(view, b"@v2", b"many", b"0042") != first
    assert walk(view, b"@v1", b"many") != walk(view, b"@v2", b"many")  # dirs: one per path
    assert len(view.inodes) == before + 4  # @v1, @v2 and their many/: no node per file
    assert view.getattr(first).size == 2
    assert view.read_blocking(view.open(first, writing=False), 0, 10) == b"42"


def test_hard_links_share_one_inode(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "links"
    write(src / "a", b"same inode")
    (src / "d").mkdir()
    os.link(src / "a", src / "d/b")
    import_tree(store, src, "links")
    view = VersionsView(store)
    assert walk(view, b"@v1", b"a") == walk(view, b"@v1", b"d", b"b")
    assert view.getattr(walk(view, b"@v1", b"a")).nlink == 2


def test_readdir_resumes_at_any_offset(view: VersionsView) -> None:
    handle = view.opendir(walk(view, b"@v1", b"many"))
    first = [(n, off) for n, _, off in view.readdir(handle, 0)][:200]
    rest = [n for n, _, _ in view.readdir(handle, 200)]
    again = [n for n, _, _ in view.readdir(view.opendir(handle.node.ino), 450)]
    assert [n for n, _ in first] + rest == [f"{i:04d}".encode() for i in range(500)]
    assert first[-1][1] == 200 and again == [f"{i:04d}".encode() for i in range(450, 500)]


def test_forget_releases_nodes_but_numbers_are_never_reused(view: VersionsView) -> None:
    ino = walk(view, b"@v1", b"many")
    view.forget(ino, 1)
    assert view.inodes.get(ino) is None
    again = walk(view, b"@v1", b"many")
    assert again != ino and again > ino


def test_reads_and_refusals(view: VersionsView) -> None:
    ino = walk(view, b"@v2", b"edit.txt")
    fh = view.open(ino, writing=False)
    assert view.read_blocking(fh, 0, 100) == b"new"
    assert view.read_cached(fh, 1, 100) == b"ew"
    with pytest.raises(ReadOnly):
        view.open(ino, writing=True)
    with pytest.raises(NoEntry):
        view.lookup(walk(view, b"@v2"), b"missing")


def test_refresh_reports_changed_root_names(view: VersionsView, store: Store) -> None:
    assert view.refresh() == []
    store.tag("v2", "second")
    assert view.refresh() == [b"@second"]
    store.untag("first")
    assert view.refresh() == [b"@first"]
