"""Real mounts: every version byte-for-byte, read-only, live updates, concurrency, recovery."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.mount import is_stale, mounted_at
from tests.mountutil import Daemon, dsfs_argv, mounted, wait_for
from tests.treeutil import snapshot, write


def dsfs(store: Path, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def make_source(root: Path, seed: int) -> None:
    rnd = random.Random(seed)
    write(root / "labels.csv", b"".join(b"%d,cat\n" % i for i in range(20_000)), 0o640,
          1_700_000_000_000_000_001)
    write(root / "big/shard.bin", rnd.randbytes(3 * 1024 * 1024 + 11))
    for i in range(30):
        write(root / f"images/c{i % 3}/{i:03d}.jpg", rnd.randbytes(rnd.randint(1000, 90_000)))
    (root / "empty_dir").mkdir()
    write(root / "empty.txt", b"")
    os.symlink("../labels.csv", root / "images/link_up")
    os.symlink("/etc/hostname", root / "abs_link")
    os.link(root / "labels.csv", root / "images/hard.csv")
    os.setxattr(root / "labels.csv", "user.note", b"checked")
    os.mkfifo(root / "pipe")
    write(root / os.fsdecode(b"caf\xe9-latin1.txt"), b"odd name")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Path]]]:
    base = tmp_path_factory.mktemp("history")
    store = base / "store"
    dsfs(store, "init")
    sources = []
    for n in range(2):
        src = base / f"src{n + 1}"
        make_source(src, seed=1)
        if n == 1:
            write(src / "labels.csv", b"changed,header\n" + (src / "labels.csv").read_bytes())
            shutil.rmtree(src / "images/c2")
            write(src / "images/c9/new.jpg", random.Random(5).randbytes(70_000))
        dsfs(store, "import", src, "-m", f"version {n + 1}", *(["--tag", "base"] if n == 0
                                                               else []))
        sources.append(src)
    yield store, sources


@pytest.fixture
def mount(history: tuple[Path, list[Path]], tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    store, _ = history
    with mounted(store, tmp_path / "mnt") as daemon:
        yield daemon, tmp_path / "mnt"


def without_top(snap: dict[bytes, tuple]) -> dict[bytes, tuple]:
    return {k: v for k, v in snap.items() if k != b"."}


def test_every_version_is_byte_identical_to_its_source(
        history: tuple[Path, list[Path]], mount: tuple[Daemon, Path]) -> None:
    _, sources = history
    _, mnt = mount
    assert sorted(os.listdir(mnt)) == ["@base", "@head", "@latest", "@v1", "@v2"]
    for n, src in enumerate(sources, start=1):
        assert without_top(snapshot(mnt / f"@v{n}")) == without_top(snapshot(src))
    # diff cannot compare fifos (it says so even for two plain directories): leave it out
    result = subprocess.run(["diff", "-r", "--no-dereference", "-x", "pipe", str(mnt / "@v2"),
                             str(sources[1])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_root_links_point_at_versions(mount: tuple[Daemon, Path]) -> None:
    _, mnt = mount
    assert os.readlink(mnt / "@latest") == "@v2"
    assert os.readlink(mnt / "@base") == "@v1"
    assert (mnt / "@latest/labels.csv").read_bytes().startswith(b"changed,header")
    assert os.stat(mnt / "@v1/labels.csv").st_nlink == 2


def test_random_reads_return_exact_bytes(history: tuple[Path, list[Path]],
                                         mount: tuple[Daemon, Path]) -> None:
    _, sources = history
    _, mnt = mount
    expect = (sources[0] / "big/shard.bin").read_bytes()
    rnd = random.Random(3)
    with open(mnt / "@v1/big/shard.bin", "rb") as f:
        for _ in range(200):
            off = rnd.randrange(len(expect) + 10)
            n = rnd.randrange(1, 300_000)
            f.seek(off)
            assert f.read(n) == expect[off:off + n]


def _open_close(path: Path, mode: str) -> None:
    with open(path, mode):
        pass


MUTATIONS = {
    "open for write": lambda p: _open_close(p / "labels.csv", "r+b"),
    "truncate": lambda p: os.truncate(p / "labels.csv", 0),
    "create": lambda p: _open_close(p / "new.txt", "wb"),
    "unlink": lambda p: os.unlink(p / "labels.csv"),
    "rename": lambda p: os.rename(p / "labels.csv", p / "x.csv"),
    "chmod": lambda p: os.chmod(p / "labels.csv", 0o600),
    "chown": lambda p: os.chown(p / "labels.csv", 1, 1),
    "utime": lambda p: os.utime(p / "labels.csv", (1, 1)),
    "setxattr": lambda p: os.setxattr(p / "labels.csv", "user.x", b"y"),
    "removexattr": lambda p: os.removexattr(p / "labels.csv", "user.note"),
    "mkdir": lambda p: os.mkdir(p / "d"),
    "rmdir": lambda p: os.rmdir(p / "empty_dir"),
    "symlink": lambda p: os.symlink("x", p / "l"),
    "hard link": lambda p: os.link(p / "labels.csv", p / "l2"),
    "mkfifo": lambda p: os.mkfifo(p / "f"),
}


@pytest.mark.parametrize("what", sorted(MUTATIONS))
def test_every_mutation_of_a_version_fails_with_erofs(mount: tuple[Daemon, Path],
                                                      what: str) -> None:
    _, mnt = mount
    with pytest.raises(OSError) as info:
        MUTATIONS[what](mnt / "@v1")
    assert info.value.errno == errno.EROFS, info.value
    assert (mnt / "@v1/labels.csv").stat().st_mode & 0o777 == 0o640


def test_versions_recorded_while_mounted_appear_and_dropped_ones_vanish(
        history: tuple[Path, list[Path]], tmp_path: Path) -> None:
    store, _ = history
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        src = tmp_path / "src3"
        write(src / "only-in-v3.txt", b"three")
        out = dsfs(store, "import", src, "-m", "three").stdout.strip()
        assert out == "v3"
        wait_for(lambda: os.path.exists(mnt / "@v3/only-in-v3.txt"), 5, "@v3 to appear", daemon)
        wait_for(lambda: os.readlink(mnt / "@latest") == "@v3", 5, "@latest to follow", daemon)
        dsfs(store, "tag", "v3", "fresh")
        wait_for(lambda: os.path.islink(mnt / "@fresh"), 5, "tag link", daemon)
        dsfs(store, "tag", "--delete", "fresh")
        dsfs(store, "drop", "v3")
        wait_for(lambda: "@v3" not in os.listdir(mnt), 5, "@v3 to vanish", daemon)
        wait_for(lambda: not os.path.lexists(mnt / "@fresh"), 5, "tag to vanish", daemon)
        assert os.readlink(mnt / "@latest") == "@v2"
        assert sorted(os.listdir(mnt)) == ["@base", "@head", "@latest", "@v1", "@v2"]


def _hash_tree(root: str) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(p).st_mode):
                with open(p, "rb") as f:
                    h.update(name.encode("utf-8", "surrogateescape") + f.read())
    return h.hexdigest()


def test_concurrent_readers_of_different_versions(history: tuple[Path, list[Path]],
                                                  mount: tuple[Daemon, Path]) -> None:
    _, sources = history
    _, mnt = mount
    expect = {1: _hash_tree(str(sources[0])), 2: _hash_tree(str(sources[1]))}
    top = str(Path(__file__).parents[2])
    code = (f"import sys; sys.path.insert(0, {top!r}); from tests.mount.test_versions_mount "
            "import _hash_tree; print(_hash_tree(sys.argv[1]))")
    procs = [(n, subprocess.Popen([sys.executable, "-c", code, str(mnt / f"@v{n}")],
                                  stdout=subprocess.PIPE, text=True)) for n in (1, 2, 1, 2, 2)]
    for n, proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert out.strip() == expect[n]


def test_sigterm_unmounts_cleanly(history: tuple[Path, list[Path]], tmp_path: Path) -> None:
    store, _ = history
    with mounted(store, tmp_path / "mnt") as daemon:
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=20) == 0, daemon.log_text()
        assert mounted_at(daemon.mountpoint) is None
        assert "unmounted" in daemon.log_text()


def test_kill_9_leaves_a_stale_mount_that_the_next_mount_clears(
        history: tuple[Path, list[Path]], tmp_path: Path) -> None:
    store, sources = history
    mnt = tmp_path / "mnt"
    with mounted(store, mnt) as daemon:
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(timeout=10)
        assert is_stale(mnt)
        # what the kernel never had is loud, never a silently empty directory (what it cached
        # - the root's listing here - it keeps serving, as for any cached file or listing)
        with pytest.raises(OSError) as info:
            os.listdir(mnt / "@v1")
        assert info.value.errno == errno.ENOTCONN
    with mounted(store, mnt) as again:
        assert (again.mountpoint / "@v1/labels.csv").read_bytes() == \
            (sources[0] / "labels.csv").read_bytes()


def test_background_mount_and_umount_commands(history: tuple[Path, list[Path]],
                                              tmp_path: Path) -> None:
    store, _ = history
    mnt = tmp_path / "bg"
    mnt.mkdir()
    try:
        start = time.monotonic()
        dsfs(store, "mount", mnt)
        assert mounted_at(mnt) is not None
        assert sorted(os.listdir(mnt))[:1] == ["@base"]
        assert time.monotonic() - start < 15
        dsfs(store, "umount", mnt)
        assert mounted_at(mnt) is None
    finally:
        subprocess.run(["fusermount3", "-u", "-z", "-q", str(mnt)], capture_output=True)


@pytest.mark.parametrize("case,words", [
    ("missing", "does not exist"),
    ("not_empty", "not empty"),
    ("mounted", "already mounted"),
])
def test_mount_mistakes_get_one_line(history: tuple[Path, list[Path]], tmp_path: Path,
                                     case: str, words: str) -> None:
    store, _ = history
    mnt = tmp_path / "m"
    if case == "not_empty":
        write(mnt / "x", b"x")
    if case == "mounted":
        with mounted(store, mnt):
            result = dsfs(store, "mount", mnt, check=False)
    else:
        result = dsfs(store, "mount", mnt, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_mount_of_a_missing_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    result = dsfs(tmp_path / "nostore", "mount", tmp_path / "m", check=False)
    assert result.returncode == 3 and "not a dsfs store" in result.stderr
