"""Run moto's S3 server on 127.0.0.1: `python motoserver.py [PORT] [--foreground BUCKET]`.

Owns: one moto server process. It prints its port on the first line of stdout once it listens,
and exits when its stdin closes (so it never outlives the test process that started it). With
`--foreground BUCKET` (scripts/s3-server) it creates that bucket and serves until interrupted.
Never imports: vfs, daemon.

moto checks If-None-Match on PutObject before it stores the object, in two steps that other
request threads can interleave; S3 decides it atomically. Requests are therefore handled one at
a time (a lock around the WSGI app), which makes conditional creates atomic as on S3.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with lock:
            return list(app(environ, start_response))

    server = make_server("127.0.0.1", port, serialized, threaded=True,
                         request_handler=MotoRequestHandler)
    if "--foreground" in sys.argv:
        bucket = sys.argv[sys.argv.index("--foreground") + 1]
        threading.Thread(target=_create_bucket, args=(server.server_port, bucket),
                         daemon=True).start()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            os._exit(0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_port, flush=True)
    sys.stdin.read()  # until the parent closes the pipe or dies
    os._exit(0)


def _create_bucket(port: int, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing"
                 ).create_bucket(Bucket=bucket)


if __name__ == "__main__":
    main()
