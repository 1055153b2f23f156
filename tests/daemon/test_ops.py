"""FUSE handlers in-process (no kernel): errno mapping and that nothing escapes a handler."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
from pathlib import Path

import pyfuse3
import pytest

from daemon.ops import Operations
from tests.treeutil import write
from vfs.errors import CorruptData
from vfs.importer import import_tree
from vfs.store import Store
from vfs.tree import build_tree
from vfs.view import ROOT_INO, VersionsView

CTX = None  # the handlers under test do not look at the request context


@pytest.fixture
def ops(store: Store, tmp_path: Path) -> Operations:
    src = tmp_path / "src"
    write(src / "dir/file.txt", b"hello world")
    write(src / "big.bin", os.urandom(3 << 20))
    import_tree(store, src, "one")
    return Operations(VersionsView(store))


async def lookup_path(ops: Operations, *names: bytes) -> int:
    ino = ROOT_INO
    for name in names:
        ino = (await ops.lookup(ino, name, CTX)).st_ino  # type: ignore[arg-type]
    return ino


async def test_lookup_open_read(ops: Operations) -> None:
    ino = await lookup_path(ops, b"@v1", b"dir", b"file.txt")
    attr = await ops.getattr(ino, CTX)  # type: ignore[arg-type]
    assert attr.st_size == 11 and attr.entry_timeout > 3600
    info = await ops.open(ino, os.O_RDONLY, CTX)  # type: ignore[arg-type]
    assert info.keep_cache
    assert await ops.read(info.fh, 6, 100) == b"world"
    await ops.release(info.fh)


async def test_missing_name_in_a_version_is_a_cached_negative_entry(ops: Operations) -> None:
    v1 = await lookup_path(ops, b"@v1")
    neg = await ops.lookup(v1, b"nope", CTX)  # type: ignore[arg-type]
    assert neg.st_ino == 0 and neg.entry_timeout > 3600
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.lookup(ROOT_INO, b"@v9", CTX)  # type: ignore[arg-type]
    assert info.value.errno == errno.ENOENT  # the root changes: no negative caching there


async def test_write_open_is_erofs(ops: Operations) -> None:
    ino = await lookup_path(ops, b"@v1", b"dir", b"file.txt")
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
        with pytest.raises(pyfuse3.FUSEError) as info:
            await ops.open(ino, flags, CTX)  # type: ignore[arg-type]
        assert info.value.errno == errno.EROFS


async def test_unexpected_exception_becomes_eio_and_is_logged(
        ops: Operations, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ino = await lookup_path(ops, b"@v1", b"dir", b"file.txt")
    info = await ops.open(ino, os.O_RDONLY, CTX)  # type: ignore[arg-type]

    def broken(*args: object) -> bytes:
        raise RuntimeError("bug in the read path")

    monkeypatch.setattr(ops.view, "read_cached", broken)
    with caplog.at_level(logging.ERROR), pytest.raises(pyfuse3.FUSEError) as err:
        await ops.read(info.fh, 0, 10)
    assert err.value.errno == errno.EIO
    assert "bug in the read path" in caplog.text and "Traceback" in caplog.text


async def test_corrupt_chunk_is_eio_naming_version_and_file(
        ops: Operations, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ino = await lookup_path(ops, b"@v1", b"dir", b"file.txt")
    info = await ops.open(ino, os.O_RDONLY, CTX)  # type: ignore[arg-type]

    def corrupt(*args: object) -> bytes:
        raise CorruptData("object 0123456789ab fails its hash check")

    monkeypatch.setattr(ops.view, "read_cached", lambda *a: None)
    monkeypatch.setattr(ops.view, "read_blocking", corrupt)
    with caplog.at_level(logging.ERROR), pytest.raises(pyfuse3.FUSEError) as err:
        await ops.read(info.fh, 0, 10)
    assert err.value.errno == errno.EIO
    assert "@v1/dir/file.txt" in caplog.text and "fails its hash check" in caplog.text


async def test_stale_inode_is_estale(ops: Operations) -> None:
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.getattr(987654, CTX)  # type: ignore[arg-type]
    assert info.value.errno == errno.ESTALE


async def test_every_mutation_handler_refuses(ops: Operations) -> None:
    v1 = await lookup_path(ops, b"@v1")
    calls = [ops.mkdir(v1, b"d", 0o755, CTX), ops.unlink(v1, b"dir", CTX),
             ops.rmdir(v1, b"dir", CTX), ops.symlink(v1, b"l", b"t", CTX),
             ops.rename(v1, b"dir", v1, b"x", 0, CTX), ops.link(v1, v1, b"x", CTX),
             ops.create(v1, b"n", 0o644, os.O_WRONLY, CTX), ops.mknod(v1, b"f", 0o644, 0, CTX),
             ops.setxattr(v1, b"user.a", b"b", CTX), ops.removexattr(v1, b"user.a", CTX),
             ops.write(1, 0, b"x")]
    for call in calls:
        with pytest.raises(pyfuse3.FUSEError) as info:
            await call  # type: ignore[misc]
        assert info.value.errno == errno.EROFS


async def test_damage_in_a_directory_handle_names_that_directory(
        ops: Operations, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ino = await lookup_path(ops, b"@v1", b"dir")
    fh = await ops.opendir(ino, CTX)  # type: ignore[arg-type]

    def corrupt(*args: object) -> object:
        raise CorruptData("tree page 0123456789ab fails its hash check")

    monkeypatch.setattr(ops.view, "readdir", corrupt)
    with caplog.at_level(logging.ERROR), pytest.raises(pyfuse3.FUSEError) as err:
        await ops.readdir(fh, 0, None)  # type: ignore[arg-type]
    assert err.value.errno == errno.EIO
    assert "damaged data in @v1/dir: tree page" in caplog.text


async def test_chunks_that_disagree_with_the_size_are_damage_named_at_open(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    write(src / "big.bin", os.urandom(3 << 20))
    write(src / "small.txt", b"hello")
    v1 = import_tree(store, src, "one").version
    # a version whose entries claim other sizes, written with the store's own writers
    entries = [dataclasses.replace(e, size=e.size + 100) for e in store.list_dir(v1.root_entry)]
    writer = store.new_writer()
    root = build_tree(entries, writer.put_meta)
    store.record_version(writer, dataclasses.replace(v1.root_entry, ref=root), "lies",
                         v1.stats)
    ops = Operations(VersionsView(store))
    big = await lookup_path(ops, b"@v2", b"big.bin")
    with caplog.at_level(logging.ERROR), pytest.raises(pyfuse3.FUSEError) as err:
        await ops.open(big, os.O_RDONLY, CTX)  # type: ignore[arg-type]
    assert err.value.errno == errno.EIO
    assert "damaged data in @v2/big.bin" in caplog.text and "3,145,828" in caplog.text
    small = await lookup_path(ops, b"@v2", b"small.txt")
    info = await ops.open(small, os.O_RDONLY, CTX)  # type: ignore[arg-type]
    with pytest.raises(pyfuse3.FUSEError) as err:
        await ops.read(info.fh, 0, 4096)
    assert err.value.errno == errno.EIO
    assert "damaged data in @v2/small.txt" in caplog.text
