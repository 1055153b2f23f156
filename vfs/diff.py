"""`dsfs diff`: what changed between two versions, from metadata only.

Owns: comparing trees. Identical subtrees (same id) are skipped in O(1); inside a large paged
directory only the leaf pages that differ are read. Never imports: daemon, trio, pyfuse3.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from vfs.ids import TreeId
from vfs.model import Entry, Kind
from vfs.store import Store

ADDED = "A"
REMOVED = "D"
MODIFIED = "M"
TYPE_CHANGED = "T"


@dataclass(frozen=True, slots=True)
class Change:
    status: str
    path: bytes
    old: Entry | None
    new: Entry | None


def _differing_entries(store: Store, a: TreeId, b: TreeId) -> tuple[list[Entry], list[Entry]]:
    pages_a = store.trees.leaf_pages(a)
    pages_b = store.trees.leaf_pages(b)
    common = set(pages_a) & set(pages_b)
    only_a = [e for p in pages_a if p not in common for e in store.trees.page(p).entries]
    only_b = [e for p in pages_b if p not in common for e in store.trees.page(p).entries]
    return only_a, only_b


def _all_under(store: Store, status: str, prefix: bytes, e: Entry) -> Iterator[Change]:
    path = prefix + e.name
    yield Change(status, path, e if status == REMOVED else None,
                 e if status == ADDED else None)
    if e.kind == Kind.DIR:
        for child in store.trees.entries(e.tree):
            yield from _all_under(store, status, path + b"/", child)


def diff_trees(store: Store, a: TreeId, b: TreeId, prefix: bytes = b"") -> Iterator[Change]:
    """Changes from tree `a` to tree `b`, in path order; paths are relative to the trees."""
    if a == b:
        return
    only_a, only_b = _differing_entries(store, a, b)
    i = j = 0
    while i < len(only_a) or j < len(only_b):
        ea = only_a[i] if i < len(only_a) else None
        eb = only_b[j] if j < len(only_b) else None
        if eb is None or (ea is not None and ea.name < eb.name):
            assert ea is not None
            yield from _all_under(store, REMOVED, prefix, ea)
            i += 1
        elif ea is None or eb.name < ea.name:
            yield from _all_under(store, ADDED, prefix, eb)
            j += 1
        else:
            i += 1
            j += 1
            path = prefix + ea.name
            if ea.kind != eb.kind:
                yield Change(TYPE_CHANGED, path, ea, eb)
                if ea.kind == Kind.DIR:
                    for child in store.trees.entries(ea.tree):
                        yield from _all_under(store, REMOVED, path + b"/", child)
                if eb.kind == Kind.DIR:
                    for child in store.trees.entries(eb.tree):
                        yield from _all_under(store, ADDED, path + b"/", child)
            elif ea.kind == Kind.DIR:
                if (ea.mode, ea.uid, ea.gid, ea.xattrs) != (eb.mode, eb.uid, eb.gid, eb.xattrs):
                    yield Change(MODIFIED, path, ea, eb)  # a directory's mtime is not news
                yield from diff_trees(store, ea.tree, eb.tree, path + b"/")
            elif ea != eb:
                yield Change(MODIFIED, path, ea, eb)
