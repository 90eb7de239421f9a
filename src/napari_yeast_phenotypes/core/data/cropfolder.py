"""Crops made elsewhere: a torchvision ImageFolder (``<root>/<class>/<crop>.tif|png``) as a crop set.

Crops that this package did not make (the original notebook's, another lab's) were cut, scaled and
normalised by a process the package cannot know. They are read as they are, brought to the crop
size and, for integer images, to a common intensity range; the :class:`CropSet` records that they
are external and what was done to them (``origin``), the checkpoint trained on them keeps that
record, and classifying a movie with such a model warns that its crops may not match the movie's.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np

from ...phenotypes import CLASS_NAMES
from ..errors import InputError
from .cropset import CropSet

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


#: a crop file holding more pixels than this is not a crop of one cell (a whole field, or a decompression bomb:
#: 684 KB of zlib that decode to 400 M pixels); refused from its header, before it is decoded
MAX_CROP_PIXELS = 1 << 20


def _check_pixels(shape, path: Path) -> None:
    """Refuse a file of more than :data:`MAX_CROP_PIXELS` pixels (four values each: RGBA), from its shape."""
    if int(np.prod(shape, dtype=np.float64)) > 4 * MAX_CROP_PIXELS:
        raise InputError(f"{path} is an image of {'x'.join(map(str, shape))} pixels, not a crop of one cell (at most "
                         f"{MAX_CROP_PIXELS:,} pixels); crop the cells of such an image with yeast-phenotypes curate")


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tf:
            if not tf.series:
                raise InputError(f"{path} holds no image")
            _check_pixels(tf.series[0].shape, path)
            return tf.series[0].asarray()
    from PIL import Image

    with Image.open(path) as im:
        _check_pixels((im.height, im.width, len(im.getbands())), path)
        return np.asarray(im)


def _to_gray(arr: np.ndarray, path: Path) -> np.ndarray:
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            or arr.dtype == np.bool_):
        raise InputError(f"{path} holds {arr.dtype} pixels; a crop must be integer or float intensities (a complex "
                         "image's imaginary part would be dropped)")
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[0] not in (3, 4) and arr.shape[-1] not in (3, 4):
        raise InputError(f"{path}: expected a 2D single-channel crop, got shape {arr.shape} (planes, not colour "
                         "channels); save one plane per crop")
    if arr.ndim == 3:
        # channel axis first (tifffile) or last (PIL); drop an alpha channel
        ch_axis = 0 if arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4) else -1
        arr = np.moveaxis(arr, ch_axis, -1)[..., :3]
        if np.all(arr == arr[..., :1]):
            arr = arr[..., 0]
        else:
            raise InputError(
                f"{path} has {arr.shape[-1]} different colour channels; crops must be one channel "
                "(the fluorescence reporter). Save the reporter channel alone."
            )
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a 2D single-channel crop, got shape {arr.shape}")
    return arr


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, anti-aliased resize to (size, size) (torch's, imported only when a crop needs it)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()


def load_image_folder(root, class_names=CLASS_NAMES, size: int = 40, *, require_all: bool = False) -> CropSet:
    """Read crops from ``root/<class>/*`` (torchvision ImageFolder layout).

    Float images are taken as crops already made by this package (normalised per movie). Integer
    images (8/16-bit crops from elsewhere) are normalised with one robust range over the whole
    folder (background = 1st, top = 99.5th percentile), the folder standing in for a movie.
    Crops of another size are resized; RGB crops whose channels are equal become gray.

    Raises
    ------
    InputError
        Missing folder, class folders that are not classes (with the closest valid name), no
        crops at all, multi-colour crops, crops with NaN or infinite pixels (named), or
        (``require_all``) classes without crops.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"crop folder not found: {root}")
    names = list(class_names)
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    lower = {n.lower(): n for n in names}
    unknown = [d.name for d in dirs if d.name.lower() not in lower]
    if unknown:
        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u.lower(), list(lower), n=1, cutoff=0.5)
            hints.append(f"{u!r}" + (f" (did you mean {lower[close[0]]!r}?)" if close else ""))
        raise InputError(
            f"{root}: folders {', '.join(hints)} are not phenotype classes. Class folders must be "
            f"named {', '.join(names)}; rename them (or give --class-names for a model with other classes)."
        )
    if not dirs:
        sub = [p.name for p in root.iterdir() if p.is_dir()]
        raise InputError(
            f"{root} holds no class folders; expected {root}/<class>/<crop>.tif with classes "
            f"{', '.join(names)}" + (f" (found folders {sub})" if sub else "")
        )
    notes = []
    imgs, targets, paths, is_float = [], [], [], []
    resized = skipped = 0
    sizes: dict[tuple, int] = {}
    for d in dirs:
        cls = names.index(lower[d.name.lower()])
        files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
        for p in files:
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                skipped += 1
                continue
            try:
                arr = _to_gray(_read_image(p), p)
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f"could not read crop {p}: {exc}") from exc
            is_float.append(np.issubdtype(arr.dtype, np.floating))
            if arr.shape != (size, size):
                resized += 1
                sizes[arr.shape] = sizes.get(arr.shape, 0) + 1
                arr = _resize(arr, size)
            imgs.append(arr.astype(np.float32))
            targets.append(cls)
            paths.append(str(p))
    if not imgs:
        raise InputError(f"{root} holds no crops ({', '.join(IMAGE_SUFFIXES)} files in its class folders)")
    crops = np.stack(imgs)[:, None]
    is_float = np.asarray(is_float)
    if (~is_float).any():
        ints = crops[~is_float]
        lo, hi = np.percentile(ints, [1, 99.5])
        crops[~is_float] = (ints - lo) / max(hi - lo, 1e-6)
        notes.append(f"{int((~is_float).sum())} integer crops normalised with the folder's range [{lo:g}, {hi:g}]")
    # NaN or infinite pixels are refused by name below, never set to 0 and trained on as a blank cell
    normalisation = "as stored (float crops)"
    if (~is_float).any():
        normalisation = (f"integer crops: (value - {lo:g}) / ({hi:g} - {lo:g}), the folder's 1st and 99.5th "
                         "percentiles" + ("; float crops as stored" if is_float.any() else ""))
    if resized:
        common = ", ".join(f"{h}x{w} ({k})" for (h, w), k in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
        notes.append(f"{resized} crops were not {size}x{size} (sizes {common}) and were resized to {size}x{size} "
                     "(bilinear, anti-aliased, aspect ratio not kept)")
    if skipped:
        notes.append(f"{skipped} files that are not images were ignored")
    origin = {"kind": "external", "folder": str(root.resolve()), "normalisation": normalisation,
              "resized": int(resized), "crop_size": size}
    cs = CropSet(crops, np.asarray(targets, dtype=np.int64), tuple(names), paths, notes=notes, origin=origin)
    cs.check_finite(f"the crop folder {root}")
    empty = [c for c, k in cs.counts().items() if k == 0]
    if empty:
        msg = f"{root}: no crops for {', '.join(empty)}"
        if require_all:
            raise InputError(msg + "; add examples of every class")
        notes.append(msg + " (the model cannot learn these classes)")
    return cs


__all__ = ["IMAGE_SUFFIXES", "load_image_folder"]
