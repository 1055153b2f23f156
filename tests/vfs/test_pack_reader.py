"""The pack reader's descriptor cache under concurrency: no leaks, no reads from a closed fd."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

from vfs.ids import ObjType, hash_object
from vfs.pack import PackReader, PackWriter, Record


def test_many_threads_reading_more_packs_than_descriptors(tmp_path: Path) -> None:
    packs_dir = tmp_path / "packs"
    (packs_dir / "tmp").mkdir(parents=True)
    rnd = random.Random(4)
    records: list[tuple[str, Record, bytes]] = []
    for _ in range(5):
        writer = PackWriter(packs_dir)
        for _ in range(20):
            data = rnd.randbytes(rnd.randint(100, 5000))
            rec = writer.add(hash_object(ObjType.CHUNK, data), ObjType.CHUNK, 0, len(data), data)
            records.append((writer.name, rec, data))
        writer.seal()
    reader = PackReader(packs_dir, max_open=2)  # forces evictions while reads are under way
    before = len(os.listdir("/proc/self/fd"))
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        r = random.Random(seed)
        try:
            for _ in range(400):
                name, rec, data = r.choice(records)
                got = reader.read(name, rec.offset, rec.oid, rec.kind, rec.plain_len,
                                  rec.stored_len)
                assert got == data
                if r.random() < 0.05:
                    reader.forget(name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    reader.close()
    assert len(os.listdir("/proc/self/fd")) <= before
