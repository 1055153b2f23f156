"""What every FUSE handler passes through: domain errors become their errno, bugs are logged
with their traceback and become EIO, and nothing escapes to the session loop.

A handler may answer at once (a plain value) or hand back a coroutine; both are guarded the
same way, so a handler can answer cache hits without a task and still do slow work async.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from daemon.errors import errno_for
from daemon.fuse import FUSEError
from vfs.errors import CorruptData, DsfsError

log = logging.getLogger("dsfs.mount")
F = TypeVar("F", bound=Callable[..., Any])


class Describes(Protocol):
    def describe(self, op: str, args: Sequence[Any]) -> str: ...


def translate(owner: Describes, op: str, args: Sequence[Any], exc: BaseException
              ) -> BaseException:
    """The FUSEError to raise for an exception a handler raised (or `exc` itself when it is
    no error of the request: cancellation, KeyboardInterrupt)."""
    if isinstance(exc, FUSEError):
        return exc
    if isinstance(exc, CorruptData):
        log.error("damaged data in %s: %s", owner.describe(op, args), exc)
        return FUSEError(errno.EIO)
    if isinstance(exc, DsfsError):
        return FUSEError(errno_for(exc))
    if isinstance(exc, OSError):
        log.warning("%s failed: %s", op, exc)
        return FUSEError(errno_for(exc))
    if isinstance(exc, Exception):
        log.error("unexpected error in %s", op, exc_info=exc)
        return FUSEError(errno.EIO)
    return exc


async def _guard_coroutine(owner: Describes, op: str, args: Sequence[Any],
                           coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return await coro
    except BaseException as exc:
        raise translate(owner, op, args, exc) from None


def guarded(fn: F) -> F:
    """Wrap a handler (plain or async) so only FUSEError leaves it."""

    @functools.wraps(fn)
    def wrapper(self: Describes, *args: Any) -> Any:
        try:
            result = fn(self, *args)
        except BaseException as exc:
            raise translate(self, fn.__name__, args, exc) from None
        if isinstance(result, Coroutine):
            return _guard_coroutine(self, fn.__name__, args, result)
        return result

    return wrapper  # type: ignore[return-value]


__all__ = ["guarded", "translate"]
