"""The one preprocessing function: (image, labels, cells) -> (N, 1, 40, 40) float32 crops.

Training (through the curated set) and inference both call :func:`extract_crops`, and its
settings (:class:`CropSettings`) are saved inside every checkpoint, so a crop at training time and
one at inference time cannot differ.

How a crop is made, for each cell of a frame, all cells at once:
- a square window centred on the cell's bounding box. With ``scale="movie"`` (default) its side is
  the larger of the cell's longest side and ``reference`` x the movie's median cell side, plus the
  margin: cells keep their size relative to the movie's typical cell, so an enlarged (senescent)
  cell looks enlarged, while cells far bigger than usual still fit. ``scale="cell"`` (the original
  study's crops) fills every crop with its cell and loses the size cue;
- sampled on a (size x size) grid with bilinear interpolation and ``k x k`` supersampling per
  output pixel (k grows with the window/crop ratio), which anti-aliases the downscaling;
- pixels of other cells (or, with ``mask="outside"``, everything that is not this cell) are set
  to background before interpolation;
- intensities are mapped with the movie's robust range: 0 = median background, 1 = the 99th
  percentile of in-cell pixels (:func:`movie_stats`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

from ..errors import InputError
from ..results.schema import MovieStats
from .movies import check_image_range

MASK_MODES = ("others", "outside", "none")
SCALE_MODES = ("movie", "cell")
_SETTING_TYPES = {"size": int, "margin": float, "min_side": int, "mask": str, "background_percentile": float,
                  "foreground_percentile": float, "max_supersample": int, "scale": str, "reference": float}


@dataclass(frozen=True)
class CropSettings:
    """All settings of the preprocessing; saved in every checkpoint and curated set.

    Attributes
    ----------
    size
        Side of the square crop in pixels (the study used 40).
    margin
        Extra context on each side of the cell, as a fraction of the cell's longest side.
    min_side
        Smallest window side in image pixels, so tiny cells are not blown up beyond sense.
    mask
        ``"others"``: neighbouring cells are blanked; ``"outside"``: everything but the cell is
        blanked; ``"none"``: the window is kept as it is.
    background_percentile, foreground_percentile
        The robust intensity range: the background level is this percentile of the pixels outside
        cells, the top of the range this percentile of the pixels inside cells.
    max_supersample
        Upper bound of the per-axis supersampling used against aliasing.
    scale
        ``"movie"``: window side from the movie's median cell size (x ``reference``) or the cell's
        own size, whichever is larger; ``"cell"``: from the cell's own size only.
    reference
        Window side in units of the movie's median cell side (``scale="movie"``).
    """

    size: int = 40
    margin: float = 0.1
    min_side: int = 12
    mask: str = "others"
    background_percentile: float = 50.0
    foreground_percentile: float = 99.0
    max_supersample: int = 8
    scale: str = "movie"
    reference: float = 1.2

    def __post_init__(self):
        # a settings dict edited by hand (or from another program) must fail here, in plain words,
        # not later inside numpy with a TypeError
        for name, kind in _SETTING_TYPES.items():
            value = getattr(self, name)
            if kind is int and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise InputError(f"crop setting {name} must be a whole number, not {value!r}")
            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            if kind is float and not (numeric and np.isfinite(value)):
                raise InputError(f"crop setting {name} must be a finite number, not {value!r}")
            if kind is str and not isinstance(value, str):
                raise InputError(f"crop setting {name} must be text, not {value!r}")
        if self.size < 8:
            raise InputError(f"crop size {self.size} is too small; use at least 8 pixels")
        if not 0 <= self.margin <= 2:
            raise InputError(f"crop margin {self.margin} must be between 0 and 2")
        if self.scale not in SCALE_MODES:
            raise InputError(f"crop scale {self.scale!r} is not one of {', '.join(SCALE_MODES)}")
        if self.mask not in MASK_MODES:
            raise InputError(f"crop mask {self.mask!r} is not one of {', '.join(MASK_MODES)}")
        if not 0 <= self.background_percentile < self.foreground_percentile <= 100:
            raise InputError("background_percentile must be below foreground_percentile, both in 0..100")
        if self.size > 1024:
            raise InputError(f"crop size {self.size} is too large; the network takes crops of tens of pixels (40)")
        if self.min_side < 1:
            raise InputError(f"crop min_side must be at least 1 pixel, not {self.min_side}")
        if not 1 <= self.max_supersample <= 64:
            raise InputError(f"crop max_supersample must be between 1 and 64, not {self.max_supersample}")
        if not 0 < self.reference <= 100:
            raise InputError(f"crop reference must be a positive multiple of the median cell side (<= 100), "
                             f"not {self.reference}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> CropSettings:
        """Build from a plain dict (e.g. from a checkpoint); unknown keys are an error."""
        if d is not None and not isinstance(d, dict):
            raise InputError(f"crop settings must be a mapping of names to values, not {type(d).__name__}")
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(
                f"unknown crop settings {sorted(unknown)}: the file was made by a newer or other "
                "program version; update napari-yeast-phenotypes"
            )
        return cls(**d)


def movie_stats(image, labels, settings: CropSettings = CropSettings(), max_frames: int = 16,
                max_pixels: int = 2_000_000) -> MovieStats:
    """The movie's robust intensity range and median cell side, used for every crop of it.

    Estimated on up to ``max_frames`` frames spread over the movie (lazy arrays are read only
    there); intensities on about ``max_pixels`` pixels. NaN/inf pixels are ignored.
    """
    from .tracking import check_ids_are_cells, check_looks_like_labels, measure_frame

    if image.ndim == 2:
        image, labels = image[None], labels[None]
    n = image.shape[0]
    frames = np.unique(np.linspace(0, n - 1, num=min(n, max_frames)).astype(int))
    per_frame = max(1, max_pixels // len(frames))
    step = max(1, int(np.sqrt(image.shape[1] * image.shape[2] / per_frame)))
    bg, fg, sides = [], [], []
    n_cells = n_in_cells = 0
    for t in frames:
        lab_full = np.asarray(labels[t])
        cells = measure_frame(lab_full, int(t))
        check_looks_like_labels(cells, int(t))
        check_ids_are_cells(lab_full, cells, int(t))
        n_cells += len(cells)
        sides.append(np.maximum(cells["bbox_y1"] - cells["bbox_y0"], cells["bbox_x1"] - cells["bbox_x0"]))
        im = np.asarray(image[t][::step, ::step], dtype=np.float64)
        lab = lab_full[::step, ::step]
        finite = np.isfinite(im)
        bg.append(im[(lab == 0) & finite])
        fg.append(im[(lab > 0) & finite])
        n_in_cells += int((lab > 0).sum())
    bg_all, fg_all = np.concatenate(bg), np.concatenate(fg)
    if fg_all.size == 0 and n_cells and n_in_cells:
        where = "anywhere" if bg_all.size == 0 else "inside the cells"
        raise InputError(
            f"the image has no finite value {where} (NaN or infinite in the {len(frames)} frames looked at), so "
            "the cells cannot be classified; check how the image was made or exported (a failed "
            "registration or background correction often leaves NaN), or whether the right file was given"
        )
    if fg_all.size == 0:
        raise InputError("the labels hold no cells in any frame, so there is nothing to classify")
    check_image_range(float(fg_all.min()), float(fg_all.max()))
    if bg_all.size:
        check_image_range(float(bg_all.min()), float(bg_all.max()))
    low = float(np.percentile(bg_all, settings.background_percentile)) if bg_all.size else float(fg_all.min())
    high = float(np.percentile(fg_all, settings.foreground_percentile))
    if not high > low:
        # constant or inverted images: fall back to the full finite range, then to unit scale
        high = float(fg_all.max())
        if not high > low:
            high = low + 1.0
    side = float(np.median(np.concatenate(sides))) if sum(len(x) for x in sides) else 1.0
    return MovieStats(low, high, side)


#: a cell with less than this share of finite pixels (the rest NaN or infinite) is not data: its crop
#: would be mostly blank background, not the cell
MIN_FINITE_SHARE = 0.5

#: pixels of a frame handled at a time where a whole-frame temporary would be large
BAND_PIXELS = 1 << 22


def finite_share(image, labels, cells: pd.DataFrame, band_pixels: int = BAND_PIXELS) -> np.ndarray:
    """(N,) share of each cell's pixels (``cells``: rows of one frame, with ``label`` and ``area``) whose
    image value is a finite number; 1 for integer images. Read in bands of rows: memory follows
    ``band_pixels``, not the frame."""
    n = len(cells)
    out = np.ones(n)
    image = np.asarray(image)
    if n == 0 or image.dtype.kind not in "fc":
        return out
    labels = np.asarray(labels)
    ids = cells["label"].to_numpy(np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    bad = np.zeros(n)
    rows = max(1, band_pixels // max(labels.shape[1], 1))
    for y in range(0, labels.shape[0], rows):
        off = ~np.isfinite(image[y:y + rows])
        if not off.any():
            continue
        lab = labels[y:y + rows][off]
        lab = lab[lab > 0]
        if not lab.size:
            continue
        u, c = np.unique(lab.astype(np.int64, copy=False), return_counts=True)
        pos = np.searchsorted(sorted_ids, u)
        hit = (pos < n) & (sorted_ids[np.minimum(pos, n - 1)] == u)
        np.add.at(bad, order[pos[hit]], c[hit])
    area = cells["area"].to_numpy(np.float64)
    return 1.0 - bad / np.maximum(area, 1.0)


def window_geometry(cells: pd.DataFrame, settings: CropSettings, stats: MovieStats
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (cy, cx) and side of each cell's square window, in pixel coordinates."""
    y0, x0 = cells["bbox_y0"].to_numpy(float), cells["bbox_x0"].to_numpy(float)
    y1, x1 = cells["bbox_y1"].to_numpy(float), cells["bbox_x1"].to_numpy(float)
    side = np.maximum(y1 - y0, x1 - x0)
    if settings.scale == "movie":
        side = np.maximum(side, settings.reference * stats.cell_side)
    side = np.maximum(side * (1 + 2 * settings.margin), settings.min_side)
    return (y0 + y1) / 2, (x0 + x1) / 2, side


