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


#: pixels of a labels frame measured at a time (bands of whole rows): the temporaries of
#: :func:`measure_frame` (row and column weights, counts, the boxes) follow this, not the frame, so a
#: 20,000 x 20,000 frame costs about as much beside itself as a 2,048 x 2,048 one
BAND_PIXELS = 1 << 22


def measure_frame(labels: np.ndarray, frame: int = 0, band_pixels: int = BAND_PIXELS) -> pd.DataFrame:
    """Measure every cell of one 2D label frame in one pass.

    Returns a table with ``frame, label, y, x, area, bbox_*`` (bbox end exclusive); ``track_id``
    is filled later by :class:`Tracker`. Time follows the frame's size and number of cells, and
    memory beside the frame its number of cells, whatever the values of the ids: the frame is
    measured in bands of ``band_pixels`` pixels whose sums and boxes are merged (exact sums of whole
    numbers, so the table is the same as measured at once).
    """
    labels = np.asarray(labels)
    check_label_values(labels, frame)
    if labels.size == 0 or not labels.any():
        return _empty_table()
    top = int(labels.max())
    if top > np.iinfo(np.int64).max:
        raise InputError(
            f"frame {frame} of the labels holds the id {top}, too large for a 64-bit signed integer; "
            "renumber the labels (e.g. skimage.segmentation.relabel_sequential)"
        )
    ny, nx = labels.shape
    step = max(1, int(band_pixels) // max(nx, 1))
    parts = [p for y0 in range(0, ny, step) if (p := _measure_band(labels[y0:y0 + step], y0)) is not None]
    ids, area, sy, sx, bbox = parts[0] if len(parts) == 1 else _merge_bands(parts)
    return pd.DataFrame(
        {
            "frame": np.full(ids.size, frame, dtype=np.int64),
            "label": ids,
            "track_id": ids.copy(),
            "y": sy / area,
            "x": sx / area,
            "area": area,
            "bbox_y0": bbox[:, 0],
            "bbox_x0": bbox[:, 1],
            "bbox_y1": bbox[:, 2],
            "bbox_x1": bbox[:, 3],
        }
    )


def _measure_band(band: np.ndarray, y0: int):
    """Ids, areas, sums of row and column indices, and boxes (frame coordinates) of the cells of a band of
    rows starting at row ``y0``; ``None`` for a band without cells."""
    flat = band.ravel()
    if not flat.any():
        return None
    top = int(flat.max())
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
    bh, nx = band.shape
    rows = np.bincount(compact, weights=np.repeat(np.arange(bh, dtype=np.float64), nx), minlength=counts.size)
    cols = np.bincount(compact, weights=np.tile(np.arange(nx, dtype=np.float64), bh), minlength=counts.size)
    lab2d = band if values is None and compact is flat else compact.reshape(band.shape)
    slices = ndimage.find_objects(lab2d)
    bbox = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in (slices[i - 1] for i in idx)],
                    dtype=np.int64).reshape(-1, 4)
    area = counts[idx].astype(np.int64)
    ids = (idx if values is None else values[idx]).astype(np.int64)
    bbox[:, 0] += y0
    bbox[:, 2] += y0
    return ids, area, rows[idx] + y0 * area, cols[idx], bbox


def _merge_bands(parts):
    """One cell's measures from each band it crosses, merged: areas and sums add, boxes widen."""
    ids = np.concatenate([p[0] for p in parts])
    uniq, inv = np.unique(ids, return_inverse=True)
    area = np.bincount(inv, weights=np.concatenate([p[1] for p in parts])).astype(np.int64)
    sy = np.bincount(inv, weights=np.concatenate([p[2] for p in parts]))
    sx = np.bincount(inv, weights=np.concatenate([p[3] for p in parts]))
    boxes = np.concatenate([p[4] for p in parts])
    bbox = np.empty((uniq.size, 4), dtype=np.int64)
    bbox[:, :2] = np.iinfo(np.int64).max
    bbox[:, 2:] = np.iinfo(np.int64).min
    np.minimum.at(bbox[:, 0], inv, boxes[:, 0])
    np.minimum.at(bbox[:, 1], inv, boxes[:, 1])
    np.maximum.at(bbox[:, 2], inv, boxes[:, 2])
    np.maximum.at(bbox[:, 3], inv, boxes[:, 3])
    return uniq.astype(np.int64), area, sy, sx, bbox


