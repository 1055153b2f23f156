"""The remote commands against a real S3 server (moto) as a user runs them: what goes wrong in
the configuration gets one line and changes nothing; @head and commit on a clone, then push."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.cli.test_cli import assert_one_line_error, store_state
from tests.mountutil import dsfs_argv, mounted
from tests.remote.s3util import MotoServer
from tests.treeutil import write


def _dsfs(store: Path, *args: str | Path, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True, env=env)


def _ok(store: Path, *args: str | Path) -> str:
    result = _dsfs(store, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_configuration_mistakes_get_one_line_and_change_nothing(
        tmp_path: Path, moto_server: MotoServer, s3_bucket: str, s3_env: dict[str, str]) -> None:
    store = tmp_path / "store"
    write(tmp_path / "src/a.txt", b"a\n")
    _ok(store, "init")
    _ok(store, "import", tmp_path / "src")
    _ok(store, "remote", "add", "nobucket", "s3://no-such-bucket-here/x")
    _ok(store, "remote", "add", "origin", f"s3://{s3_bucket}/x")
    before = store_state(store)
    result = _dsfs(store, "push", "nobucket")
    assert_one_line_error(result, "no-such-bucket-here", "does not exist")
    no_keys = {k: v for k, v in s3_env.items()
               if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    result = _dsfs(store, "push", env={**{k: v for k, v in os.environ.items()
                                          if not k.startswith("AWS_")}, **no_keys})
    assert_one_line_error(result, "credentials")
    assert store_state(store) == before
    assert "testing-secret" not in (store / "remotes.json").read_text()
    result = subprocess.run(dsfs_argv(tmp_path / "c", "clone", "s3://no-such-bucket-here/x",
                                      tmp_path / "c"), capture_output=True, text=True)
    assert_one_line_error(result, "does not exist")
    assert not (tmp_path / "c").exists()


def test_head_and_commit_on_a_clone_then_push_shares_the_new_version(
        tmp_path: Path, s3_bucket: str) -> None:
    origin, clone, url = tmp_path / "a", tmp_path / "b", f"s3://{s3_bucket}/shared"
    write(tmp_path / "src/train/x.bin", bytes(range(256)) * 2000)
    _ok(origin, "init")
    _ok(origin, "import", tmp_path / "src", "-m", "first")
    _ok(origin, "remote", "add", "origin", url)
    _ok(origin, "push")
    _ok(clone, "clone", url, clone)
    with mounted(clone, tmp_path / "mnt") as daemon:
        head = daemon.mountpoint / "@head"
        data = bytearray((head / "train/x.bin").read_bytes())
        data[1000:1010] = b"0123456789"
        (head / "train/x.bin").write_bytes(bytes(data))
        (head / "notes.txt").write_text("edited on the clone\n")
        assert _ok(clone, "commit", "-m", "from the clone").strip() == "v2"
        _ok(clone, "push")
    assert "pulled v2" in _dsfs(origin, "pull").stderr
    assert _ok(origin, "cat", "v2:notes.txt") == "edited on the clone\n"
    out = subprocess.run(dsfs_argv(origin, "cat", "v2:train/x.bin"), capture_output=True)
    assert out.stdout == bytes(data)
