"""What a user did wrong, said in plain words: :class:`InputError`, and the message for a write that failed
(full disk, read-only, no permission)."""

from __future__ import annotations

import errno


class InputError(ValueError):
    """A user's input cannot be used as it is; the message says why and what to do."""


# errors of a destination (full disk, read-only, no permission, a file where a folder should be):
# the user's to fix, so they become one plain message instead of a traceback
WRITE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ENOTDIR",
                                                     "EISDIR", "EFBIG", "ENAMETOOLONG")
                         if hasattr(errno, n))


def write_error(path, exc: OSError) -> InputError:
    """The plain message for a failed write of ``path``: what happened, what to do."""
    reason = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "free some space or write elsewhere",
            getattr(errno, "EDQUOT", -1): "your disk quota is used up; free some space or write elsewhere",
            errno.EROFS: "that file system is read-only; write elsewhere",
            errno.EFBIG: "the file is too large for that file system; write elsewhere"}.get(
                exc.errno, "check that the folder exists and that you may write there, or write elsewhere")
    return InputError(f"cannot write {path} ({reason}): {hint}")
