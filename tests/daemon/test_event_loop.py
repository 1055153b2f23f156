"""The event loop never waits on the store: every versions request that needs data not in
memory loads it in a worker thread (vfs.errors.WouldBlock), then answers from memory.
In-process, under trio, against a real store with cold caches (a store opened afresh)."""

from __future__ import annotations

import inspect
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon.fuse import ReaddirToken
from daemon.ops import Operations
from tests.treeutil import write
from vfs.ids import ObjectId, ObjType
from vfs.importer import import_tree
from vfs.objects import ObjectReader
from vfs.store import Store
from vfs.view import ROOT_INO, VersionsView

CTX: Any = None


async def answer(result: object) -> Any:
    return await result if inspect.iscoroutine(result) else result


async def test_cold_requests_read_the_store_only_in_worker_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    payload = os.urandom(3 << 20)
    for i in range(300):
        write(src / f"d{i % 7}/f{i:04}.txt", f"file {i}".encode())
    write(src / "big/one.bin", payload)
    created = Store.create(tmp_path / "store")
    import_tree(created, src, "one")
    created.close()

    loop_thread = threading.get_ident()
    reads_on_loop: list[str] = []
    reads_in_workers = 0
    original = ObjectReader.get

    def watched(self: ObjectReader, oid: ObjectId, kind: ObjType) -> bytes:
        nonlocal reads_in_workers
        if threading.get_ident() == loop_thread:
            reads_on_loop.append(kind.name)
        else:
            reads_in_workers += 1
        return original(self, oid, kind)

    monkeypatch.setattr(ObjectReader, "get", watched)
    store = Store.open(tmp_path / "store")  # its readers see the watched method
    try:
        ops = Operations(VersionsView(store))
        reads_on_loop.clear()  # opening the view read the version log: not a request
        v1 = (await answer(ops.lookup(ROOT_INO, b"@v1", CTX))).st_ino
        token = ReaddirToken(size=1 << 17, plus=True)
        await answer(ops.readdir(v1, 0, 0, token))
        assert len(token.parts) == 8  # big, d0..d6
        d3 = (await answer(ops.lookup(v1, b"d3", CTX))).st_ino
        listing = ReaddirToken(size=1 << 17, plus=True)
        await answer(ops.readdir(d3, 0, 0, listing))
        f = await answer(ops.lookup(d3, b"f0003.txt", CTX))
        assert f.st_size == len(b"file 3")
        assert b"".join(await answer(ops.read(f.st_ino, 0, 0, 100))) == b"file 3"
        big = (await answer(ops.lookup(v1, b"big", CTX))).st_ino
        one = (await answer(ops.lookup(big, b"one.bin", CTX))).st_ino
        with trio.fail_after(30):
            got = b"".join(await answer(ops.read(one, 0, 1 << 20, 1 << 17)))
        assert got == payload[1 << 20:(1 << 20) + (1 << 17)]
        assert reads_on_loop == [], reads_on_loop
        assert reads_in_workers > 0  # the data came from the store, through workers
    finally:
        store.close()
