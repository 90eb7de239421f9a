"""Reading movies and checking image/labels pairs before any work is done.

Every check raises :class:`~napari_yeast_phenotypes.core.errors.InputError` with a message that says what is
wrong and what to do, so the CLI and the napari widgets can show it as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError


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
