"""Walking everything a set of versions references: the shared core of verify and gc.

Owns: enumerating reachable objects (tree pages, chunk lists, chunks) once each, even when many
versions share subtrees. Never imports: daemon, trio, pyfuse3. Runs in the caller's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from vfs import schema
from vfs.errors import CorruptData
from vfs.ids import ObjectId, ObjType, TreeId, hash_object
from vfs.model import REF_CHUNK, REF_LIST, Entry, Kind, decode_chunk_list, ref_id, ref_kind
from vfs.tree import TreeReader


class ObjectSource(Protocol):
    """Where a walk reads trees and chunk lists: a store, or a remote's packs."""

    @property
    def trees(self) -> TreeReader: ...

    def get_object(self, oid: ObjectId, kind: ObjType) -> bytes: ...


@dataclass
class Reachable:
    """Objects reachable from some versions, and what could not be read while walking."""

    objects: dict[bytes, ObjType] = field(default_factory=dict)
    broken: dict[bytes, str] = field(default_factory=dict)
    """Metadata objects that could not be read or decoded: id -> problem."""


def content_objects(store: ObjectSource, e: Entry, found: Reachable) -> list[bytes]:
    """Ids a file entry needs: its chunk list (if any) and its chunks."""
    ref = e.content
    kind = ref_kind(ref)
    if kind == REF_CHUNK:
        return [ref_id(ref)]
    if kind != REF_LIST:
        return []
    lid = ref_id(ref)
    ids: list[bytes] = [lid]
    if lid in found.broken:
        return ids
    try:
        spans = decode_chunk_list(schema.dec_msg(store.get_object(ObjectId(lid),
                                                                  ObjType.CHUNKLIST)))
    except (CorruptData, ValueError, TypeError) as exc:
        found.broken[lid] = str(exc)
        return ids
    ids.extend(s.cid for s in spans if s.cid is not None)
    return ids


def walk_versions(store: ObjectSource, roots: list[TreeId],
                  on_page: Callable[[int], None] | None = None) -> Reachable:
    """Mark every object reachable from `roots`. Shared subtrees are walked once."""
    found = Reachable()
    seen_lists: set[bytes] = set()
    stack: list[ObjectId] = [ObjectId(r) for r in roots]
    while stack:
        oid = stack.pop()
        if oid in found.objects or oid in found.broken:
            continue
        try:
            page = store.trees.page(oid)
        except (CorruptData, ValueError, TypeError) as exc:
            found.broken[oid] = str(exc)
            continue
        found.objects[oid] = ObjType.TREE
        if on_page is not None:
            on_page(1)
        if page.level > 0:
            stack.extend(r[1] for r in page.rows)
            continue
        for e in page.entries:
            if e.kind == Kind.DIR:
                stack.append(ObjectId(e.ref))
            elif e.kind == Kind.FILE and e.ref:
                if ref_kind(e.content) == REF_LIST and e.ref in seen_lists:
                    continue
                seen_lists.add(e.ref)
                ids = content_objects(store, e, found)
                if ref_kind(e.content) == REF_LIST:
                    found.objects.setdefault(ids[0], ObjType.CHUNKLIST)
                    ids = ids[1:]
                for cid in ids:
                    found.objects[cid] = ObjType.CHUNK
    return found


def version_object_id(raw_record: bytes) -> ObjectId:
    return hash_object(ObjType.VERSION, raw_record)