# A cell is a blob: it covers most of its bounding box (an ellipse pi/4 of it, a bent or budding
# cell still over a third). An intensity image read as labels gives every grey level an "id"
# whose pixels are scattered over the frame, covering a tiny part of a box as large as the frame.
# The median over ids is robust to a few odd masks, and it costs nothing: measure_frame has the
# areas and boxes already. Few ids (under MIN_IDS_TO_JUDGE) are not judged.
MIN_IDS_TO_JUDGE = 20
MIN_MEDIAN_FILL = 0.1
# A cell covers many pixels (a yeast cell, tens to hundreds even in a binned movie); ids whose median
# area is a pixel or two are not cells but pixels numbered one by one (an image of distinct values,
# or a label image that was, e.g., rank-transformed), whose fill ratio (1) looks like blobs'.
MIN_MEDIAN_AREA = 3


def check_looks_like_labels(table: pd.DataFrame, frame: int) -> None:
    """Refuse a labels frame whose ids are scattered pixels, not blobs (an image given as labels).

    ``table`` is :func:`measure_frame`'s table of the frame.
    """
    if len(table) < MIN_IDS_TO_JUDGE:
        return
    area = float(np.median(table["area"].to_numpy(float)))
    if area < MIN_MEDIAN_AREA:
        raise InputError(
            f"the labels do not look like a segmentation: in frame {frame}, their {len(table)} ids are single pixels "
            f"(a typical id covers {area:g} pixel(s); a cell covers tens to hundreds), one id per pixel. Was an image "
            "given as the labels, or were the labels renumbered pixel by pixel? Give the instance labels "
            "(0 = background, one id per cell) from your segmentation tool"
        )
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
    labels = np.asarray(labels)
    if labels.size > 4 * BAND_PIXELS:
        # a huge frame is judged on its first tile with enough objects (connected components of the
        # whole frame would take an int32 image of its size): memory follows the tile
        side = int(np.sqrt(BAND_PIXELS))
        for y0 in range(0, labels.shape[0], side):
            for x0 in range(0, labels.shape[1], side):
                tile = labels[y0:y0 + side, x0:x0 + side]
                _, n_objects = ndimage.label(tile > 0)
                if n_objects >= 10:
                    n_ids = int(np.unique(tile[tile > 0]).size)
                    break
            else:
                continue
            break
        else:
            return
    else:
        _, n_objects = ndimage.label(labels > 0)
    if n_objects >= 10 and n_objects > 2 * n_ids + 5:
        raise InputError(
            f"the labels look like a mask, not instance labels: in frame {frame}, {n_ids} id(s) cover "
            f"{n_objects} separate objects. Every cell needs its own id; label the mask first, e.g. "
            "scipy.ndimage.label(mask > 0) frame by frame, or export instance labels from your segmentation tool"
        )


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=np.float64 if c in ("y", "x") else np.int64) for c in CELL_TABLE_COLUMNS})


#: previous x current cell pairs up to which the overlaps are a dense matrix and one assignment
#: solves the linking (4 M pairs: 32 MB of int64); beyond, only the pairs that overlap are kept and
#: each group of cells that overlap one another is assigned on its own
DENSE_PAIRS = 1 << 22


