#!/usr/bin/env python3
"""The reading programs `scripts/bench read` times (standard library only, run as commands).

  epoch  read every file of a list whole, in the list's order (a shuffled list: a training
         epoch), with N reader processes: reader i reads items i, i+N, i+2N, ... (the way a
         DataLoader deals batches to its workers); prints {"seconds", "files", "bytes"} as JSON,
         seconds from before the readers start until the last one ended
  probe  read files of a list whole, one at a time at a steady pace (one read starts every
         --interval-ms, or as soon as the previous one ended when it took longer), until
         --stop-file appears or --max-seconds pass; writes the start time (CLOCK_MONOTONIC,
         shared by all processes) and the latency of every read to --out as JSON

Both read with os.read into one reused buffer, so the figures are the file system's, not
Python's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BUF = 1 << 20


def read_whole(path: str, buf: bytearray) -> int:
    fd = os.open(path, os.O_RDONLY)
    total = 0
    try:
        while True:
            n = os.readv(fd, [buf])
            if not n:
                return total
            total += n
    finally:
        os.close(fd)


def load_list(root: Path, listfile: Path) -> list[str]:
    return [str(root / line) for line in listfile.read_text().splitlines() if line]


def read_share(paths: list[str]) -> int:
    buf = bytearray(BUF)
    return sum(read_whole(p, buf) for p in paths)


def epoch(args: argparse.Namespace) -> int:
    paths = load_list(args.root, args.list)
    if args.readers < 1:
        raise SystemExit("--readers must be >= 1")
    start = time.perf_counter()
    if args.readers == 1:
        total = read_share(paths)
    else:
        children = []
        for i in range(args.readers):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # a reader: its share of the list, then the byte count on the pipe
                code = 1
                try:
                    os.close(r)
                    os.write(w, str(read_share(paths[i :: args.readers])).encode())
                    code = 0
                except BaseException as e:
                    print(f"reader {i}: {e}", file=sys.stderr)
                finally:
                    os._exit(code)
            os.close(w)
            children.append((pid, r))
        total = 0
        for pid, r in children:
            with os.fdopen(r, "rb") as f:
                out = f.read()
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"a reader failed (exit {os.waitstatus_to_exitcode(status)})")
            total += int(out)
    seconds = time.perf_counter() - start
    if args.expect_bytes is not None and total != args.expect_bytes:
        raise SystemExit(f"read {total} bytes, expected {args.expect_bytes}")
    print(json.dumps({"seconds": seconds, "files": len(paths), "bytes": total}))
    return 0


def probe(args: argparse.Namespace) -> int:
    paths = load_list(args.root, args.list)
    buf = bytearray(BUF)
    interval = args.interval_ms / 1000
    starts: list[float] = []
    latencies: list[float] = []
    wrapped = False
    args.ready_file.write_text("ready\n")
    began = time.monotonic()
    deadline = began + args.max_seconds
    next_at = began
    i = 0
    while True:
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        if args.stop_file.exists() or time.monotonic() > deadline:
            break
        if i == len(paths):  # every file read once: go on, but say that reads repeat
            i, wrapped = 0, True
        t0 = time.monotonic()
        read_whole(paths[i], buf)
        t1 = time.monotonic()
        starts.append(t0)
        latencies.append(t1 - t0)
        i += 1
        next_at = max(next_at + interval, t1)
    result = {"starts": starts, "latencies": latencies, "wrapped": wrapped, "files": len(paths)}
    args.out.write_text(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("epoch")
    e.add_argument("--root", type=Path, required=True)
    e.add_argument("--list", type=Path, required=True, help="paths relative to --root")
    e.add_argument("--readers", type=int, default=1)
    e.add_argument("--expect-bytes", type=int)
    p = sub.add_parser("probe")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--list", type=Path, required=True)
    p.add_argument("--interval-ms", type=float, default=5.0)
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument("--stop-file", type=Path, required=True)
    p.add_argument("--ready-file", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    return epoch(args) if args.command == "epoch" else probe(args)


if __name__ == "__main__":
    sys.exit(main())