def extract_crops(image: np.ndarray, labels: np.ndarray, cells: pd.DataFrame,
                  settings: CropSettings, stats: MovieStats, chunk: int = 256) -> np.ndarray:
    """Crops of the given cells of ONE frame, as a batch.

    Parameters
    ----------
    image, labels
        One 2D frame and its labels.
    cells
        Rows of the cell table for this frame (``label`` and ``bbox_*`` are used).
    stats
        The movie's :class:`MovieStats` (from :func:`movie_stats`).

    Returns
    -------
    (N, 1, size, size) float32 array.

    Notes
    -----
    Bilinear sampling on a ``(size*k)^2`` grid followed by ``k x k`` averaging is a linear map
    that factorises over the two axes: ``crop = Ay @ W @ Ax.T``, where ``W`` is the cell's masked
    window of image pixels and ``Ay``, ``Ax`` (size x window) hold the summed bilinear weights of
    each output row / column. Each window pixel is read once (instead of four times per
    sub-sample) and the rest is a small batched matrix product: the same crop as sampling point
    by point, up to float rounding, at a fraction of the cost.
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    n = len(cells)
    s = settings.size
    out = np.zeros((n, 1, s, s), dtype=np.float32)
    if n == 0:
        return out
    low, high = stats.low, stats.high
    scale = 1.0 / (high - low)
    where = f"frame {int(cells['frame'].iloc[0])} of the image" if "frame" in cells else "the image"
    # the image is read where the windows are, in its own type: no float copy of the whole frame (a
    # 20,000 x 20,000 frame made three of them), and each value is normalised as it is gathered
    img = _Normalised(image.ravel(), low, scale, where)
    lab = labels.ravel()
    ny, nx = labels.shape
    cy, cx, side = window_geometry(cells, settings, stats)
    ids = cells["label"].to_numpy()
    # supersampling per cell: about one sample per source pixel, so large cells are averaged
    # (anti-aliased) while the usual small ones cost one sample per output pixel
    ks = np.clip(np.ceil(side / s), 1, settings.max_supersample).astype(int)
    for k in np.unique(ks):
        # cells of similar window size share a batch, so little padding is gathered
        sel = np.flatnonzero(ks == k)
        sel = sel[np.argsort(side[sel], kind="stable")]
        for a in range(0, sel.size, chunk):
            rows = sel[a:a + chunk]
            out[rows, 0] = _resample_windows(img, lab, ny, nx, cy[rows], cx[rows], side[rows], ids[rows], s,
                                             int(k), settings.mask)
    return out


class _Normalised:
    """A frame's pixels as the crops take them, computed at the positions read (``img[idx]``): float32,
    mapped by the movie's range, NaN and infinity as the background (0).

    Float64 values beyond float32's range (which would turn infinite, and be blanked, not cells)
    are refused in plain words.
    """

    def __init__(self, flat: np.ndarray, low: float, scale: float, where: str):
        self.flat, self.low, self.scale, self.where = flat, low, scale, where

    def __getitem__(self, idx) -> np.ndarray:
        raw = self.flat[idx]
        with np.errstate(over="ignore"):
            v = np.asarray(raw, dtype=np.float32)
        finite = np.isfinite(v)
        if raw.dtype.kind == "f" and raw.dtype.itemsize > 4 and not finite.all():
            over = ~finite & np.isfinite(raw)
            if over.any():
                check_image_range(0.0, float(np.abs(raw[over]).max()), self.where)
        return np.where(finite, (v - self.low) * self.scale, 0.0).astype(np.float32)


def _resample_windows(img, lab, ny, nx, cy, cx, side, ids, s, k, mask) -> np.ndarray:
    """Masked windows (m, Wy, Wx) read once, resampled to (m, s, s) by ``Ay @ W @ Ax.T``."""
    ay, y_start = _axis_weights(cy, side, s, k)
    ax, x_start = _axis_weights(cx, side, s, k)
    rows = y_start[:, None] + np.arange(ay.shape[2])  # (m, Wy) window rows in frame coordinates
    cols = x_start[:, None] + np.arange(ax.shape[2])
    inside = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
    idx = np.clip(rows, 0, ny - 1)[:, :, None] * nx + np.clip(cols, 0, nx - 1)[:, None, :]
    if mask != "none":
        lv = lab[idx]
        own = ids[:, None, None]
        inside &= (lv == own) if mask == "outside" else (lv == own) | (lv == 0)
    win = np.where(inside, img[idx], np.float32(0.0))
    return np.matmul(np.matmul(ay, win), ax.transpose(0, 2, 1))


def _axis_weights(centre: np.ndarray, side: np.ndarray, s: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis resampling matrices (m, s, span) and each window's first pixel along the axis.

    Entry ``[i, p]`` is the summed bilinear weight that window pixel ``start + p`` gets from the
    ``k`` sub-samples of output pixel ``i``, divided by ``k`` (their average).
    """
    m = centre.size
    g = (np.arange(s * k) + 0.5) / (s * k) - 0.5  # offsets in units of the window side
    # continuous coordinates; pixel p covers [p, p+1), its centre is p + 0.5
    pos = centre[:, None] + side[:, None] * g[None, :] - 0.5  # (m, s*k)
    p0 = np.floor(pos).astype(np.int64)
    w1 = (pos - p0).astype(np.float32)
    w0 = np.float32(1) - w1
    start = p0[:, 0]  # positions grow along the axis: the first sub-sample has the lowest pixel
    span = int((p0[:, -1] - start).max()) + 2
    base = (np.arange(m)[:, None] * s + (np.arange(s * k) // k)[None, :]) * span + (p0 - start[:, None])
    mat = np.bincount(np.concatenate([base.ravel(), base.ravel() + 1]),
                      weights=np.concatenate([w0.ravel(), w1.ravel()]).astype(np.float64) / k,
                      minlength=m * s * span)
    return mat.astype(np.float32).reshape(m, s, span), start


def context_patch(image_frame, labels_frame, y: float, x: float, label: int, stats: MovieStats,
                  cells_wide: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """The cell at ``(y, x)`` in its raw surroundings, for a person to look at: about ``cells_wide`` cells wide.

    Returns ``(patch, outline)``: the image around the cell mapped to 0..1 by the movie's intensity
    range (``stats``: the same for every cell and frame of the movie, so one contrast along a
    track), and a boolean mask of the cell's outline drawn just outside it (the pixels next to the
    cell, not in it: a focus on the cell's edge stays visible). The window is square, ``cells_wide``
    times the movie's median cell side, cut at the image's border (never padded: what a person sees
    is what is there).
    """
    half = max(4, int(round(cells_wide * stats.cell_side / 2)))
    h, w = labels_frame.shape
    cy, cx = int(round(y)), int(round(x))
    ys, xs = slice(max(0, cy - half), min(h, cy + half + 1)), slice(max(0, cx - half), min(w, cx + half + 1))
    raw = np.asarray(image_frame[ys, xs], dtype=np.float32)
    lab = np.asarray(labels_frame[ys, xs]) == label
    span = max(stats.high - stats.low, 1e-12)
    patch = np.clip((raw - stats.low) / span, 0.0, 1.0)
    grown = lab.copy()
    grown[1:, :] |= lab[:-1, :]
    grown[:-1, :] |= lab[1:, :]
    grown[:, 1:] |= lab[:, :-1]
    grown[:, :-1] |= lab[:, 1:]
    return patch, grown & ~lab


def movie_crops(image, labels, table: pd.DataFrame, settings: CropSettings = CropSettings(),
                stats: MovieStats | None = None) -> np.ndarray:
    """Crops for every row of ``table`` (any frames), in table order."""
    if image.ndim == 2:
        image, labels = image[None], labels[None]
    if stats is None:
        stats = movie_stats(image, labels, settings)
    out = np.zeros((len(table), 1, settings.size, settings.size), dtype=np.float32)
    pos = np.arange(len(table))
    for t, idx in pd.Series(pos).groupby(table["frame"].to_numpy()):
        rows = table.iloc[idx.to_numpy()]
        out[idx.to_numpy()] = extract_crops(image[t], labels[t], rows, settings, stats)
    return out
