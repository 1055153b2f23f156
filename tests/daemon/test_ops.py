"""FUSE handlers of the versions connection in-process (no kernel): errno mapping and that
nothing escapes a handler. A handler answers at once or hands back a coroutine (`answer`)."""

from __future__ import annotations

import dataclasses
import errno
import inspect
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from daemon.fuse import FUSEError, ReaddirToken
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


async def answer(result: object) -> Any:
    """A handler's answer: its value, or what its coroutine returns."""
    if inspect.iscoroutine(result):
        return await result
    return result


async def lookup_path(ops: Operations, *names: bytes) -> int:
    ino = ROOT_INO
    for name in names:
        ino = (await answer(ops.lookup(ino, name, CTX))).st_ino  # type: ignore[arg-type]
    return ino


async def test_lookup_getattr_read_without_open(ops: Operations) -> None:
    ino = await lookup_path(ops, b"@v1", b"dir", b"file.txt")
    attr = await answer(ops.getattr(ino, CTX))  # type: ignore[arg-type]
    assert attr.st_size == 11 and attr.entry_timeout > 3600
    assert b"".join(await answer(ops.read(ino, 0, 6, 100))) == b"world"
    big = await lookup_path(ops, b"@v1", b"big.bin")
    data = b"".join(await answer(ops.read(big, 0, 1 << 20, 4096)))
    assert len(data) == 4096


async def test_versions_have_no_open_so_the_kernel_stops_sending_it(ops: Operations) -> None:
    # a missing handler is answered ENOSYS: the kernel then opens files and directories of
    # the whole connection without a request (tests/mount/test_request_counts.py proves it)
    for name in ("open", "opendir", "flush", "release", "releasedir", "write", "create"):
        assert not hasattr(ops, name), name


async def test_missing_name_in_a_version_is_a_cached_negative_entry(ops: Operations) -> None:
    v1 = await lookup_path(ops, b"@v1")
    neg = await answer(ops.lookup(v1, b"nope", CTX))  # type: ignore[arg-type]
    assert neg.st_ino == 0 and neg.entry_timeout > 3600
    with pytest.raises(FUSEError) as info:
        await answer(ops.lookup(ROOT_INO, b"@v9", CTX))  # type: ignore[arg-type]
    assert info.value.errno == errno.ENOENT  # the root changes: no negative caching there


async def test_unexpected_exception_becomes_eio_and_is_logged(
        ops: Operations, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ino = await lookup_path(ops, b"@v1", b"dir", b"file.txt")

    def broken(*args: object) -> bytes:
        raise RuntimeError("bug in the read path")

    monkeypatch.setattr(ops.view, "read_parts_cached", broken)
    with caplog.at_level(logging.ERROR), pytest.raises(FUSEError) as err:
        await answer(ops.read(ino, 0, 0, 10))
    assert err.value.errno == errno.EIO
    assert "bug in the read path" in caplog.text and "Traceback" in caplog.text


async def test_corrupt_chunk_is_eio_naming_version_and_file(
        ops: Operations, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ino = await lookup_path(ops, b"@v1", b"dir", b"file.txt")

    def corrupt(*args: object) -> bytes:
        raise CorruptData("object 0123456789ab fails its hash check")

    monkeypatch.setattr(ops.view, "read_parts_cached", lambda *a: None)
    monkeypatch.setattr(ops.view, "read_parts_blocking", corrupt)
    with caplog.at_level(logging.ERROR), pytest.raises(FUSEError) as err:
        await answer(ops.read(ino, 0, 0, 10))
    assert err.value.errno == errno.EIO
    assert "@v1/dir/file.txt" in caplog.text and "fails its hash check" in caplog.text


async def test_stale_inode_is_estale(ops: Operations) -> None:
    with pytest.raises(FUSEError) as info:
        await answer(ops.getattr(987654, CTX))  # type: ignore[arg-type]
    assert info.value.errno == errno.ESTALE


async def test_damage_in_a_directory_handle_names_that_directory(
        ops: Operations, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ino = await lookup_path(ops, b"@v1", b"dir")

    def corrupt(*args: object, **kwargs: object) -> object:
        raise CorruptData("tree page 0123456789ab fails its hash check")

    monkeypatch.setattr(ops.view, "readdir", corrupt)
    monkeypatch.setattr(ops.view, "readdirplus", corrupt)
    with caplog.at_level(logging.ERROR), pytest.raises(FUSEError) as err:
        await answer(ops.readdir(ino, 0, 0, ReaddirToken(4096, True)))
    assert err.value.errno == errno.EIO
    assert "damaged data in @v1/dir: tree page" in caplog.text


async def test_chunks_that_disagree_with_the_size_are_damage_named_at_first_read(
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
    with caplog.at_level(logging.ERROR), pytest.raises(FUSEError) as err:
        await answer(ops.read(big, 0, 0, 4096))
    assert err.value.errno == errno.EIO
    assert "damaged data in @v2/big.bin" in caplog.text and "3,145,828" in caplog.text
    small = await lookup_path(ops, b"@v2", b"small.txt")
    with pytest.raises(FUSEError) as err:
        await answer(ops.read(small, 0, 0, 4096))
    assert err.value.errno == errno.EIO
    assert "damaged data in @v2/small.txt" in caplog.text