def overlap_pairs(prev: np.ndarray, cur: np.ndarray, prev_ids: np.ndarray, cur_ids: np.ndarray,
                  band_pixels: int = BAND_PIXELS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, pixels)``: the previous cell ``i`` and current cell ``j`` that overlap, and by how many
    pixels (positions in the sorted ``prev_ids``, ``cur_ids``), read in bands of rows."""
    n_c = max(cur_ids.size, 1)
    dense = prev_ids.size * cur_ids.size <= DENSE_PAIRS
    total = np.zeros(prev_ids.size * cur_ids.size, dtype=np.int64) if dense else None
    keys, counts = [], []
    step = max(1, int(band_pixels) // max(prev.shape[1], 1))
    for y0 in range(0, prev.shape[0], step):
        p_band, c_band = prev[y0:y0 + step], cur[y0:y0 + step]
        both = (p_band > 0) & (c_band > 0)
        if not both.any():
            continue
        key = np.searchsorted(prev_ids, p_band[both]) * n_c + np.searchsorted(cur_ids, c_band[both])
        if dense:
            total += np.bincount(key, minlength=total.size)
        else:
            k, c = np.unique(key, return_counts=True)
            keys.append(k)
            counts.append(c)
    if dense:
        key = np.flatnonzero(total)
        pixels = total[key]
    elif keys:
        key, inv = np.unique(np.concatenate(keys), return_inverse=True)
        pixels = np.bincount(inv, weights=np.concatenate(counts)).astype(np.int64)
    else:
        key = pixels = np.zeros(0, dtype=np.int64)
    return key // n_c, key % n_c, pixels


def overlap_matrix(prev: np.ndarray, cur: np.ndarray, prev_ids: np.ndarray, cur_ids: np.ndarray) -> np.ndarray:
    """Pixel overlap counts between every previous and current cell (dense: for few cells)."""
    out = np.zeros((prev_ids.size, cur_ids.size), dtype=np.int64)
    i, j, pixels = overlap_pairs(prev, cur, prev_ids, cur_ids)
    out[i, j] = pixels
    return out


def _assign_sparse(rows: np.ndarray, cols: np.ndarray, cost: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one assignment (least total ``cost``) over the given pairs only, solved for each
    group of rows and columns the pairs connect: memory and time follow the pairs, not rows x columns."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if rows.size == 0:
        return rows, cols
    n_cols = int(cols.max()) + 1
    graph = coo_matrix((np.ones(rows.size), (rows, cols + n_rows)), shape=(n_rows + n_cols,) * 2)
    _, comp = connected_components(graph, directed=False)
    group = comp[rows]
    size = np.bincount(group)
    single = size[group] == 1  # most cells overlap only their own successor: no choice to make
    out_r, out_c = [rows[single]], [cols[single]]
    rest = np.flatnonzero(~single)
    rest = rest[np.argsort(group[rest], kind="stable")]
    for edges in np.split(rest, np.flatnonzero(np.diff(group[rest])) + 1) if rest.size else []:
        r_u, r_i = np.unique(rows[edges], return_inverse=True)
        c_u, c_i = np.unique(cols[edges], return_inverse=True)
        m = np.full((r_u.size, c_u.size), np.inf)
        m[r_i, c_i] = cost[edges]
        big = np.abs(cost[edges]).max() * (edges.size + 1) + 1.0  # pairs that are not given are never taken
        rr, cc = linear_sum_assignment(np.where(np.isfinite(m), m, big))
        ok = np.isfinite(m[rr, cc])
        out_r.append(r_u[rr[ok]])
        out_c.append(c_u[cc[ok]])
    return np.concatenate(out_r), np.concatenate(out_c)


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
    cell diameter), which catches cells that drifted off their old mask. With more than
    :data:`DENSE_PAIRS` pairs of cells (tens of thousands of cells a frame), only the pairs that
    overlap (or lie within ``max_distance``) are kept and assigned group by group, so memory
    follows the cells, not their square.
    """
    match = np.full(len(cur_table), -1, dtype=np.int64)
    if len(prev_table) == 0 or len(cur_table) == 0:
        return match
    prev_ids = prev_table["label"].to_numpy()
    cur_ids = cur_table["label"].to_numpy()
    prev_area, cur_area = prev_table["area"].to_numpy(), cur_table["area"].to_numpy()
    pi, ci, inter = overlap_pairs(prev, cur, prev_ids, cur_ids)
    iou_pairs = inter / np.maximum(prev_area[pi] + cur_area[ci] - inter, 1)
    if prev_ids.size * cur_ids.size <= DENSE_PAIRS:
        iou = np.zeros((prev_ids.size, cur_ids.size))
        iou[pi, ci] = iou_pairs
        r, c = linear_sum_assignment(-iou)
        ok = iou[r, c] >= min_iou
        match[c[ok]] = r[ok]
    else:
        keep = iou_pairs >= min_iou
        r, c = _assign_sparse(pi[keep], ci[keep], -iou_pairs[keep], prev_ids.size)
        match[c] = r

    free_cur = np.flatnonzero(match < 0)
    free_prev = np.setdiff1d(np.arange(len(prev_table)), match[match >= 0])
    if free_cur.size and free_prev.size:
        if max_distance is None:
            max_distance = float(np.sqrt(np.median(cur_table["area"].to_numpy()) * 4 / np.pi))
        py = prev_table[["y", "x"]].to_numpy()[free_prev]
        cy = cur_table[["y", "x"]].to_numpy()[free_cur]
        if free_prev.size * free_cur.size <= DENSE_PAIRS:
            dist = np.linalg.norm(py[:, None, :] - cy[None, :, :], axis=-1)
            r, c = linear_sum_assignment(dist)
            ok = dist[r, c] <= max_distance
            match[free_cur[c[ok]]] = free_prev[r[ok]]
        else:
            from scipy.spatial import cKDTree

            pairs = cKDTree(py).sparse_distance_matrix(cKDTree(cy), max_distance, output_type="ndarray")
            r, c = _assign_sparse(pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"],
                                  free_prev.size)
            match[free_cur[c]] = free_prev[r]
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
