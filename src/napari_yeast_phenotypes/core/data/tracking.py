"""The cell table: one row per (frame, label), built in single passes over each frame.

Track ids are the label ids when the labels are already tracked; otherwise cells are relinked
frame to frame by mask overlap (optimal assignment on IoU), with a centroid-distance fallback for
cells that moved more than their overlap allows.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from ..errors import InputError
from ..results.schema import CELL_TABLE_COLUMNS
from .movies import check_label_values

# ids up to this many times the pixel count are counted with arrays indexed by id (fast); larger
# ids (e.g. 2**31 from a tool that numbers cells by hashing) are first made consecutive, so memory
# follows the number of pixels and cells, never the values of the ids
_DENSE_IDS_PER_PIXEL = 1


def measure_frame(labels: np.ndarray, frame: int = 0) -> pd.DataFrame:
    """Measure every cell of one 2D label frame in one pass.

    Returns a table with ``frame, label, y, x, area, bbox_*`` (bbox end exclusive); ``track_id``
    is filled later by :class:`Tracker`. Memory and time follow the frame's size and number of
    cells, whatever the values of the ids.
    """
    labels = np.asarray(labels)
    check_label_values(labels, frame)
    flat = labels.ravel()
    if flat.size == 0 or not flat.any():
        return _empty_table()
    top = int(flat.max())
    if top > np.iinfo(np.int64).max:
        raise InputError(
            f"frame {frame} of the labels holds the id {top}, too large for a 64-bit signed integer; "
            "renumber the labels (e.g. skimage.segmentation.relabel_sequential)"
        )
    if top <= _DENSE_IDS_PER_PIXEL * flat.size + 65536:
        values = None
        compact = flat if flat.dtype.kind == "i" or flat.dtype.itemsize < 8 else flat.astype(np.int64)
    else:
        uniq, inv = np.unique(flat, return_inverse=True)
        inv = inv.ravel()
        if uniq[0] != 0:  # no background pixel: 0 must stay background
            uniq, inv = np.concatenate([[0], uniq]), inv + 1
        values, compact = uniq.astype(np.int64), inv.astype(np.int64)
    counts = np.bincount(compact)
    idx = np.flatnonzero(counts)
    idx = idx[idx > 0]
    ny, nx = labels.shape
    rows = np.bincount(compact, weights=np.repeat(np.arange(ny, dtype=np.float64), nx), minlength=counts.size)
    cols = np.bincount(compact, weights=np.tile(np.arange(nx, dtype=np.float64), ny), minlength=counts.size)
    lab2d = labels if values is None and compact is flat else compact.reshape(labels.shape)
    slices = ndimage.find_objects(lab2d)
    bbox = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in (slices[i - 1] for i in idx)])
    area = counts[idx]
    ids = idx if values is None else values[idx]
    return pd.DataFrame(
        {
            "frame": np.full(ids.size, frame, dtype=np.int64),
            "label": ids.astype(np.int64),
            "track_id": ids.astype(np.int64),
            "y": rows[idx] / area,
            "x": cols[idx] / area,
            "area": area.astype(np.int64),
            "bbox_y0": bbox[:, 0],
            "bbox_x0": bbox[:, 1],
            "bbox_y1": bbox[:, 2],
            "bbox_x1": bbox[:, 3],
        }
    )


# A cell is a blob: it covers most of its bounding box (an ellipse pi/4 of it, a bent or budding
# cell still over a third). An intensity image read as labels gives every grey level an "id"
# whose pixels are scattered over the frame, covering a tiny part of a box as large as the frame.
# The median over ids is robust to a few odd masks, and it costs nothing: measure_frame has the
# areas and boxes already. Few ids (under MIN_IDS_TO_JUDGE) are not judged.
MIN_IDS_TO_JUDGE = 20
MIN_MEDIAN_FILL = 0.1


def check_looks_like_labels(table: pd.DataFrame, frame: int) -> None:
    """Refuse a labels frame whose ids are scattered pixels, not blobs (an image given as labels).

    ``table`` is :func:`measure_frame`'s table of the frame.
    """
    if len(table) < MIN_IDS_TO_JUDGE:
        return
    box = ((table["bbox_y1"] - table["bbox_y0"]) * (table["bbox_x1"] - table["bbox_x0"])).to_numpy(float)
    fill = float(np.median(table["area"].to_numpy(float) / box))
    if fill < MIN_MEDIAN_FILL:
        raise InputError(
            f"the labels do not look like a segmentation: in frame {frame}, their {len(table)} ids are scattered "
            f"pixels, not cells (a typical id fills {100 * fill:.2g}% of its bounding box; a cell fills most of it). "
            "Was an image given as the labels? Give the instance labels (0 = background, one id per cell) "
            "from your segmentation tool, and the fluorescence image as the image"
        )


def check_ids_are_cells(labels: np.ndarray, table: pd.DataFrame, frame: int) -> None:
    """Refuse a labels frame in which ids span many separate objects (a mask or class map, not instances).

    A segmentation gives each cell its own id, so the separate objects of the foreground are at
    most as many as the ids (touching cells make fewer). Far more objects than ids means that one id
    names many cells: a binary mask or a semantic (class) map given as labels.
    """
    n_ids = len(table)
    if n_ids == 0:
        return
    _, n_objects = ndimage.label(np.asarray(labels) > 0)
    if n_objects >= 10 and n_objects > 2 * n_ids + 5:
        raise InputError(
            f"the labels look like a mask, not instance labels: in frame {frame}, {n_ids} id(s) cover "
            f"{n_objects} separate objects. Every cell needs its own id; label the mask first, e.g. "
            "scipy.ndimage.label(mask > 0) frame by frame, or export instance labels from your segmentation tool"
        )


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=np.float64 if c in ("y", "x") else np.int64) for c in CELL_TABLE_COLUMNS})


def overlap_matrix(prev: np.ndarray, cur: np.ndarray, prev_ids: np.ndarray, cur_ids: np.ndarray) -> np.ndarray:
    """Pixel overlap counts between every previous and current cell, in one pass."""
    both = (prev > 0) & (cur > 0)
    p = prev[both].astype(np.int64)
    c = cur[both].astype(np.int64)
    out = np.zeros((prev_ids.size, cur_ids.size), dtype=np.int64)
    if p.size == 0:
        return out
    pi = np.searchsorted(prev_ids, p)
    ci = np.searchsorted(cur_ids, c)
    np.add.at(out, (pi, ci), 1)
    return out


def link_frames(
    prev_table: pd.DataFrame,
    cur_table: pd.DataFrame,
    prev: np.ndarray,
    cur: np.ndarray,
    *,
    min_iou: float = 0.2,
    max_distance: float | None = None,
) -> np.ndarray:
    """For each current cell, the index of its predecessor in ``prev_table`` or -1.

    Matching is an optimal assignment on IoU (pairs below ``min_iou`` are not linked); cells left
    unmatched are then paired by centroid distance up to ``max_distance`` (default: the typical
    cell diameter), which catches cells that drifted off their old mask.
    """
    match = np.full(len(cur_table), -1, dtype=np.int64)
    if len(prev_table) == 0 or len(cur_table) == 0:
        return match
    prev_ids = prev_table["label"].to_numpy()
    cur_ids = cur_table["label"].to_numpy()
    inter = overlap_matrix(prev, cur, prev_ids, cur_ids)
    union = prev_table["area"].to_numpy()[:, None] + cur_table["area"].to_numpy()[None, :] - inter
    iou = inter / np.maximum(union, 1)
    r, c = linear_sum_assignment(-iou)
    ok = iou[r, c] >= min_iou
    match[c[ok]] = r[ok]

    free_cur = np.flatnonzero(match < 0)
    free_prev = np.setdiff1d(np.arange(len(prev_table)), match[match >= 0])
    if free_cur.size and free_prev.size:
        if max_distance is None:
            max_distance = float(np.sqrt(np.median(cur_table["area"].to_numpy()) * 4 / np.pi))
        py = prev_table[["y", "x"]].to_numpy()[free_prev]
        cy = cur_table[["y", "x"]].to_numpy()[free_cur]
        dist = np.linalg.norm(py[:, None, :] - cy[None, :, :], axis=-1)
        r, c = linear_sum_assignment(dist)
        ok = dist[r, c] <= max_distance
        match[free_cur[c[ok]]] = free_prev[r[ok]]
    return match


class Tracker:
    """Frame-by-frame cell table builder that keeps only the previous frame in memory.

    Parameters
    ----------
    relink
        ``False``: labels are already tracked, track id = label id. ``True``: relink every frame
        by overlap. Decide with :func:`labels_look_tracked` when unsure.
    """

    def __init__(self, relink: bool = False, min_iou: float = 0.2):
        self.relink = relink
        self.min_iou = min_iou
        self._prev_labels: np.ndarray | None = None
        self._prev_table: pd.DataFrame | None = None
        self._prev_tracks = np.empty(0, np.int64)
        self._next_id = 1

    def update(self, labels: np.ndarray, frame: int) -> pd.DataFrame:
        """Measure ``labels`` (one 2D frame) and give every cell its track id."""
        labels = np.asarray(labels)
        table = measure_frame(labels, frame)
        return self.assign(table, self.match(table, labels), labels)

    def match(self, table: pd.DataFrame, labels: np.ndarray) -> np.ndarray | None:
        """For each cell of ``table`` (the frame after the last one given), its predecessor's row in that frame
        or -1 (:func:`link_frames`); ``None`` when nothing is relinked."""
        if not self.relink or not len(table):
            return None
        if self._prev_table is not None and len(self._prev_table):
            return link_frames(self._prev_table, table, self._prev_labels, labels, min_iou=self.min_iou)
        return np.full(len(table), -1)

    def follow(self, table: pd.DataFrame, labels: np.ndarray) -> None:
        """Take this frame (its table and labels) as the one the next frame is matched with, giving no track ids
        (a worker that matches frames apart from the track ids, :mod:`.chunks`)."""
        self._prev_labels, self._prev_table = labels, table

    def assign(self, table: pd.DataFrame, match: np.ndarray | None, labels: np.ndarray | None = None
               ) -> pd.DataFrame:
        """Give the cells of ``table`` their track ids from ``match`` (:meth:`match`, computed here or by a worker
        that had the previous frame) and remember the frame; new tracks are numbered in order of appearance."""
        if self.relink and len(table):
            prev_tracks = self._prev_tracks
            track = np.where(match >= 0, prev_tracks[np.maximum(match, 0)] if prev_tracks.size else -1, -1)
            n_new = int((track < 0).sum())
            track[track < 0] = np.arange(self._next_id, self._next_id + n_new)
            table["track_id"] = track.astype(np.int64)
            self._next_id += n_new
        if self.relink:
            self._prev_labels, self._prev_table = labels, table
            self._prev_tracks = table["track_id"].to_numpy()
        return table


def labels_look_tracked(labels, n_pairs: int = 5, min_agreement: float = 0.9) -> bool:
    """Whether label ids already follow cells over time.

    Looks at up to ``n_pairs`` consecutive frame pairs spread over the movie: for each cell, the
    cell that overlaps it most in the next frame should carry the same id.
    """
    n = labels.shape[0]
    if n < 2:
        return True
    starts = np.unique(np.linspace(0, n - 2, num=min(n_pairs, n - 1)).astype(int))
    agree = total = 0
    for t in starts:
        a, b = np.asarray(labels[t]), np.asarray(labels[t + 1])
        ta, tb = measure_frame(a, t), measure_frame(b, t + 1)
        # before matching: an image given as labels has thousands of "cells" to match
        check_looks_like_labels(ta, t)
        check_looks_like_labels(tb, t + 1)
        if not len(ta) or not len(tb):
            continue
        match = link_frames(ta, tb, a, b, max_distance=0)
        ok = match >= 0
        agree += int((ta["label"].to_numpy()[match[ok]] == tb["label"].to_numpy()[ok]).sum())
        total += int(ok.sum())
    return total == 0 or agree / total >= min_agreement


def build_cell_table(labels, relink: bool | str = "auto", frames: Iterable[int] | None = None) -> pd.DataFrame:
    """The cell table of a whole (T, Y, X) label stack.

    Parameters
    ----------
    labels
        (T, Y, X) integer labels (numpy, dask or memory-mapped); a 2D array is one frame.
    relink
        ``"auto"`` relinks only when the ids do not look tracked (:func:`labels_look_tracked`).
    """
    if labels.ndim == 2:
        labels = labels[None]
    if relink == "auto":
        relink = not labels_look_tracked(labels)
    tracker = Tracker(relink=bool(relink))
    frames = range(labels.shape[0]) if frames is None else frames
    tables = [tracker.update(np.asarray(labels[t]), t) for t in frames]
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else _empty_table()
