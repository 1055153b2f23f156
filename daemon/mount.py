"""Mount lifecycle: checks, the trio main loop, readiness, signals (unmounting: daemon.unmount).

Owns: everything between `dsfs mount` and a served filesystem, and `dsfs umount`. Runs the
FUSE connections (daemon.fuse: the versions at MNT, @head at MNT/@head) in the trio thread;
the view is polled for new versions twice a second.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import os
import resource
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from daemon.combined import CombinedOperations
from daemon.fuse import Config, Session
from daemon.fuse.mounting import MountFailed
from daemon.fuse.mounting import mount as fuse_mount
from daemon.headservice import (
    Mounted,
    after_versions_changed,
    attach_head,
    serve_head_control,
    sync_head_periodically,
)
from daemon.ops import Operations
from vfs import lockorder
from vfs.errors import DsfsError, UserError
from vfs.locks import flocked
from vfs.store import Store
from vfs.view import VersionsView

log = logging.getLogger("dsfs.mount")
POLL_SECONDS = 0.5
READER_CHECK_POLLS = 60
READ_AHEAD_KB = 1024


class MountError(UserError):
    """A mount or unmount that cannot be done as asked."""


@dataclass(frozen=True)
class MountOptions:
    store: Path
    mountpoint: Path
    allow_other: bool = False
    cache_bytes: int = 512 << 20
    xattrs: str = "auto"
    """on: serve xattrs; off: tell the kernel there are none; auto: on if any version has one"""
    sync_on_close: bool = False
    """close() of a file written in @head returns once its bytes are on disk"""
    disk_cache_bytes: int | None = None
    """a clone's bound on remote packs cached under STORE/cache (None: the one used last)"""
    pull_every: float | None = None
    """pull from the store's remote this often (seconds), so others' pushes appear"""


# -- looking at mounts ---------------------------------------------------------------------

def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def canonical(mountpoint: Path | str) -> str:
    """The path /proc/self/mounts shows for a mountpoint: its parent with symlinks resolved,
    and its own name (never resolving the mountpoint itself, which may not answer)."""
    path = os.path.abspath(mountpoint)
    parent, name = os.path.split(path)
    if name == "@head":  # MNT/@head: never resolve MNT itself, its daemon may not answer
        return os.path.join(canonical(parent), name)
    return os.path.join(os.path.realpath(parent), name)


def mounted_at(mountpoint: Path) -> tuple[str, str] | None:
    """(source, fstype) of the mount at this path, from /proc/self/mounts, or None."""
    target = canonical(mountpoint)
    found = None
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and _unescape(parts[1]) == target:
                found = (_unescape(parts[0]), parts[2])
    return found


def is_stale(mountpoint: Path) -> bool:
    try:
        os.statvfs(mountpoint)  # always a request (a stat may be answered from the cache)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def fusermount() -> str:
    path = shutil.which("fusermount3")
    if path is None:
        raise MountError("fusermount3 not found: install the fuse3 package "
                         "(apt-get install fuse3)")
    return path


def lazy_unmount(mountpoint: Path) -> None:
    subprocess.run([fusermount(), "-u", "-z", "-q", str(mountpoint)], check=False,
                   capture_output=True)


def runtime_dir() -> Path:
    """Where running daemons note their pid: /run/dsfs as root, else the user's runtime dir."""
    if os.getuid() == 0:
        base = Path("/run/dsfs")
    else:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        base = Path(xdg) / "dsfs" if xdg else Path(f"/tmp/dsfs-{os.getuid()}")
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


def runtime_file(mountpoint: Path) -> Path:
    digest = hashlib.blake2b(os.fsencode(canonical(mountpoint)), digest_size=8).hexdigest()
    return runtime_dir() / f"mount-{digest}.json"


# -- checks before mounting ----------------------------------------------------------------

def check_fuse_access() -> None:
    """A user other than root mounts by opening /dev/fuse and running the setuid fusermount3:
    say what is missing before the daemon starts, instead of libfuse's late failure."""
    if os.geteuid() == 0:
        return
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
        raise MountError(f"/dev/fuse (mode {mode:04o}) does not let you read and write it: "
                         "mount as root, or let users mount FUSE filesystems with "
                         "`chmod 0666 /dev/fuse` (as root)")
    path = fusermount()
    st = os.stat(path)
    if st.st_uid != 0 or not st.st_mode & stat.S_ISUID:
        raise MountError(f"{path} is not setuid root, so only root can mount: mount as root, "
                         f"or restore it with `chmod u+s {path}` (as root)")


