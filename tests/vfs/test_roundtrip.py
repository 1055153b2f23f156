"""Import then export must reproduce the source exactly: bytes, modes, mtimes, links, xattrs."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest

from tests.treeutil import snapshot, write
from vfs.exporter import export_version
from vfs.importer import import_tree
from vfs.model import Kind
from vfs.store import Store


def build_varied_tree(root: Path) -> None:
    rnd = random.Random(7)
    write(root / "small.txt", b"hello\n", 0o640, 1_600_000_000_123_456_789)
    write(root / "empty", b"", 0o600)
    write(root / "exec.sh", b"#!/bin/sh\necho hi\n", 0o755)
    write(root / "multi.bin", rnd.randbytes(5 * 1024 * 1024 + 17))
    write(root / "deep/a/b/c/d/leaf.csv", b"a,b\n1,2\n" * 1000)
    (root / "empty_dir/nested_empty").mkdir(parents=True)
    os.symlink("../small.txt", root / "deep/rel_link")
    os.symlink("/etc/passwd", root / "outside_link")
    os.symlink("does/not/exist", root / "dangling")
    os.link(root / "small.txt", root / "deep/hardlink.txt")
    os.mkfifo(root / "fifo")
    write(root / os.fsdecode(b"latin1-\xe9\xff.dat"), b"non-utf8 name")
    write(root / ("n" * 255), b"longest name")
    write(root / "with space & 'quote'\n.txt", b"odd name")
    os.setxattr(root / "small.txt", "user.label", b"cat")
    os.setxattr(root / "deep", "user.origin", b"\x00binary\xff")
    os.chmod(root / "deep/a", 0o750)
    os.utime(root / "deep/a", ns=(1_500_000_000_000_000_001, 1_500_000_000_000_000_001))


def roundtrip(store: Store, src: Path, dest: Path) -> None:
    version = import_tree(store, src, "test").version
    export_version(store, version, dest)


def test_export_reproduces_bytes_modes_mtimes_links_and_xattrs(store: Store,
                                                              tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    build_varied_tree(src)
    roundtrip(store, src, dest)
    before, after = snapshot(src), snapshot(dest)
    assert set(before) == set(after)
    for key in before:
        assert before[key] == after[key], key
    assert os.stat(dest / "small.txt").st_ino == os.stat(dest / "deep/hardlink.txt").st_ino
    assert os.readlink(dest / "outside_link") == "/etc/passwd"


def test_sockets_are_kept_or_skipped_with_a_reason(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "keep.txt", b"x")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "control.sock"))
    try:
        kept = import_tree(store, src, "with socket")
        result = import_tree(store, src, "without socket", skip_special=True)
    finally:
        sock.close()
    assert kept.skipped == []
    entries = {e.name: e.kind for e in store.list_dir(kept.version.root_entry)}
    assert entries == {b"control.sock": Kind.SOCK, b"keep.txt": Kind.FILE}
    assert [(s.path, s.reason.split(":")[0]) for s in result.skipped] == [("control.sock",
                                                                             "socket")]
    names = [e.name for e in store.list_dir(result.version.root_entry)]
    assert names == [b"keep.txt"]


def test_multi_gib_sparse_file_round_trips_sparse_and_fast(store: Store, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    size = 3 * 1024**3 + 5
    with open(src / "sparse.img", "wb") as f:
        f.truncate(size)
        f.seek(1024**3)
        f.write(b"middle")
        f.seek(size - 3)
        f.write(b"end")
    version = import_tree(store, src, "sparse").version
    assert version.stats.logical_bytes == size
    assert version.stats.new_stored_bytes < 1 << 20
    entry = store.lookup(version, b"sparse.img")
    assert store.read(entry, 1024**3 - 2, 10) == b"\0\0middle\0\0"
    assert store.read(entry, size - 4, 100) == b"\0end"
    export_version(store, version, dest)
    st = os.stat(dest / "sparse.img")
    assert st.st_size == size
    assert st.st_blocks * 512 < 64 << 20  # holes stayed holes
    with open(dest / "sparse.img", "rb") as f:
        f.seek(1024**3)
        assert f.read(6) == b"middle"
        f.seek(size - 3)
        assert f.read() == b"end"


def test_empty_tree_and_empty_files(store: Store, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    v1 = import_tree(store, src, "empty").version
    assert v1.stats.files == 0
    assert list(store.list_dir(v1.root_entry)) == []
    write(src / "zero", b"")
    v2 = import_tree(store, src, "zero").version
    e = store.lookup(v2, b"zero")
    assert (e.kind, e.size, store.read(e, 0, 10)) == (Kind.FILE, 0, b"")
    export_version(store, v2, dest)
    assert snapshot(src) == snapshot(dest)


def test_reimport_records_exactly_the_current_content(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a.txt", b"a")
    write(src / "gone/b.txt", b"b")
    import_tree(store, src, "one")
    (src / "gone/b.txt").unlink()
    (src / "gone").rmdir()
    write(src / "c.txt", b"c")
    v2 = import_tree(store, src, "two").version
    assert [e.name for e in store.list_dir(v2.root_entry)] == [b"a.txt", b"c.txt"]
    v1 = store.resolve("v1")
    assert store.read(store.lookup(v1, b"gone/b.txt"), 0, 5) == b"b"


@pytest.mark.parametrize("spec", ["1", "v1", "@v1", "first", "@first", "latest", "@latest"])
def test_version_names_resolve(store: Store, tmp_path: Path, spec: str) -> None:
    write(tmp_path / "src/x", b"x")
    import_tree(store, tmp_path / "src", "one", tag="first")
    assert store.resolve(spec).number == 1
