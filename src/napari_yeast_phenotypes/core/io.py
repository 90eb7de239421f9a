"""Reading movies and checking image/labels pairs before any work is done.

Every check raises :class:`InputError` with a message that says what is wrong and what to do, so
the CLI and the napari widgets can show it as it is.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np


class InputError(ValueError):
    """A user's input cannot be used as it is; the message says why and what to do."""


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
    if image.ndim == 4 or (image.ndim == 3 and labels.ndim == 2 and image.shape[-2:] == labels.shape):
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
    check_labels_dtype(labels)
    if not np.issubdtype(np.dtype(image.dtype), np.number) or np.dtype(image.dtype) == np.bool_:
        raise InputError(f"the image has dtype {image.dtype}; a numeric image is needed")
    return image, labels


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
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
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
