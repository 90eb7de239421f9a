"""A classification result as napari layer data: pure functions, testable without a viewer.

Hovering a cell must show its own track, phenotype and confidence, but napari looks up a Labels
layer's ``features`` by label value alone, and one label id has a different phenotype in every
frame. So the "phenotypes" layer does not repeat the label ids: every cell-frame gets its own
value, and the layer's ``features`` has one row per cell-frame (``index`` = that value), which is
napari's supported features/status-bar path, with no event handlers.

The value encodes the class too: ``n_classes * row + class + 1``, and the layer's colormap is a
:class:`~napari.utils.colormaps.CyclicLabelColormap` of the class colours, which maps a value v
to ``colors[(v - 1) % n_classes + 1]`` (colours cycle, documented), i.e. to the colour of its
class. A :class:`~napari.utils.colormaps.DirectLabelColormap` with one entry per cell-frame would
do the same for small movies, but napari cannot draw direct colormaps with values above 2**16
without numba, and a real movie has far more cell-frames than that.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd

from ..phenotypes import OVERLAY_OPACITY, class_colours

RESULT_KEY = "yeast_phenotypes"  # layer.metadata[RESULT_KEY] -> the core's Result
RUN_KEY = "yeast_phenotypes_run"  # layer.metadata[RUN_KEY] -> how it was made (run.json's content)
PHENOTYPES_LAYER = "phenotypes"
TRACKS_LAYER = "phenotype tracks"
SENESCENCE_LAYER = "senescence"
LAYER_NAMES = (PHENOTYPES_LAYER, TRACKS_LAYER, SENESCENCE_LAYER)
TEXT_COLUMN = "text"  # the senescence layer's feature shown as text: empty but for hovered/selected tracks
MOVIE_AXES = ("t", "y", "x")

# columns shown in the status bar when hovering a painted cell (the full table is in metadata)
STATUS_COLUMNS = ["track_id", "phenotype", "confidence", "phenotype_raw", "frame", "label"]
#: shown beside the confidence, only where the cell's ood_score is above 1 (napari skips NaN values)
UNLIKE_COLUMN = "unlike training data"
TRANSPARENT = (0.0, 0.0, 0.0, 0.0)
_LUT_LIMIT = 1 << 24  # label ids above this are mapped by search, not by a lookup table


def class_index(cells: pd.DataFrame, class_names) -> np.ndarray:
    """Index of each cell's (smoothed) phenotype in ``class_names``."""
    codes = pd.Categorical(cells["phenotype"], categories=list(class_names)).codes
    return np.asarray(codes, dtype=np.int64)


def cell_ids(cells: pd.DataFrame, class_names) -> np.ndarray:
    """The painted value of each cell-frame: ``n_classes * row + class + 1`` (0 = background)."""
    n = len(class_names)
    return n * np.arange(len(cells), dtype=np.int64) + np.maximum(class_index(cells, class_names), 0) + 1


