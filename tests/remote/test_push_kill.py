"""kill -9 of a real `dsfs push` at random moments (S3 through a proxy that slows each request):
the remote never shows a partial version, and the next push completes the job without
sending again what already arrived."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

from tests.mountutil import dsfs_argv
from tests.remote.faultproxy import FaultProxy, Rule
from tests.treeutil import tree_digest, write
from vfs.exporter import export_version
from vfs.remote import layout
from vfs.remote.check import verify_remote
from vfs.remote.s3backend import S3Backend
from vfs.remote.session import read_remote
from vfs.store import Store

VERSIONS = 4


def _run(store: Path, *args: str | Path) -> str:
    result = subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kill_9_at_any_point_of_a_push_leaves_only_whole_versions(
        tmp_path: Path, s3_bucket: str, fault_proxy: FaultProxy) -> None:
    rng = random.Random(13)
    store, src = tmp_path / "store", tmp_path / "src"
    _run(store, "init")
    for n in range(1, VERSIONS + 1):
        for i in range(6):
            write(src / f"v{n}/part{i}.bin", rng.randbytes(300_000))
        _run(store, "import", src, "-m", f"version {n}")
    url = f"s3://{s3_bucket}/killed"
    _run(store, "remote", "add", "origin", url, "--endpoint-url", fault_proxy.endpoint)
    fault_proxy.add(Rule(None, r"", "delay", times=None, delay_ms=60))
    backend = S3Backend.from_url(url, endpoint_url=fault_proxy.endpoint)
    try:
        for attempt, after in enumerate((3, 5, 8, 11, 14, 18)):
            # killed while its `after`-th request since it started is in flight
            seen = fault_proxy.count()
            proc = subprocess.Popen(dsfs_argv(store, "push"), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while fault_proxy.count() < seen + after and proc.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            view = read_remote(backend, require=False)
            claimed = sorted(view.claims)
            assert claimed == list(range(1, len(claimed) + 1)), (attempt, claimed)
            if view.config is not None:
                assert verify_remote(view).ok, (attempt, verify_remote(view).problems)
        before = {o.key for o in backend.list(layout.PACKS)}
        fault_proxy.clear()
        out = json.loads(_run(store, "push", "--json"))
        assert out["packs_already_there"] + out["packs_uploaded"] >= len(before) or \
            not out["pushed"]
        after = {o.key for o in backend.list(layout.PACKS)}
        assert before <= after
        assert len(after) == len(before) + out["packs_uploaded"]
        view = read_remote(backend)
        assert sorted(view.claims) == list(range(1, VERSIONS + 1))
        assert verify_remote(view, read_data=True).ok
    finally:
        backend.close()
    clone = tmp_path / "clone"
    subprocess.run(dsfs_argv(clone, "clone", url, clone, "--endpoint-url",
                             fault_proxy.endpoint), check=True, capture_output=True)
    with Store.open(clone) as c:
        export_version(c, c.version(VERSIONS), tmp_path / "out")
    assert tree_digest(tmp_path / "out") == tree_digest(src)
