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
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import blake3
import msgpack

from vfs import schema
from vfs.errors import CorruptData, WouldBlock
from vfs.ids import ObjectId, ObjType, TreeId
from vfs.model import Entry, Kind

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


_Item = tuple[bytes, Any, int]
"""One item of a page: (name or first name, its msgpack row, entries it counts)."""


def update_tree(reader: TreeReader, tree: TreeId | None, changes: Mapping[bytes, Entry | None],
                put: PutFn) -> TreeId:
    """Apply name -> Entry (add or replace) / None (remove) changes; return the new root id.

    The result is exactly what `build_tree` gives for the resulting entries, but only the pages
    around the changes are read and written. Level by level: each page holding a change is
    re-split together with the following pages until a new cut falls at the end of an old page
    (cuts depend on names only, so every page after it is unchanged); the old pages' rows and the
    new pages' rows then become the changes of the level above. It stops when the changes die out
    (the rest of the tree is unchanged) or a new page holds every entry (the new root). `tree`
    None means an empty directory.
    """
    todo: dict[bytes, _Item | None] = {
        name: None if e is None else (name, e.encode(), 1) for name, e in changes.items()}
    height = reader.page(ObjectId(tree)).level if tree is not None else 0
    total = reader.count(tree) if tree is not None else 0
    level = 0
    while True:
        removed, pages = _resplit(reader, tree, level, todo)
        if level == 0:  # the entry count changes here; levels above only regroup it
            total += sum(_count(p) for p in pages) - sum(r[2] for r in removed)
        if total == 0:
            return TreeId(put(ObjType.TREE, schema.enc_msg([0, 0, []])))
        for items in pages:
            if _count(items) == total:  # this page holds every entry: it is the root
                if level > 0 and len(items) == 1:  # one row: its child is an old, complete page
                    return _peel(reader, items[0][1][1])
                return TreeId(_write(level, items, put)[1][1])
        old = {r[0]: r for r in removed}
        todo = {name: None for name in old}
        todo.update((r[0], r) for r in (_write(level, items, put) for items in pages))
        if level < height:  # drop rows that did not change (above the old root all rows are new)
            todo = {name: r for name, r in todo.items() if r != old.get(name)}
        if not todo:  # this level's pages are unchanged, so is everything above
            assert tree is not None
            return tree
        level += 1


def _resplit(reader: TreeReader, tree: TreeId | None, level: int,
             changes: Mapping[bytes, _Item | None]) -> tuple[list[_Item], list[list[_Item]]]:
    """Re-split the pages of one level that `changes` touch: (old pages as rows, new pages)."""
    todo = sorted(changes.items())
    removed: list[_Item] = []
    pages: list[list[_Item]] = []
    ci = 0
    while ci < len(todo):
        # a region starts at the page holding the next change (or the first page of the level)
        old_pages = _pages_from(reader, tree, level, todo[ci][0])
        row = next(old_pages, None)
        pending: list[_Item] = []
        while True:
            nxt = next(old_pages, None)
            cj = ci
            while cj < len(todo) and (nxt is None or todo[cj][0] < nxt[0]):
                cj += 1
            merged: dict[bytes, _Item | None] = {}
            if row is not None:
                removed.append(row)
                merged.update((it[0], it) for it in _items(reader.page(row[1][1])))
            merged.update(todo[ci:cj])
            ci = cj
            pending += [it for _, it in sorted(merged.items()) if it is not None]
            start = 0
            for i, it in enumerate(pending):
                if _is_boundary(it[0], level) or (nxt is None and i == len(pending) - 1):
                    pages.append(pending[start:i + 1])
                    start = i + 1
            pending = pending[start:]
            if not pending or nxt is None:  # a new cut at an old page end: the region is done
                break
            row = nxt
    return removed, pages


def _pages_from(reader: TreeReader, tree: TreeId | None, level: int, key: bytes
                ) -> Iterator[_Item]:
    """The old pages of one level as rows, lazily, from the one whose range holds `key`."""
    if tree is None:
        return
    root = reader.page(ObjectId(tree))
    if root.level == level and root.names:
        yield root.names[0], [root.names[0], ObjectId(tree), root.total], root.total
    elif root.level > level:
        yield from _rows_from(reader, root, level, key)


