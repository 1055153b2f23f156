"""update_tree gives the same root as build_tree, reading and writing only pages near changes."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from vfs.ids import ObjectId, ObjType, TreeId, hash_object
from vfs.model import Entry, Kind
from vfs.tree import LEAF_FANOUT, TreeReader, _is_boundary, build_tree, update_tree


class Objects:
    """In-memory content-addressed objects that count page reads and writes."""

    def __init__(self) -> None:
        self.objects: dict[bytes, bytes] = {}
        self.puts = 0
        self.gets = 0

    def put(self, kind: ObjType, data: bytes) -> ObjectId:
        self.puts += 1
        oid = hash_object(kind, data)
        self.objects[oid] = data
        return oid

    def get(self, oid: ObjectId, kind: ObjType) -> bytes:
        self.gets += 1
        return self.objects[oid]


def entry(name: bytes, size: int = 1) -> Entry:
    return Entry(name, Kind.FILE, 0o100644, 0, 0, 0, size, b"")


def name(i: int) -> bytes:
    return f"n{i:07d}".encode()


def apply(objs: Objects, tree: TreeId | None, before: dict[bytes, Entry],
          changes: dict[bytes, Entry | None]) -> tuple[TreeId, dict[bytes, Entry]]:
    """update_tree, checked against build_tree and a full listing; returns the new state."""
    after = dict(before)
    for n, e in changes.items():
        if e is None:
            after.pop(n, None)
        else:
            after[n] = e
    expected = [after[n] for n in sorted(after)]
    root = update_tree(TreeReader(objs.get), tree, changes, objs.put)
    assert root == build_tree(expected, objs.put)
    reader = TreeReader(objs.get)
    assert list(reader.entries(root)) == expected
    assert reader.count(root) == len(expected)
    return root, after


@settings(max_examples=40, deadline=None, database=None)
@given(seed=st.integers(0, 2**32), size=st.integers(0, 40) | st.integers(0, 3000),
       batches=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.floats(0, 1),
                                  st.booleans()), min_size=1, max_size=4))
def test_update_matches_build(seed: int, size: int,
                              batches: list[tuple[int, int, float, bool]]) -> None:
    rnd = random.Random(seed)
    objs = Objects()
    state = {name(i): entry(name(i)) for i in rnd.sample(range(size * 3 + 10), size)}
    tree: TreeId | None = build_tree([state[n] for n in sorted(state)], objs.put)
    if rnd.random() < 0.2:
        tree, state = apply(objs, None, {}, {n: e for n, e in state.items()})
    for adds, replaces, remove_share, remove_boundaries in batches:
        changes: dict[bytes, Entry | None] = {}
        for _ in range(adds):
            n = name(rnd.randrange(size * 3 + 20))
            changes[n] = entry(n, size=rnd.randrange(1, 5))
        for n in rnd.sample(sorted(state), min(replaces, len(state))):
            changes[n] = entry(n, size=7)
        for n in state:
            if rnd.random() < remove_share ** 3 or (remove_boundaries and _is_boundary(n, 0)):
                changes[n] = None
        changes[name(size * 3 + 15) + b"-missing"] = None  # removing a missing name: no-op
        tree, state = apply(objs, tree, state, changes)


def test_three_changes_in_200k_entries_touch_few_pages() -> None:
    objs = Objects()
    names = [name(i) for i in range(0, 400_000, 2)]
    entries = [entry(n) for n in names]
    tree = build_tree(entries, objs.put)
    boundary = next(n for n in names[100_000:] if _is_boundary(n, 0))
    changes: dict[bytes, Entry | None] = {
        name(1001): entry(name(1001)),  # add
        names[150_000]: entry(names[150_000], size=9),  # replace
        boundary: None,  # remove a page boundary: the next page merges in
    }
    objs.puts = objs.gets = 0
    root = update_tree(TreeReader(objs.get), tree, changes, objs.put)
    assert objs.puts < 40 and objs.gets < 40, (objs.puts, objs.gets)
    expected = sorted([e for e in entries if e.name not in changes]
                      + [e for e in changes.values() if e is not None], key=lambda e: e.name)
    assert root == build_tree(expected, objs.put)


def test_empty_to_one_entry_and_back() -> None:
    objs = Objects()
    empty = build_tree([], objs.put)
    one, state = apply(objs, empty, {}, {b"a": entry(b"a")})
    assert apply(objs, None, {}, {b"a": entry(b"a")})[0] == one
    back, _ = apply(objs, one, state, {b"a": None})
    assert back == empty
    assert apply(objs, None, {}, {b"x": None})[0] == empty
    assert apply(objs, empty, {}, {})[0] == empty


def test_remove_all_entries_of_a_deep_tree() -> None:
    objs = Objects()
    state = {name(i): entry(name(i)) for i in range(5000)}
    tree = build_tree(list(state.values()), objs.put)
    root, _ = apply(objs, tree, state, {n: None for n in state})
    assert root == build_tree([], objs.put)


def test_collapse_to_one_leaf_and_grow_again() -> None:
    objs = Objects()
    state = {name(i): entry(name(i)) for i in range(5000)}
    tree = build_tree(list(state.values()), objs.put)
    keep = set(list(state)[2000:2005])
    tree, state = apply(objs, tree, state, {n: None for n in state if n not in keep})
    assert TreeReader(objs.get).page(ObjectId(tree)).level == 0
    apply(objs, tree, state, {name(i): entry(name(i)) for i in range(6000, 12000)})


def test_changes_only_before_first_and_after_last_name() -> None:
    objs = Objects()
    state = {name(i): entry(name(i)) for i in range(1000, 4000)}
    tree = build_tree(list(state.values()), objs.put)
    apply(objs, tree, state, {name(i): entry(name(i)) for i in range(5)})
    apply(objs, tree, state, {name(i): entry(name(i)) for i in range(9000, 9005)})
    apply(objs, tree, state, {name(999): entry(name(999)), name(4000): entry(name(4000)),
                              name(1000): None, name(3999): None})


def test_a_no_op_change_keeps_the_root_and_writes_only_the_touched_page() -> None:
    objs = Objects()
    state = {name(i): entry(name(i)) for i in range(LEAF_FANOUT * 200)}
    tree = build_tree(list(state.values()), objs.put)
    objs.puts = 0
    assert update_tree(TreeReader(objs.get), tree, {b"n0000100x": None}, objs.put) == tree
    assert objs.puts <= 1
    leaf = build_tree([entry(b"a"), entry(b"b")], objs.put)
    assert update_tree(TreeReader(objs.get), leaf, {}, objs.put) == leaf
    assert update_tree(TreeReader(objs.get), tree, {}, objs.put) == tree


def test_an_unchanged_old_root_under_a_new_level() -> None:
    # The one-entry root is a boundary, so it stays a page of its own below the new level.
    objs = Objects()
    first = next(name(i) for i in range(1000) if _is_boundary(name(i), 0))
    tree = build_tree([entry(first)], objs.put)
    apply(objs, tree, {first: entry(first)},
          {first + bytes([c]): entry(first + bytes([c])) for c in range(65, 65 + 100)})


def test_collapse_onto_one_old_page() -> None:
    # The first name is a level-1 boundary, so the first leaf page is alone in a one-row level-1
    # page: deleting everything else leaves that old leaf as the root, under two one-row pages.
    objs = Objects()
    start = next(i for i in range(10_000) if _is_boundary(name(i), 1))
    state = {name(i): entry(name(i)) for i in range(start, start + 3000)}
    tree = build_tree(list(state.values()), objs.put)
    reader = TreeReader(objs.get)
    assert reader.page(ObjectId(tree)).level == 2
    leaves = reader.leaf_pages(tree)
    for leaf in (leaves[0], leaves[len(leaves) // 2], leaves[-1]):
        keep = {e.name for e in reader.page(leaf).entries}
        root, _ = apply(objs, tree, state, {n: None for n in state if n not in keep})
        assert root == leaf
