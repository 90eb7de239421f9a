"""Synthetic fluorescence time-lapse of budding-yeast cells, with ground truth.

Used by the tests, the demo and the benchmarks. Each cell is a filled ellipse that lives from its
birth frame to the end of the movie, carries a tracked label id, and follows a sequence of the eight
phenotypes of :mod:`napari_yeast_phenotypes.phenotypes` (Senescent is absorbing). The imaging model
is PSF blur, background offset, photobleaching, shot + read noise and a slight global drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ...phenotypes import CLASS_NAMES, N_CLASSES, SENESCENT, class_index

__all__ = ["SyntheticMovie", "simulate_movie", "write_movie", "render_cell_examples"]

#: bumped whenever the rendering changes, so caches of models trained on simulations are renewed
SIMULATOR_VERSION = 2
_N_LIVE = SENESCENT  # classes 0..6 are live, 7 is Senescent
_COUNTS_PER_UNIT = 300.0  # a typical cell is a few hundred counts above background
_BACKGROUND = 100.0
_PSF_SIGMA = 1.0
_GAP = 3.0  # centre-distance slack: leaves >= 2 background px between two masks
_BORDER = 4.0
_AGE_RAMP = 30.0  # senescence hazard ramps up over this many frames of age (ageing)
# a senescent cell swells to its final size over this many frames (so it looks senescent when the truth says so)
_SEN_RAMP = 3
_JITTER = 0.25  # px, frame-to-frame wobble of foci within an episode
_PATCH = 48  # side of the patches from render_cell_examples


@dataclass
class SyntheticMovie:
    """A simulated movie with its ground truth.

    Attributes
    ----------
    image : np.ndarray
        (T, Y, X) uint16 fluorescence.
    labels : np.ndarray
        (T, Y, X) uint16 (uint32 beyond 65535 ids) tracked instance labels, 0 = background.
    truth : pd.DataFrame
        Columns ``frame``, ``label``, ``phenotype`` (a name from ``CLASS_NAMES``); one row per cell
        present per frame, sorted by frame then label.
    """

    image: np.ndarray
    labels: np.ndarray
    truth: pd.DataFrame


@dataclass(eq=False)
class _Cell:
    birth: int
    a: float  # semi-axes (px) at birth
    b: float
    theta: float
    expr: float  # per-cell expression level
    growth: float  # fractional radius gain over the whole movie
    classes: np.ndarray  # class per frame of life (index 0 = birth frame)
    episodes: list  # episode parameters per frame of life (one dict shared within an episode)
    sen_start: int | None  # life index at which the cell became senescent
    sen_scale: float = 1.0
    harmonics: np.ndarray | None = None  # rows (k, amplitude, phase) of the irregular outline
    sen_bright: float = 1.0
    y: float = 0.0
    x: float = 0.0
    geom: tuple | None = None  # render cache, filled on first use

    def extent(self) -> float:
        """Largest distance from the centre to the mask edge over the cell's life."""
        r = max(self.a, self.b) * (1.0 + self.growth)
        if self.sen_start is not None:
            r *= self.sen_scale * (1.0 + np.abs(self.harmonics[:, 1]).sum())
        return r


# ---------------------------------------------------------------------------- episodes / patterns


def _spread_points(n, max_rn, min_sep, a, b, rng, tries=200):
    """Up to ``n`` points in normalised cell coordinates, pairwise >= min_sep px apart."""
    pts = []
    for _ in range(tries):
        ang, rad = rng.uniform(0, 2 * np.pi), max_rn * np.sqrt(rng.uniform(0.05, 1.0))
        p, q = rad * np.cos(ang), rad * np.sin(ang)
        if all(np.hypot((p - p2) * a, (q - q2) * b) >= min_sep for p2, q2 in pts):
            pts.append((p, q))
            if len(pts) == n:
                break
    return np.array(pts, dtype=float).reshape(-1, 2)


