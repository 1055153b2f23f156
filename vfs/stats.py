"""Store-wide figures for `dsfs stats`: objects by kind, packs, bytes on disk, index size.

Owns: counting; reads one LMDB snapshot. Never imports: daemon, trio, pyfuse3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vfs import schema
from vfs.store import Store


@dataclass
class StoreStats:
    versions: int = 0
    tags: int = 0
    packs: int = 0
    pack_bytes: int = 0
    index_bytes: int = 0
    objects: dict[str, int] = field(default_factory=dict)
    stored_bytes: dict[str, int] = field(default_factory=dict)
    plain_bytes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"versions": self.versions, "tags": self.tags, "packs": self.packs,
                "pack_bytes": self.pack_bytes, "index_bytes": self.index_bytes,
                "objects": self.objects, "stored_bytes": self.stored_bytes,
                "plain_bytes": self.plain_bytes}


def store_stats(store: Store) -> StoreStats:
    st = StoreStats()
    dbs = store.index.dbs
    with store.index.read() as txn:
        st.versions = txn.stat(dbs["versions"])["entries"]
        st.tags = txn.stat(dbs["tags"])["entries"]
        with txn.cursor(db=dbs["packs"]) as cur:
            for _, raw in cur:
                st.packs += 1
                st.pack_bytes += int(schema.dec_msg(raw)["size"])
        with txn.cursor(db=dbs["objects"]) as cur:
            for _, raw in cur:
                loc = schema.dec_loc(raw)
                kind = loc.kind.name.lower()
                st.objects[kind] = st.objects.get(kind, 0) + 1
                st.stored_bytes[kind] = st.stored_bytes.get(kind, 0) + loc.stored_len
                st.plain_bytes[kind] = st.plain_bytes.get(kind, 0) + loc.plain_len
    data = store.index.path / "data.mdb"
    st.index_bytes = data.stat().st_blocks * 512 if data.exists() else 0
    return st
