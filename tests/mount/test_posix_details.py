"""POSIX details tools notice, on a real mount, compared with the same steps on a native directory:
directory link counts, fifo sizes, st_blocks of sparse files, atime, device nodes and sockets.

Each test makes its own store under tmp_path (`dsfs init` + `dsfs import`) and mounts it with
`mounted()`; @head starts as v1.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.mountutil import dsfs_argv, mounted
from tests.treeutil import write

MiB = 1 << 20
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
AT_FDCWD = -100


def dsfs(store: Path, *args: str | Path) -> str:
    result = subprocess.run(dsfs_argv(store, *args), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def make_store(tmp_path: Path, src: Path, *import_args: str) -> Path:
    store = tmp_path / "store"
    dsfs(store, "init")
    assert dsfs(store, "import", src, "-m", "first", *import_args).strip() == "v1"
    return store


def commit(store: Path) -> str:
    return str(json.loads(dsfs(store, "commit", "-m", "posix", "--json"))["version"])


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path: Path, atime: tuple[int, int], mtime: tuple[int, int]) -> None:
    """utimensat(2) with raw (sec, nsec) pairs, so UTIME_NOW and UTIME_OMIT can be passed."""
    libc = ctypes.CDLL(None, use_errno=True)
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    if libc.utimensat(AT_FDCWD, os.fsencode(path), times, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))


def _version_dir(mnt: Path, name: str) -> Path:
    """`v2` or `2` as printed by commit --json -> the mount's `@v2`."""
    return mnt / f"@v{name.lstrip('v')}"


# -- directory link counts -------------------------------------------------------------------

def _dir_steps(root: Path) -> None:
    (root / "a").mkdir()
    for sub in ("x", "y", "z"):
        (root / "a" / sub).mkdir()
    (root / "a" / "file").write_bytes(b"f")
    (root / "b").mkdir()
    (root / "a" / "y").rmdir()
    os.rename(root / "a" / "x", root / "b" / "x")  # a loses one, b gains one
    (root / "c").mkdir()
    os.rename(root / "c", root / "b" / "z")  # replaces nothing: b gains one
    (root / "a" / "z" / "deep").mkdir()


def _nlinks(root: Path) -> dict[str, int]:
    out = {".": os.lstat(root).st_nlink}
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            out[str(p.relative_to(root))] = os.lstat(p).st_nlink
    return out


def test_directory_link_count_is_two_plus_subdirectories(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "top/one/f", b"1")
    write(src / "top/two/f", b"2")
    (src / "top/three").mkdir()
    write(src / "lone/f", b"3")
    store = make_store(tmp_path, src)
    native = tmp_path / "native"
    native.mkdir()
    for p in ("top/one", "top/two", "top/three", "lone"):
        (native / p).mkdir(parents=True)
    _dir_steps(native)
    expected = _nlinks(native)
    assert expected["top"] == 5 and expected["b"] == 4  # the native filesystem counts subdirs
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        assert os.lstat(mnt / "@v1" / "top").st_nlink == 5
        assert os.lstat(mnt / "@v1").st_nlink == 4
        assert os.lstat(mnt / "@head" / "top").st_nlink == 5  # base dirs, not stored yet
        _dir_steps(mnt / "@head")
        assert _nlinks(mnt / "@head") == expected
        version = commit(store)
        assert _nlinks(_version_dir(mnt, version)) == expected
    with mounted(store, tmp_path / "mnt") as daemon:  # kept in head.db
        assert _nlinks(daemon.mountpoint / "@head") == expected


# -- fifos -------------------------------------------------------------------------------------

def test_fifo_reports_size_zero_and_no_blocks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "f", b"x")
    os.mkfifo(src / "pipe")
    store = make_store(tmp_path, src)
    native = os.lstat(src / "pipe")
    assert (native.st_size, native.st_blocks) == (0, 0)
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        os.mkfifo(mnt / "@head" / "p2")
        version = commit(store)
        for path in (mnt / "@v1" / "pipe", mnt / "@head" / "pipe", mnt / "@head" / "p2",
                     _version_dir(mnt, version) / "p2"):
            st = os.lstat(path)
            assert stat.S_ISFIFO(st.st_mode), path
            assert (st.st_size, st.st_blocks) == (0, 0), path


# -- st_blocks of sparse files -----------------------------------------------------------------

def _sparse(path: Path, size: int, data: bytes) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(size - len(data))
        f.write(data)


