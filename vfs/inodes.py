"""Inode numbers of a mounted store: allocation, lookup counts and forgetting.

Owns: every inode number the filesystem hands out. Numbers are never reused within a mount.
Directories (and the root's entries) get numbers from a counter and a node in the table, with
exact lookup counts. A non-directory inside a version needs no state at all: its number encodes
its directory's number and its position in that (immutable) directory, so a million files the
kernel holds cost the daemon nothing (`file_ino`). Hard-linked files get table nodes keyed by
their link group, so every path of a hard link has one inode. Never imports: daemon, trio,
pyfuse3. Called from the trio thread only (not thread-safe by design: no locks on the hot path).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import IntEnum

from vfs.model import Entry

ROOT_INO = 1
POSITIONAL = 1 << 62
INDEX_BITS = 24
MAX_INDEX = (1 << INDEX_BITS) - 1
MAX_DIR_INO = (1 << (62 - INDEX_BITS)) - 1
HEAD_SPACE = 1 << 61
"""Inodes of @head: HEAD_SPACE | the head-local number (vfs.head.fs hands those out)."""


def to_head(local: int) -> int:
    return HEAD_SPACE | local


def from_head(ino: int) -> int:
    return ino & ~HEAD_SPACE


def is_head(ino: int) -> bool:
    return bool(ino & HEAD_SPACE) and not ino & POSITIONAL


def file_ino(dir_ino: int, index: int) -> int | None:
    """The positional inode of entry `index` of directory `dir_ino`, if it fits the encoding."""
    if index > MAX_INDEX or dir_ino > MAX_DIR_INO:
        return None
    return POSITIONAL | (dir_ino << INDEX_BITS) | index


def split_file_ino(ino: int) -> tuple[int, int] | None:
    """(directory inode, position) of a positional inode, or None for a table inode."""
    if not ino & POSITIONAL:
        return None
    rest = ino & ~POSITIONAL
    return rest >> INDEX_BITS, rest & MAX_INDEX


class Role(IntEnum):
    ROOT = 1
    VERSION_DIR = 2
    ROOT_LINK = 3
    IN_VERSION = 4


@dataclass(slots=True, eq=False)
class Node:
    """What the filesystem knows about one inode the kernel holds."""

    ino: int
    role: Role
    entry: Entry
    version: int
    key: Hashable
    """Identity in the table; None for a positional node, which the table never holds."""
    parent: int = 0
    """The directory this node was first found in (for naming it in logs)."""
    lookups: int = 0
    held: int = 0
    """For a directory: the lookups the kernel holds of its positional children (they have no
    node of their own). The directory's node stays while any are held, so those children can
    always be found and their forgets counted."""


class InodeTable:
    """Maps identity keys to inode numbers and counts the kernel's references."""

    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {}
        self._by_key: dict[Hashable, int] = {}
        self._next = ROOT_INO + 1

    def __len__(self) -> int:
        return len(self._nodes)

    def get(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def nodes_of(self, version: int) -> list[Node]:
        """The table's nodes of one version (directories and hard links; not positional)."""
        return [n for n in self._nodes.values() if n.version == version]

    def add_root(self, entry: Entry) -> Node:
        node = Node(ROOT_INO, Role.ROOT, entry, 0, ("root",), lookups=1)
        self._nodes[ROOT_INO] = node
        self._by_key[node.key] = ROOT_INO
        return node

    def node_for(self, key: Hashable, role: Role, entry: Entry, version: int,
                 parent: int = ROOT_INO) -> Node:
        """The node for `key`, made if the kernel does not hold it yet (lookup count 0)."""
        ino = self._by_key.get(key)
        if ino is not None:
            node = self._nodes[ino]
            node.entry = entry
            return node
        node = Node(self._next, role, entry, version, key, parent)
        self._next += 1
        self._nodes[node.ino] = node
        self._by_key[key] = node.ino
        return node

    def remember(self, node: Node, count: int = 1) -> bool:
        """The kernel took `count` more references (lookup, readdirplus, create). False if
        they cannot be counted (a positional node whose directory is no longer known)."""
        if node.key is not None:
            if self._nodes.get(node.ino) is not node:  # dropped as unreferenced meanwhile
                self._nodes[node.ino] = node
                self._by_key.setdefault(node.key, node.ino)
            node.lookups += count
            return True
        parent = self._nodes.get(node.parent)
        if parent is None:
            return False
        parent.held += count
        return True

    def forget(self, ino: int, count: int) -> tuple[Node | None, int]:
        """The kernel dropped `count` references to `ino`: (the node that counted them - for a
        positional inode its directory's - and how many of them were counted)."""
        node = self._nodes.get(ino)
        if node is not None:
            if node.role == Role.ROOT:
                return None, 0
            taken = min(count, max(node.lookups, 0))
            node.lookups -= taken
            self._maybe_drop(node)
            return node, taken
        where = split_file_ino(ino)
        parent = self._nodes.get(where[0]) if where is not None else None
        if parent is None:
            return None, 0
        taken = min(count, max(parent.held, 0))
        parent.held -= taken
        self._maybe_drop(parent)
        return parent, taken

    def _maybe_drop(self, node: Node) -> None:
        if node.lookups <= 0 and node.held <= 0 and node.role != Role.ROOT:
            self._nodes.pop(node.ino, None)
            if self._by_key.get(node.key) == node.ino:
                del self._by_key[node.key]

    def drop_unreferenced(self, node: Node) -> None:
        """Forget a node made for a reply the kernel did not take."""
        if node.key is not None:
            self._maybe_drop(node)
