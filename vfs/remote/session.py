"""What a remote holds right now, read in parallel: the shared first step of push, pull, clone.

Owns: reading a remote's config, claims, packs and events into a `RemoteView`, and running
transfers on a thread pool. Never imports: daemon, trio, pyfuse3. Runs in the caller's thread
(plus the pool's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

from vfs.errors import CorruptData, UserError
from vfs.model import RefEvent, replay_events
from vfs.remote import layout
from vfs.remote.backend import Backend, RemoteKeyExists, RemoteKeyMissing
from vfs.remote.layout import Claim, RemoteConfig

TRANSFERS = 16
"""Parallel transfers: object stores reward many requests in flight (each is latency-bound)."""

T = TypeVar("T")
R = TypeVar("R")


def parallel(items: Iterable[T], fn: Callable[[T], R], workers: int = TRANSFERS) -> list[R]:
    """fn over items on a pool, results in input order; the first error stops the rest and
    is raised (transfers not yet started are cancelled)."""
    todo = list(items)
    if len(todo) <= 1 or workers <= 1:
        return [fn(x) for x in todo]
    with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
        futures: list[Future[R]] = [pool.submit(fn, x) for x in todo]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for fut in done:
            if fut.exception() is not None:
                for other in futures:
                    other.cancel()
                raise fut.exception()  # type: ignore[misc]
        return [f.result() for f in futures]


@dataclass
class RemoteView:
    backend: Backend
    config: RemoteConfig | None
    claims: dict[int, Claim] = field(default_factory=dict)
    packs: dict[str, int] = field(default_factory=dict)
    """Pack name -> size, for every pack on the remote."""
    events: list[RefEvent] = field(default_factory=list)
    event_keys: set[str] = field(default_factory=set)
    damaged: dict[int, str] = field(default_factory=dict)
    """Claims that failed their checks: number -> problem (the number is taken all the same)."""

    @property
    def highest(self) -> int:
        return max([*self.claims, *self.damaged], default=0)

    def tags(self) -> dict[str, int]:
        """The tags the remote's events leave, replayed as a rebuild does, on live versions."""
        tags, _ = replay_events(self.events)
        dropped = self.dropped()
        return {n: v for n, v in tags.items() if v in self.claims and v not in dropped}

    def dropped(self) -> set[int]:
        return {ev.version for ev in self.events if ev.op == "drop" and ev.version in self.claims}


def read_config(backend: Backend) -> RemoteConfig | None:
    try:
        raw = backend.get(layout.REMOTE_CONFIG)
    except RemoteKeyMissing:
        return None
    return RemoteConfig.decode(raw, backend.url)


def ensure_config(backend: Backend, mine: RemoteConfig) -> RemoteConfig:
    """The remote's config, created from `mine` if it has none (the first push)."""
    found = read_config(backend)
    if found is not None:
        return found
    try:
        backend.put(layout.REMOTE_CONFIG, mine.encode(), if_absent=True)
        return mine
    except RemoteKeyExists:  # another store's first push won: use theirs
        found = read_config(backend)
        assert found is not None
        return found


def read_remote(backend: Backend, known_claims: dict[int, Claim] | None = None,
                require: bool = True) -> RemoteView:
    """Everything push, pull and clone decide from. `known_claims` are not fetched again
    (claims never change once written)."""
    config = read_config(backend)
    if config is None and require:
        raise UserError(f"{backend.url} is not a dsfs remote (it has no {layout.REMOTE_CONFIG}):"
                        " check the URL, or `dsfs push` a store to it first")
    view = RemoteView(backend, config)
    # events first: a push writes a version's claim before any event naming it, so every
    # event read here names a claim the listing below sees
    event_keys = [o.key for o in backend.list(layout.EVENTS)]

    def fetch_event(key: str) -> RefEvent | None:
        try:
            return layout.decode_event(backend.get(key), f"remote record {backend.url}/{key}")
        except CorruptData:
            return None  # verify --remote names it; a damaged event changes nothing

    view.events = [e for e in parallel(event_keys, fetch_event) if e is not None]
    view.event_keys = set(event_keys)
    keys: dict[int, str] = {}
    for obj in backend.list(layout.VERSIONS):
        n = layout.version_number(obj.key)
        if n is not None:
            keys[n] = obj.key
    known = known_claims or {}
    view.claims = {n: c for n, c in known.items() if n in keys}

    def fetch_claim(n: int) -> tuple[int, Claim | str]:
        key = keys[n]
        what = f"remote record {backend.url}/{key}"
        try:
            claim = Claim.decode(backend.get(key), what)
        except CorruptData as exc:
            return n, str(exc)
        if claim.version.number != n:
            return n, f"{what} holds the record of v{claim.version.number}"
        return n, claim

    for n, got in parallel([n for n in keys if n not in view.claims], fetch_claim):
        if isinstance(got, str):
            view.damaged[n] = got
        else:
            view.claims[n] = got
    view.packs = {layout.pack_name(o.key): o.size for o in backend.list(layout.PACKS)}
    return view