def _rows_from(reader: TreeReader, page: Page, level: int, key: bytes) -> Iterator[_Item]:
    i = max(0, bisect.bisect_right(page.names, key) - 1)
    for name, child, count in page.rows[i:]:
        if page.level == level + 1:
            yield name, [name, child, count], count
        else:
            yield from _rows_from(reader, reader.page(child), level, key)


def _items(page: Page) -> list[_Item]:
    if page.level == 0:
        return [(e.name, e.encode(), 1) for e in page.entries]
    return [(n, [n, oid, c], c) for n, oid, c in page.rows]


def _count(items: list[_Item]) -> int:
    return sum(it[2] for it in items)


def _write(level: int, items: list[_Item], put: PutFn) -> _Item:
    """Write one page; return its row for the level above."""
    total = _count(items)
    oid = put(ObjType.TREE, schema.enc_msg([level, total, [it[1] for it in items]]))
    return items[0][0], [items[0][0], oid, total], total


def _peel(reader: TreeReader, oid: ObjectId) -> TreeId:
    """The root under a chain of one-row pages (build_tree stops at a level of one page)."""
    page = reader.page(oid)
    while page.level > 0 and len(page.rows) == 1:
        oid = page.rows[0][1]
        page = reader.page(oid)
    return TreeId(oid)


class Page:
    """A decoded tree page.

    A leaf keeps its rows as msgpack gave them (tuples of ints and bytes) and makes an Entry
    only when one is asked for: a cache of thousands of pages then holds no objects the cyclic
    garbage collector has to walk (CPython stops tracking such tuples), where decoded entries
    made its passes cost as much as decoding them (half of a 1,000,000-file listing)."""

    __slots__ = ("_rows", "before", "level", "names", "rows", "total")

    def __init__(self, raw: bytes) -> None:
        level, total, items = _unpack_page(raw)
        self.level: int = level
        self.total: int = total
        self.rows: list[tuple[bytes, ObjectId, int]] = []
        self.before: list[int] = []
        """For an inner page: the entries of its rows before each row."""
        if level == 0:
            self._rows: tuple[Any, ...] = items
            self.names: list[bytes] = [r[0] for r in items]
            check_names(self.names)
        else:
            self._rows = ()
            self.rows = [(bytes(n), ObjectId(bytes(o)), c) for n, o, c in items]
            self.names = [r[0] for r in self.rows]
            before = self.before = [0] * len(self.rows)
            count = 0
            for i, row in enumerate(self.rows):
                before[i] = count
                count += row[2]

    def __len__(self) -> int:
        return len(self._rows)

    def entry(self, i: int) -> Entry:
        """The entry at position `i` of a leaf."""
        return _decode(self._rows[i])

    def rows_from(self, i: int) -> tuple[Any, ...]:
        """A leaf's rows from position `i` on (decode each with `Entry.decode`)."""
        return self._rows[i:] if i else self._rows

    def entries_from(self, i: int) -> Iterator[Entry]:
        try:
            for row in self._rows[i:] if i else self._rows:
                yield Entry.decode(row)
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptData(f"tree page holds a damaged entry ({exc})") from None

    @property
    def entries(self) -> list[Entry]:
        """Every entry of a leaf (none for an inner page)."""
        return [_decode(r) for r in self._rows]

    def subdirs(self) -> int:
        """How many of a leaf's entries are directories (no entry is made)."""
        return sum(1 for r in self._rows if r[1] == _DIR_KIND)


_DIR_KIND = int(Kind.DIR)