def _sample_episode(cls: int, cell: _Cell, rng) -> dict:
    """Parameters that stay fixed during one phenotype episode (foci positions etc.)."""
    a, b = cell.a, cell.b
    ep = {"cyto": rng.uniform(0.18, 0.3)}
    if cls == 0:  # Nuclear: a compact body ~1/3 of the cell diameter
        ep["nuc"] = _spread_points(1, 0.25, 0, a, b, rng)
        ep["nuc_r"], ep["nuc_amp"] = rng.uniform(0.32, 0.4), rng.uniform(0.9, 1.1)
    elif cls == 1:  # Aggregate: one very bright focus, sometimes on a weak nucleus
        ep["foci"] = _spread_points(1, 0.55, 0, a, b, rng)
        ep["amp"], ep["sigma"] = rng.uniform(2.3, 2.8, 1), rng.uniform(0.9, 1.1, 1)
        if rng.random() < 0.5:
            ep["nuc"], ep["nuc_r"], ep["nuc_amp"] = _spread_points(1, 0.2, 0, a, b, rng), 0.3, 0.3
    elif cls == 2:  # Cytoplasm: whole cell bright, one darker vacuole
        ep["cyto"] = rng.uniform(0.62, 0.78)
        ep["vac"] = _spread_points(1, 0.25, 0, a, b, rng)[0]
        ep["vac_ax"] = rng.uniform(0.35, 0.5, 2)
        ep["vac_level"] = rng.uniform(0.3, 0.4)
    elif cls in (3, 4):  # Triple / BinaryAggregate: 3 or 2 distinct foci
        n = 3 if cls == 3 else 2
        pts, sep = np.zeros((0, 2)), 5.0
        while len(pts) < n:  # fits at once unless a crowded frame made the cell small
            pts, sep = _spread_points(n, 0.65, sep, a, b, rng), sep * 0.9
        ep["foci"], ep["amp"], ep["sigma"] = pts, rng.uniform(1.5, 2.0, n), rng.uniform(1.0, 1.2, n)
    elif cls == 5:  # Fragmented: many small dim specks scattered over the cell
        # amplitudes a bit above ~0.7 because the PSF flattens 0.7 px specks by ~3x
        pts, sep, n = np.zeros((0, 2)), 3.0, int(rng.integers(6, 13))
        while len(pts) < 6:
            pts, sep = _spread_points(n, 0.8, sep, a, b, rng), sep * 0.9
        ep["foci"], ep["amp"] = pts, rng.uniform(0.8, 1.1, len(pts))
        ep["sigma"], ep["cyto"] = np.full(len(pts), 0.7), rng.uniform(0.08, 0.14)
    elif cls == 6:  # Circular: ring at ~0.55 of the radius, dark centre
        ep["ring_r"], ep["ring_amp"], ep["cyto"] = rng.uniform(0.5, 0.6), 1.0, rng.uniform(0.1, 0.16)
    else:  # Senescent: granular texture, fixed for the rest of the cell's life
        side = 2 * int(np.ceil(cell.extent())) + 8
        noise = ndi.gaussian_filter(rng.normal(size=(side, side)), 1.0)
        ep["texture"] = np.clip(0.6 + 0.35 * noise / noise.std(), 0.08, None)
    return ep


def _spots(u, v, a, b, foci, amp, sigma, rng):
    out = np.zeros(np.broadcast(u, v).shape)
    jit = rng.normal(0, _JITTER, foci.shape)
    for (p, q), (ju, jv), A, s in zip(foci, jit, amp, sigma):
        d2 = (u - p * a - ju) ** 2 + (v - q * b - jv) ** 2
        out += A * np.exp(-d2 / (2 * s * s))
    return out


def _pattern(cls, ep, u, v, rn, a, b, rng):
    """Intensity (relative units) of one phenotype over the cell's box; masked by the caller."""
    sig = np.full(rn.shape, ep.get("cyto", 0.25))
    if "nuc" in ep:
        (p, q), (ju, jv) = ep["nuc"][0], rng.normal(0, _JITTER, 2)
        rnuc = ep["nuc_r"] * 0.5 * (a + b)
        d2 = ((u - p * a - ju) ** 2 + (v - q * b - jv) ** 2) / rnuc**2
        sig += ep["nuc_amp"] * np.exp(-np.log(2) * d2**2)  # flat-topped: half max at rnuc
    if "foci" in ep:
        sig += _spots(u, v, a, b, ep["foci"], ep["amp"], ep["sigma"], rng)
    if cls == 2:
        (p, q), (va, vb) = ep["vac"], ep["vac_ax"]
        inside = ((u - p * a) / (va * a)) ** 2 + ((v - q * b) / (vb * b)) ** 2 <= 1
        sig[inside] = ep["vac_level"]
    elif cls == 6:
        d = (rn - ep["ring_r"]) * 0.5 * (a + b)
        sig += ep["ring_amp"] * np.exp(-(d**2) / (2 * 0.8**2))
    return sig