def preflight(opts: MountOptions) -> None:
    mp = opts.mountpoint
    # ask /proc first: a stat of a mountpoint whose daemon hangs would hang too
    current = mounted_at(mp)
    if current is not None and current[1].endswith("dsfs"):
        from daemon.unmount import probe  # (daemon.unmount imports this module)

        state = probe(mp)
        if state == "hung":
            raise MountError(f"{mp} is mounted by a daemon that does not answer: "
                             f"`dsfs umount --force {mp}` first")
        if state == "stale":
            log.warning("clearing stale mount at %s (its daemon died)", mp)
            lazy_unmount(mp)
            if is_stale(mp):
                raise MountError(f"{mp} is a stale mount that could not be cleared: run "
                                 f"`fusermount3 -u -z {mp}`")
            current = None
    if current is not None:
        what = "dsfs" if current[1].endswith("dsfs") else current[1]
        raise MountError(f"{mp} is already mounted ({what} from {current[0]}): "
                         f"`dsfs umount {mp}` first")
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse is missing: install fuse3 (apt-get install fuse3) and "
                         "load the fuse module (modprobe fuse)")
    fusermount()
    check_fuse_access()
    if not mp.exists():
        raise MountError(f"mountpoint {mp} does not exist: create it with `mkdir -p {mp}`")
    if not mp.is_dir():
        raise MountError(f"mountpoint {mp} is not a directory")
    if any(os.scandir(mp)):
        raise MountError(f"mountpoint {mp} is not empty: choose an empty directory")
    if opts.allow_other and os.getuid() != 0:
        try:
            conf = Path("/etc/fuse.conf").read_text()
        except OSError:
            conf = ""
        if not any(line.strip() == "user_allow_other" for line in conf.splitlines()):
            raise MountError("--allow-other needs `user_allow_other` in /etc/fuse.conf "
                             "(or mount as root)")


# -- the daemon ----------------------------------------------------------------------------

def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state, if it is listening."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(addr)
            s.sendall(message.encode())
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)


def device_of(mountpoint: Path) -> str | None:
    """major:minor of a mount, from /proc/self/mountinfo (never stat our own mountpoint: the
    request would wait for this very daemon)."""
    target = canonical(mountpoint)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4 and _unescape(parts[4]) == target:
                found = parts[2]
    return found


async def raise_read_ahead(mountpoint: Path) -> None:
    """1 MiB read requests instead of 128 KiB: fewer round trips for sequential reads.

    The kernel sets the mount's read-ahead when it gets our reply to FUSE_INIT, so this runs
    once the session loop is up, and checks that the value stuck.
    """
    dev = device_of(mountpoint)
    if dev is None:
        return
    bdi = Path(f"/sys/class/bdi/{dev}/read_ahead_kb")
    for _ in range(50):
        await trio.sleep(0.05)
        try:
            bdi.write_text(str(READ_AHEAD_KB))
            if int(bdi.read_text()) >= READ_AHEAD_KB:
                log.info("read-ahead raised to %d KiB", READ_AHEAD_KB)
                return
        except (OSError, ValueError) as exc:
            log.info("could not raise read_ahead_kb (%s): reads use 128 KiB requests", exc)
            return


async def _poll_versions(view: VersionsView, mount: Mounted) -> None:
    ops = mount.ops
    warned = False
    polls = 0
    while True:
        await trio.sleep(POLL_SECONDS)
        polls += 1
        try:
            _tidy_store(view, polls)
        except Exception:
            log.exception("housekeeping of the store failed (retrying in %ss)", POLL_SECONDS)
        # an error nobody foresaw (an LMDB code `translate` does not know, say) must not end
        # the poll: the nursery would cancel everything and unmount the filesystem
        try:
            changed = view.refresh()
        except DsfsError as exc:
            log.warning("could not re-read the version log: %s", exc)
            continue
        except Exception:
            log.exception("could not re-read the version log (retrying in %ss)", POLL_SECONDS)
            continue
        try:
            if changed and not ops.serve_xattrs and not warned and view.has_xattrs():
                warned = True
                log.warning("a version with extended attributes appeared; remount (or mount "
                            "with --xattrs on) to see them")
            if changed:
                await after_versions_changed(mount)
        except Exception:
            log.exception("could not follow the new versions (retrying in %ss)", POLL_SECONDS)
        for name in changed:
            log.info("root changed: %s", os.fsdecode(name))
        await mount.invalidate_root(changed)
        dropped = {int(n[2:]) for n in changed if n[2:].isdigit() and n.startswith(b"@v")
                   and int(n[2:]) not in view.versions}
        if dropped and mount.versions is not None:
            await _forget_dropped(mount, dropped)


