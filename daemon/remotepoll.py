"""`dsfs mount --pull-every SECONDS`: a mount of a store with a remote follows what others push.

Owns: the periodic pull of a running mount. Runs in the mount's trio loop; each pull runs in a
worker thread (network and index writes never on the event loop). The versions poll of
daemon/mount.py then shows what a pull recorded, as for a `dsfs pull` run from a shell.

A pull never renumbers under a mount (`@vN` must keep meaning what it meant while mounted): if
this store's unpushed versions lost their numbers to another store's, the pull fails with
HeadBusy and the mount logs, once, what to do.
"""

from __future__ import annotations

import functools
import logging

import trio

from vfs.errors import DsfsError, HeadBusy
from vfs.remote.pull import pull
from vfs.remote.remotes import Remotes
from vfs.store import Store

log = logging.getLogger(__name__)


async def pull_periodically(store: Store, every: float) -> None:
    told: str | None = None
    while True:
        await trio.sleep(every)
        try:
            spec = Remotes(store.root).get(None)
            report = await trio.to_thread.run_sync(
                functools.partial(pull, store, spec, renumber=False))
        except HeadBusy as exc:
            if str(exc) != told:
                log.warning("pull from the remote: %s", exc)
                told = str(exc)
            continue
        except DsfsError as exc:
            log.warning("pull from the remote failed (retrying in %gs): %s", every, exc)
            continue
        except Exception:  # never let a pull failure end the mount
            log.exception("pull from the remote failed (retrying in %gs)", every)
            continue
        told = None
        if report.new_versions or report.dropped:
            log.info("pulled %s from %s", ", ".join(f"v{n}" for n in report.new_versions)
                     or "drops", report.remote)