def _render_cell(cell: _Cell, t: int, n_frames: int, rng):
    """Render one cell at frame ``t``; returns (top, left, signal, mask) of its bounding box."""
    life = t - cell.birth
    cls, ep = int(cell.classes[life]), cell.episodes[life]
    scale = 1.0 + cell.growth * t / max(n_frames - 1, 1)
    sen = cls == SENESCENT
    if sen:
        ramp = min(1.0, (life - cell.sen_start + 1) / _SEN_RAMP)
        scale *= 1.0 + (cell.sen_scale - 1.0) * ramp
    a, b = cell.a * scale, cell.b * scale
    if cell.geom is None:  # the box, the rotated grid and the outline never change: cache them
        h = int(np.ceil(cell.extent())) + 2
        iy, ix = int(round(cell.y)), int(round(cell.x))
        dy = (np.arange(-h, h + 1) + iy - cell.y)[:, None]
        dx = (np.arange(-h, h + 1) + ix - cell.x)[None, :]
        c, s = np.cos(cell.theta), np.sin(cell.theta)
        u, v = dx * c + dy * s, -dx * s + dy * c
        rn0 = np.sqrt((u / cell.a) ** 2 + (v / cell.b) ** 2)
        wobble = None
        if cell.sen_start is not None:
            phi = np.arctan2(v / cell.b, u / cell.a)
            k, amp, ph = (x[:, None, None] for x in cell.harmonics.T)
            wobble = (amp * np.cos(k * phi + ph)).sum(0)
        cell.geom = (h, iy, ix, u, v, rn0, wobble)
    h, iy, ix, u, v, rn0, wobble = cell.geom
    rn = rn0 / scale
    if sen:
        mask = rn <= 1.0 + ramp * wobble  # irregular outline: a few angular harmonics
        o = (ep["texture"].shape[0] - (2 * h + 1)) // 2
        sig = ep["texture"][o : o + 2 * h + 1, o : o + 2 * h + 1] * cell.sen_bright
    else:
        mask = rn <= 1.0
        sig = _pattern(cls, ep, u, v, rn, a, b, rng)
    return iy - h, ix - h, np.where(mask, sig * cell.expr, 0.0), mask


# ---------------------------------------------------------------------------- cells and layout


def _parse_weights(phenotype_weights) -> np.ndarray:
    w = np.zeros(N_CLASSES)
    if phenotype_weights is None:
        w[:_N_LIVE] = 1.0
    elif isinstance(phenotype_weights, Mapping):
        for name, val in phenotype_weights.items():
            w[class_index(name)] = float(val)
    else:
        arr = np.asarray(phenotype_weights, dtype=float).ravel()
        if arr.size not in (_N_LIVE, N_CLASSES):
            raise ValueError(f"phenotype_weights needs {_N_LIVE} or {N_CLASSES} values, got {arr.size}")
        w[: arr.size] = arr
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("phenotype_weights must be finite, non-negative and not all zero")
    return w / w.sum()


def _new_cell(birth, n_frames, weights, p_switch, p_senesce, age0, rng) -> _Cell:
    r = rng.uniform(8.0, 12.0)
    cell = _Cell(birth=birth, a=r, b=r * rng.uniform(0.8, 1.0), theta=rng.uniform(0, np.pi),
                 expr=rng.uniform(0.6, 1.5), growth=rng.uniform(0.02, 0.06),
                 classes=np.empty(n_frames - birth, dtype=int), episodes=[], sen_start=None)
    n = n_frames - birth
    r_sen, r_sw, step = rng.random(n), rng.random(n), rng.integers(1, _N_LIVE, n)
    c = int(rng.choice(N_CLASSES, p=weights))
    for i in range(n):
        if i > 0 and c != SENESCENT:
            # ageing: the hazard grows with age, so old cells senesce more often than young ones
            if r_sen[i] < p_senesce * min(1.0, (age0 + i) / _AGE_RAMP):
                c = SENESCENT
            elif r_sw[i] < p_switch:
                c = (c + int(step[i])) % _N_LIVE  # any other live class
        cell.classes[i] = c
    sen = np.flatnonzero(cell.classes == SENESCENT)
    if sen.size:
        cell.sen_start = int(sen[0])
        cell.sen_scale = rng.uniform(1.3, 1.5)
        ks = rng.choice(np.arange(2, 7), 3, replace=False)
        cell.harmonics = np.column_stack([ks, rng.uniform(0.03, 0.06, 3), rng.uniform(0, 2 * np.pi, 3)])
        cell.sen_bright = rng.uniform(2.0, 3.0) if rng.random() < 0.5 else rng.uniform(0.3, 0.5)
    return cell


