#!/usr/bin/env python3
"""A TCP proxy that adds a fixed latency to every HTTP request (for `scripts/bench remote`).

Owns: forwarding 127.0.0.1:PORT to an upstream address, delaying each request by --delay-ms and
counting requests and bytes. Never imports: vfs, daemon (it runs as its own process, with only
the standard library).

A request is the first bytes a client sends after the previous answer began (or on a fresh
connection): the proxy waits --delay-ms before forwarding them, once per request. That is the
round trip a client pays on a distant server; a PUT that waits for `100 Continue` pays it twice,
as it would there. Answers are forwarded at once.

Prints `listening PORT` on stdout once ready; on SIGTERM or SIGINT it writes its counts as JSON
to --stats (if given) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

BUF = 256 * 1024


@dataclass
class Counts:
    connections: int = 0
    requests: int = 0
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client


class Conn:
    """One client connection: is the next client byte the start of a request?"""

    def __init__(self) -> None:
        self.idle = True


async def pump_up(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    conn: Conn,
    counts: Counts,
    delay: float,
) -> None:
    while data := await reader.read(BUF):
        if conn.idle:
            conn.idle = False
            counts.requests += 1
            if delay > 0:
                await asyncio.sleep(delay)
        counts.bytes_up += len(data)
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


async def pump_down(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Conn, counts: Counts
) -> None:
    while data := await reader.read(BUF):
        conn.idle = True
        counts.bytes_down += len(data)
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


async def serve(args: argparse.Namespace, counts: Counts, stop: asyncio.Event) -> None:
    delay = args.delay_ms / 1000

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        counts.connections += 1
        try:
            s_reader, s_writer = await asyncio.open_connection(args.upstream_host, args.upstream)
        except OSError:
            c_writer.close()
            return
        conn = Conn()
        tasks = [
            asyncio.create_task(pump_up(c_reader, s_writer, conn, counts, delay)),
            asyncio.create_task(pump_down(s_reader, c_writer, conn, counts)),
        ]
        try:
            with contextlib.suppress(OSError):
                await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (c_writer, s_writer):
                with contextlib.suppress(OSError):
                    w.close()

    tasks: set[asyncio.Task[None]] = set()

    async def track(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handle(c_reader, c_writer)
        except asyncio.CancelledError:
            pass  # stopping: end quietly (asyncio's stream callback asks a cancelled task)
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(track, "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    await stop.wait()
    server.close()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", type=int, required=True, help="port of the server")
    p.add_argument("--upstream-host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: any free)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="added per request (default 0)")
    p.add_argument("--stats", type=Path, help="write the counts here as JSON on exit")
    args = p.parse_args()
    counts = Counts()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args, counts, stop)

    asyncio.run(run())
    if args.stats:
        args.stats.write_text(json.dumps(asdict(counts)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
