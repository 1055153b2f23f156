"""Directory trees as content-defined pages (a prolly tree), so huge directories stay cheap.

Owns: splitting a directory's sorted entries into pages, writing them, and looking names up or
listing them without loading the whole directory. Never imports: daemon, trio, pyfuse3.

A page is a TREE object encoded as msgpack ``[level, total_entries, items]``. Level-0 pages hold
entries (see `vfs.model.Entry`); level-k pages hold ``[first_name, child_page_id, entries]``
rows. A page ends after an item whose name hashes below a threshold, so page boundaries depend
on names only: adding or removing one name rewrites one leaf page and the path above it, and the
same directory content always produces the same root id (trees are content-addressed).
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import blake3

from vfs import schema
from vfs.ids import ObjectId, ObjType, TreeId
from vfs.model import Entry

LEAF_FANOUT = 64
INNER_FANOUT = 32

PutFn = Callable[[ObjType, bytes], ObjectId]
GetFn = Callable[[ObjectId, ObjType], bytes]


def _is_boundary(name: bytes, level: int) -> bool:
    fanout = LEAF_FANOUT if level == 0 else INNER_FANOUT
    h = blake3.blake3(bytes([level]) + name).digest(4)
    return int.from_bytes(h, "little") % fanout == 0


def build_tree(entries: list[Entry], put: PutFn) -> TreeId:
    """Write the pages of a directory whose entries are sorted by name; return the root id."""
    level = 0
    rows: list[Any] = [e.encode() for e in entries]
    names = [e.name for e in entries]
    counts = [1] * len(entries)
    while True:
        pages: list[tuple[bytes, ObjectId, int]] = []
        start = 0
        for i, name in enumerate(names):
            if _is_boundary(name, level) or i == len(names) - 1:
                total = sum(counts[start:i + 1])
                oid = put(ObjType.TREE, schema.enc_msg([level, total, rows[start:i + 1]]))
                pages.append((names[start], oid, total))
                start = i + 1
        if not pages:
            return TreeId(put(ObjType.TREE, schema.enc_msg([0, 0, []])))
        if len(pages) == 1:
            return TreeId(pages[0][1])
        level += 1
        rows = [[n, oid, c] for n, oid, c in pages]
        names = [p[0] for p in pages]
        counts = [p[2] for p in pages]


class Page:
    """A decoded tree page."""

    __slots__ = ("entries", "level", "names", "rows", "total")

    def __init__(self, raw: bytes) -> None:
        level, total, items = schema.dec_msg(raw)
        self.level: int = level
        self.total: int = total
        if level == 0:
            self.entries: list[Entry] = [Entry.decode(r) for r in items]
            self.names: list[bytes] = [e.name for e in self.entries]
            self.rows: list[tuple[bytes, ObjectId, int]] = []
        else:
            self.entries = []
            self.rows = [(bytes(n), ObjectId(bytes(o)), c) for n, o, c in items]
            self.names = [r[0] for r in self.rows]


class TreeReader:
    """Looks up and lists directory trees, with a bounded cache of decoded pages. Thread-safe."""

    def __init__(self, get: GetFn, max_pages: int = 4096) -> None:
        self._get = get
        self._cache: OrderedDict[bytes, Page] = OrderedDict()
        self._max = max_pages
        self._lock = threading.Lock()

    def page(self, oid: ObjectId) -> Page:
        with self._lock:
            page = self._cache.get(oid)
            if page is not None:
                self._cache.move_to_end(oid)
                return page
        page = Page(self._get(oid, ObjType.TREE))
        with self._lock:
            self._cache[oid] = page
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return page

    def count(self, tree: TreeId) -> int:
        return self.page(ObjectId(tree)).total

    def lookup(self, tree: TreeId, name: bytes) -> Entry | None:
        """Find one name in O(log n) pages."""
        found = self.lookup_with_index(tree, name)
        return found[0] if found is not None else None

    def lookup_with_index(self, tree: TreeId, name: bytes) -> tuple[Entry, int] | None:
        """Find one name and its position in the directory (0-based, name order)."""
        page = self.page(ObjectId(tree))
        before = 0
        while page.level > 0:
            i = bisect.bisect_right(page.names, name) - 1
            if i < 0:
                return None
            before += sum(r[2] for r in page.rows[:i])
            page = self.page(page.rows[i][1])
        i = bisect.bisect_left(page.names, name)
        if i < len(page.names) and page.names[i] == name:
            return page.entries[i], before + i
        return None

    def entry_at(self, tree: TreeId, index: int) -> Entry | None:
        """The entry at a position (as counted by `lookup_with_index`), in O(log n) pages."""
        page = self.page(ObjectId(tree))
        while page.level > 0:
            for _, child, count in page.rows:
                if index < count:
                    page = self.page(child)
                    break
                index -= count
            else:
                return None
        return page.entries[index] if 0 <= index < len(page.entries) else None

    def entries_from(self, tree: TreeId, index: int) -> Iterator[Entry]:
        """Entries from a position on, skipping whole pages by their counts."""
        yield from self._iter_from(ObjectId(tree), index)

    def _iter_from(self, oid: ObjectId, index: int) -> Iterator[Entry]:
        page = self.page(oid)
        if page.level == 0:
            yield from page.entries[index:]
            return
        for _, child, count in page.rows:
            if index >= count:
                index -= count
                continue
            yield from self._iter_from(child, index)
            index = 0

    def entries(self, tree: TreeId, start_after: bytes | None = None) -> Iterator[Entry]:
        """All entries in name order, optionally starting after a name (for paged listing)."""
        yield from self._iter(ObjectId(tree), start_after)

    def _iter(self, oid: ObjectId, after: bytes | None) -> Iterator[Entry]:
        page = self.page(oid)
        if page.level == 0:
            i = 0 if after is None else bisect.bisect_right(page.names, after)
            yield from page.entries[i:]
            return
        i = 0 if after is None else max(0, bisect.bisect_right(page.names, after) - 1)
        for _, child, _ in page.rows[i:]:
            yield from self._iter(child, after)

    def leaf_pages(self, tree: TreeId) -> list[ObjectId]:
        """Ids of the leaf pages of a tree, in name order (reads only the inner pages)."""
        out: list[ObjectId] = []
        stack = [ObjectId(tree)]
        while stack:
            oid = stack.pop()
            page = self.page(oid)
            if page.level == 0:
                out.append(oid)
            elif page.level == 1:
                out.extend(r[1] for r in page.rows)
            else:
                stack.extend(reversed([r[1] for r in page.rows]))
        return out
