"""Files inside a folder a user named, and never through a symbolic link.

A curated set, a result folder or an experiment folder is the user's to name; what lies inside
it is this package's. A symbolic link inside one (``train/`` pointing at another lab's crops,
``history.jsonl`` at a file elsewhere, ``movies/<movie>`` at another experiment) or a name taken
from a file (``run.json`` listing ``/dev/zero`` or ``../x`` as an output) would make the package
read, hash, write or move files the user never named. Every such access goes through here:

- :func:`path_inside` refuses absolute names, ``..``, and a symbolic link at any step from the
  root down (the root itself is the user's choice and may be a link);
- :func:`open_inside` opens only a regular file (never a device, a FIFO, a folder or a link;
  ``O_NOFOLLOW`` closes the gap between the check and the opening), so reading cannot hang;
- :func:`tree_inside` lists a folder's files without following links, and names the links found.

The functions raise :class:`OutsideFolder` (an :class:`~napari_yeast_phenotypes.core.errors.InputError`)
with what was found and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path, PurePath

from ..errors import InputError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BLOCK = 1 << 22


class OutsideFolder(InputError):
    """A name that leads outside its folder, through a symbolic link, or to something not a regular file."""


def _link_error(link: Path, root: Path) -> OutsideFolder:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return OutsideFolder(
        f"{link} is a symbolic link (to {target}); files inside {root} must be in that folder itself, so "
        "nothing outside the folder you named is read, written or moved. Replace the link by a copy of what it "
        "points at (e.g. cp -rL), or remove it"
    )


def plain_relative(rel) -> PurePath:
    """``rel`` as a relative path of plain names (no root, no ``..``, no empty part), else :class:`OutsideFolder`."""
    if not isinstance(rel, (str, os.PathLike)):
        raise OutsideFolder(f"{rel!r} is not a file name")
    pure = PurePath(rel)
    text = os.fspath(rel)
    if (not pure.parts or pure.is_absolute() or pure.drive or any(p in ("..", ".") for p in pure.parts)
            or "\x00" in text or text.startswith(("/", "\\"))):
        raise OutsideFolder(f"{text!r} is not a name inside its folder (absolute, or climbing out with '..')")
    return pure


def path_inside(root, rel) -> Path:
    """``root / rel``, checked: a relative name of plain parts, and no symbolic link on the way down.

    The last part need not exist (a file about to be written); a part that is a link is refused
    whether or not its target exists.
    """
    root = Path(root)
    cur = root
    for part in plain_relative(rel).parts:
        cur = cur / part
        if cur.is_symlink():
            raise _link_error(cur, root)
    return cur


def is_regular_inside(root, rel) -> bool:
    """Whether ``root / rel`` is a regular file reached without a link (``False`` for anything else)."""
    try:
        p = path_inside(root, rel)
        return stat.S_ISREG(os.lstat(p).st_mode)
    except (OutsideFolder, OSError):
        return False


def open_inside(root, rel, mode: str = "rb", encoding: str | None = None):
    """Open the regular file ``root / rel`` for reading (``"rb"`` or ``"r"``), never through a link.

    Raises
    ------
    FileNotFoundError
        When it is not there.
    OutsideFolder
        When the name leads outside, through a link, or to a folder, device or FIFO.
    """
    if mode not in ("rb", "r"):
        raise ValueError(f"open_inside reads only ('rb' or 'r'), not {mode!r}")
    p = path_inside(root, rel)
    st = os.lstat(p)  # FileNotFoundError when absent
    if not stat.S_ISREG(st.st_mode):
        raise OutsideFolder(f"{p} is not a regular file (a folder, a device or a pipe); it cannot be read as one "
                            "of this folder's files")
    # O_NONBLOCK: if it was swapped for a FIFO since the check, the opening must not hang
    fd = os.open(p, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    try:
        st2 = os.fstat(fd)
        if not stat.S_ISREG(st2.st_mode) or (st2.st_ino, st2.st_dev) != (st.st_ino, st.st_dev):
            raise OutsideFolder(f"{p} changed while it was opened; try again")
        if _NONBLOCK and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, mode, encoding=encoding if mode == "r" else None)


def read_text_inside(root, rel, encoding: str = "utf-8") -> str:
    with open_inside(root, rel, "r", encoding=encoding) as fh:
        return fh.read()


def read_bytes_inside(root, rel) -> bytes:
    with open_inside(root, rel, "rb") as fh:
        return fh.read()


def sha256_inside(root, rel, expected_bytes: int | None = None) -> str | None:
    """SHA-256 of the regular file ``root / rel``; ``None`` when its size is not ``expected_bytes``
    (nothing is hashed then: a file of another size is another file)."""
    with open_inside(root, rel, "rb") as fh:
        if expected_bytes is not None and os.fstat(fh.fileno()).st_size != expected_bytes:
            return None
        h = hashlib.sha256()
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
        return h.hexdigest()


def append_inside(root, rel, data: bytes) -> int:
    """Append ``data`` to the regular file ``root / rel`` (created if absent), never through a link.

    Returns the file's size before the append, so that a caller can cut a failed append off again
    (:func:`truncate_inside`).
    """
    p = path_inside(root, rel)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ELOOP, errno.EISDIR):  # a FIFO no one reads, a link, a folder
            raise OutsideFolder(f"{p} is not a regular file; it cannot be appended to: remove it (no run of this "
                                "package makes one) and run again") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OutsideFolder(f"{p} is not a regular file; it cannot be appended to")
        size = st.st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)  # no cut line left behind: truncation needs no free space
            raise
        return size
    finally:
        os.close(fd)


def truncate_inside(root, rel, size: int) -> None:
    """Cut the regular file ``root / rel`` back to ``size`` bytes (undo of :func:`append_inside`)."""
    p = path_inside(root, rel)
    fd = os.open(p, os.O_WRONLY | _NOFOLLOW | _NONBLOCK)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.ftruncate(fd, size)
            os.fsync(fd)
    finally:
        os.close(fd)


def tree_inside(root, depth: int, *, skip_hidden: bool = True) -> tuple[list[str], list[Path]]:
    """The regular files exactly ``depth`` folders down from ``root`` (``a/b/c.tif`` is depth 2), as
    relative POSIX paths, and every symbolic link met on the way (never followed).

    Hidden entries (a leading dot) are skipped when ``skip_hidden``.
    """
    root = Path(root)
    files: list[str] = []
    links: list[Path] = []

    def walk(folder: Path, rel: tuple[str, ...], level: int) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for e in entries:
            if skip_hidden and e.name.startswith("."):
                continue
            if e.is_symlink():
                links.append(Path(e.path))
            elif level == depth:
                if e.is_file(follow_symlinks=False):
                    files.append("/".join((*rel, e.name)))
            elif e.is_dir(follow_symlinks=False):
                walk(Path(e.path), (*rel, e.name), level + 1)

    walk(root, (), 0)
    return files, links


def refuse_links(links: list[Path], root) -> None:
    """Raise :class:`OutsideFolder` for the first of ``links`` (and say how many there are)."""
    if links:
        err = _link_error(links[0], Path(root))
        more = f" ({len(links) - 1} more link(s) like it in {root})" if len(links) > 1 else ""
        raise OutsideFolder(str(err) + more)


__all__ = ["OutsideFolder", "append_inside", "is_regular_inside", "open_inside", "path_inside", "plain_relative",
           "read_bytes_inside", "read_text_inside", "refuse_links", "sha256_inside", "tree_inside",
           "truncate_inside"]
