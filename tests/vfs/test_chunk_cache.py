"""The chunk cache: bounded in bytes, scan-resistant, and probes that are no use of a chunk."""

from __future__ import annotations

import random

from vfs.chunkcache import ChunkCache
from vfs.ids import hash_chunk

KiB = 1024


def chunk(seed: int, size: int = 32 * KiB) -> tuple[bytes, bytes]:
    data = random.Random(seed).randbytes(size)
    return hash_chunk(data), data


def read_sequentially(cache: ChunkCache, cid: bytes, size: int, piece: int,
                      first: int = 0) -> None:
    """What a reader streaming through a chunk does: one request after another."""
    for start in range(first, size, piece):
        assert cache.get(cid, start, min(start + piece, size)) is not None


def test_a_working_set_used_twice_survives_a_scan_of_ten_times_the_cache() -> None:
    cache = ChunkCache(1024 * KiB)
    working = [chunk(i) for i in range(8)]  # 256 KiB, a quarter of the cache
    for cid, data in working:
        cache.put(cid, data, used_to=len(data))  # loaded by a read
        assert cache.get(cid) is not None  # and read again: a second use
    assert all(cache.segment_of(cid) == "protected" for cid, _ in working)
    scanned = 0
    seed = 1000
    while scanned < 10 * cache.max_bytes:  # a one-pass scan: tar of a version, one big file
        cid, data = chunk(seed)
        seed += 1
        if seed % 2:
            cache.put(cid, data)  # prefetched: not a use...
            read_sequentially(cache, cid, len(data), 8 * KiB)  # ...then read once in pieces
        else:
            cache.put(cid, data, used_to=8 * KiB)  # loaded by the read of its first piece
            read_sequentially(cache, cid, len(data), 8 * KiB, first=8 * KiB)
        scanned += len(data)
        assert cache.size <= cache.max_bytes
    for cid, data in working:
        assert cache.peek(cid) == data
        assert cache.segment_of(cid) == "protected"
    assert cache.promotions == len(working)


def test_a_plain_lru_order_would_have_lost_the_working_set() -> None:
    """The same scan without the second use: the chunks flow out like the scan's own."""
    cache = ChunkCache(1024 * KiB)
    once = [chunk(i) for i in range(8)]
    for cid, data in once:
        cache.put(cid, data, used_to=len(data))
    for seed in range(1000, 1000 + 10 * 32):
        cid, data = chunk(seed)
        cache.put(cid, data)
    assert all(cache.peek(cid) is None for cid, _ in once)


def test_reading_the_same_bytes_again_promotes_a_streamed_chunk_does_not() -> None:
    cache = ChunkCache(1024 * KiB)
    cid, data = chunk(1, 64 * KiB)
    cache.put(cid, data)  # a prefetch
    read_sequentially(cache, cid, len(data), 4 * KiB)
    assert cache.segment_of(cid) == "probation"
    assert cache.get(cid, 0, 4 * KiB) is not None  # the next epoch, another reader
    assert cache.segment_of(cid) == "protected"


def test_bytes_never_exceed_the_bound_and_probation_goes_oldest_first() -> None:
    cache = ChunkCache(100 * KiB, protected_share=0.5)
    a, b, c, d = (chunk(i, 30 * KiB) for i in range(4))
    for cid, data in (a, b, c):
        cache.put(cid, data)
    assert cache.size == 90 * KiB
    cache.put(*d)  # 120 KiB > 100 KiB: the oldest (a) goes
    assert [cache.peek(x[0]) is not None for x in (a, b, c, d)] == [False, True, True, True]
    assert cache.evictions == 1
    cache.get(b[0])
    cache.get(b[0])  # b promoted: probation (c, d) is evicted before it
    e = chunk(5, 30 * KiB)
    cache.put(*e)
    assert cache.peek(c[0]) is None and cache.peek(b[0]) is not None
    # protected holds at most half: promoting d as well pushes b (its LRU end) back to probation
    cache.get(d[0])
    cache.get(d[0])
    assert cache.segment_of(d[0]) == "protected"
    assert cache.segment_of(b[0]) == "probation"
    assert cache.size == 90 * KiB


def test_the_bound_holds_under_random_use() -> None:
    rnd = random.Random(7)
    cache = ChunkCache(200 * KiB)
    chunks = [chunk(i, rnd.randint(1, 40) * KiB) for i in range(60)]
    for _ in range(5000):
        cid, data = rnd.choice(chunks)
        if cache.get(cid, rnd.randrange(len(data))) is None:
            cache.put(cid, data, used_to=rnd.randint(0, len(data)))
        assert cache.size <= cache.max_bytes
        stats = cache.stats()
        assert stats.probation_bytes + stats.protected_bytes == cache.size
        assert stats.protected_bytes <= cache.protected_max


def test_hits_and_misses_are_counted_and_probes_are_not_uses() -> None:
    cache = ChunkCache(1024 * KiB)
    cid, data = chunk(1)
    other, _ = chunk(2)
    assert cache.get(cid) is None
    assert cache.get(cid, count_miss=False) is None  # the event loop's try before a worker's
    cache.put(cid, data, used_to=len(data))
    for _ in range(3):
        assert cache.peek(cid) == data  # the prefetch planner's probes
        assert cid in cache
        assert other not in cache
        assert cache.peek(other) is None
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.segment_of(cid) == "probation"  # probes promote nothing
    assert cache.get(cid) == data
    assert (cache.hits, cache.misses, cache.promotions) == (1, 1, 1)


def test_a_chunk_larger_than_the_cache_is_not_kept() -> None:
    cache = ChunkCache(16 * KiB)
    cid, data = chunk(1, 32 * KiB)
    cache.put(cid, data)
    assert cache.peek(cid) is None and cache.size == 0 and len(cache) == 0


def test_get_all_is_all_or_nothing() -> None:
    cache = ChunkCache(1024 * KiB)
    (a, da), (b, db), (c, _) = chunk(1), chunk(2), chunk(3)
    cache.put(a, da)
    cache.put(b, db)
    assert cache.get_all([(a, 0, 10), (c, 0, 10)]) is None
    assert (cache.hits, cache.misses, cache.promotions) == (0, 0, 0)
    assert cache.get_all([(a, 0, 10), (b, 0, len(db))]) == [da, db]
    assert cache.hits == 2
    assert cache.get_all([(a, 10, 20)]) == [da]  # streaming on: no promotion
    assert cache.promotions == 0
    assert cache.get_all([(a, 0, 10), (b, 0, 10)]) == [da, db]  # both read again
    assert cache.promotions == 2
