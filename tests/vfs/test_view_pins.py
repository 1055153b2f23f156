"""Pins follow the kernel's lookup counts: a dropped version's data stays while the kernel holds
any of its inodes (with zero-message opens, an open file is only that), gc keeps it, and after
the last forget gc may take it. Opening and closing files pins nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.treeutil import write
from vfs.errors import StaleHandle
from vfs.gc import collect_garbage
from vfs.importer import import_tree
from vfs.inodes import split_file_ino
from vfs.locks import pinned_roots
from vfs.store import Store
from vfs.view import ROOT_INO, VersionsView

DATA = os.urandom(3 << 20)


@pytest.fixture
def view(store: Store, tmp_path: Path) -> VersionsView:
    src = tmp_path / "src"
    write(src / "a.bin", DATA)
    write(src / "sub/b.txt", b"only in v1")
    write(src / "sub/deeper/c.txt", b"c")
    import_tree(store, src, "one")
    (src / "a.bin").unlink()
    write(src / "other.txt", b"v2")
    import_tree(store, src, "two")
    return VersionsView(store)


def look(view: VersionsView, parent: int, name: bytes) -> int:
    """One lookup the kernel takes (each is one reference)."""
    node, _ = view.lookup(parent, name)
    view.remember(node)
    return node.ino


def read_all(view: VersionsView, ino: int) -> bytes:
    fh = view.open(ino, writing=False)
    return view.read_blocking(fh, 0, fh.node.entry.size)


def test_a_file_the_kernel_holds_reads_after_drop_and_gc_until_forgotten(
        view: VersionsView, store: Store) -> None:
    v1 = look(view, ROOT_INO, b"@v1")
    a = look(view, v1, b"a.bin")
    assert split_file_ino(a) is not None  # positional: counted on its directory
    assert 1 in pinned_roots(store.root)
    store.drop("v1")
    view.refresh()
    report = collect_garbage(store)
    assert report.kept_open == [1]
    # no open handle: the kernel reads an inode it holds (zero-message opens)
    assert read_all(view, a) == DATA
    with pytest.raises(StaleHandle):  # but its paths are gone
        view.lookup(v1, b"a.bin")
    view.forget(a, 1)
    assert view.remembered(1) == 0
    assert 1 not in pinned_roots(store.root)  # released at once: v1 is dropped
    assert collect_garbage(store).kept_open == []
    with pytest.raises(StaleHandle):
        view.open(a, writing=False)


def test_open_and_close_pin_nothing(view: VersionsView, store: Store) -> None:
    a = look(view, look(view, ROOT_INO, b"@v1"), b"a.bin")
    fh = view.open(a, writing=False)
    view.forget(a, 1)  # the kernel forgot the inode; the handle is just a value now
    view.refresh()
    assert pinned_roots(store.root) == {}
    view.close(fh)
    assert pinned_roots(store.root) == {}


def test_a_version_is_pinned_while_any_of_its_nodes_is_remembered(
        view: VersionsView, store: Store) -> None:
    sub = look(view, look(view, ROOT_INO, b"@v1"), b"sub")
    deeper = look(view, sub, b"deeper")
    c = look(view, deeper, b"c.txt")
    look(view, deeper, b"c.txt")  # twice: two references
    assert view.remembered(1) == 4  # @v1 itself pins nothing
    for ino, count in ((sub, 1), (deeper, 1), (c, 1)):
        view.forget(ino, count)
        view.refresh()  # a live version's idle pin goes at the next poll
        assert 1 in pinned_roots(store.root)
    view.forget(c, 1)
    assert view.remembered(1) == 0
    view.refresh()
    assert pinned_roots(store.root) == {}
    assert view.remembered(2) == 0


def test_a_directory_stays_known_while_the_kernel_holds_its_files(
        view: VersionsView, store: Store) -> None:
    """The kernel may forget a directory's inode before its files' (batched forgets): the
    files still resolve and their forgets still count."""
    sub = look(view, look(view, ROOT_INO, b"@v1"), b"sub")
    b = look(view, sub, b"b.txt")
    view.forget(sub, 1)
    assert view.getattr(b).size == len(b"only in v1")
    assert view.remembered(1) == 1
    view.forget(b, 1)
    assert view.inodes.get(sub) is None
    assert view.remembered(1) == 0


def test_forgets_beyond_the_count_and_unknown_inodes_change_nothing(
        view: VersionsView, store: Store) -> None:
    a = look(view, look(view, ROOT_INO, b"@v1"), b"a.bin")
    view.forget(a, 5)
    view.forget(a, 1)
    view.forget(987654, 3)
    assert view.remembered(1) == 0
    other = look(view, look(view, ROOT_INO, b"@v2"), b"other.txt")
    assert view.remembered(2) == 1
    view.forget(other, 1)
    assert view.remembered(2) == 0


def test_a_node_dropped_as_unreferenced_and_then_remembered_is_counted(
        view: VersionsView) -> None:
    v1 = look(view, ROOT_INO, b"@v1")
    node, _ = view.lookup(v1, b"sub")
    view.inodes.drop_unreferenced(node)  # the daemon thought the reply was not taken
    view.remember(node)
    assert view.node(node.ino) is node
    view.forget(node.ino, 1)
    assert view.remembered(1) == 0


def test_held_names_let_a_mount_make_the_kernel_forget_a_dropped_version(
        view: VersionsView, store: Store) -> None:
    v1 = look(view, ROOT_INO, b"@v1")
    sub = look(view, v1, b"sub")
    look(view, sub, b"b.txt")
    store.drop("v1")
    view.refresh()
    names = set(view.held_names(1))
    assert names == {(v1, b"a.bin"), (v1, b"sub"), (sub, b"b.txt"), (sub, b"deeper")}
