"""One process of the @head concurrency test (tests/mount/test_head_concurrency.py).

Run as `python -m tests.mount.stress_worker DIR SEED SECONDS [THREADS]`: THREADS threads
each do random file operations on the files `f0`..`f5` of DIR until SECONDS have passed - reads
after dropping the file's cached pages (so they reach the daemon), writes small and large,
truncates, renames away and back, fsyncs, mmap writes and copy_file_range - as fsx does. A
missing file (renamed by another thread) is expected; any other error is printed as
`ERROR op path: message` and makes the exit status 1. Prints `OPS n` at the end.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import sys
import threading
import time
from pathlib import Path

FILES = [f"f{i}" for i in range(6)]
MAX_SIZE = 3 << 20
EXPECTED = {errno.ENOENT}


def _read(d: Path, rnd: random.Random) -> None:
    fd = os.open(d / rnd.choice(FILES), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        size = os.fstat(fd).st_size
        os.pread(fd, rnd.choice([4096, 65536, 1 << 20]), rnd.randrange(max(size, 1)))
    finally:
        os.close(fd)


def _write(d: Path, rnd: random.Random) -> None:
    fd = os.open(d / rnd.choice(FILES), os.O_RDWR)
    try:
        length = rnd.choice([1, 100, 4096, 70_000, 200_000])
        os.pwrite(fd, rnd.randbytes(length), rnd.randrange(MAX_SIZE - length))
        if rnd.random() < 0.2:
            os.fsync(fd)
    finally:
        os.close(fd)


def _truncate(d: Path, rnd: random.Random) -> None:
    fd = os.open(d / rnd.choice(FILES[:-1]), os.O_RDWR)  # never the mapped file: SIGBUS
    try:
        os.ftruncate(fd, rnd.randrange(MAX_SIZE))
        os.pwrite(fd, rnd.randbytes(5000), rnd.randrange(MAX_SIZE // 2))
    finally:
        os.close(fd)


def _rename(d: Path, rnd: random.Random) -> None:
    name = rnd.choice(FILES)
    away = d / f"{name}.moving-{threading.get_ident()}"
    os.rename(d / name, away)
    os.rename(away, d / name)


def _fsync(d: Path, rnd: random.Random) -> None:
    fd = os.open(d / rnd.choice(FILES), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mmap_write(d: Path, rnd: random.Random) -> None:
    """Into the last file only, which nothing truncates (a mapped page cut off by a truncate
    is SIGBUS by POSIX, not a bug)."""
    fd = os.open(d / FILES[-1], os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size < 8192:
            return
        with mmap.mmap(fd, 8192) as m:
            at = rnd.randrange(4096)
            m[at:at + 4096] = rnd.randbytes(4096)
            m.flush()
    finally:
        os.close(fd)


def _copy_range(d: Path, rnd: random.Random) -> None:
    a, b = rnd.sample(FILES, 2)  # two files: overlapping ranges of one are EINVAL
    src = os.open(d / a, os.O_RDONLY)
    try:
        dst = os.open(d / b, os.O_WRONLY)
        try:
            size = os.fstat(src).st_size
            if size:
                os.copy_file_range(src, dst, min(size, 300_000), rnd.randrange(size),
                                   rnd.randrange(MAX_SIZE // 2))
        finally:
            os.close(dst)
    finally:
        os.close(src)


OPS = [(_read, 4), (_write, 3), (_truncate, 2), (_rename, 1), (_fsync, 1), (_mmap_write, 1),
       (_copy_range, 1)]


def work(d: Path, seed: int, seconds: float, counts: list[int], errors: list[str]) -> None:
    rnd = random.Random(seed)
    ops = [op for op, weight in OPS for _ in range(weight)]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        op = rnd.choice(ops)
        try:
            op(d, rnd)
        except OSError as exc:
            if exc.errno not in EXPECTED:
                errors.append(f"ERROR {op.__name__} {exc.filename}: {exc}")
        except Exception as exc:
            errors.append(f"ERROR {op.__name__}: {exc!r}")
        counts[0] += 1


def main() -> int:
    d, seed, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    counts = [0]
    errors: list[str] = []
    pool = [threading.Thread(target=work, args=(d, seed * 100 + i, seconds, counts, errors))
            for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for line in errors[:20]:
        print(line, flush=True)
    print(f"OPS {counts[0]}", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
