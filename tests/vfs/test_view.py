"""The protocol-neutral view behind the mount: names, inodes, listings, reads."""

from __future__ import annotations

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


def test_identical_files_share_an_inode_across_versions(view: VersionsView) -> None:
    assert walk(view, b"@v1", b"same.txt") == walk(view, b"@v2", b"same.txt")
    assert walk(view, b"@v1", b"edit.txt") != walk(view, b"@v2", b"edit.txt")
    assert walk(view, b"@v1", b"many") != walk(view, b"@v2", b"many")  # dirs: one per path


def test_readdir_resumes_at_any_offset(view: VersionsView) -> None:
    handle = view.opendir(walk(view, b"@v1", b"many"))
    first = [(n, off) for n, _, off in view.readdir(handle, 0)][:200]
    rest = [n for n, _, _ in view.readdir(handle, 200)]
    again = [n for n, _, _ in view.readdir(view.opendir(handle.node.ino), 450)]
    assert [n for n, _ in first] + rest == [f"{i:04d}".encode() for i in range(500)]
    assert first[-1][1] == 200 and again == [f"{i:04d}".encode() for i in range(450, 500)]


def test_forget_releases_nodes_but_numbers_are_never_reused(view: VersionsView) -> None:
    ino = walk(view, b"@v1", b"edit.txt")
    view.forget(ino, 1)
    assert view.inodes.get(ino) is None
    again = walk(view, b"@v1", b"edit.txt")
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