def _unpack_page(raw: bytes) -> tuple[int, int, Any]:
    """[level, total, items] with every array a tuple (see Page)."""
    try:
        level, total, items = msgpack.unpackb(raw, raw=False, use_list=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptData(f"a damaged tree page ({exc})") from None
    if type(level) is not int or type(total) is not int or type(items) is not tuple:
        raise CorruptData("a damaged tree page (not [level, total, items])")
    return level, total, items


def _decode(row: Any) -> Entry:
    try:
        return Entry.decode(row)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptData(f"tree page holds a damaged entry ({exc})") from None


def check_names(names: list[bytes]) -> None:
    """A stored name must never lead outside its directory: CorruptData for an empty name,
    `.`, `..`, or one holding `/` or NUL. (One pass over the joined names: checking each name
    on its own cost a third of decoding a page.)"""
    if not names:
        return
    try:
        joined = b"\0".join(names)
    except TypeError:
        raise CorruptData("tree page holds a name that is not bytes") from None
    if b"/" in joined or joined.count(b"\0") != len(names) - 1 or b"" in names \
            or b"." in names or b".." in names:
        bad = next(n for n in names if not n or n in (b".", b"..") or b"/" in n or b"\0" in n)
        raise CorruptData(f"tree page holds an invalid name {bad!r}")


class _Miss(Exception):
    """A page a call made with wait=False needs is not in the cache."""


LOAD_AHEAD = 8
"""Leaf pages a listing's load reads at once: a kernel READDIRPLUS request takes ~25 entries,
a leaf page holds ~64, so one trip to a worker thread serves ~20 requests."""


class TreeReader:
    """Looks up and lists directory trees, with a bounded cache of decoded pages. Thread-safe.

    Every lookup takes `wait`: with wait=False it reads nothing that is not in the cache and
    raises `WouldBlock` instead, whose `load` (for a worker thread) reads what the call needs.
    """

    def __init__(self, get: GetFn, max_pages: int = 4096) -> None:
        self._get = get
        self._cache: OrderedDict[bytes, Page] = OrderedDict()
        self._max = max_pages
        self._lock = threading.Lock()
        self._subdirs: OrderedDict[bytes, int] = OrderedDict()

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

    def cached(self, oid: ObjectId) -> Page | None:
        """The page if it is in the cache (never reads)."""
        with self._lock:
            page = self._cache.get(oid)
            if page is not None:
                self._cache.move_to_end(oid)
            return page

    def _peek(self, oid: ObjectId) -> Page:
        with self._lock:
            page = self._cache.get(oid)
            if page is None:
                raise _Miss
            self._cache.move_to_end(oid)
            return page

    def _fetch(self, wait: bool) -> Callable[[ObjectId], Page]:
        return self.page if wait else self._peek

    def count(self, tree: TreeId, wait: bool = True) -> int:
        try:
            return self._fetch(wait)(ObjectId(tree)).total
        except _Miss:
            raise WouldBlock(lambda: self.count(tree), "a directory's page") from None

    def subdir_count(self, tree: TreeId, wait: bool = True) -> int:
        """How many of a directory's entries are directories (its link count is 2 + this).

        Entries written since dsfs records it carry it (`Entry.subdirs`): this is for the
        others. Trees are immutable, so the count is cached per tree id: a huge directory is
        counted once, not on every getattr. Leaves not in the page cache are counted from
        their raw rows and not kept, so counting a huge directory flushes no cached page."""
        with self._lock:
            found = self._subdirs.get(tree)
            if found is not None:
                self._subdirs.move_to_end(tree)
                return found
        if not wait:
            raise WouldBlock(lambda: self.subdir_count(tree), "a directory's subdirectories")
        count = 0
        for leaf in self.leaf_pages(tree):
            page = self.cached(leaf)
            count += (page if page is not None else Page(self._get(leaf, ObjType.TREE))).subdirs()
        with self._lock:
            self._subdirs[tree] = count
            while len(self._subdirs) > 4 * self._max:
                self._subdirs.popitem(last=False)
        return count

    def lookup(self, tree: TreeId, name: bytes) -> Entry | None:
        """Find one name in O(log n) pages."""
        found = self.lookup_with_index(tree, name)
        return found[0] if found is not None else None

    def lookup_with_index(self, tree: TreeId, name: bytes, wait: bool = True
                          ) -> tuple[Entry, int] | None:
        """Find one name and its position in the directory (0-based, name order)."""
        try:
            return self._lookup(tree, name, self._fetch(wait))
        except _Miss:
            raise WouldBlock(lambda: self._lookup(tree, name, self.page),
                             "a directory's pages") from None

    @staticmethod
    def _lookup(tree: TreeId, name: bytes, fetch: Callable[[ObjectId], Page]
                ) -> tuple[Entry, int] | None:
        page = fetch(ObjectId(tree))
        before = 0
        while page.level > 0:
            i = bisect.bisect_right(page.names, name) - 1
            if i < 0:
                return None
            before += page.before[i]
            page = fetch(page.rows[i][1])
        i = bisect.bisect_left(page.names, name)
        if i < len(page.names) and page.names[i] == name:
            return page.entry(i), before + i
        return None

    def entry_at(self, tree: TreeId, index: int, wait: bool = True) -> Entry | None:
        """The entry at a position (as counted by `lookup_with_index`), in O(log n) pages."""
        try:
            return self._entry_at(tree, index, self._fetch(wait))
        except _Miss:
            raise WouldBlock(lambda: self._entry_at(tree, index, self.page),
                             "a directory's pages") from None

    @staticmethod
    def _entry_at(tree: TreeId, index: int, fetch: Callable[[ObjectId], Page]) -> Entry | None:
        page = fetch(ObjectId(tree))
        while page.level > 0:
            if not 0 <= index < page.total:
                return None
            i = bisect.bisect_right(page.before, index) - 1
            index -= page.before[i]
            page = fetch(page.rows[i][1])
        return page.entry(index) if 0 <= index < len(page) else None

    def entries_from(self, tree: TreeId, index: int, wait: bool = True) -> Iterator[Entry]:
        """Entries from a position on, skipping whole pages by their counts.

        With wait=False the iterator raises WouldBlock where it reaches a page not in the cache;
        everything yielded before stays valid, and iterating again from `index` plus the number
        of entries taken continues exactly there. Its load reads that page and a few after it.
        """
        decode = Entry.decode
        pos = index
        try:
            for page, start in self._leaves_from(ObjectId(tree), index, self._fetch(wait)):
                for row in page.rows_from(start):  # one generator for the whole listing
                    yield decode(row)
                    pos += 1
        except _Miss:
            at = pos
            raise WouldBlock(lambda: self.load_from(tree, at), "a directory's pages") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptData(f"tree page holds a damaged entry ({exc})") from None

    def load_from(self, tree: TreeId, index: int, pages: int = LOAD_AHEAD) -> None:
        """Read into the cache the leaf page holding position `index` and up to `pages` - 1
        after it (a worker thread's part of a listing)."""
        for n, _ in enumerate(self._leaves_from(ObjectId(tree), index, self.page), 1):
            if n >= pages:
                break
        # the pages the listing needs first last, so a small cache evicts the others first
        next(self._leaves_from(ObjectId(tree), index, self.page), None)

    def _leaves_from(self, oid: ObjectId, index: int, fetch: Callable[[ObjectId], Page]
                     ) -> Iterator[tuple[Page, int]]:
        """(leaf page, first position to take in it) from the leaf holding `index` on."""
        page = fetch(oid)
        if page.level == 0:
            if index < len(page):
                yield page, index
            return
        if index >= page.total:
            return
        first = max(0, bisect.bisect_right(page.before, index) - 1)
        index -= page.before[first]
        for _, child, _ in page.rows[first:]:
            yield from self._leaves_from(child, index, fetch)
            index = 0

    def entries(self, tree: TreeId, start_after: bytes | None = None) -> Iterator[Entry]:
        """All entries in name order, optionally starting after a name (for paged listing)."""
        yield from self._iter(ObjectId(tree), start_after)

    def _iter(self, oid: ObjectId, after: bytes | None) -> Iterator[Entry]:
        page = self.page(oid)
        if page.level == 0:
            i = 0 if after is None else bisect.bisect_right(page.names, after)
            yield from page.entries_from(i)
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
