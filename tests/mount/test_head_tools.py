"""@head under real tools and real failures: fio, git, sqlite, cp -a, rsync, editors, kill -9.

Every test makes its own store under tmp_path, imports a first version and mounts it with
`mounted()`; the writable @head starts as that version.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.mount import is_stale, mounted_at
from tests.mountutil import Daemon, dsfs_argv, mounted, wait_for
from tests.treeutil import snapshot, write

MiB = 1 << 20


# -- helpers -------------------------------------------------------------------------------------

def dsfs(store: Path, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


DEFAULT_V1 = {"a.txt": b"alpha\n", "dir/b.txt": b"bravo\n" * 100,
              "dir/sub/c.bin": random.Random(1).randbytes(70_000)}


def make_store(root: Path, files: dict[str, bytes]) -> Path:
    """`dsfs init` a store under root and `dsfs import` `files` as its v1."""
    src = root / "v1src"
    for rel, data in files.items():
        write(src / rel, data)
    store = root / "store"
    dsfs(store, "init")
    assert dsfs(store, "import", src, "-m", "first").stdout.strip() == "v1"
    return store


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store with DEFAULT_V1 as v1; tests copy it (a CLI call costs ~1 s of start-up)."""
    return make_store(tmp_path_factory.mktemp("template"), DEFAULT_V1)


def new_store(tmp_path: Path, template: Path) -> Path:
    """This test's own store: a copy of the template, never mounted before."""
    store = tmp_path / "store"
    shutil.copytree(template, store, symlinks=True)
    return store


def commit(store: Path, message: str, *extra: str) -> dict:
    result = dsfs(store, "commit", "-m", message, "--json", *extra)
    return json.loads(result.stdout)


def status(store: Path) -> dict:
    return json.loads(dsfs(store, "status", "--json").stdout)


