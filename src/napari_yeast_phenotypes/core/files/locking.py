"""Serialise writers of one folder (a curated set, a result folder) across processes and machines.

A POSIX record lock (``fcntl.lockf``) on a lock file that is never deleted: it works on local disks
and on network file systems that support locking (NFSv4, or NFSv3 with lockd; SMB mounts on
Linux), and the operating system releases it when its process dies, so a killed writer never
leaves a stale lock behind. Inside one process (two docks, a dock and a script) a thread lock per
file serialises as well, because POSIX locks belong to the process, not to the file descriptor.
While held, the lock file names its holder (host, pid, since, what), for the message others get.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


class LockHeld(InputError):
    """Another writer holds the lock and did not let go in time."""


def _thread_lock(path: Path) -> threading.Lock:
    key = os.path.realpath(path)
    with _process_locks_guard:
        return _process_locks.setdefault(key, threading.Lock())


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - not tested on these machines
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.lockf(fd, fcntl.LOCK_UN)


def holder(path: str | os.PathLike) -> dict:
    """Who holds (or last held) the lock at ``path``, as written by the holder; ``{}`` if unknown."""
    try:
        from .jsonfile import loads_json

        found = loads_json(Path(path).read_text() or "{}")
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


def _open_lock_file(path: Path) -> int:
    """The lock file opened to read and write (created if absent), never through a symbolic link and only
    if it is a regular file: a lock file that is a link (to a file outside the folder) would be written
    through, a FIFO or a device could not be truncated."""
    import stat

    from .inside import _NOFOLLOW, _NONBLOCK

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK, 0o666)
    except OSError as exc:
        if path.is_symlink():
            raise InputError(f"the lock file {path} is a symbolic link; nothing is written through a link: "
                             "remove it (no run of this package makes one) and run again") from None
        if path.is_dir():
            raise InputError(f"the lock file {path} is a folder, not a regular file; remove it (no run of this "
                             "package makes one) and run again") from None
        raise InputError(f"cannot create the lock file {path}: {exc.strerror}; is the folder writable?") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"the lock file {path} is not a regular file (a FIFO or a device?); remove it (no run "
                         "of this package makes one) and run again")
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return fd


class FileLock:
    """An exclusive lock on ``path`` for a ``with`` block.

    Parameters
    ----------
    path
        The lock file (created if needed, never deleted).
    timeout
        Seconds to wait for another holder; ``0`` fails at once, ``None`` waits for ever.
    what
        What the holder is doing, shown to whoever waits in vain.
    """

    def __init__(self, path: str | os.PathLike, timeout: float | None = 60.0, what: str = ""):
        self.path = Path(path)
        self.timeout, self.what = timeout, what
        self._fd: int | None = None
        self._depth = 0
        self._thread = _thread_lock(self.path)

    def acquire(self) -> FileLock:
        if self._depth:  # re-entered by the same holder
            self._depth += 1
            return self
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        # another FileLock of this process on the same file is another writer, even in this thread
        if not self._thread.acquire(timeout=-1 if self.timeout is None else max(self.timeout, 0)):
            self._refuse()
        try:
            fd = _open_lock_file(self.path)
        except BaseException:
            self._thread.release()
            raise
        while not _try_lock(fd):
            if deadline is not None and time.monotonic() >= deadline:
                os.close(fd)
                self._thread.release()
                self._refuse()
            time.sleep(0.05)
        self._fd, self._depth = fd, 1
        info = {"host": socket.gethostname(), "pid": os.getpid(), "what": self.what,
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return self

    def _refuse(self) -> None:
        h = holder(self.path)
        who = (f" by {h.get('what') or 'another writer'} (process {h.get('pid')} on {h.get('host')}, "
               f"since {h.get('since')})") if h else ""
        raise LockHeld(f"{self.path.parent} is in use{who}; wait until it has finished, or use another folder")

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)
            self._thread.release()

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["FileLock", "LockHeld", "holder"]