def _add_episodes(cell: _Cell, rng) -> None:
    ep = None
    for i, c in enumerate(cell.classes):
        if i == 0 or c != cell.classes[i - 1]:
            ep = _sample_episode(int(c), cell, rng)
        cell.episodes.append(ep)


def _place(cells, shape, margin, rng) -> list[_Cell]:
    """Place cells without overlap, uniformly over the free space; drop those that do not fit.

    Cells present at frame 0 go first so that they win when the frame is crowded; within a group
    the big (future senescent) ones go first; a cell shrinks (its swelling, then itself) rather
    than not fit.
    """
    H, W = shape
    # free[y, x]: exact distance from pixel (y, x) to the nearest reserved disc, capped
    cap = max(c.extent() for c in cells) + 2 * _GAP + 2
    free = np.full(shape, cap)
    placed = []
    for i in sorted(range(len(cells)), key=lambda i: (cells[i].birth > 0, -cells[i].extent())):
        cell, pos = cells[i], None
        while pos is None:
            R = cell.extent()
            y0, x0 = int(np.ceil(R + margin)), int(np.ceil(R + margin))
            y1, x1 = int(H - 1 - R - margin), int(W - 1 - R - margin)
            if y1 >= y0 and x1 >= x0:
                ys, xs = np.nonzero(free[y0 : y1 + 1, x0 : x1 + 1] >= R + _GAP / 2)
                if ys.size:
                    j = rng.integers(ys.size)
                    pos = (ys[j] + y0, xs[j] + x0)
                    break
            # crowded: let it swell less, then make it smaller (never below 8 px)
            if cell.sen_start is not None and cell.sen_scale > 1.0:
                cell.sen_scale = max(1.0, cell.sen_scale - 0.1)
            elif cell.a > 8.0:
                f = max(0.9, 8.0 / cell.a)
                cell.a, cell.b = cell.a * f, cell.b * f
            else:
                break
        if pos is None:
            continue
        cell.y, cell.x = float(pos[0]), float(pos[1])
        placed.append((i, cell))
        w = int(np.ceil(R + _GAP / 2 + cap))
        sy = slice(max(pos[0] - w, 0), min(pos[0] + w + 1, H))
        sx = slice(max(pos[1] - w, 0), min(pos[1] + w + 1, W))
        yy, xx = np.ogrid[sy, sx]
        d = np.sqrt((yy - pos[0]) ** 2 + (xx - pos[1]) ** 2) - R - _GAP / 2
        np.minimum(free[sy, sx], d, out=free[sy, sx])
    # ids follow the order of appearance
    return [c for _, c in sorted(placed, key=lambda ic: (ic[1].birth, ic[0]))]


# ---------------------------------------------------------------------------- public API


