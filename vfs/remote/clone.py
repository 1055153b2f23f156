"""`dsfs clone`: a new store that reads a remote's versions on demand.

Owns: creating the store with the remote's settings, naming the remote `origin` (lazy), and
the first pull. Only metadata moves (the remote's version claims and pack footers), so a clone
takes seconds whatever the data's size; the mount fetches chunks as they are read.
Never imports: daemon, trio, pyfuse3.

A clone that fails leaves nothing behind: the directory it created is removed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vfs.config import is_empty_dir
from vfs.errors import UserError
from vfs.progress import Progress
from vfs.remote.backend import open_backend
from vfs.remote.pull import PullReport, pull
from vfs.remote.remotes import Remotes, RemoteSpec
from vfs.remote.session import read_config
from vfs.store import Store


def clone(url: str, dest: Path, endpoint_url: str | None = None, profile: str | None = None,
          name: str = "origin", progress: Progress | None = None) -> PullReport:
    dest = Path(dest).absolute()
    if dest.exists() and not is_empty_dir(dest):
        raise UserError(f"{dest} is not empty: clone into a new or empty directory")
    existed = dest.exists()
    backend = open_backend(url, endpoint_url, profile)
    try:
        config = read_config(backend)
    finally:
        backend.close()
    if config is None:
        raise UserError(f"{url} is not a dsfs remote (it has no dsfs-remote record): check the "
                        "URL, or `dsfs push` a store to it first")
    done = False
    try:
        store = Store.create(dest, chunk=config.chunk, zstd_level=config.zstd_level)
        try:
            spec = RemoteSpec(name, url, endpoint_url, profile, lazy=True)
            Remotes(dest).add(spec)
            report = pull(store, spec, progress=progress)
        finally:
            store.close()
        done = True
        return report
    finally:
        if not done:
            if existed:
                for child in dest.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            else:
                shutil.rmtree(dest, ignore_errors=True)
