"""Files written whole or not at all, with the user's permissions, and destinations checked before any work."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import WRITE_ERRNOS, InputError, write_error


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it (and put it back at once)
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike) -> int:
    """Permissions for a file written at ``path``: those of the file it replaces, else 0666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def prepare_output_dir(out: str | os.PathLike, names: list[str], overwrite: bool) -> Path:
    """Make ``out`` and refuse to replace earlier results unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another --out")
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise InputError(
            f"{out} already holds results ({', '.join(existing)}); choose another --out, or pass "
            "--overwrite to replace them"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """Write a file whole or not at all: write a temporary sibling, fsync, then rename over.

    A crash mid-write leaves the previous file (if any) untouched.
    The new file gets the permissions of the file it replaces, or those the user's umask gives a new
    file (``mkstemp`` alone would make it private, 0600). A destination that cannot be written (full
    disk, read-only, no permission) raises :class:`InputError` naming the file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode_bits = new_file_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode_bits)
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise write_error(path, exc) from exc
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable_dir(folder: str | os.PathLike, what: str = "--out") -> Path:
    """Create ``folder`` if needed and prove a file can be written there, before any long work."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} exists and is not a folder; choose another {what}")
    blocker = next((p for p in folder.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise InputError(f"{blocker} exists and is not a folder, so {folder} cannot be made; choose another {what}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        try:
            os.write(fd, b"x")  # a byte, not an empty file: a full disk refuses it
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"cannot write into {folder} ({reason}); choose a folder you can write to for {what}") \
            from exc
    return folder


def check_writable_file(path: str | os.PathLike, overwrite: bool, what: str = "--out") -> Path:
    """Refuse an existing file unless ``overwrite``, and prove its folder is writable (before any work)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name for {what} (e.g. {path / 'model.pt'})")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; choose another {what} or pass --overwrite to replace it")
    check_writable_dir(path.parent if str(path.parent) else Path("."), what)
    return path
