"""@head inside the mount daemon: opening it, its control requests, and telling the kernel.

Owns: the control socket's location (noted in `STORE/head/control.json` so CLI commands find
the daemon from the store), the commit/status/reset requests served over it, and invalidating
the kernel's view of the root and of @head when they change. Runs in the trio thread.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import trio

from daemon.control import Peer, serve_control
from daemon.control_client import control_note
from daemon.fuse import Session
from daemon.fuse.mounting import unmount
from daemon.headfuse import HeadOperations
from daemon.headops import HeadAdapter
from daemon.ops import HEAD_NAME, Operations
from vfs.errors import DsfsError, HeadBusy, UserError
from vfs.fsutil import atomic_write
from vfs.head.session import open_head
from vfs.head.state import HEAD_ROOT
from vfs.head.status import status_report
from vfs.inodes import ROOT_INO
from vfs.store import Store
from vfs.view import VersionsView

log = logging.getLogger("dsfs.mount")


def socket_path(runtime: Path, store_root: Path) -> Path:
    digest = hashlib.blake2b(os.fsencode(store_root), digest_size=8).hexdigest()
    return runtime / f"head-{digest}.sock"


class Mounted:
    """The connections of one mount: the versions at MNT, @head at MNT/@head."""

    def __init__(self, mountpoint: Path, ops: Operations) -> None:
        self.mountpoint = mountpoint
        self.ops = ops
        self.head: HeadAdapter | None = None
        self.head_ops: HeadOperations | None = None
        self.head_writeback = False
        self.versions: Session | None = None
        self.head_conn: Session | None = None
        self.combined = False
        """@head served inside the versions' connection (daemon.combined)."""

    async def invalidate_root(self, names: list[bytes]) -> None:
        """The kernel forgets these names of the root (never `@head`: invalidating a
        mountpoint would detach the mount on it)."""
        if self.versions is None:
            return
        for name in names:
            if name != HEAD_NAME:
                await self.versions.invalidate_entry(ROOT_INO, name)

    async def invalidate_head(self, names: set[bytes]) -> None:
        """@head changed wholesale (reset, or following a new version): the kernel forgets
        these names of @head's root with everything below them, and the root's attributes
        and listing."""
        if self.combined and self.versions is not None:
            await self.versions.invalidate_entry(ROOT_INO, HEAD_NAME)
            return
        if self.head_conn is None:
            return
        for name in sorted(names):
            await self.head_conn.invalidate_entry(ROOT_INO, name)
        await self.head_conn.invalidate_inode(ROOT_INO)

    def head_root_names(self) -> set[bytes]:
        if self.head is None:
            return set()
        fs = self.head.fs
        return {name for name, *_ in fs.readdir(fs.opendir(HEAD_ROOT), 0)}

    def request_counts(self) -> dict[str, dict[str, int]]:
        """Requests that reached the daemon, per connection and opcode."""
        out: dict[str, dict[str, int]] = {}
        for key, conn in (("versions", self.versions), ("head", self.head_conn)):
            if conn is not None:
                out[key] = dict(conn.counts)
        return out

    def unmount_all(self) -> None:
        """Detach @head's connection, then the versions' (lazily, as libfuse does: a busy
        mount goes once its users are done)."""
        for conn, where in ((self.head_conn, self.mountpoint / "@head"),
                            (self.versions, self.mountpoint)):
            if conn is None:
                continue
            conn.closed = True
            try:
                unmount(str(where), lazy=True)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOENT):
                    log.info("unmounting %s: %s", where, exc)
            os.close(conn.fd)


def attach_head(store: Store, mount: Mounted) -> bool:
    """Serve @head in this mount if no other process holds it. True if attached."""
    try:
        session = open_head(store)
    except HeadBusy as exc:
        log.warning("%s: this mount shows the versions without @head", exc)
        return False
    mount.head = HeadAdapter(session)
    mount.head_ops = HeadOperations(mount.head, mount.ops.view, mount.ops.serve_xattrs)
    # The kernel keeps written pages and sends them in large batches (measured: 1 MiB writes
    # into @head about 1.3x faster); close() and fsync() still hand everything to the daemon.
    mount.head_writeback = os.environ.get("DSFS_WRITEBACK", "1") == "1"
    mount.head.kernel_appends = mount.head_writeback
    log.info("@head is based on %s", session.fs.base.name if session.fs.base.number else
             "an empty directory")
    return True


def head_holder(store_root: Path, runtime: Path) -> str:
    """Who serves @head of this store, for a person: "pid N, mounted at MOUNTPOINT"."""
    try:
        pid = int(json.loads(control_note(store_root).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return "another process holds its lock"
    for info in runtime.glob("mount-*.json"):
        try:
            noted = json.loads(info.read_text())
            if int(noted["pid"]) == pid:
                return f"pid {pid}, mounted at {noted['mountpoint']}"
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return f"pid {pid}"


def _field(msg: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """A request field of the right type (or absent/null: the default), else a UserError."""
    value = msg.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise UserError(f"control request field {name!r} must be a {kind.__name__}")
    return value


async def after_versions_changed(mount: Mounted) -> None:
    """A clean @head follows the newest version (an import landed while mounted)."""
    if mount.head is None:
        return
    before = mount.head_root_names()
    if mount.head.follow_latest():
        log.info("@head follows the newest version %s", mount.head.fs.base.name)
        await mount.invalidate_head(before | mount.head_root_names())


HEAD_SYNC_SECONDS = 30.0


async def sync_head_periodically(mount: Mounted) -> None:
    while mount.head is not None:
        await trio.sleep(HEAD_SYNC_SECONDS)
        try:
            await mount.head.sync_now()
        except (DsfsError, OSError) as exc:
            log.warning("could not sync @head: %s", exc)


async def serve_head_control(store: Store, view: VersionsView, mount: Mounted,
                             runtime: Path,
                             task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                             ) -> None:
    """Serve commit/status/reset for the CLI. Started with `nursery.start`: the mount reports
    ready only once the socket is served and its note written, so a `dsfs commit` right after
    `dsfs mount` returns finds the daemon (it raced it before)."""
    head = mount.head
    if head is None:
        task_status.started()
        return
    path = socket_path(runtime, store.root)

    async def handle(msg: dict[str, Any], peer: Peer) -> dict[str, Any]:
        op = msg.get("op")
        log.info("control request %s from pid %d uid %d", op, peer.pid, peer.uid)
        if op == "commit":
            message = _field(msg, "message", str, "")
            tag = _field(msg, "tag", str, None)
            allow_empty = _field(msg, "allow_empty", bool, False)
            result = await head.commit(message, tag, allow_empty)
            await mount.invalidate_root(view.refresh())
            return {"ok": True, **result.to_json()}
        if op == "status":
            report = await head.status_report()
            return {"ok": True, **report}
        if op == "reset":
            before = mount.head_root_names()
            base = await head.reset()
            await mount.invalidate_head(before | mount.head_root_names())
            return {"ok": True, "base": base.name if base.number else None}
        if op == "requests":
            return {"ok": True, "requests": mount.request_counts()}
        raise UserError(f"unknown control request {op!r}")

    owner = os.stat(store.root).st_uid
    note = control_note(store.root)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status=trio.TASK_STATUS_IGNORED: serve_control(
            path, handle, allowed_uids=frozenset({os.getuid(), owner}),
            task_status=task_status))
        atomic_write(note, json.dumps({"socket": str(path), "pid": os.getpid()}).encode())
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            note.unlink(missing_ok=True)


__all__ = ["attach_head", "serve_head_control", "status_report", "sync_head_periodically"]
