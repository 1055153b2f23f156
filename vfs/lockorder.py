"""The lock order of dsfs threads, and a checker that asserts it in tests.

Owns: the one documented order in which the threading locks of @head may be taken, the lock
classes that carry their place in it, and the debug mode that checks every acquisition against
it. Never imports: daemon, trio, pyfuse3. Any thread may call it.

THE ORDER (a thread holding a lock may only take locks further down this list):

  1. ``FILE``      one lock per @head file (`vfs.head.data.FileLocks`): held while the file's
                   overlay is read, written or truncated, so a read never mixes two states.
                   Never two at once (`rename` and `commit` take none).
  2. ``HEAD_DB``   @head's database connection (`vfs.head.state.HeadDB`, re-entrant): held for
                   each query and for a whole transaction. Not held across an fsync (the
                   write-ahead log is synced after it is released; the exception is folding a
                   log grown past 16 MiB into the database) nor across overlay reads and writes
                   (removing a deleted file's overlay happens inside a transaction).
  3. ``OVERLAY_SYNC`` held through a whole sync of the overlay files (`vfs.head.overlaysync`),
                   so syncs complete in the order they start; only worker threads take it.
  4. ``OVERLAYS``  the descriptor tables of `vfs.head.overlay.Overlays`.
  5. leaves        the store's caches and readers (`vfs.content` with its single-flight
                   loads, `vfs.chunkcache`, `vfs.readahead`, `vfs.pack`, `vfs.tree`,
                   `vfs.objects`), the view's layout and fact caches (`vfs.view._Lru`) and
                   the version pins' table (`vfs.locks.VersionPins`): plain locks that never
                   take another lock and are never held across disk I/O (a thread waiting for a
                   chunk another thread loads waits on that load's event, holding no lock).

The daemon's trio-side gate (`daemon.headops.Gate`) and per-file trio locks come before all of
these. The versions' requests take only leaves on the trio thread, and only without waiting on
I/O: what is not in memory is loaded in a worker (`vfs.errors.WouldBlock`).
The trio thread never blocks on a ``FILE`` lock: it tries it without waiting and hands
the work to a worker thread when another thread holds it (a reader doing disk I/O), so the
event loop never waits for a worker's I/O. ``HEAD_DB`` is the only lock both sides wait for,
and nothing holds it across disk I/O that can take long.

Checking: `enable_checking(True)` (the daemon does it when DSFS_CHECK_LOCKS=1 is set; the tests
set it) makes every `OrderedLock` record, per thread, which ranks it holds, and raise
`LockOrderError` when a thread takes a lock whose rank is not below every one it holds - the
inversion that once hung the whole mount (a truncate holding the database and waiting for a
file, a read holding the file and waiting for the database) then fails at once in any test that
takes the two paths, whether or not the threads happen to collide.
"""

from __future__ import annotations

import threading
from enum import IntEnum
from types import TracebackType


class Rank(IntEnum):
    FILE = 10
    HEAD_DB = 20
    OVERLAY_SYNC = 25
    OVERLAYS = 30


class LockOrderError(AssertionError):
    """A lock taken against the documented order (only raised with checking enabled)."""


_checking = False
_held = threading.local()
_loop_thread: int | None = None


def mark_loop_thread() -> None:
    """The calling thread runs the event loop: with checking on, it may not wait for a FILE
    lock (only try one)."""
    global _loop_thread
    _loop_thread = threading.get_ident()


def enable_checking(on: bool = True) -> None:
    global _checking
    _checking = on


def checking() -> bool:
    return _checking


def _stack() -> list[tuple[int, str, int]]:
    stack: list[tuple[int, str, int]] | None = getattr(_held, "stack", None)
    if stack is None:
        stack = _held.stack = []
    return stack


class OrderedLock:
    """A lock with a rank in the order above; `reentrant` makes it an RLock."""

    __slots__ = ("_lock", "name", "rank", "reentrant")

    def __init__(self, rank: Rank, name: str, reentrant: bool = False) -> None:
        self.rank = int(rank)
        self.name = name
        self.reentrant = reentrant
        self._lock: threading.Lock | threading.RLock = (
            threading.RLock() if reentrant else threading.Lock())

    def _check(self) -> None:
        for rank, name, ident in _stack():
            if ident == id(self) and self.reentrant:
                return
            if rank >= self.rank:
                raise LockOrderError(
                    f"lock order: taking {self.name} (rank {self.rank}) while holding {name} "
                    f"(rank {rank}); see vfs/lockorder.py")

    def acquire(self, blocking: bool = True) -> bool:
        if _checking:
            self._check()
            if blocking and self.rank == Rank.FILE and threading.get_ident() == _loop_thread \
                    and not any(ident == id(self) for _, _, ident in _stack()):
                raise LockOrderError(f"the event loop thread waits for {self.name}: try it "
                                     "and hand the work to a worker thread instead")
        got = self._lock.acquire(blocking)
        if got and _checking:
            _stack().append((self.rank, self.name, id(self)))
        return got

    def release(self) -> None:
        if _checking:
            stack = _stack()
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][2] == id(self):
                    del stack[i]
                    break
        self._lock.release()

    def __enter__(self) -> OrderedLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def locked(self) -> bool:
        """Whether some thread holds it (a plain Lock; for an RLock, best effort)."""
        if self._lock.acquire(False):
            self._lock.release()
            return False
        return True


__all__ = ["LockOrderError", "OrderedLock", "Rank", "checking", "enable_checking",
           "mark_loop_thread"]
