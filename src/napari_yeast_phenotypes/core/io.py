"""Reading movies and checking image/labels pairs before any work is done.

Every check raises :class:`InputError` with a message that says what is wrong and what to do, so
the CLI and the napari widgets can show it as it is.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np


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


def read_array(path: str | os.PathLike, *, lazy: bool = False) -> np.ndarray:
    """Read a TIFF (``.tif``/``.tiff``) or NumPy (``.npy``) file as an array.

    Parameters
    ----------
    path
        File to read.
    lazy
        Memory-map the file when the format allows it, so a long movie is not read whole.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, mmap_mode="r" if lazy else None, allow_pickle=False)
        if suffix in (".tif", ".tiff"):
            import tifffile

            if lazy:
                try:
                    return tifffile.memmap(p, mode="r")
                except ValueError:
                    pass  # compressed or tiled TIFFs cannot be memory-mapped: read them whole
            return tifffile.imread(p)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"could not read {p}: {exc}. Is it a valid {suffix} file?") from exc
    raise InputError(f"{p}: unsupported file type {suffix!r}; use a .tif/.tiff or .npy file")


def as_movie(image, labels, *, channel: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check an image/labels pair and bring both to (T, Y, X).

    A 2D pair is one frame. A 4D image (T, C, Y, X) needs ``channel``. Arrays are not copied:
    dask arrays and memory maps stay lazy.

    Raises
    ------
    InputError
        On shape mismatch, a channel axis without ``channel``, non-integer, negative or empty labels.
    """
    if np.issubdtype(np.dtype(image.dtype), np.complexfloating):
        raise InputError(
            f"the image is complex ({image.dtype}), e.g. a Fourier transform or a phase/amplitude pair; "
            "give the fluorescence intensity as real numbers (np.abs(image) for the magnitude, "
            "image.real for the real part)"
        )
    has_channels = image.ndim == 4 or (image.ndim == 3 and labels.ndim == 2 and image.shape[-2:] == labels.shape)
    if channel is not None and not has_channels:
        raise InputError(
            f"a channel ({channel}) was asked for, but the image (shape {tuple(image.shape)}) has no channel axis "
            f"beside its labels (shape {tuple(labels.shape)}); leave out --channel (channel=None) for a "
            "single-channel movie"
        )
    if has_channels:
        axis = 1 if image.ndim == 4 else 0
        if channel is None:
            raise InputError(
                f"the image has shape {tuple(image.shape)}, which looks like it has a channel axis "
                f"(axis {axis}, {image.shape[axis]} channels) while the labels have shape "
                f"{tuple(labels.shape)}. Say which channel holds the fluorescence reporter: "
                "--channel N on the command line, channel=N in Python; in napari, split the "
                "channels (right-click the layer > Split Stack) and pick the reporter's layer."
            )
        if not 0 <= channel < image.shape[axis]:
            raise InputError(
                f"channel {channel} does not exist: the image has {image.shape[axis]} channels "
                f"(0..{image.shape[axis] - 1})"
            )
        image = image[:, channel] if axis == 1 else image[channel]
    if image.ndim == 2:
        image = image[None]
    if labels.ndim == 2:
        labels = labels[None]
    if image.ndim != 3 or labels.ndim != 3:
        raise InputError(
            f"image {tuple(image.shape)} and labels {tuple(labels.shape)}: expected (T, Y, X) or "
            "(Y, X) arrays (a (T, C, Y, X) image with --channel). Reorder or squeeze the axes."
        )
    if tuple(image.shape) != tuple(labels.shape):
        raise InputError(
            f"image shape {tuple(image.shape)} and labels shape {tuple(labels.shape)} differ: the "
            "labels must be the segmentation of this very image, frame for frame and pixel for "
            "pixel. Check that both files belong to the same movie (and the same crop)."
        )
    if 0 in image.shape:
        raise InputError(
            f"the movie is empty: image and labels have shape {tuple(image.shape)} (T, Y, X), with no "
            + ("frames" if image.shape[0] == 0 else "pixels in a frame") + "; check that the right files were given"
        )
    check_labels_dtype(labels)
    if not np.issubdtype(np.dtype(image.dtype), np.number) or np.dtype(image.dtype) == np.bool_:
        raise InputError(f"the image has dtype {image.dtype}; a numeric image is needed")
    return image, labels


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_image_range(low: float, high: float, where: str = "the image") -> None:
    """Refuse intensities that do not fit float32, in which crops are computed."""
    big = max(abs(low), abs(high))
    if big > FLOAT32_MAX:
        raise InputError(
            f"{where} holds values up to {big:.3g}, beyond what float32 holds ({FLOAT32_MAX:.3g}), in which "
            "crops are computed: they would become infinite and every crop blank. Rescale the image "
            "(e.g. divide it by its maximum) or check how it was made"
        )


def check_labels_dtype(labels) -> None:
    """Raise :class:`InputError` if labels are not an integer array."""
    dt = np.dtype(labels.dtype)
    if dt == np.bool_:
        raise InputError(
            "the labels are a boolean mask, not instance labels: every cell needs its own integer "
            "id (0 = background). Label the mask first, e.g. scipy.ndimage.label(mask)."
        )
    if not np.issubdtype(dt, np.integer):
        raise InputError(
            f"the labels have dtype {dt}; instance labels must be integers (0 = background, one id "
            "per cell). Did you pass the image as labels, or a probability map? Convert a label "
            "image saved as float with labels.astype(int) only if all its values are whole numbers."
        )


def check_label_values(frame: np.ndarray, t: int) -> None:
    """Raise :class:`InputError` for negative labels (checked frame by frame while streaming)."""
    if np.issubdtype(frame.dtype, np.signedinteger) and frame.size and frame.min() < 0:
        raise InputError(
            f"frame {t} of the labels holds negative values; labels must be 0 (background) or "
            "positive cell ids"
        )


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