def simulate_movie(n_frames: int = 40, size: int | tuple[int, int] = 256, n_cells: int = 30,
                   seed: int = 0, *, phenotype_weights=None, p_switch: float = 0.04,
                   p_senesce: float = 0.02, births: bool = True, drift: bool = True) -> SyntheticMovie:
    """Simulate a fluorescence time-lapse of budding-yeast cells with tracked labels and phenotypes.

    Parameters
    ----------
    n_frames : int
        Number of frames (>= 1).
    size : int or (int, int)
        Frame size in pixels, square if an int; each side >= 64.
    n_cells : int
        Cells present at frame 0 (>= 1); fewer if they do not fit.
    seed : int
        Seed of ``numpy.random.default_rng``; the movie is a deterministic function of all arguments.
    phenotype_weights : sequence of 7 or 8 floats, or mapping name -> weight, optional
        Weights of the starting phenotype (default: uniform over the 7 live classes). An 8th
        (Senescent) weight lets cells start senescent.
    p_switch : float
        Per-frame probability that a live cell switches to another live class.
    p_senesce : float
        Per-frame probability that a mature live cell becomes senescent (absorbing); young cells
        have a lower hazard that ramps up over 30 frames of age.
    births : bool
        If True, about 20-30 % more cells appear at free positions at random later frames.
    drift : bool
        If True, the field of view drifts by a bounded random walk (~0.3 px/frame, integer shifts).

    Returns
    -------
    SyntheticMovie
    """
    if int(n_frames) != n_frames or n_frames < 1:
        raise ValueError(f"n_frames must be an integer >= 1, got {n_frames!r}")
    shape = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
    if len(shape) != 2 or min(shape) < 64:
        raise ValueError(f"size must be an int or (Y, X) pair, each >= 64, got {size!r}")
    if int(n_cells) != n_cells or n_cells < 1:
        raise ValueError(f"n_cells must be an integer >= 1, got {n_cells!r}")
    for name, p in (("p_switch", p_switch), ("p_senesce", p_senesce)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p!r}")
    n_frames, n_cells = int(n_frames), int(n_cells)
    weights = _parse_weights(phenotype_weights)
    rng = np.random.default_rng(seed)

    # a bounded drift keeps every cell whole inside the frame (one component, no clipping)
    max_drift = int(min(3 + 0.3 * np.sqrt(n_frames), 0.04 * min(shape))) if drift else 0
    n_births = int(round(n_cells * rng.uniform(0.2, 0.3))) if births and n_frames > 1 else 0
    birth_frames = [0] * n_cells + sorted(rng.integers(1, n_frames, n_births).tolist() if n_births else [])
    cells = [_new_cell(bf, n_frames, weights, p_switch, p_senesce,
                       rng.uniform(0, 10) if bf == 0 else 0.0, rng) for bf in birth_frames]
    # a crowded frame (many cells, long movie: most will senesce) cannot hold every cell at its
    # full senescent size; then retry with less swelling so that all n_cells are there at frame 0
    sizes = [(c.a, c.b, c.sen_scale) for c in cells]
    for squeeze in (1.0, 0.6, 0.3):
        for c, (a, b, sen_scale) in zip(cells, sizes):
            c.a, c.b, c.sen_scale = a, b, 1.0 + (sen_scale - 1.0) * squeeze
        placed = _place(cells, shape, _BORDER + max_drift, rng)
        if sum(c.birth == 0 for c in placed) == n_cells:
            break
    cells = placed
    for cell in cells:
        _add_episodes(cell, rng)

    offsets = np.zeros((n_frames, 2), int)
    walk = np.zeros(2)
    for t in range(1, n_frames):
        if max_drift:
            walk += rng.normal(0, 0.3, 2)
            walk = np.clip(walk, -max_drift, max_drift)
        offsets[t] = np.round(walk)

    n_ids = len(cells)
    image = np.empty((n_frames,) + shape, np.uint16)
    labels = np.zeros((n_frames,) + shape, np.uint16 if n_ids <= 65535 else np.uint32)
    bleach = -np.log(1 - rng.uniform(0.2, 0.3)) / max(n_frames - 1, 1)
    read_noise = rng.uniform(3.0, 5.0)
    canvas = np.zeros(shape)
    rows = []
    for t in range(n_frames):
        canvas[:] = 0.0
        for lab, cell in enumerate(cells, start=1):
            if cell.birth > t:
                continue
            top, left, sig, mask = _render_cell(cell, t, n_frames, rng)
            top, left = top + offsets[t, 0], left + offsets[t, 1]
            sl = (slice(top, top + sig.shape[0]), slice(left, left + sig.shape[1]))
            canvas[sl] += sig
            labels[t][sl][mask] = lab
            rows.append((t, lab, CLASS_NAMES[cell.classes[t - cell.birth]]))
        signal = ndi.gaussian_filter(canvas, _PSF_SIGMA) * (_COUNTS_PER_UNIT * np.exp(-bleach * t))
        frame = rng.poisson(signal + _BACKGROUND) + rng.normal(0, read_noise, shape)
        image[t] = np.clip(np.round(frame), 0, 65535)

    truth = pd.DataFrame(rows, columns=["frame", "label", "phenotype"]).astype(
        {"frame": np.int64, "label": np.int64})
    truth = truth.sort_values(["frame", "label"], ignore_index=True)
    return SyntheticMovie(image=image, labels=labels, truth=truth)