async def _forget_dropped(mount: Mounted, numbers: set[int]) -> None:
    """Make the kernel drop every name it caches in dropped versions (`VersionsView.held_names`).
    Files open there stay readable; once closed, the kernel forgets them and the versions are
    unpinned (gc may then take their data). Listings are read in a worker thread."""
    assert mount.versions is not None
    held = [mount.ops.view.held_names(n) for n in numbers]  # the inode table: on the loop
    try:
        names = await trio.to_thread.run_sync(lambda: [name for g in held for name in g])
        await trio.to_thread.run_sync(mount.versions.invalidate_entries_blocking, names)
    except Exception:
        log.exception("could not make the kernel forget dropped versions")


def _tidy_store(view: VersionsView, polls: int) -> None:
    """Housekeeping on each poll: close descriptors of packs gc deleted (so their space is
    freed now, not at unmount) and, every READER_CHECK_POLLS, free LMDB reader slots of dead
    processes."""
    store = view.store
    gone = store.reader.packs.close_deleted()
    if gone:
        log.info("closed %d packs removed by gc", len(gone))
    if polls % READER_CHECK_POLLS == 0:
        freed = store.index.clear_stale_readers()
        if freed:
            log.info("freed %d index reader slots of processes that died", freed)


async def _watch_signals(on_ready: trio.Event, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        on_ready.set()
        async for signum in signals:
            log.info("received %s: unmounting", signal.Signals(signum).name)
            scope.cancel()
            return


def raise_fd_limit() -> None:
    """Open files in @head each hold two descriptors in the daemon: allow what the system
    allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bound_malloc() -> None:
    """Keep freed chunk buffers from piling up in glibc's per-thread heaps.

    Chunks are 128 KiB-2 MiB buffers allocated and freed on worker threads. By default glibc
    raises its mmap threshold after the first such free and serves later ones from per-thread
    arenas, which fragment: a 512 MiB chunk cache showed ~900 MiB of anonymous memory after one
    cold read of the 2 GiB benchmark tree. A fixed threshold returns every big buffer to the
    kernel on free, and two arenas are plenty for a handful of reader threads.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_mmap_threshold, m_arena_max = -3, -8
    libc.mallopt(m_mmap_threshold, int(os.environ.get("DSFS_MMAP_THRESHOLD", 128 * 1024)))
    libc.mallopt(m_arena_max, 2)


def serve(opts: MountOptions, ready_fd: int | None = None) -> None:
    """Mount and serve until unmounted or signalled (foreground)."""
    preflight(opts)
    raise_fd_limit()
    if os.environ.get("DSFS_CHECK_LOCKS") == "1":
        lockorder.enable_checking()  # debug mode: every lock taken is checked against the order
    if os.environ.get("DSFS_MALLOC", "1") == "1":
        bound_malloc()
    store = Store.open(opts.store, cache_bytes=opts.cache_bytes,
                       disk_cache_bytes=opts.disk_cache_bytes)
    # held while mounted: a pull never renumbers versions a mount shows (vfs.remote.pull)
    mounted_lock = flocked(opts.store / "locks" / "mount.lock", exclusive=False, wait=True,
                           busy_message="")
    mounted_lock.__enter__()
    view = VersionsView(store)
    serve_xattrs = opts.xattrs == "on" or (opts.xattrs == "auto" and view.has_xattrs())
    mount = Mounted(opts.mountpoint, Operations(view, serve_xattrs=serve_xattrs))
    log.info("extended attributes %s (--xattrs %s)", "served" if serve_xattrs else "off",
             opts.xattrs)
    if attach_head(store, mount) and mount.head is not None:
        mount.head.sync_on_close = opts.sync_on_close
        mount.ops.show_head_dir(os.getuid(), os.getgid())
    handlers: object = mount.ops
    config = Config(posix_acl=serve_xattrs)
    if mount.head_ops is not None and os.geteuid() != 0:
        # fusermount3 cannot mount @head inside our own mount: one connection for both
        handlers = CombinedOperations(mount.ops, mount.head_ops)
        config = Config(posix_acl=serve_xattrs, writeback_cache=mount.head_writeback)
        mount.head_ops = None
        mount.combined = True
    try:
        fd = fuse_mount(str(opts.mountpoint), read_only=handlers is mount.ops,
                        allow_other=opts.allow_other)
    except MountFailed as exc:
        if mount.head is not None:
            mount.head.session.close()
        store.close()
        mounted_lock.__exit__(None, None, None)
        raise MountError(str(exc)) from None
    mount.versions = Session(fd, handlers, config, "versions")
    if mount.head_ops is not None:
        # nobody sees the versions before @head is mounted inside them: one atomic mount
        mount.versions.opening = mount.ops.head_mounted
    info = runtime_file(opts.mountpoint)
    info.write_text(json.dumps({"pid": os.getpid(), "mountpoint": str(opts.mountpoint)}))
    clean = False
    try:
        trio.run(_main, store, mount, view, ready_fd, opts)
        clean = True
    finally:
        mount.unmount_all()
        info.unlink(missing_ok=True)
        if mount.head is not None:
            mount.head.session.close()
        store.close()
        mounted_lock.__exit__(None, None, None)
        log.info("unmounted %s%s", opts.mountpoint, "" if clean else " after an error")


async def _mount_head(mount: Mounted, allow_other: bool) -> None:
    """Mount @head's connection on the `@head` directory the versions connection shows (the
    mount's path lookup is answered by the versions connection: it must be served already)."""
    assert mount.head_ops is not None
    where = str(mount.mountpoint / "@head")

    def mount_here() -> int:
        assert mount.versions is not None
        mount.versions.opening_pids.add(threading.get_native_id())
        return fuse_mount(where, read_only=False, allow_other=allow_other)

    try:
        fd = await trio.to_thread.run_sync(mount_here)
    finally:
        mount.ops.head_mounted.set()
    mount.head_conn = Session(fd, mount.head_ops, Config(
        writeback_cache=mount.head_writeback, posix_acl=mount.ops.serve_xattrs), "@head")


async def _main(store: Store, mount: Mounted, view: VersionsView, ready_fd: int | None,
                opts: MountOptions) -> None:
    lockorder.mark_loop_thread()
    assert mount.versions is not None
    async with trio.open_nursery() as nursery:
        mount.ops.nursery = nursery
        signals_ready = trio.Event()
        nursery.start_soon(_watch_signals, signals_ready, nursery.cancel_scope)
        await signals_ready.wait()

        async def serve_versions() -> None:
            assert mount.versions is not None
            await mount.versions.serve()
            nursery.cancel_scope.cancel()  # unmounted from outside: the daemon is done

        nursery.start_soon(serve_versions)
        if mount.head_ops is not None:
            try:
                await _mount_head(mount, opts.allow_other)
            except MountFailed as exc:
                raise MountError(f"could not mount @head: {exc}") from None
            assert mount.head_conn is not None
            nursery.start_soon(mount.head_conn.serve)
        nursery.start_soon(_poll_versions, view, mount)
        nursery.start_soon(raise_read_ahead, mount.mountpoint)
        if mount.head_conn is not None:
            nursery.start_soon(raise_read_ahead, mount.mountpoint / "@head")
        await nursery.start(serve_head_control, store, view, mount, runtime_dir())
        nursery.start_soon(sync_head_periodically, mount)
        if opts.pull_every:
            from daemon.remotepoll import pull_periodically

            nursery.start_soon(pull_periodically, store, opts.pull_every)
        log.info("serving %d versions", len(view.versions))
        sd_notify("READY=1\nSTATUS=serving")
        if ready_fd is not None:  # "ok nohead": mounted, but another process serves @head
            os.write(ready_fd, b"ok\n" if mount.head is not None else b"ok nohead\n")
            os.close(ready_fd)
        await trio.sleep_forever()
    sd_notify("STOPPING=1")


def spawn_background(argv: list[str], log_path: Path, timeout: float = 30.0) -> str:
    """Start the foreground daemon detached; return once it has mounted (or say why not).

    `-P`: the daemon imports dsfs as installed, never a `daemon/` or `vfs/` that happens to
    lie in the current directory (it ran another checkout's code that way).

    Returns the daemon's ready line: "ok", or "ok nohead" when another process serves @head.
    """
    read_fd, write_fd = os.pipe()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "daemon.cli", *argv, "--foreground", "--ready-fd",
             str(write_fd)], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            pass_fds=(write_fd,), start_new_session=True)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    chunks = b""
    try:
        while b"\n" not in chunks:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_fd], [], [], remaining)[0]:
                break  # a daemon that hangs before mounting must not hang `dsfs mount`
            data = os.read(read_fd, 4096)
            if not data:
                break
            chunks += data
    finally:
        os.close(read_fd)
    if chunks.startswith(b"ok"):
        return chunks.split(b"\n", 1)[0].decode(errors="replace")
    code = proc.poll()
    tail = _last_error(log_path)
    if code is None:
        proc.kill()
    raise MountError(tail or f"the mount daemon did not start (see {log_path})")


def _last_error(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines[-20:]):
        if "error: " in line:
            return line.split("error: ", 1)[1]
    return ""


def daemon_pid(mountpoint: Path) -> int | None:
    try:
        return int(json.loads(runtime_file(mountpoint).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None