def _id_dtype(top: int) -> np.dtype:
    for dt in (np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def _paint_frame(lab: np.ndarray, keys: np.ndarray, vals: np.ndarray, dtype) -> np.ndarray:
    """One label frame with each label id in ``keys`` replaced by its value in ``vals`` (others 0).

    A lookup table when the ids are small; a search over the (sorted) ids when they are not, so
    memory follows the number of cells, never the size of their ids.
    """
    if keys.size == 0:
        return np.zeros(lab.shape, dtype=dtype)
    top = int(keys.max())
    if top < _LUT_LIMIT and int(lab.max(initial=0)) < _LUT_LIMIT:
        lut = np.zeros(max(top, int(lab.max(initial=0))) + 1, dtype=dtype)
        lut[keys] = vals
        return lut[np.clip(lab, 0, None)]
    sort = np.argsort(keys)
    keys, vals = keys[sort], vals[sort]
    pos = np.clip(np.searchsorted(keys, lab), 0, keys.size - 1)
    return np.where(keys[pos] == lab, vals[pos], 0).astype(dtype, copy=False)


class PhenotypeFrames:
    """A (T, Y, X) array whose frames are painted only when napari asks for them.

    Frame t is the labels' frame t with each classified cell replaced by its value
    (:func:`cell_ids`), computed on demand and kept for the last few frames viewed: showing a
    1,000-frame movie costs a few frames of memory, not a second copy of the movie. The values of
    cell-frames can be changed (:meth:`set_values`, e.g. after a user labels a cell); only the
    frames they are in are painted again.

    It implements what napari needs of layer data (``shape``, ``dtype``, ``ndim``, indexing) and
    ``__array__`` for whoever wants all of it at once.
    """

    def __init__(self, labels, cells: pd.DataFrame, class_names, keep_frames: int = 4):
        self.labels = labels
        self.shape = tuple(int(s) for s in labels.shape)
        self.ndim = len(self.shape)
        self.values = cell_ids(cells, class_names)
        self.n_classes = len(class_names)
        # the largest value any cell-frame can take, whatever class it is given later
        self.dtype = _id_dtype(self.n_classes * len(cells))
        frames = cells["frame"].to_numpy()
        self._label_ids = cells["label"].to_numpy()
        self._order = np.argsort(frames, kind="stable")
        self._bounds = np.searchsorted(frames[self._order], np.arange(self.shape[0] + 1))
        self._frame_of_row = frames
        self._keep = max(1, int(keep_frames))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def rows_of_frame(self, t: int) -> np.ndarray:
        """Rows of the cell table in frame ``t``."""
        return self._order[self._bounds[t]:self._bounds[t + 1]]

    def frame(self, t: int) -> np.ndarray:
        """The painted frame ``t`` (cached for the last few frames asked for)."""
        t = int(t)
        if t < 0:
            t += self.shape[0]
        got = self._cache.get(t)
        if got is not None:
            self._cache.move_to_end(t)
            return got
        rows = self.rows_of_frame(t)
        got = _paint_frame(np.asarray(self.labels[t]), self._label_ids[rows], self.values[rows], self.dtype)
        got.setflags(write=False)
        self._cache[t] = got
        while len(self._cache) > self._keep:
            self._cache.popitem(last=False)
        return got

    def set_values(self, rows, values) -> None:
        """Give the cell-frames ``rows`` (of the cell table) new painted values; repaint their frames."""
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        self.values[rows] = values
        for t in set(self._frame_of_row[rows].tolist()):
            self._cache.pop(int(t), None)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(first, (int, np.integer)):
            return self.frame(int(first))[rest] if rest else self.frame(int(first))
        frames = np.arange(self.shape[0])[first]
        stack = np.stack([self.frame(t) for t in np.atleast_1d(frames)]) if np.size(frames) else \
            np.zeros((0, *self.shape[1:]), self.dtype)
        return stack[(slice(None), *rest)]

    def __array__(self, dtype=None, copy=None):
        out = np.stack([self.frame(t) for t in range(self.shape[0])]) if self.shape[0] else \
            np.zeros(self.shape, self.dtype)
        return out if dtype is None else out.astype(dtype)


def paint_cells(labels, cells: pd.DataFrame, class_names) -> np.ndarray:
    """(T, Y, X) image where each cell-frame of ``cells`` is painted with its value (see :func:`cell_ids`).

    ``labels`` is the (T, Y, X) label stack the table was measured on (numpy, dask or memory-map,
    read one frame at a time); pixels of labels absent from the table stay 0. The whole stack in
    memory: the viewer uses :class:`PhenotypeFrames`, which paints frames on demand.
    """
    return np.asarray(PhenotypeFrames(labels, cells, class_names, keep_frames=1))


def phenotype_colormap(class_names):
    """The class colours as a cyclic label colormap: value v gets the colour of class ``(v - 1) % n``."""
    from napari.utils.colormaps import CyclicLabelColormap

    colours = [TRANSPARENT] + [tuple(c) for c in class_colours(class_names)]
    return CyclicLabelColormap(colors=np.asarray(colours, dtype=np.float32), background_value=0,
                               name="phenotype classes")


def phenotype_features(cells: pd.DataFrame, class_names) -> pd.DataFrame:
    """One row per painted value: what the status bar shows when hovering a cell.

    With an ``ood_score`` column (a model that keeps a summary of its training data), the
    column ``unlike training data`` beside the confidence holds the score where it is above 1
    (empty elsewhere, so the status bar names it only for those cells: a confident call on such a
    cell cannot be trusted), and ``ood_score`` itself comes last.
    """
    from ..core.results.schema import OOD_COLUMN

    feats = cells[STATUS_COLUMNS].copy()
    feats.insert(0, "index", cell_ids(cells, class_names))
    feats["confidence"] = feats["confidence"].round(3)
    if OOD_COLUMN in cells:
        score = cells[OOD_COLUMN].to_numpy(dtype=np.float64)
        feats.insert(feats.columns.get_loc("confidence") + 1, UNLIKE_COLUMN,
                     np.where(score > 1, np.round(score, 1), np.nan))
        feats[OOD_COLUMN] = np.round(score, 2)
    for c in ("phenotype", "phenotype_raw"):
        feats[c] = feats[c].astype(object)
    return feats.reset_index(drop=True)


def phenotype_level(index: np.ndarray, n_classes: int) -> np.ndarray:
    """A class index as a value in (0, 1) that :func:`class_colormap` maps to the class colour."""
    return (np.asarray(index, dtype=np.float64) + 0.5) / n_classes


def class_colormap(class_names, name: str = "phenotype classes"):
    """A stepwise napari colormap: value ``phenotype_level(k)`` has the colour of class k."""
    from napari.utils.colormaps import Colormap

    n = len(class_names)
    return Colormap(colors=np.asarray(class_colours(class_names)), controls=np.linspace(0.0, 1.0, n + 1),
                    interpolation="zero", name=name)


def tracks_data(cells: pd.DataFrame, class_names) -> tuple[np.ndarray, pd.DataFrame]:
    """Tracks layer data ``(track_id, frame, y, x)`` sorted by track then frame, and its features.

    Features are the numeric columns of the cell table (napari offers every feature as a
    "color by" choice, and strings cannot be coloured), plus ``phenotype_index`` and
    ``phenotype_level`` (the value coloured by :func:`class_colormap`).
    """
    cells = cells.sort_values(["track_id", "frame"], kind="stable")
    data = cells[["track_id", "frame", "y", "x"]].to_numpy(dtype=np.float64)
    idx = class_index(cells, class_names)
    feats = cells.select_dtypes(include=["number", "bool"]).copy()
    feats["phenotype_index"] = idx
    feats["phenotype_level"] = phenotype_level(idx, len(class_names))
    return data, feats.reset_index(drop=True)


def senescence_events(cells: pd.DataFrame, tracks: pd.DataFrame) -> pd.DataFrame:
    """One row per track that becomes senescent while it is watched: the cell at its senescence frame.

    A track already senescent when first seen had no event in the movie: it gets no star (in a
    dense colony a star on every such cell covered the first frame). Columns: those of the cell
    table, plus ``previous_phenotype`` (the phenotype in the track's frame before).
    """
    sen = tracks.loc[tracks["senescence_frame"].notna() & (tracks["senescence_frame"] > tracks["first_frame"]),
                     ["track_id", "senescence_frame"]]
    sen = sen.astype({"senescence_frame": np.int64}).rename(columns={"senescence_frame": "frame"})
    cells = cells.sort_values(["track_id", "frame"], kind="stable")
    previous = cells.groupby("track_id")["phenotype"].shift(1).astype(object).fillna("")
    ev = cells.assign(previous_phenotype=previous).merge(sen, on=["track_id", "frame"], how="inner")
    return ev.sort_values(["frame", "track_id"]).reset_index(drop=True)


def senescence_text(track_ids, shown) -> np.ndarray:
    """The text of each senescence marker: ``"senescent #<track>"`` for the tracks in ``shown``, else empty.

    Labelling every marker at once covers a real movie's first frame with overlapping text (94 of
    them in a movie with 112 senescent tracks), so only the tracks a user points at are named.
    """
    track_ids = np.asarray(track_ids)
    named = np.char.add("senescent #", track_ids.astype(str))
    return np.where(np.isin(track_ids, np.asarray(list(shown), dtype=track_ids.dtype)), named, "").astype(object)


def movie_axis_labels(axis_labels, ndim: int) -> tuple[str, ...]:
    """``axis_labels``, or ``("t", "y", "x")`` (``("y", "x")`` for one frame) where napari's defaults stand.

    napari names unnamed axes by their negative index (``"-3"``), which a user reads as a value.
    """
    labels = tuple(str(a) for a in axis_labels) if axis_labels is not None else ()
    unnamed = all(a.lstrip("-").isdigit() for a in labels)
    if unnamed and ndim in (2, 3):
        return MOVIE_AXES[-ndim:]
    return labels


def result_layers(result, labels, *, scale=None, translate=None, axis_labels=None, source: str = "",
                  run: dict | None = None) -> list[tuple]:
    """The overlays of a :class:`~napari_yeast_phenotypes.core.pipeline.Result` as layer data tuples.

    Parameters
    ----------
    result
        The core's result (``cells``, ``tracks``, ``class_names``).
    labels
        The labels that were classified: (T, Y, X), or (Y, X) for one frame (then the overlays
        are 2D and there is no tracks layer). Read frame by frame to paint the phenotypes layer.
    scale, translate, axis_labels
        The labels layer's, so the overlays sit on it.

    Returns
    -------
    list of (data, kwargs, layer_type)
        "phenotypes" (labels), "phenotype tracks" (tracks, only for a movie), "senescence" (points).
    """
    cells, tracks, names = result.cells, result.tracks, tuple(result.class_names)
    one_frame = labels.ndim == 2
    common = {"metadata": {RESULT_KEY: result, RUN_KEY: run or {}, "source": source}}
    if scale is not None:
        common["scale"] = tuple(scale)
    if translate is not None:
        common["translate"] = tuple(translate)
    if axis_labels is not None:
        common["axis_labels"] = tuple(axis_labels)

    painted = PhenotypeFrames(labels[None] if one_frame else labels, cells, names)
    painted = painted.frame(0).copy() if one_frame else painted
    layers = [(painted, {**common, "name": PHENOTYPES_LAYER, "colormap": phenotype_colormap(names),
                         "features": phenotype_features(cells, names), "opacity": OVERLAY_OPACITY,
                         "blending": "translucent"},
               "labels")]

    if not one_frame and len(cells):
        data, feats = tracks_data(cells, names)
        # Yeast cells hardly move, so a track's recent path is a dot at the cell's centre that hides
        # its colour: the layer starts hidden and, when shown, draws the whole path up to now.
        n_frames = int(labels.shape[0])
        layers.append((data, {**common, "name": TRACKS_LAYER, "features": feats, "color_by": "phenotype_level",
                              "colormaps_dict": {"phenotype_level": class_colormap(names)},
                              "tail_length": max(1, min(n_frames, 300)), "head_length": 0, "tail_width": 2,
                              "blending": "translucent", "visible": False}, "tracks"))

    ev = senescence_events(cells, tracks)
    coords = ev[["y", "x"]] if one_frame else ev[["frame", "y", "x"]]
    feats = ev.drop(columns=[c for c in ev.columns if c.startswith("bbox_")])
    for c in feats.columns:
        if feats[c].dtype.kind not in "biuf":
            feats[c] = feats[c].astype(object)
    feats[TEXT_COLUMN] = senescence_text(feats["track_id"], ())
    layers.append((coords.to_numpy(dtype=np.float64).reshape(-1, 2 if one_frame else 3), {
        **common, "name": SENESCENCE_LAYER, "features": feats, "symbol": "star", "size": 9,
        "face_color": "white", "border_color": "black", "border_width": 0.1,
        "text": {"string": "{" + TEXT_COLUMN + "}", "color": "white", "size": 10, "anchor": "upper_left",
                 "translation": (-4, 4) if one_frame else (0, -4, 4)},
        "out_of_slice_display": False}, "points"))
    return layers


class SenescenceLabels:
    """Names the senescence marker of the track under the mouse and of the selected markers.

    Parameters
    ----------
    viewer
        The viewer whose mouse moves are followed.
    phenotypes, senescence
        The result's phenotypes (labels) and senescence (points) layers.
    """

    def __init__(self, viewer, phenotypes, senescence) -> None:
        self.viewer, self.phenotypes, self.senescence = viewer, phenotypes, senescence
        result = phenotypes.metadata[RESULT_KEY]
        self._n_classes = len(result.class_names)
        self._track_of_row = phenotypes.features["track_id"].to_numpy()
        self.hovered: int | None = None
        self.selected: set[int] = set()
        viewer.mouse_move_callbacks.append(self._on_mouse_move)
        senescence.selected_data.events.items_changed.connect(self._on_selection)

    def disconnect(self) -> None:
        """Stop following the viewer (the layers are being replaced)."""
        if self._on_mouse_move in self.viewer.mouse_move_callbacks:
            self.viewer.mouse_move_callbacks.remove(self._on_mouse_move)
        self.senescence.selected_data.events.items_changed.disconnect(self._on_selection)

    def track_at(self, position) -> int | None:
        """The track of the cell (or senescence marker) at a world ``position``, or ``None``."""
        if self.senescence.visible:
            point = self.senescence.get_value(position, world=True)
            if point is not None:
                return int(self.senescence.features["track_id"].iloc[int(point)])
        if not self.phenotypes.visible:
            return None
        value = self.phenotypes.get_value(position, world=True)
        if value is None or isinstance(value, tuple) or int(value) <= 0:
            return None
        row = (int(value) - 1) // self._n_classes
        return int(self._track_of_row[row]) if row < len(self._track_of_row) else None

    def hover(self, position) -> None:
        """Name the marker of the track at a world ``position`` (what a mouse move there does)."""
        track = self.track_at(position)
        if track != self.hovered:
            self.hovered = track
            self.refresh()

    def _on_mouse_move(self, viewer, event) -> None:
        self.hover(viewer.cursor.position)

    def _on_selection(self, event=None) -> None:
        rows = sorted(self.senescence.selected_data)
        self.selected = set(self.senescence.features["track_id"].iloc[rows].astype(int).tolist())
        self.refresh()

    def refresh(self) -> None:
        """Name the hovered and selected tracks' markers, no others."""
        shown = self.selected | ({self.hovered} if self.hovered is not None else set())
        feats = self.senescence.features
        text = senescence_text(feats["track_id"], shown)
        if not np.array_equal(text, feats[TEXT_COLUMN].to_numpy()):
            self.senescence.features = feats.assign(**{TEXT_COLUMN: text})  # the setter redraws the text
