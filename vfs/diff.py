"""`dsfs diff`: what changed between two versions, from metadata only.

Owns: comparing trees. Identical subtrees (same id) are skipped in O(1); inside a large paged
directory only the leaf pages that differ are read. Renames are found like git's exact rename
detection: a removed and an added path with the same content (a file's content id, a directory's
tree id) are one rename, and the paths below a renamed directory are not listed again.
Never imports: daemon, trio, pyfuse3.
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
RENAMED = "R"


@dataclass(frozen=True, slots=True)
class Change:
    status: str
    path: bytes
    old: Entry | None
    new: Entry | None
    old_path: bytes | None = None
    """For a rename, where the entry was (`path` is where it is now)."""


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


def diff_versions(store: Store, a: TreeId, b: TreeId, renames: bool = True) -> list[Change]:
    """Changes from tree `a` to tree `b` in path order, renames found unless `renames` is
    False (then a rename is a removal and an addition, as `diff_trees` yields it)."""
    changes = list(diff_trees(store, a, b))
    return find_renames(changes) if renames else changes


def _rename_key(e: Entry | None) -> tuple[Kind, bytes] | None:
    """What must match for a removal and an addition to be a rename. Empty files and empty
    directories are all alike, so no rename is guessed for them."""
    if e is None or e.kind not in (Kind.FILE, Kind.DIR) or e.size == 0:
        return None
    return e.kind, e.ref


def _under(path: bytes, dirs: set[bytes]) -> bool:
    """Whether `path` is inside one of `dirs`."""
    i = path.find(b"/")
    while i != -1:
        if path[:i] in dirs:
            return True
        i = path.find(b"/", i + 1)
    return False


def _pair(changes: list[Change], kind: Kind, taken: dict[int, int], old_dirs: set[bytes],
          new_dirs: set[bytes]) -> None:
    """Pair removals with additions of the same content, for entries of one kind; a pairing
    maps the addition's index to the removal's index in `taken`. A directory paired is added
    to `old_dirs`/`new_dirs`: nothing below it is paired again."""
    removed: dict[tuple[Kind, bytes], list[int]] = {}
    for i, c in enumerate(changes):
        key = _rename_key(c.old)
        if c.status == REMOVED and key is not None and key[0] == kind \
                and not _under(c.path, old_dirs):
            removed.setdefault(key, []).append(i)
    used = set(taken.values())
    for j in sorted(range(len(changes)), key=lambda j: changes[j].path.count(b"/")):
        c = changes[j]  # outermost first: a moved directory claims its subdirectories
        key = _rename_key(c.new)
        if c.status != ADDED or key is None or key[0] != kind or _under(c.path, new_dirs):
            continue
        candidates = [i for i in removed.get(key, ()) if i not in used
                      and not _under(changes[i].path, old_dirs)]
        if not candidates:
            continue
        name = c.path.rsplit(b"/", 1)[-1]
        same_name = [i for i in candidates if changes[i].path.rsplit(b"/", 1)[-1] == name]
        i = (same_name or candidates)[0]  # like git: the same name first, then path order
        taken[j] = i
        used.add(i)
        if kind == Kind.DIR:
            old_dirs.add(changes[i].path)
            new_dirs.add(c.path)


def find_renames(changes: list[Change]) -> list[Change]:
    """The same changes with each removal + addition of identical content as one rename, at
    the new path's place. Directories are paired first (outermost first), so a renamed
    directory is one change and its files are neither listed nor paired with copies."""
    taken: dict[int, int] = {}
    old_dirs: set[bytes] = set()
    new_dirs: set[bytes] = set()
    _pair(changes, Kind.DIR, taken, old_dirs, new_dirs)
    _pair(changes, Kind.FILE, taken, old_dirs, new_dirs)
    gone = set(taken.values())
    out = []
    for j, c in enumerate(changes):
        if j in taken:
            was = changes[taken[j]]
            out.append(Change(RENAMED, c.path, was.old, c.new, old_path=was.path))
        elif j in gone or (c.status == REMOVED and _under(c.path, old_dirs)) or \
                (c.status == ADDED and _under(c.path, new_dirs)):
            continue
        else:
            out.append(c)
    return out
