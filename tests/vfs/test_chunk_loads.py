"""The chunk read path on a real store: one load per chunk however many threads ask, BLAKE3
checked once per load and never on a hit, damaged bytes never served, reads as views of the
cached chunks, and a prefetch plan that reaches far ahead without probing twice."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import vfs.pack
from tests.treeutil import write
from vfs.chunkcache import ChunkCache
from vfs.config import ChunkParams
from vfs.content import ContentReader, join_parts
from vfs.errors import CorruptData
from vfs.ids import ChunkId, ObjectId, ObjType, short
from vfs.importer import import_tree
from vfs.model import Entry, ref_id
from vfs.pack import REC_HEADER, pack_path
from vfs.store import Store
from vfs.view import ROOT_INO, VersionsView

KiB = 1024
MiB = 1024 * KiB
DEADLINE = 30.0


class GatedGet:
    """The store's own object reader, counting chunk loads; while `gate` is clear, a chunk load
    waits for it (so a test can line other threads up behind the load in flight)."""

    def __init__(self, store: Store) -> None:
        self.inner = store.reader.get
        self.loads: Counter[bytes] = Counter()
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def __call__(self, oid: ObjectId, kind: ObjType) -> bytes:
        if kind == ObjType.CHUNK:
            with self._lock:
                self.loads[oid] += 1
            if not self.gate.wait(DEADLINE):
                raise AssertionError("the gate was never opened")
        return self.inner(oid, kind)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


@pytest.fixture
def small_chunks(tmp_path: Path) -> Iterator[Store]:
    """A store cutting ~16 KiB chunks, holding one version of a few files."""
    store = Store.create(tmp_path / "store", chunk=ChunkParams.for_average(16 * KiB))
    rnd = random.Random(5)
    src = tmp_path / "src"
    write(src / "one.bin", rnd.randbytes(3000))
    write(src / "big.bin", rnd.randbytes(2 * MiB))
    write(src / "text.csv", b"".join(b"%d,row,%d\n" % (i, i * 7) for i in range(40_000)))
    with open(src / "sparse.bin", "wb") as f:
        f.write(rnd.randbytes(100 * KiB))
        f.seek(4 * MiB)
        f.write(rnd.randbytes(100 * KiB))
    import_tree(store, src, "v1")
    try:
        yield store
    finally:
        store.close()


def entry(store: Store, name: bytes) -> Entry:
    return store.lookup(store.resolve("v1"), name)


def source(tmp_path: Path, name: str) -> bytes:
    return (tmp_path / "src" / name).read_bytes()


def gated_reader(store: Store) -> tuple[ContentReader, GatedGet]:
    get = GatedGet(store)
    reader = ContentReader(get, ChunkCache(64 * MiB))
    store.contents = reader
    return reader, get


def run_threads(n: int, fn: Callable[[], Any]) -> tuple[list[Any], list[BaseException]]:
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            got = fn()
        except BaseException as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(got)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
        assert not t.is_alive()
    return results, errors


def test_many_concurrent_readers_of_one_chunk_load_it_once(small_chunks: Store) -> None:
    store = small_chunks
    reader, get = gated_reader(store)
    cid = ChunkId(ref_id(entry(store, b"one.bin").content))
    get.gate.clear()
    out: dict[str, Any] = {}

    def start() -> None:
        out["threads"] = run_threads(8, lambda: reader.chunk(cid))

    starter = threading.Thread(target=start)
    starter.start()
    # one thread loads (held at the gate), the seven others wait for its load, not the disk
    wait_for(lambda: get.loads[cid] == 1 and reader.shared_loads == 7, "the followers")
    get.gate.set()
    starter.join(DEADLINE)
    results, errors = out["threads"]
    assert errors == []
    assert len(results) == 8 and all(r is results[0] for r in results)
    assert get.loads[cid] == 1 and reader.loads == 1
    assert reader.cache.peek(cid) is results[0]


def test_a_demand_read_waits_for_the_prefetch_in_flight(small_chunks: Store,
                                                        tmp_path: Path) -> None:
    store = small_chunks
    reader, get = gated_reader(store)
    view = VersionsView(store)
    node, _ = view.lookup(ROOT_INO, b"@v1")
    file_node, _ = view.lookup(node.ino, b"big.bin")
    fh = view.open(file_node.ino, writing=False)
    first = store.contents.spans(file_node.entry.content, file_node.entry.size)[0]
    assert first.cid is not None
    get.gate.clear()
    prefetcher = threading.Thread(target=view.prefetch, args=(first.cid,))
    prefetcher.start()
    wait_for(lambda: get.loads[first.cid] == 1, "the prefetch to start loading")
    assert view.read_cached(fh, 0, 4096) is None  # the event loop never waits for the load
    result: list[bytes] = []
    demand = threading.Thread(target=lambda: result.append(view.read_blocking(fh, 0, 4096)))
    demand.start()
    wait_for(lambda: reader.shared_loads == 1, "the demand read to join the prefetch")
    get.gate.set()
    prefetcher.join(DEADLINE)
    demand.join(DEADLINE)
    assert result == [source(tmp_path, "big.bin")[:4096]]
    assert get.loads[first.cid] == 1


def flip_payload_byte(store: Store, oid: bytes) -> None:
    found = store.reader.locate(oid)
    assert found is not None
    path = pack_path(store.packs_dir, found.pack)
    at = found.loc.offset + REC_HEADER.size + found.loc.stored_len // 2
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))


def test_a_damaged_chunk_fails_every_waiter_is_not_cached_and_fails_again(
        small_chunks: Store) -> None:
    store = small_chunks
    e = entry(store, b"one.bin")
    cid = ChunkId(ref_id(e.content))
    flip_payload_byte(store, cid)
    reader, get = gated_reader(store)
    get.gate.clear()
    out: dict[str, Any] = {}
    starter = threading.Thread(
        target=lambda: out.update(r=run_threads(5, lambda: reader.read(e.content, e.size, 0, 10))))
    starter.start()
    wait_for(lambda: get.loads[cid] == 1 and reader.shared_loads == 4, "the followers")
    get.gate.set()
    starter.join(DEADLINE)
    results, errors = out["r"]
    assert results == [] and len(errors) == 5
    for exc in errors:
        assert isinstance(exc, CorruptData)
        assert exc.object_id == cid and short(cid) in str(exc)
    assert reader.cache.peek(cid) is None
    with pytest.raises(CorruptData):  # the next read goes to the disk again, and fails again
        reader.read(e.content, e.size, 0, 10)
    assert get.loads[cid] == 2


def test_blake3_runs_once_per_chunk_loaded_never_on_a_hit(small_chunks: Store, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = small_chunks
    hashed: Counter[bytes] = Counter()
    real = vfs.pack.hash_object

    def counting(kind: ObjType, data: bytes | memoryview) -> ObjectId:
        oid = real(kind, data)
        if kind == ObjType.CHUNK:
            hashed[oid] += 1
        return oid

    monkeypatch.setattr(vfs.pack, "hash_object", counting)
    e = entry(store, b"big.bin")
    want = source(tmp_path, "big.bin")
    chunks = {s.cid for s in store.contents.spans(e.content, e.size)}
    for request in (4 * KiB, 128 * KiB, 5000):
        got = b"".join(store.contents.read(e.content, e.size, off, request)
                       for off in range(0, e.size, request))
        assert got == want
    assert set(hashed) == chunks and set(hashed.values()) == {1}


def test_a_whole_one_chunk_file_is_served_without_a_copy(small_chunks: Store) -> None:
    store = small_chunks
    e = entry(store, b"one.bin")
    cid = ref_id(e.content)
    data = store.contents.read(e.content, e.size, 0, 1 << 20)
    assert data is store.contents.cache.peek(cid)
    parts = store.contents.read_parts(e.content, e.size, 0, e.size, cached_only=True)
    assert parts is not None and len(parts) == 1 and parts[0].obj is data
    assert join_parts(parts) is parts[0]  # what a FUSE reply can send as it is
    assert store.contents.read_cached(e.content, e.size, 0, e.size) is data
    assert store.contents.read_cached(e.content, e.size, 10, 20) == data[10:30]


def test_reads_are_views_of_the_cached_chunks(small_chunks: Store, tmp_path: Path) -> None:
    store = small_chunks
    e = entry(store, b"text.csv")
    want = source(tmp_path, "text.csv")
    spans = store.contents.spans(e.content, e.size)
    assert len(spans) > 4
    off, length = spans[0].length - 100, spans[1].length + 200  # across three chunks
    parts = store.contents.read_parts(e.content, e.size, off, length)
    assert parts is not None and len(parts) == 3
    cached = {id(store.contents.cache.peek(s.cid)) for s in spans[:3] if s.cid is not None}
    assert {id(p.obj) for p in parts} == cached  # no byte copied
    assert b"".join(parts) == want[off:off + length]
    assert join_parts(parts) == want[off:off + length]
    assert store.contents.read(e.content, e.size, off, length) == want[off:off + length]
    assert store.contents.read(e.content, e.size, e.size - 5, 100) == want[-5:]
    assert store.contents.read_parts(e.content, e.size, e.size, 100) == []


def test_holes_read_as_zeros_through_views(small_chunks: Store, tmp_path: Path) -> None:
    store = small_chunks
    e = entry(store, b"sparse.bin")
    want = source(tmp_path, "sparse.bin")
    assert any(s.cid is None for s in store.contents.spans(e.content, e.size))
    off, length = 90 * KiB, 3 * MiB  # data, then a hole longer than the zero buffer
    parts = store.contents.read_parts(e.content, e.size, off, length)
    assert parts is not None
    assert b"".join(parts) == want[off:off + length]
    assert store.contents.read(e.content, e.size, 0, e.size) == want


def test_the_cached_path_never_loads(small_chunks: Store) -> None:
    store = small_chunks
    reader, get = gated_reader(store)
    e = entry(store, b"big.bin")
    assert reader.read_cached(e.content, e.size, 0, 4096) is None  # no layout in memory yet
    layout = reader.layout(e.content)
    assert reader.read_parts(e.content, e.size, 0, 4096, cached_only=True,
                             layout=layout) is None
    assert sum(get.loads.values()) == 0
    reader.read(e.content, e.size, 0, 4096)
    assert sum(get.loads.values()) == 1
    assert reader.read_cached(e.content, e.size, 0, 4096) is not None


def test_a_sequential_reader_plans_far_ahead_and_never_plans_a_chunk_twice(
        small_chunks: Store, tmp_path: Path) -> None:
    store = small_chunks
    view = VersionsView(store)
    node, _ = view.lookup(ROOT_INO, b"@v1")
    file_node, _ = view.lookup(node.ino, b"big.bin")
    fh = view.open(file_node.ino, writing=False)
    spans = store.contents.spans(file_node.entry.content, file_node.entry.size)
    where = {}
    pos = 0
    for s in spans:
        where[s.cid] = pos
        pos += s.length
    cache = store.contents.cache
    planned: list[bytes] = []
    request = 16 * KiB
    furthest = 0
    for off in range(0, file_node.entry.size, request):
        before = (cache.hits, cache.misses, cache.promotions)
        plan = view.prefetch_plan(fh, off, request, 64 * KiB)
        assert (cache.hits, cache.misses, cache.promotions) == before  # probes are no use
        for cid in plan:
            assert where[cid] >= off + request - max(s.length for s in spans)
            view.prefetch(cid)
        planned += plan
        if plan:
            furthest = max(furthest, max(where[c] for c in plan) - off)
        assert view.read_blocking(fh, off, request) == \
            source(tmp_path, "big.bin")[off:off + request]
    assert len(planned) == len(set(planned))
    assert furthest > 256 * KiB  # the window grew past the 64 KiB it started from
    assert set(planned) | {spans[0].cid} == {s.cid for s in spans}
    # every chunk was read once, sequentially: none promoted, so none can push others out
    assert cache.promotions == 0
    assert view.prefetch_plan(fh, 0, request, 64 * KiB) == []  # a jump back: not sequential
    assert fh.ahead == 0


def test_prefetch_swallows_errors_for_the_real_read_to_report(small_chunks: Store) -> None:
    store = small_chunks
    e = entry(store, b"one.bin")
    cid = ChunkId(ref_id(e.content))
    flip_payload_byte(store, cid)
    view = VersionsView(store)
    view.prefetch(cid)  # no exception
    assert store.contents.cache.peek(cid) is None
    with pytest.raises(CorruptData):
        store.contents.read(e.content, e.size, 0, 1)


def test_a_chunk_list_that_disagrees_with_its_chunk_is_damage(small_chunks: Store) -> None:
    store = small_chunks
    e = entry(store, b"big.bin")
    layout = store.contents.layout(e.content)
    first = layout.spans[0]
    assert first.cid is not None
    store.contents.chunk(first.cid)
    layout.spans[0] = type(first)(first.cid, first.length + 1)  # as if the list were wrong
    with pytest.raises(CorruptData, match=short(first.cid)):
        store.contents.read(e.content, e.size, 0, 10)


def test_parts_stay_valid_after_their_chunks_leave_the_cache(small_chunks: Store,
                                                            tmp_path: Path) -> None:
    store = small_chunks
    e = entry(store, b"text.csv")
    want = source(tmp_path, "text.csv")
    parts = store.contents.read_parts(e.content, e.size, 0, 100 * KiB)
    assert parts is not None
    store.contents.cache.clear()
    assert b"".join(parts) == want[:100 * KiB]  # a view keeps its chunk alive


def test_the_event_loop_path_never_waits_for_a_load_in_flight(small_chunks: Store,
                                                               tmp_path: Path) -> None:
    store = small_chunks
    reader, get = gated_reader(store)
    view = VersionsView(store)
    node, _ = view.lookup(ROOT_INO, b"@v1")
    big, _ = view.lookup(node.ino, b"big.bin")
    one, _ = view.lookup(node.ino, b"one.bin")
    fh_big = view.open(big.ino, writing=False)
    fh_one = view.open(one.ino, writing=False)
    view.read_blocking(fh_one, 0, 10)  # cached
    first = store.contents.spans(big.entry.content, big.entry.size)[0].cid
    assert first is not None
    get.gate.clear()
    loader = threading.Thread(target=view.read_blocking, args=(fh_big, 0, 10))
    loader.start()
    wait_for(lambda: get.loads[first] == 1, "the load to start")
    answers: list[object] = []

    def event_loop() -> None:  # everything the loop may call while a worker is in the disk
        answers.append(view.read_cached(fh_one, 0, 100))
        answers.append(view.read_cached(fh_big, 0, 10))
        answers.append(reader.cache.peek(first))
        answers.append(first in reader.cache)
        answers.append(view.prefetch_plan(fh_big, 0, 4096, 64 * KiB))

    loop = threading.Thread(target=event_loop)
    loop.start()
    loop.join(DEADLINE)
    finished = not loop.is_alive()
    get.gate.set()
    loader.join(DEADLINE)
    assert finished
    assert answers[0] == source(tmp_path, "one.bin")[:100]
    assert answers[1:4] == [None, None, False]
    assert first not in answers[4]  # type: ignore[operator]


def test_many_threads_and_the_event_loop_read_at_once_through_a_small_cache(
        small_chunks: Store, tmp_path: Path) -> None:
    store = small_chunks
    get = GatedGet(store)
    callers: set[int] = set()
    inner = get.__call__

    def recording(oid: ObjectId, kind: ObjType) -> bytes:
        callers.add(threading.get_ident())
        return inner(oid, kind)

    reader = ContentReader(recording, ChunkCache(256 * KiB))  # far less than the files
    store.contents = reader
    names = [b"big.bin", b"text.csv", b"sparse.bin", b"one.bin"]
    entries = {n: entry(store, n) for n in names}
    want = {n: source(tmp_path, n.decode()) for n in names}
    spans = {n: [s.cid for s in reader.spans(e.content, e.size) if s.cid is not None]
             for n, e in entries.items()}
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(300):
                n = rnd.choice(names)
                e = entries[n]
                if rnd.random() < 0.2:
                    reader.load(ChunkId(rnd.choice(spans[n])))  # a prefetch
                    continue
                off = rnd.randrange(e.size)
                length = rnd.choice([1, 4 * KiB, 64 * KiB, 300 * KiB])
                assert reader.read(e.content, e.size, off, length) == want[n][off:off + length]
                assert reader.cache.size <= reader.cache.max_bytes
        except BaseException as exc:
            errors.append(exc)

    loop_ident: list[int] = []

    def event_loop() -> None:
        loop_ident.append(threading.get_ident())
        rnd = random.Random(99)
        layouts = {n: reader.layout(e.content) if len(spans[n]) > 1 else None
                   for n, e in entries.items()}
        try:
            while not stop.is_set():
                n = rnd.choice(names)
                e = entries[n]
                off = rnd.randrange(e.size)
                parts = reader.read_parts(e.content, e.size, off, 8 * KiB, cached_only=True,
                                          layout=layouts[n])
                if parts is not None:
                    assert b"".join(parts) == want[n][off:off + 8 * KiB]
                reader.cache.peek(rnd.choice(spans[n]))
        except BaseException as exc:
            errors.append(exc)

    loop = threading.Thread(target=event_loop)
    loop.start()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE * 4)
        assert not t.is_alive()
    stop.set()
    loop.join(DEADLINE)
    assert errors == []
    assert loop_ident and loop_ident[0] not in callers  # the loop never read the store
    stats = reader.cache_stats()
    assert stats.probation_bytes + stats.protected_bytes <= stats.max_bytes
    assert stats.evictions > 0 and stats.hits > 0


def test_a_read_the_loop_cannot_serve_whole_counts_no_use(small_chunks: Store,
                                                          tmp_path: Path) -> None:
    """Else the worker serving it would count the cached part a second time and promote
    chunks a sequential reader only streams through."""
    store = small_chunks
    e = entry(store, b"big.bin")
    spans = store.contents.spans(e.content, e.size)
    first = spans[0]
    assert first.cid is not None
    store.contents.load(ChunkId(first.cid))  # prefetched; the next chunk is not
    length = first.length + 10
    cache = store.contents.cache
    assert store.contents.read_cached(e.content, e.size, 0, length) is None
    assert (cache.hits, cache.misses) == (0, 0)
    got = store.contents.read(e.content, e.size, 0, length)  # the worker
    assert got == source(tmp_path, "big.bin")[:length]
    assert cache.promotions == 0 and cache.segment_of(first.cid) == "probation"
    assert store.contents.read_cached(e.content, e.size, 0, length) == got  # a re-read
    assert cache.segment_of(first.cid) == "protected"
