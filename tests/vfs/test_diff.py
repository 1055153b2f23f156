"""diff reports added, removed, modified and type-changed paths from metadata."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.treeutil import write
from vfs.diff import diff_trees, diff_versions
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


def test_diff_finds_renamed_directories_and_files_as_one_change_each(store: Store,
                                                                     tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(5):
        write(src / f"images/cats/{i}.jpg", f"cat {i}".encode())
    write(src / "images/dogs/d.jpg", b"dog")
    write(src / "labels.csv", b"1,cat\n")
    write(src / "notes/readme.txt", b"read me")
    write(src / "empty.txt", b"")
    import_tree(store, src, "one")
    (src / "images/cats").rename(src / "images/felines")
    (src / "labels.csv").rename(src / "meta-labels.csv")
    (src / "notes/readme.txt").rename(src / "README.txt")
    write(src / "notes/other.txt", b"other")
    (src / "empty.txt").rename(src / "empty2.txt")
    import_tree(store, src, "two")
    va, vb = store.resolve("v1"), store.resolve("v2")
    found = [(c.status, os.fsdecode(c.old_path or b""), os.fsdecode(c.path))
             for c in diff_versions(store, va.root, vb.root)]
    assert found == [
        ("R", "notes/readme.txt", "README.txt"),
        ("D", "", "empty.txt"),  # empty files are all alike: no rename is guessed
        ("A", "", "empty2.txt"),
        ("R", "images/cats", "images/felines"),
        ("R", "labels.csv", "meta-labels.csv"),
        ("A", "", "notes/other.txt"),
    ]
    plain = [(c.status, os.fsdecode(c.path))
             for c in diff_versions(store, va.root, vb.root, renames=False)]
    assert plain == changes(store, "v1", "v2")
    assert ("D", "images/cats/3.jpg") in plain and ("A", "images/felines") in plain
    back = [(c.status, os.fsdecode(c.old_path or b""), os.fsdecode(c.path))
            for c in diff_versions(store, vb.root, va.root)]
    assert ("R", "images/felines", "images/cats") in back


def test_a_renamed_directory_hides_copies_of_its_files(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a/x.bin", b"x" * 100)
    write(src / "a/y.bin", b"y" * 100)
    import_tree(store, src, "one")
    (src / "a").rename(src / "b")
    write(src / "0copy/x.bin", b"x" * 100)  # sorts before b/: a copy, not where a/x.bin went
    import_tree(store, src, "two")
    va, vb = store.resolve("v1"), store.resolve("v2")
    found = [(c.status, os.fsdecode(c.old_path or b""), os.fsdecode(c.path))
             for c in diff_versions(store, va.root, vb.root)]
    assert found == [("A", "", "0copy"), ("A", "", "0copy/x.bin"), ("R", "a", "b")]


def test_an_outer_directory_rename_wins_over_a_copy_of_its_subdirectory(store: Store,
                                                                      tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "z/sub/f.bin", b"f" * 50)
    write(src / "z/g.bin", b"g" * 50)
    import_tree(store, src, "one")
    (src / "z").rename(src / "b")
    write(src / "a/sub/f.bin", b"f" * 50)  # a copy of z/sub, listed before b/
    import_tree(store, src, "two")
    va, vb = store.resolve("v1"), store.resolve("v2")
    found = [(c.status, os.fsdecode(c.old_path or b""), os.fsdecode(c.path))
             for c in diff_versions(store, va.root, vb.root)]
    assert found == [("A", "", "a"), ("A", "", "a/sub"), ("A", "", "a/sub/f.bin"),
                     ("R", "z", "b")]
