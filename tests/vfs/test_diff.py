"""diff reports added, removed, modified and type-changed paths from metadata."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.treeutil import write
from vfs.diff import diff_trees
from vfs.importer import import_tree
from vfs.store import Store


def changes(store: Store, a: str, b: str) -> list[tuple[str, str]]:
    va, vb = store.resolve(a), store.resolve(b)
    return [(c.status, os.fsdecode(c.path)) for c in diff_trees(store, va.root, vb.root)]


def test_diff_names_every_kind_of_change(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "same.txt", b"same")
    write(src / "edit.txt", b"old")
    write(src / "chmod.txt", b"x", mode=0o644)
    write(src / "gone/a.txt", b"a")
    write(src / "gone/b/c.txt", b"c")
    write(src / "becomes_dir", b"file")
    write(src / "big/unchanged/x.bin", b"x" * 1000)
    import_tree(store, src, "one")
    write(src / "edit.txt", b"new!")
    os.chmod(src / "chmod.txt", 0o600)
    shutil.rmtree(src / "gone")
    (src / "becomes_dir").unlink()
    write(src / "becomes_dir/inner.txt", b"i")
    write(src / "added/deep/new.txt", b"n")
    import_tree(store, src, "two")
    assert changes(store, "v1", "v2") == [
        ("A", "added"), ("A", "added/deep"), ("A", "added/deep/new.txt"),
        ("T", "becomes_dir"), ("A", "becomes_dir/inner.txt"),
        ("M", "chmod.txt"), ("M", "edit.txt"),
        ("D", "gone"), ("D", "gone/a.txt"), ("D", "gone/b"), ("D", "gone/b/c.txt"),
    ]
    assert changes(store, "v2", "v2") == []
    back = changes(store, "v2", "v1")
    assert ("D", "added/deep/new.txt") in back and ("A", "gone/b/c.txt") in back


def test_diff_inside_a_large_directory_reports_only_the_changed_names(store: Store,
                                                                      tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(3000):
        write(src / "flat" / f"{i:05d}.txt", str(i).encode())
    import_tree(store, src, "one")
    write(src / "flat/01500.txt", b"changed")
    (src / "flat/02999.txt").unlink()
    write(src / "flat/01500a.txt", b"new")
    import_tree(store, src, "two")
    assert changes(store, "v1", "v2") == [("M", "flat/01500.txt"), ("A", "flat/01500a.txt"),
                                          ("D", "flat/02999.txt")]
