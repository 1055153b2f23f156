"""The view's calls as the event loop makes them: wait=False never reads what is not in memory,
raises WouldBlock with a load for a worker thread instead, leaves nothing half done, and a listing
interrupted by one resumes at its offset with nothing lost or repeated."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.treeutil import write
from vfs.content import ChunkCache, ContentReader
from vfs.errors import CorruptData, StaleHandle, WouldBlock
from vfs.importer import import_tree
from vfs.locks import pinned_roots
from vfs.model import Entry, Kind
from vfs.store import Store
from vfs.tree import TreeReader
from vfs.view import ROOT_INO, Attr, VersionsView

T = TypeVar("T")
POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-load")


def in_worker(fn: Callable[[], object]) -> None:
    """Run a load where the daemon runs it: in another thread."""
    POOL.submit(fn).result()


class Loop:
    """Makes calls as the event loop does: wait=False, a WouldBlock's load in a worker thread,
    then the same call again."""

    def __init__(self, view: VersionsView) -> None:
        self.view = view
        self.blocked = 0

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        for _ in range(100):
            try:
                return fn(*args, wait=False)
            except WouldBlock as exc:
                self.blocked += 1
                in_worker(exc.load)
        raise AssertionError("no progress after 100 loads")

    def listing(self, ino: int, batch: int = 7) -> list[tuple[bytes, int, Attr]]:
        """A directory as READDIRPLUS requests of `batch` entries list it: entries taken before
        a WouldBlock are kept (sent to the kernel), the next request starts after them."""
        handle = self.view.opendir(ino, wait=False)
        out: list[tuple[bytes, int, Attr]] = []
        offset = 0
        while True:
            got = 0
            it = self.view.readdirplus(handle, offset, wait=False)
            try:
                for name, node, attr, nxt in it:
                    self.view.remember(node)
                    out.append((name, node.ino, attr))
                    offset = nxt
                    got += 1
                    if got == batch:
                        break
            except WouldBlock as exc:
                self.blocked += 1
                in_worker(exc.load)
                continue
            finally:
                it.close()
            if got < batch:
                return out

    def walk(self, ino: int) -> dict[bytes, tuple[int, Attr]]:
        found: dict[bytes, tuple[int, Attr]] = {}
        stack: list[tuple[bytes, int]] = [(b"", ino)]
        while stack:
            path, d = stack.pop()
            for name, child, attr in self.listing(d):
                rel = path + b"/" + name if path else name
                found[rel] = (child, attr)
                if attr.mode & 0o170000 == 0o040000:
                    stack.append((rel, child))
        return found


def blocking_walk(view: VersionsView, ino: int) -> dict[bytes, tuple[int, Attr]]:
    found: dict[bytes, tuple[int, Attr]] = {}
    stack: list[tuple[bytes, int]] = [(b"", ino)]
    while stack:
        path, d = stack.pop()
        for name, node, nxt in view.readdir(view.opendir(d), 0):
            del nxt
            view.remember(node)
            rel = path + b"/" + name if path else name
            attr = view.attr(node)
            found[rel] = (node.ino, attr)
            if node.entry.kind == Kind.DIR:
                stack.append((rel, node.ino))
    return found


def cold(store: Store, max_pages: int = 4096) -> VersionsView:
    """A view over empty caches, as after a fresh mount (the same open index and packs)."""
    store.trees = TreeReader(store.reader.get, max_pages)
    store.contents = ContentReader(store.reader.get, ChunkCache(1 << 20))
    return VersionsView(store)


def enter(view: VersionsView, name: bytes) -> int:
    node, _ = view.lookup(ROOT_INO, name)
    view.remember(node)
    return node.ino


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for d in range(3):
        for i in range(150):  # several leaf pages per directory
            write(src / f"d{d}" / f"f{i:03d}", f"{d}/{i}".encode())
        (src / f"d{d}" / "sub" / "deeper").mkdir(parents=True)
    write(src / "big.bin", os.urandom(3 << 20))  # over the largest chunk: a chunk list
    with open(src / "sparse.bin", "wb") as f:  # holes: allocated < size
        f.seek(4 << 20)
        f.write(os.urandom(300 << 10))
        f.truncate(8 << 20)
    os.symlink("d0/f000", src / "link")
    os.mkfifo(src / "fifo")
    return src


def test_a_cold_walk_without_waiting_equals_a_blocking_walk(store: Store, tree: Path) -> None:
    import_tree(store, tree, "one")
    first = cold(store)
    expected = blocking_walk(first, enter(first, b"@v1"))
    view = cold(store)
    loop = Loop(view)
    v1 = loop.call(view.lookup, ROOT_INO, b"@v1")[0]
    view.remember(v1)
    got = loop.walk(v1.ino)
    assert loop.blocked > 0  # it was cold: pages had to be loaded
    assert {p: a for p, (_, a) in got.items()} == {p: a for p, (_, a) in expected.items()}
    assert len(got) == 3 * 152 + 3 + 4


def test_a_warm_walk_raises_nothing(store: Store, tree: Path) -> None:
    import_tree(store, tree, "one")
    view = cold(store)
    v1 = enter(view, b"@v1")
    first = blocking_walk(view, v1)
    loop = Loop(view)
    again = loop.walk(v1)
    assert loop.blocked == 0
    for path, (ino, attr) in first.items():
        assert loop.call(view.getattr, ino) == attr == again[path][1]
        assert loop.blocked == 0, path
    assert loop.blocked == 0


def test_facts_recorded_at_import_need_no_chunk_list_or_subdirectory_scan(
        store: Store, tree: Path) -> None:
    import_tree(store, tree, "one")
    view = cold(store)
    loop = Loop(view)
    v1 = loop.call(view.lookup, ROOT_INO, b"@v1")[0]
    view.remember(v1)
    handle = view.opendir(v1.ino)
    # load the root's pages once, then every entry's attributes come from its entry alone
    loop.call(lambda wait: list(view.readdir(handle, 0, wait=wait)))
    attrs = {name: attr for name, _, attr, _ in view.readdirplus(handle, 0, wait=False)}
    assert attrs[b"d0"].nlink == 3  # d0/sub
    sparse = (tree / "sparse.bin").stat()
    assert attrs[b"sparse.bin"].size == 8 << 20
    assert attrs[b"sparse.bin"].blocks == 300 * 1024 // 512 < sparse.st_size // 512
    assert attrs[b"big.bin"].blocks == (3 << 20) // 512
    assert loop.call(view.getattr, v1.ino).nlink == 2 + 3  # d0 d1 d2


def test_a_store_without_recorded_facts_falls_back_through_would_block(
        store: Store, tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:  # entries as dsfs wrote them before it recorded facts
        m.setattr(Entry, "fact", lambda self: -1)
        import_tree(store, tree, "old")
    import_tree(store, tree, "new")
    old_root = store.version(1).root
    assert old_root != store.version(2).root  # the new entries record more
    assert store.version(1).root_entry.subdirs == -1
    assert all(e.allocated == -1 and e.subdirs == -1 for e in store.trees.entries(old_root))
    view = cold(store)
    loop = Loop(view)
    old = loop.walk(enter(view, b"@v1"))
    new = loop.walk(enter(view, b"@v2"))
    assert {p: (a.nlink, a.size, a.blocks) for p, (_, a) in old.items()} == \
        {p: (a.nlink, a.size, a.blocks) for p, (_, a) in new.items()}
    assert old[b"sparse.bin"][1].blocks < old[b"sparse.bin"][1].size // 512
    assert loop.call(view.getattr, enter(view, b"@v1")).nlink == \
        loop.call(view.getattr, enter(view, b"@v2")).nlink


def test_would_block_leaves_no_node_behind(store: Store, tree: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(Entry, "fact", lambda self: -1)  # so a directory's attributes need its pages
        import_tree(store, tree, "old")
    view = cold(store)
    v1 = enter(view, b"@v1")
    loads = []
    while True:
        before = len(view.inodes)
        try:
            node, attr = view.lookup(v1, b"d1", wait=False)
            break
        except WouldBlock as exc:
            assert len(view.inodes) == before  # nothing made for a reply that was not sent
            loads.append(str(exc))
            in_worker(exc.load)
    assert "a directory's subdirectories" in loads
    assert attr.nlink == 3 and node.ino == view.lookup(v1, b"d1")[0].ino


def test_a_listing_interrupted_by_evictions_loses_and_repeats_nothing(
        store: Store, tmp_path: Path) -> None:
    src = tmp_path / "flat"
    names = [f"n{i:04d}".encode() for i in range(2000)]
    for name in names:
        write(src / os.fsdecode(name), name)
    import_tree(store, src, "flat")
    view = cold(store, max_pages=3)  # a cache so small that every load evicts pages
    loop = Loop(view)
    v1 = loop.call(view.lookup, ROOT_INO, b"@v1")[0]
    view.remember(v1)
    listed = loop.listing(v1.ino, batch=25)
    assert [n for n, _, _ in listed] == names
    assert loop.blocked > 2000 // 64  # a WouldBlock at least for every leaf page
    # inodes follow positions: a later lookup finds the very inode the listing gave
    assert loop.call(view.lookup, v1.ino, b"n1234")[0].ino == listed[1234][1]


def test_each_call_takes_wait(store: Store, tree: Path) -> None:
    """Every metadata call raises WouldBlock when its data is cold, and answers after its load
    exactly as the blocking call does."""
    import_tree(store, tree, "one")
    view = cold(store)
    v1 = enter(view, b"@v1")
    d0 = view.lookup(v1, b"d0")[0]
    view.remember(d0)
    file_ino = view.lookup(d0.ino, b"f001")[0].ino
    link_ino = view.lookup(v1, b"link")[0].ino
    big_ino = view.lookup(v1, b"big.bin")[0].ino
    loop = Loop(view)
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (view.node, (file_ino,)), (view.getattr, (file_ino,)), (view.readlink, (link_ino,)),
        (view.listxattr, (file_ino,)), (view.getxattr, (link_ino, b"user.none")),
        (view.open, (big_ino, False)),
    ]
    answers = []
    for fn, args in calls:
        store.trees = TreeReader(store.reader.get)  # cold pages (the nodes are known)
        before = loop.blocked
        try:
            answers.append(loop.call(fn, *args))
        except Exception as exc:
            answers.append(type(exc).__name__)
        assert loop.blocked > before, fn.__name__
    node, attr, target, names, missing, fh = answers
    assert (node.entry.name, attr.size, target, names, missing) == \
        (b"f001", 3, b"d0/f000", [], "NoAttr")
    assert fh.layout.size == 3 << 20
    assert view.opendir(d0.ino, wait=False).node is d0  # a directory the kernel holds: memory
    # the chunk list is kept: opening the file again needs nothing
    assert view.open(big_ino, False, wait=False).layout is fh.layout


def test_a_load_raises_what_the_call_would(store: Store, tree: Path) -> None:
    """A damaged page is the call's answer, from its load."""
    import_tree(store, tree, "one")
    view = cold(store)
    v1 = enter(view, b"@v1")
    d2 = view.store.lookup(store.version(1), b"d2")

    def broken(oid: bytes, kind: object) -> bytes:
        if oid == d2.ref:
            raise CorruptData("tree page fails its hash check")
        return store.reader.get(oid, kind)  # type: ignore[arg-type]

    store.trees = TreeReader(broken)
    d2_node = view.lookup(v1, b"d2")[0]
    view.remember(d2_node)
    with pytest.raises(WouldBlock) as info:
        view.lookup(d2_node.ino, b"f001", wait=False)
    with pytest.raises(CorruptData):
        in_worker(info.value.load)


def test_a_version_dropped_since_the_refresh_is_stale_from_the_load(
        store: Store, tree: Path) -> None:
    import_tree(store, tree, "one")
    import_tree(store, tree, "two")
    view = cold(store)
    v1 = enter(view, b"@v1")
    view.lookup(v1, b"d0")  # the pages are cached now
    view.refresh()  # and the pin that lookup took is released, as nothing of v1 is held
    store.drop("v1")  # the view has not refreshed since
    with pytest.raises(WouldBlock) as info:
        view.lookup(v1, b"d0", wait=False)
    assert str(info.value) == "the version's pin"
    with pytest.raises(StaleHandle):
        in_worker(info.value.load)
    with pytest.raises(StaleHandle):
        view.lookup(v1, b"d0")
    view.refresh()
    assert pinned_roots(store.root) == {}