def versions(mnt: Path) -> list[str]:
    return sorted(n for n in os.listdir(mnt) if n.startswith("@v"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.hexdigest()


def wait_version(daemon: Daemon, name: str) -> Path:
    path = daemon.mountpoint / f"@{name}"
    wait_for(lambda: path.is_dir(), 5, f"@{name} to appear", daemon)
    return path


def contents(root: Path) -> dict[bytes, tuple]:
    """Names, kinds and bytes (no metadata) of a tree, without its top directory."""
    return {k: (v[0], *v[6:8]) if v[0] == stat.S_IFREG else v[0:1] + v[6:]
            for k, v in snapshot(root, mtimes=False).items() if k != b"."}


# -- 1. fio with verification --------------------------------------------------------------------

def _fio(head: Path, workdir: Path, *args: str) -> str:
    result = subprocess.run(["fio", f"--directory={head}", "--ioengine=psync",
                             "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
                             "--verify_state_save=0", "--group_reporting", *args],
                            capture_output=True, text=True, timeout=120, cwd=workdir)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "verify:" not in out.lower() and "bad magic" not in out.lower(), out
    assert "err= 0" in out, out
    return out


def test_fio_sequential_and_random_writes_verify_and_commit_byte_exact(
        tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    with mounted(store, tmp_path / "mnt") as daemon:
        head = daemon.mountpoint / "@head"
        _fio(head, tmp_path, "--name=seq", "--rw=write", "--bs=1M", "--size=64M")
        _fio(head, tmp_path, "--name=rnd", "--rw=randwrite", "--bs=4k", "--size=16M",
             "--randrepeat=1")
        names = sorted(n for n in os.listdir(head) if n.startswith(("seq.", "rnd.")))
        assert len(names) == 2, names
        sizes = {n: os.stat(head / n).st_size for n in names}
        assert sorted(sizes.values()) == [16 * MiB, 64 * MiB]
        expect = {n: sha256(head / n) for n in names}
        out = commit(store, "fio")
        assert out["version"] == "v2"
        v2 = wait_version(daemon, "v2")
        assert {n: sha256(v2 / n) for n in names} == expect
        assert {n: sha256(head / n) for n in names} == expect
        assert status(store)["changes"] == []


# -- 2. ordinary tools ---------------------------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=Test",
                             "-c", "init.defaultBranch=main", "-C", str(repo), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"git {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def test_git_init_add_commit_fsck_and_log_inside_head(tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    with mounted(store, tmp_path / "mnt") as daemon:
        repo = daemon.mountpoint / "@head/repo"
        repo.mkdir()
        _git(repo, "init", "-q")
        write(repo / "README.md", b"# data\n")
        write(repo / "src/main.py", b"print('hi')\n" * 50, 0o755)
        write(repo / "data.bin", random.Random(2).randbytes(300_000))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "first")
        write(repo / "README.md", b"# data\nmore\n")
        _git(repo, "commit", "-q", "-am", "second")
        _git(repo, "gc", "-q")
        _git(repo, "fsck", "--full", "--strict")
        assert _git(repo, "log", "--format=%s").split() == ["second", "first"]
        assert _git(repo, "status", "--porcelain") == ""
        assert _git(repo, "show", "HEAD~1:README.md") == "# data\n"
        commit(store, "with a git repo")
        v2 = wait_version(daemon, "v2")
        # the committed version is a valid repository too (read it from a copy)
        copy = tmp_path / "copy"
        shutil.copytree(v2 / "repo", copy, symlinks=True)
        _git(copy, "fsck", "--full", "--strict")
        assert _git(copy, "log", "--format=%s").split() == ["second", "first"]


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_sqlite_database_in_head_survives_transactions(
        tmp_path: Path, template: Path, journal: str) -> None:
    store = new_store(tmp_path, template)
    with mounted(store, tmp_path / "mnt") as daemon:
        db_path = daemon.mountpoint / "@head/db/rows.sqlite"
        db_path.parent.mkdir()
        con = sqlite3.connect(db_path, isolation_level=None)
        try:
            assert con.execute(f"PRAGMA journal_mode={journal}").fetchone()[0] == journal
            con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, blob BLOB)")
            for batch in range(10):
                con.execute("BEGIN")
                con.executemany("INSERT INTO t (id, name, blob) VALUES (?, ?, ?)",
                                [(i, f"row {i}", random.Random(i).randbytes(200))
                                 for i in range(batch * 100, batch * 100 + 100)])
                con.execute("COMMIT")
            con.execute("BEGIN")
            con.execute("DELETE FROM t WHERE id >= 990")
            con.execute("ROLLBACK")
            assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 1000
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            con.close()
        result = subprocess.run(["sqlite3", str(db_path), "SELECT count(*), sum(id) FROM t;"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [f"1000|{sum(range(1000))}"]
        commit(store, "database")
        v2 = wait_version(daemon, "v2")
        copy = tmp_path / "copy.sqlite"
        shutil.copyfile(v2 / "db/rows.sqlite", copy)
        con = sqlite3.connect(copy)
        try:
            assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 1000
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            con.close()


def _tool_tree(root: Path, seed: int, hard_link: bool) -> None:
    rnd = random.Random(seed)
    t0 = 1_600_000_000_000_000_000 + seed
    write(root / "readme.txt", b"hello\n", 0o600, t0 + 123_456_789)
    write(root / "bin/run.sh", b"#!/bin/sh\necho run\n", 0o755, t0 + 2)
    write(root / "data/big.bin", rnd.randbytes(2 * MiB + 17), 0o640, t0 + 3)
    write(root / "data/empty", b"", 0o444, t0 + 4)
    for i in range(20):
        write(root / f"data/many/{i:02d}.txt", b"%d\n" % i * rnd.randint(1, 2000), 0o644,
              t0 + 1000 * i)
    os.symlink("../readme.txt", root / "data/link_up")
    os.symlink("/nonexistent/target", root / "dangling")
    (root / "emptydir").mkdir(mode=0o700)
    os.chmod(root / "emptydir", 0o700)
    if hard_link:
        os.link(root / "bin/run.sh", root / "bin/run-again.sh")
    # symlinks too get old mtimes: rsync leaves a new link's time alone when it falls in the
    # same second as the source's (its comparison is in whole seconds)
    for i, link in enumerate(("data/link_up", "dangling")):
        os.utime(root / link, ns=(t0 + 5 + i, t0 + 5 + i), follow_symlinks=False)
    for d in ("emptydir", "data/many", "data", "bin", "."):
        os.utime(root / d, ns=(t0 + 77, t0 + 77))


def test_cp_a_and_rsync_a_into_head_keep_modes_links_and_mtimes(
        tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    cp_src, rs_src = tmp_path / "cp_src", tmp_path / "rs_src"
    _tool_tree(cp_src, 1, hard_link=True)
    _tool_tree(rs_src, 2, hard_link=False)
    with mounted(store, tmp_path / "mnt") as daemon:
        head = daemon.mountpoint / "@head"
        result = subprocess.run(["cp", "-a", str(cp_src), str(head / "cp")],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        result = subprocess.run(["rsync", "-a", f"{rs_src}/", f"{head / 'rs'}/"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert snapshot(head / "cp") == snapshot(cp_src)
        assert snapshot(head / "rs") == snapshot(rs_src)
        # a second rsync finds nothing to do (sizes and mtimes match)
        result = subprocess.run(["rsync", "-a", "--itemize-changes", f"{rs_src}/",
                                 f"{head / 'rs'}/"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
        commit(store, "copied trees")
        v2 = wait_version(daemon, "v2")
        assert snapshot(v2 / "cp") == snapshot(cp_src)
        assert snapshot(v2 / "rs") == snapshot(rs_src)


def test_cp_a_keeps_modes_and_xattrs_where_the_mount_serves_xattrs(
        tmp_path: Path, template: Path) -> None:
    # --xattrs on also turns on POSIX ACLs: cp -a then sets system.posix_acl_access (the ACL
    # equivalent of the mode) on the file it created 0600, and the mode must follow the ACL
    store = new_store(tmp_path, template)
    src = tmp_path / "cp_src"
    _tool_tree(src, 3, hard_link=True)
    os.setxattr(src / "readme.txt", "user.origin", b"cp keeps xattrs")
    os.setxattr(src / "data", "user.dir", b"on a directory")
    with mounted(store, tmp_path / "mnt", "--xattrs", "on") as daemon:
        head = daemon.mountpoint / "@head"
        result = subprocess.run(["cp", "-a", str(src), str(head / "cp")],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        modes = {k: oct(v[1]) for k, v in snapshot(head / "cp").items()}
        assert modes == {k: oct(v[1]) for k, v in snapshot(src).items()}
        assert snapshot(head / "cp") == snapshot(src)
        commit(store, "copied with xattrs")
        v2 = wait_version(daemon, "v2")
        assert snapshot(v2 / "cp") == snapshot(src)


def test_editor_save_by_temp_file_and_replace_keeps_content(tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    with mounted(store, tmp_path / "mnt") as daemon:
        head = daemon.mountpoint / "@head"
        target = head / "dir/b.txt"
        old = target.read_bytes()
        with open(target, "rb") as reader:  # a reader that opened the old file keeps it
            for n in range(3):
                new = b"edited %d\n" % n + old[: 1000 * n]
                tmp = head / "dir/.b.txt.swp"
                with open(tmp, "wb") as f:
                    f.write(new)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
                assert target.read_bytes() == new
                assert not tmp.exists()
            assert reader.read() == old
        assert sorted(os.listdir(head / "dir")) == ["b.txt", "sub"]
        # only the saved name is a change (the temporary name left no trace)
        changes = status(store)["changes"]
        assert {c["path"] for c in changes} == {"dir/b.txt"}, changes
        commit(store, "edited")
        v2 = wait_version(daemon, "v2")
        assert (v2 / "dir/b.txt").read_bytes() == new
        assert (daemon.mountpoint / "@v1/dir/b.txt").read_bytes() == old


# -- 3. durability -------------------------------------------------------------------------------

def _kill_9(daemon: Daemon) -> None:
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(timeout=10)
    # the kernel aborts the connection just after the daemon is reaped, not always before
    wait_for(lambda: is_stale(daemon.mountpoint), 5, "the mount to turn stale")


def test_closed_write_survives_kill_9_of_the_daemon(tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    mnt = tmp_path / "mnt"
    data = random.Random(3).randbytes(3 * MiB + 5)
    with mounted(store, mnt) as daemon:
        with open(mnt / "@head/written.bin", "wb") as f:
            f.write(data)
        with open(mnt / "@head/a.txt", "ab") as f:
            f.write(b"appended\n")
        (mnt / "@head/newdir").mkdir()
        _kill_9(daemon)
        # the next mount clears the stale mountpoint by itself (`mounted()` cannot start on
        # a stale mountpoint - its mkdir fails with ENOTCONN - so mount in the background;
        # the outer `mounted()` unmounts whatever is left if this fails)
        dsfs(store, "mount", mnt)
        head = mnt / "@head"
        assert (head / "written.bin").read_bytes() == data
        assert (head / "a.txt").read_bytes() == b"alpha\nappended\n"
        assert (head / "newdir").is_dir()
        assert versions(mnt) == ["@v1"]
        dsfs(store, "umount", mnt)
        assert mounted_at(mnt) is None


def test_uncommitted_changes_survive_a_clean_unmount_and_remount(
        tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    mnt = tmp_path / "mnt"
    data = random.Random(4).randbytes(MiB + 3)
    with mounted(store, mnt):
        head = mnt / "@head"
        write(head / "new/file.bin", data, 0o600)
        os.unlink(head / "a.txt")
        os.rename(head / "dir/b.txt", head / "dir/renamed.txt")
        os.symlink("renamed.txt", head / "dir/link")
        before = snapshot(head)
        status_before = status(store)
    assert mounted_at(mnt) is None
    assert status(store) == status_before  # also answered without a mount
    with mounted(store, mnt):
        assert snapshot(mnt / "@head") == before
        assert status(store) == status_before
        assert versions(mnt) == ["@v1"]


def test_kill_9_during_commit_leaves_either_the_version_or_the_changes(
        tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    mnt = tmp_path / "mnt"
    rnd = random.Random()
    seed = rnd.randrange(1 << 30)
    data_rnd = random.Random(seed)
    delay = rnd.uniform(0.2, 0.5)
    tries: list[str] = []
    with mounted(store, mnt) as daemon:
        head = mnt / "@head"
        # the delay counts from when the daemon has the request (the CLI takes ~1 s to start,
        # and a CLI that starts after the daemon died commits by itself). A 50 MB commit takes
        # this daemon 0.3-0.7 s: when it wins the race, commit another change and kill sooner.
        for attempt in range(4):
            for i in range(5):
                write(head / f"big{attempt}/{i}.bin", data_rnd.randbytes(10 * MiB))
            with open(head / "dir/sub/c.bin", "r+b") as f:
                f.seek(30_000 + attempt)
                f.write(b"X%d" % attempt * 2000)
            expect = contents(head)
            proc = subprocess.Popen(dsfs_argv(store, "commit", "-m", f"big {attempt}"),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_for(lambda n=attempt + 1: daemon.log_text().count("control request commit")
                     == n, 30, "the daemon to receive the commit", daemon)
            start = time.monotonic()
            while time.monotonic() - start < delay and proc.poll() is None:
                time.sleep(0.002)
            took = time.monotonic() - start
            if proc.poll() is None:
                _kill_9(daemon)
                tries.append(f"killed {took:.3f} s into the commit")
                break
            out, err = proc.communicate()
            assert proc.returncode == 0 and out.strip() == f"v{attempt + 2}", err
            tries.append(f"commit took {took:.3f} s, less than the delay {delay:.3f} s")
            delay = rnd.uniform(0.1, 0.9) * took
        else:
            pytest.fail(f"no kill landed inside a commit: {tries}")
        out, err = proc.communicate(timeout=30)
        # the kill may land between the reply and the CLI's exit: then it succeeded
        assert proc.returncode != 0 or out.strip() == f"v{attempt + 2}", (out, err)
        assert "Traceback" not in err, err
    why = f"(seed {seed}: {'; '.join(tries)}; commit CLI exit {proc.returncode}: {err.strip()})"
    before = [f"@v{n}" for n in range(1, attempt + 2)]
    new = f"v{attempt + 2}"
    with mounted(store, mnt) as again:
        assert contents(mnt / "@head") == expect, why
        found = versions(mnt)
        assert found in (before, [*before, f"@{new}"]), (found, why)
        report = status(store)
        if found != before:
            assert contents(mnt / f"@{new}") == expect, why
            assert report["base"] == new and report["changes"] == [], (report, why)
        else:
            assert proc.returncode != 0, why
            assert report["base"] == before[-1][1:] and report["changes"], (report, why)
        assert again.proc.poll() is None
    result = dsfs(store, "verify", "--read-data", check=False)
    assert result.returncode == 0, f"{why}\n{result.stdout}{result.stderr}"
    # and a commit now records the expected content either way
    if found == before:
        assert dsfs(store, "commit", "-m", "again").stdout.strip() == new
    with mounted(store, mnt):
        assert contents(mnt / f"@{new}") == expect, why


# -- 4. concurrency ------------------------------------------------------------------------------

_WRITER = r"""
import os, random, sys, time
path, seed = sys.argv[1], int(sys.argv[2])
data = random.Random(seed).randbytes(12 << 20)
part1, part2, piece = 4 << 20, 8 << 20, 64 << 10
with open(path, "wb") as f:
    f.write(data[:part1])
    f.flush()
    os.fsync(f.fileno())
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\n"
    for off in range(part1, part2, piece):  # while the commit runs
        f.write(data[off:off + piece])
        f.flush()
        time.sleep(0.01)
    print("written", flush=True)
    assert sys.stdin.readline() == "finish\n"
    for off in range(part2, len(data), piece):  # after the commit
        f.write(data[off:off + piece])
        f.flush()
    f.seek(0)
    f.write(b"HEADER")
print("done", flush=True)
"""

_READER = r"""
import hashlib, os, sys, json
expect = json.loads(sys.argv[1])
stop = sys.argv[2]
rounds = errors = 0
while not os.path.exists(stop) or rounds < 3:
    for path, digest in expect.items():
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != digest:
                errors += 1
                print("mismatch", path, flush=True)
    for path in sys.argv[3:]:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    rounds += 1
print(json.dumps({"rounds": rounds, "errors": errors}), flush=True)
"""


def _writer_content(seed: int) -> bytes:
    data = random.Random(seed).randbytes(12 << 20)
    return b"HEADER" + data[6:]


def _tell(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _hear(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline()


def test_writers_keep_files_open_across_a_commit_while_readers_read(
        tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        head = mnt / "@head"
        stop = tmp_path / "stop"
        v1_files = {str(mnt / "@v1" / rel): hashlib.sha256(data).hexdigest()
                    for rel, data in DEFAULT_V1.items()}
        unchanged_head = {str(head / "dir/sub/c.bin"): v1_files[str(mnt / "@v1/dir/sub/c.bin")]}
        procs: list[subprocess.Popen[str]] = []
        try:
            writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(head / f"w{n}.bin"),
                                         str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True) for n in (1, 2)]
            procs += writers
            assert [_hear(w) for w in writers] == ["ready\n"] * 2
            reader = subprocess.Popen(
                [sys.executable, "-c", _READER, json.dumps(v1_files | unchanged_head),
                 str(stop), str(head / "w1.bin"), str(head / "w2.bin")],
                stdout=subprocess.PIPE, text=True)
            procs.append(reader)
            committer = subprocess.Popen(dsfs_argv(store, "commit", "-m", "middle"),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)
            procs.append(committer)
            # the writers go on writing while the daemon runs the commit
            wait_for(lambda: "control request commit" in daemon.log_text(), 30,
                     "the daemon to receive the commit", daemon)
            for w in writers:
                _tell(w, "go")
            out, err = committer.communicate(timeout=60)
            assert committer.returncode == 0, err
            assert out.strip() == "v2"
            assert [_hear(w) for w in writers] == ["written\n"] * 2
            for w in writers:
                _tell(w, "finish")
            for w in writers:
                out, _ = w.communicate(timeout=60)
                assert w.returncode == 0 and out == "done\n"
            stop.touch()
            out, _ = reader.communicate(timeout=60)
            assert reader.returncode == 0
            result = json.loads(out.splitlines()[-1])
            assert result["errors"] == 0 and result["rounds"] >= 3, out
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        v2 = wait_version(daemon, "v2")
        for n in (1, 2):
            full = _writer_content(n)
            assert sha256(head / f"w{n}.bin") == hashlib.sha256(full).hexdigest()
            committed = (v2 / f"w{n}.bin").read_bytes()
            # fsynced before the commit started: the first part is in v2 for certain
            assert len(committed) >= 4 << 20
            assert committed[:4 << 20] == random.Random(n).randbytes(12 << 20)[:4 << 20]
        changes = {(c["change"], c["path"]) for c in status(store)["changes"]}
        assert commit(store, "after close")["version"] == "v3"
        v3 = wait_version(daemon, "v3")
        for n in (1, 2):
            assert sha256(v3 / f"w{n}.bin") == hashlib.sha256(_writer_content(n)).hexdigest()
        assert status(store)["changes"] == []
        for path, digest in v1_files.items():
            assert sha256(Path(path)) == digest
        # files v2 added and that were written since are modified (not deleted and added)
        assert changes == {("modified", "w1.bin"), ("modified", "w2.bin")}, changes


# -- 5. copy-on-write ----------------------------------------------------------------------------

def _stored(store: Path) -> int:
    stats = json.loads(dsfs(store, "stats", "--json").stdout)
    return sum(stats["stored_bytes"].values())


def test_commits_store_only_what_was_written(tmp_path: Path) -> None:
    rnd = random.Random(5)
    original = rnd.randbytes(20 * MiB)
    store = make_store(tmp_path, {"random.bin": original, "small.txt": b"small\n"})
    with mounted(store, tmp_path / "mnt") as daemon:
        head = daemon.mountpoint / "@head"
        sparse = head / "sparse.bin"
        one, two = rnd.randbytes(2 * MiB), rnd.randbytes(2 * MiB + 4096)
        with open(sparse, "wb") as f:
            f.truncate(1 << 30)
            f.seek(100 * MiB)
            f.write(one)
            f.seek(700 * MiB + 123)
            f.write(two)
        assert sparse.stat().st_size == 1 << 30
        written = len(one) + len(two)
        before = _stored(store)
        out = commit(store, "sparse")
        grown = _stored(store) - before
        assert written <= out["new_stored_bytes"] < written + MiB, out
        assert written <= grown < written + MiB, grown
        v2 = wait_version(daemon, "v2")
        with open(v2 / "sparse.bin", "rb") as f:
            assert os.fstat(f.fileno()).st_size == 1 << 30
            f.seek(100 * MiB)
            assert f.read(len(one)) == one
            f.seek(700 * MiB + 123)
            assert f.read(len(two)) == two
            for off in (0, 50 * MiB, 100 * MiB - 10, 400 * MiB, (1 << 30) - 4096):
                f.seek(off)
                assert f.read(10) == b"\0" * 10, off

        middle = 10 * MiB + 12345
        with open(head / "random.bin", "r+b") as f:
            f.seek(middle)
            f.write(bytes([original[middle] ^ 0xFF]))
        edited = bytearray(original)
        edited[middle] ^= 0xFF
        before = _stored(store)
        out = commit(store, "one byte")
        assert out["version"] == "v3"
        assert 0 < out["new_stored_bytes"] < 3 * MiB, out
        assert _stored(store) - before < 3 * MiB
        v3 = wait_version(daemon, "v3")
        assert (v3 / "random.bin").read_bytes() == bytes(edited)
        assert (daemon.mountpoint / "@v1/random.bin").read_bytes() == original


# -- 6. errors -----------------------------------------------------------------------------------

def _errno_of(fn, *args: object) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def test_versions_refuse_writes_and_cross_renames_fail_with_exdev(
        tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        v1, head = mnt / "@v1", mnt / "@head"
        before = snapshot(v1)
        assert _errno_of(os.open, v1 / "a.txt", os.O_WRONLY) == errno.EROFS
        assert _errno_of(os.open, v1 / "new", os.O_WRONLY | os.O_CREAT, 0o644) == errno.EROFS
        assert _errno_of(os.mkdir, v1 / "newdir") == errno.EROFS
        assert _errno_of(os.unlink, v1 / "a.txt") == errno.EROFS
        assert _errno_of(os.rename, v1 / "a.txt", v1 / "z.txt") == errno.EROFS
        assert _errno_of(os.chmod, v1 / "a.txt", 0o600) == errno.EROFS
        assert _errno_of(os.rename, v1 / "a.txt", head / "moved.txt") == errno.EXDEV
        assert _errno_of(os.rename, head / "a.txt", v1 / "moved.txt") == errno.EXDEV
        assert snapshot(v1) == before
        assert (head / "a.txt").read_bytes() == b"alpha\n"
        assert not (head / "moved.txt").exists()

        long_name = "n" * 256
        assert _errno_of(os.open, head / long_name, os.O_WRONLY | os.O_CREAT,
                         0o644) == errno.ENAMETOOLONG
        assert _errno_of(os.mkdir, head / long_name) == errno.ENAMETOOLONG
        assert _errno_of(os.rename, head / "a.txt", head / long_name) == errno.ENAMETOOLONG
        write(head / ("m" * 255), b"longest name")
        assert (head / ("m" * 255)).read_bytes() == b"longest name"
        assert long_name not in os.listdir(head)


def test_commit_without_changes_and_reset_without_yes_are_refused(
        tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        result = dsfs(store, "commit", "-m", "empty", check=False)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "nothing to commit" in lines[0], result.stderr
        assert result.stdout == ""
        assert versions(mnt) == ["@v1"]
        log = dsfs(store, "log").stdout
        assert "empty" not in log

        write(mnt / "@head/change.txt", b"keep me")
        before = status(store)
        result = dsfs(store, "reset", check=False)
        assert result.returncode != 0
        assert "--yes" in result.stderr and "Traceback" not in result.stderr
        assert status(store) == before
        assert (mnt / "@head/change.txt").read_bytes() == b"keep me"

        dsfs(store, "reset", "--yes")
        assert not (mnt / "@head/change.txt").exists()
        assert status(store)["changes"] == []
        assert versions(mnt) == ["@v1"]


AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def _renameat2(old: Path, new: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    if fn(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(old), None, str(new))


def test_renameat2_noreplace_and_exchange_in_head(tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    with mounted(store, tmp_path / "mnt") as daemon:
        head = daemon.mountpoint / "@head"
        write(head / "x.txt", b"ex")
        assert _errno_of(_renameat2, head / "x.txt", head / "a.txt",
                         RENAME_NOREPLACE) == errno.EEXIST
        assert (head / "x.txt").read_bytes() == b"ex"
        assert (head / "a.txt").read_bytes() == b"alpha\n"
        _renameat2(head / "x.txt", head / "y.txt", RENAME_NOREPLACE)
        assert not (head / "x.txt").exists()
        assert (head / "y.txt").read_bytes() == b"ex"

        _renameat2(head / "y.txt", head / "a.txt", RENAME_EXCHANGE)
        assert (head / "y.txt").read_bytes() == b"alpha\n"
        assert (head / "a.txt").read_bytes() == b"ex"
        # a file and a directory swap too, across directories
        _renameat2(head / "a.txt", head / "dir/sub", RENAME_EXCHANGE)
        assert (head / "dir/sub").read_bytes() == b"ex"
        assert sorted(os.listdir(head / "a.txt")) == ["c.bin"]
        assert _errno_of(_renameat2, head / "y.txt", head / "missing",
                         RENAME_EXCHANGE) == errno.ENOENT
        commit(store, "swapped")
        v2 = wait_version(daemon, "v2")
        assert (v2 / "y.txt").read_bytes() == b"alpha\n"
        assert (v2 / "dir/sub").read_bytes() == b"ex"
        assert (v2 / "a.txt/c.bin").read_bytes() == random.Random(1).randbytes(70_000)


# -- 7. unlink while open ------------------------------------------------------------------------

def test_unlinked_open_files_keep_working_until_closed(tmp_path: Path, template: Path) -> None:
    store = new_store(tmp_path, template)
    with mounted(store, tmp_path / "mnt") as daemon:
        head = daemon.mountpoint / "@head"
        # a new file
        with open(head / "tmp.bin", "w+b") as f:
            f.write(b"first part;")
            os.unlink(head / "tmp.bin")
            assert not (head / "tmp.bin").exists()
            assert "tmp.bin" not in os.listdir(head)
            f.write(b"second part" * 10_000)
            f.flush()
            f.seek(0)
            assert f.read() == b"first part;" + b"second part" * 10_000
            assert os.fstat(f.fileno()).st_nlink == 0
            os.ftruncate(f.fileno(), 5)
            f.seek(0)
            assert f.read() == b"first"
        # a file of the base version
        c_bin = random.Random(1).randbytes(70_000)
        with open(head / "dir/sub/c.bin", "r+b") as f:
            os.unlink(head / "dir/sub/c.bin")
            assert f.read(100) == c_bin[:100]
            f.seek(0, os.SEEK_END)
            f.write(b"tail")
            f.seek(0)
            assert f.read() == c_bin + b"tail"
        assert os.listdir(head / "dir/sub") == []
        assert not (head / "tmp.bin").exists()
        # the same name can be used again at once
        write(head / "tmp.bin", b"new")
        assert (head / "tmp.bin").read_bytes() == b"new"
        changes = {(c["change"], c["path"]) for c in status(store)["changes"]}
        assert changes == {("deleted", "dir/sub/c.bin"), ("added", "tmp.bin")}, changes
        commit(store, "after unlink")
        v2 = wait_version(daemon, "v2")
        assert os.listdir(v2 / "dir/sub") == []
        assert (v2 / "tmp.bin").read_bytes() == b"new"
        assert (daemon.mountpoint / "@v1/dir/sub/c.bin").read_bytes() == c_bin
        assert daemon.proc.poll() is None