MOVIE_FILES = ("image.tif", "labels.tif", "truth.csv")
MOVIE_RUN_FILE = "simulation.json"


def write_movie(movie: SyntheticMovie, out_dir, *, overwrite: bool = True) -> dict[str, Path]:
    """Write ``image.tif``, ``labels.tif`` ((T, Y, X) stacks) and ``truth.csv`` to ``out_dir``, together.

    The files are written into a staging folder inside ``out_dir`` and moved into place together
    (:class:`~napari_yeast_phenotypes.core.results.folder.ResultFolder`), ``simulation.json`` (their sizes and
    hashes) last: a kill leaves the earlier movie or the new one, never half a TIFF nor a mix.

    Parameters
    ----------
    movie : SyntheticMovie
    out_dir : str or Path
        Created if missing.
    overwrite : bool
        Replace a movie already there (default); ``False`` refuses it.

    Returns
    -------
    dict
        ``{"image": Path, "labels": Path, "truth": Path}``.
    """
    import tifffile

    from ... import __version__
    from ..files.tables import write_csv
    from ..results.folder import ResultFolder

    out = Path(out_dir)
    with ResultFolder(out, overwrite, what="simulate", files=MOVIE_FILES, run_file=MOVIE_RUN_FILE) as folder:
        for name, arr in (("image.tif", movie.image), ("labels.tif", movie.labels)):
            tifffile.imwrite(folder.staging / name, arr, photometric="minisblack", metadata={"axes": "TYX"})
        write_csv(movie.truth, folder.staging / "truth.csv", float_format=None)
        folder.commit({"package": "napari-yeast-phenotypes", "version": __version__, "job": "simulate",
                       "shape": [int(s) for s in movie.image.shape], "cells": int(movie.truth["label"].nunique())})
    return {"image": out / "image.tif", "labels": out / "labels.tif", "truth": out / "truth.csv"}


def render_cell_examples(n_per_class: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render single, centred cells of every class with the movie's rendering and imaging code.

    Parameters
    ----------
    n_per_class : int
        Examples per class (>= 1).
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    patches : np.ndarray
        (n_per_class * 8, 48, 48) float32, in counts (background ~100, blur and noise applied,
        no bleaching); ordered class by class in canonical order. Senescent cells are shown fully
        swollen.
    classes : np.ndarray
        (n_per_class * 8,) int class indices.
    """
    if int(n_per_class) != n_per_class or n_per_class < 1:
        raise ValueError(f"n_per_class must be an integer >= 1, got {n_per_class!r}")
    rng = np.random.default_rng(seed)
    patches, classes = [], []
    for cls in range(N_CLASSES):
        onehot = np.eye(N_CLASSES)[cls]
        for _ in range(int(n_per_class)):
            # a 1-frame life; Senescent starts at birth and is shown after its swelling ramp
            cell = _new_cell(0, _SEN_RAMP, onehot, 0.0, 0.0, 0.0, rng)
            cell.y = cell.x = (_PATCH - 1) / 2 + rng.uniform(-0.5, 0.5)
            _add_episodes(cell, rng)
            top, left, sig, _ = _render_cell(cell, _SEN_RAMP - 1, _SEN_RAMP, rng)
            canvas = np.zeros((_PATCH, _PATCH))
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + sig.shape[0], _PATCH), min(left + sig.shape[1], _PATCH)
            canvas[y0:y1, x0:x1] = sig[y0 - top : y1 - top, x0 - left : x1 - left]
            lam = ndi.gaussian_filter(canvas, _PSF_SIGMA) * _COUNTS_PER_UNIT + _BACKGROUND
            patches.append(rng.poisson(lam) + rng.normal(0, 4.0, lam.shape))
            classes.append(cls)
    return np.asarray(patches, np.float32), np.asarray(classes, int)