def _du_kib(path: Path) -> int:
    out = subprocess.run(["du", "-k", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def test_sparse_file_blocks_count_only_data(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _sparse(src / "sparse.bin", 50 * MiB, b"end")
    write(src / "dense.bin", os.urandom(3 * MiB))
    assert os.lstat(src / "sparse.bin").st_blocks * 512 < MiB  # the source holds a few KiB
    store = make_store(tmp_path, src)
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        for top in ("@v1", "@head"):
            st = os.lstat(mnt / top / "sparse.bin")
            assert st.st_size == 50 * MiB
            assert 0 < st.st_blocks * 512 < MiB, top
            assert _du_kib(mnt / top / "sparse.bin") < 1024, top
            dense = os.lstat(mnt / top / "dense.bin")
            assert dense.st_blocks * 512 >= 3 * MiB, top
        # made in @head: truncate up, then 3 bytes at the end
        _sparse(mnt / "@head" / "new.bin", 50 * MiB, b"new")
        assert 0 < os.lstat(mnt / "@head" / "new.bin").st_blocks * 512 < MiB
        # a base file written in @head: its base data plus the overlay's bytes
        with open(mnt / "@head" / "sparse.bin", "r+b") as f:
            f.seek(10 * MiB)
            f.write(b"middle")
        assert 0 < os.lstat(mnt / "@head" / "sparse.bin").st_blocks * 512 < 2 * MiB
        version = commit(store)
        for name in ("new.bin", "sparse.bin"):
            st = os.lstat(_version_dir(mnt, version) / name)
            assert 0 < st.st_blocks * 512 < 2 * MiB, name
            assert _du_kib(_version_dir(mnt, version) / name) < 2048


# -- atime ----------------------------------------------------------------------------------------

def _atime_steps(path: Path) -> list[tuple[int, int]]:
    """utime steps on one file; (atime, mtime) after each, with NOW replaced by a marker."""
    out = []
    os.utime(path, ns=(1_000_000_123, 2_000_000_456))
    st = os.lstat(path)
    out.append((st.st_atime_ns, st.st_mtime_ns))
    utimensat(path, (0, UTIME_OMIT), (3, 789))  # mtime only
    st = os.lstat(path)
    out.append((st.st_atime_ns, st.st_mtime_ns))
    utimensat(path, (4, 5), (0, UTIME_OMIT))  # atime only
    st = os.lstat(path)
    out.append((st.st_atime_ns, st.st_mtime_ns))
    before = time.time_ns() - 2_000_000_000
    utimensat(path, (0, UTIME_NOW), (0, UTIME_OMIT))  # atime now, mtime kept
    st = os.lstat(path)
    out.append((int(st.st_atime_ns >= before), st.st_mtime_ns))
    return out


def test_atime_is_kept_in_head_with_utime_now_and_omit(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "base.txt", b"base")
    store = make_store(tmp_path, src)
    native = tmp_path / "native.txt"
    native.write_bytes(b"n")
    expected = _atime_steps(native)
    assert expected[0] == (1_000_000_123, 2_000_000_456)
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        new = mnt / "@head" / "new.txt"
        new.write_bytes(b"n")
        assert _atime_steps(new) == expected
        assert _atime_steps(mnt / "@head" / "base.txt") == expected
        subprocess.run(["touch", "-a", "-d", "2001-02-03 04:05:06", str(new)], check=True)
        touched = os.lstat(new)
        assert touched.st_atime_ns != touched.st_mtime_ns
        version = commit(store)
        in_version = os.lstat(_version_dir(mnt, version) / "new.txt")
        assert in_version.st_atime_ns == in_version.st_mtime_ns  # versions do not record atime
    with mounted(store, tmp_path / "mnt") as daemon:
        assert os.lstat(daemon.mountpoint / "@head" / "new.txt").st_atime_ns == \
            touched.st_atime_ns


# -- device nodes and sockets --------------------------------------------------------------------

def _specials(root: Path) -> None:
    os.mknod(root / "null", stat.S_IFCHR | 0o640, os.makedev(1, 3))
    os.mknod(root / "loop", stat.S_IFBLK | 0o600, os.makedev(7, 9))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(root / "sock"))


def _kinds(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for name in ("null", "loop", "sock"):
        st = os.lstat(root / name)
        out[name] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_rdev)
    return out


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of devices needs root")


@needs_root
def test_device_nodes_and_sockets_in_head_commit_and_versions(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "f", b"x")
    store = make_store(tmp_path, src)
    native = tmp_path / "native"
    native.mkdir()
    _specials(native)
    expected = _kinds(native)
    with mounted(store, tmp_path / "mnt") as daemon:
        mnt = daemon.mountpoint
        options = next(line.split()[3] for line in Path("/proc/mounts").read_text().splitlines()
                       if line.split()[1] == str(mnt))
        assert "nodev" in options.split(",")
        _specials(mnt / "@head")
        assert _kinds(mnt / "@head") == expected
        with pytest.raises(OSError):  # nodev: a device node cannot be opened
            open(mnt / "@head" / "null", "rb").close()
        version = commit(store)
        assert _kinds(_version_dir(mnt, version)) == expected
    with mounted(store, tmp_path / "mnt") as daemon:  # kept in head.db
        assert _kinds(daemon.mountpoint / "@head") == expected


@needs_root
def test_import_keeps_special_files_and_export_recreates_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "f", b"x")
    _specials(src)
    expected = _kinds(src)
    store = make_store(tmp_path, src)
    with mounted(store, tmp_path / "mnt") as daemon:
        assert _kinds(daemon.mountpoint / "@v1") == expected
        assert _kinds(daemon.mountpoint / "@head") == expected
    dsfs(store, "export", "v1", tmp_path / "out")
    assert _kinds(tmp_path / "out") == expected
    skipped = subprocess.run(dsfs_argv(store, "import", src, "--skip-special"),
                             capture_output=True, text=True)
    assert skipped.returncode == 0, skipped.stderr
    assert "not stored" in skipped.stderr + skipped.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["f", "loop", "null", "sock"]
    with mounted(store, tmp_path / "mnt") as daemon:
        assert sorted(os.listdir(daemon.mountpoint / "@v2")) == ["f"]
