"""Annotating a classified movie: a person's labels, the curated set and the track model, kept in step.

An :class:`AnnotationSession` is what the viewer's Annotate dock works through (and what a script
or a test can drive without a viewer). It holds one classified movie (its :class:`Result`, image
and labels, and how it was classified) and one :class:`~napari_yeast_phenotypes.core.data.curated.store.CuratedSet`:

- :meth:`~AnnotationSession.label` labels a cell-frame (or, with ``fill``, the frames of its track
  up to the next label a person gave; Senescent to the end of the track) with a class or a mark.
  The crop is made by the same function, settings and movie statistics as at inference and
  written into the curated set with its provenance; the track is smoothed again with the labels
  as fixed evidence, and the rows whose class or confidence changed are returned for repainting;
- :meth:`~AnnotationSession.clear`, :meth:`~AnnotationSession.undo`, :meth:`~AnnotationSession.redo`;
- :meth:`~AnnotationSession.next_to_check`: the "next cell to check" queue (:mod:`.review`);
- :meth:`~AnnotationSession.fit_track_model`, :meth:`~AnnotationSession.save_track_model`,
  :meth:`~AnnotationSession.set_timeline`: the track model fitted on this movie's labels, kept in
  the curated set's folder, and every track smoothed again with it.

Labels persist in the curated set only (there is no second store to get out of step): opening a
session on the same movie and set (by the movie's content, not its path) brings them back.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.crops import CropSettings, context_patch, extract_crops, movie_stats
from ..data.curated.manifest import MARKS, movie_identity, normalise_mark
from ..data.curated.store import CuratedSet
from ..errors import InputError
from ..results.schema import MovieStats, prob_columns
from .review import reason, review_queue
from .timeline import TimelineSettings, check_fixed, smooth_track_posterior, track_summary

CLEAR = ""
CROP_CACHE = 2048  # crops kept by AnnotationSession.crops (40 x 40 float32: 13 MB)
#: the track model fitted from the Annotate dock, in the curated set's folder
TRACK_MODEL_FILE = "track_model.json"


@dataclass
class Outcome:
    """What one action changed: rows to repaint, and what to tell the person."""

    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    message: str = ""
    labelled: int = 0


class AnnotationSession:
    """One classified movie annotated into one curated set (see the module docstring).

    Parameters
    ----------
    result
        The movie's :class:`~napari_yeast_phenotypes.core.results.schema.Result`; its ``cells`` table is
        updated in place (``phenotype``, ``confidence``, ``annotated``), row order kept.
    image, labels
        The movie, (T, Y, X), as classified (numpy, dask or memory maps).
    run
        How it was classified (``run.json``'s content): crop settings, movie statistics, model
        fingerprint, timeline settings. Missing parts are taken from the curated set or computed.
    curated
        The curated set to write into (its crop settings must be the model's).
    annotator, split, experiment, movie_path
        Provenance of every label; ``split`` is the split of tracks new to the set.
    """

    def __init__(self, result, image, labels, run: dict | None, curated: CuratedSet, *, annotator: str = "",
                 split: str = "train", experiment: str = "", movie_path: str = "", movie_id: str | None = None):
        from ..data.curated.manifest import normalise_split

        self.result, self.image, self.labels = result, image, labels
        self.cells = result.cells
        self.class_names = tuple(result.class_names)
        self.n_classes = len(self.class_names)
        self.curated = curated
        self.annotator, self.experiment, self.movie_path = annotator, experiment, movie_path
        self.split = normalise_split(split)
        run = dict(run or {})
        settings = run.get("crop_settings")
        self.crop_settings = CropSettings.from_dict(settings) if settings else curated.crop_settings
        if self.crop_settings != curated.crop_settings:
            raise InputError(
                f"the curated set in {curated.root} holds crops made with other settings ({curated.crop_settings}) "
                f"than this model's ({self.crop_settings}); choose another folder (or a new one) for this model's "
                "labels")
        missing = [c for c in self.class_names if c not in curated.class_names]
        if missing:
            raise InputError(f"the curated set in {curated.root} has no classes {missing}; choose a set made for "
                             "this model's classes")
        stats = run.get("movie_stats")
        self.stats = MovieStats.from_dict(stats) if stats else movie_stats(image, labels, self.crop_settings)
        self.model = str((run.get("model") or {}).get("fingerprint", ""))
        timeline = (run.get("config") or {}).get("timeline")
        self.timeline = TimelineSettings.from_dict(timeline) if timeline else TimelineSettings()
        self.sink = self.class_names.index("Senescent") if "Senescent" in self.class_names else None
        self._movie_id = movie_id
        self._probs = self.cells[prob_columns(self.class_names)].to_numpy(dtype=np.float64)
        self._frame = self.cells["frame"].to_numpy()
        self._label = self.cells["label"].to_numpy()
        self._track = self.cells["track_id"].to_numpy()
        order = np.lexsort((self._frame, self._track))
        bounds = np.flatnonzero(np.diff(self._track[order])) + 1
        self._track_rows = {int(self._track[g[0]]): g for g in np.split(order, bounds) if len(g)}
        self._crop_cache: OrderedDict[int, np.ndarray] = OrderedDict()  # row -> crop, see crops()
        self._row_of = {(int(f), int(lab)): i for i, (f, lab) in enumerate(zip(self._frame, self._label))}
        #: row -> the person's label: a class name or a mark
        self.user: dict[int, str] = {}
        self._queue: pd.DataFrame | None = None
        self._visited: list[int] = []
        if "annotated" not in self.cells:
            self.cells["annotated"] = False
        self.sync_from_set()

    # ------------------------------------------------------------------ identity and reading
    @property
    def movie_id(self) -> str:
        """The movie's content identity (hashed once, when first needed)."""
        if self._movie_id is None:
            self._movie_id = movie_identity(self.image, self.labels)
        return self._movie_id

    def row(self, frame: int, label: int) -> int | None:
        """Row of the cell ``label`` in ``frame``, or ``None``."""
        return self._row_of.get((int(frame), int(label)))

    def track_rows(self, row: int) -> np.ndarray:
        """Rows of ``row``'s track, in frame order."""
        return self._track_rows[int(self._track[row])]

    def crops(self, rows) -> np.ndarray:
        """(N, S, S) crops of ``rows``, exactly as the model saw them (same function, settings, statistics).

        Crops made once are kept (at most ``CROP_CACHE`` of them): the image, the masks, the cells'
        boxes and the settings do not change during a session, and the filmstrip asks for the same
        track's crops again after every label (two thirds of a key press's work before).
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), self.crop_settings.size, self.crop_settings.size), np.float32)
        cache = self._crop_cache
        todo = np.array([k for k, r in enumerate(rows.tolist()) if r not in cache], dtype=np.int64)
        for k, r in enumerate(rows.tolist()):
            if r in cache:
                out[k] = cache[r]
                cache.move_to_end(r)
        if todo.size:
            need = rows[todo]
            for t in np.unique(self._frame[need]):
                sel = todo[self._frame[need] == t]
                got = extract_crops(np.asarray(self.image[int(t)]), np.asarray(self.labels[int(t)]),
                                    self.cells.iloc[rows[sel]], self.crop_settings, self.stats)
                out[sel] = got[:, 0]
                for k in sel.tolist():
                    cache[int(rows[k])] = out[k].copy()
            while len(cache) > CROP_CACHE:
                cache.popitem(last=False)
        return out

    def context(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The cell-frame ``row`` in its raw surroundings, on the movie's one contrast, and its outline
        (:func:`~napari_yeast_phenotypes.core.data.crops.context_patch`)."""
        cell = self.cells.iloc[int(row)]
        t = int(cell["frame"])
        return context_patch(self.image[t], self.labels[t], float(cell["y"]), float(cell["x"]), int(cell["label"]),
                             self.stats)

    def probabilities(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The network's probabilities at ``row`` and the track model's (posterior, with the labels)."""
        rows = self.track_rows(row)
        _, post = smooth_track_posterior(self._probs[rows], self.sink, self.timeline, self._fixed(rows))
        return self._probs[row].copy(), post[int(np.flatnonzero(rows == row)[0])]

    def painted_values(self, rows) -> np.ndarray:
        """The phenotypes layer's value of ``rows``: ``n_classes * row + class + 1``."""
        rows = np.asarray(rows, dtype=np.int64)
        idx = pd.Categorical(self.cells["phenotype"].to_numpy()[rows], categories=list(self.class_names)).codes
        return self.n_classes * rows + np.maximum(idx, 0) + 1

    # ------------------------------------------------------------------ labels
    def _fixed(self, rows: np.ndarray, user: dict | None = None) -> np.ndarray:
        user = self.user if user is None else user
        out = np.full(len(rows), -1, dtype=np.int64)
        for i, r in enumerate(rows):
            v = user.get(int(r))
            if v in self.class_names:
                out[i] = self.class_names.index(v)
        return out

    def sync_from_set(self) -> list[str]:
        """Take the labels of this movie from the curated set (another session's too); re-smooth.

        Returns warnings (a track whose labels disagree with each other is smoothed without them).
        """
        self.curated.reload()
        mine = self.curated.labels_of_movie(self.movie_id)
        user = {}
        for f, lab, ph, mark in zip(mine["frame"], mine["label"], mine["phenotype"], mine["mark"]):
            r = self.row(f, lab)
            if r is not None:
                user[r] = mark or ph
        changed_tracks = {int(self._track[r]) for r in set(user) ^ set(self.user)}
        changed_tracks |= {int(self._track[r]) for r in set(user) & set(self.user) if user[r] != self.user[r]}
        self.user = user
        warnings = []
        for t in changed_tracks:
            try:
                self._resmooth(self._track_rows[t])
            except InputError as exc:
                warnings.append(str(exc))
                self._resmooth(self._track_rows[t], use_labels=False)
        self._queue = None
        return warnings

    def _targets(self, row: int, value: str, fill: bool) -> np.ndarray:
        """Rows a label of ``row`` applies to: the row, or with ``fill`` the frames up to the next label."""
        if not fill:
            return np.array([row], dtype=np.int64)
        rows = self.track_rows(row)
        at = int(np.flatnonzero(rows == row)[0])
        later = rows[at + 1:]
        if value == "Senescent":
            return rows[at:]
        labelled = [i for i, r in enumerate(later) if int(r) in self.user]
        return rows[at:at + 1 + (labelled[0] if labelled else len(later))]

    def label(self, row: int, value: str, fill: bool = False) -> Outcome:
        """Label ``row`` (and with ``fill`` the frames up to the next label) with a class or a mark.

        Parameters
        ----------
        value
            A class name or code, or a mark (``"unsure"``, ``"bad_segmentation"``).

        Raises
        ------
        InputError
            An unknown class, or a sequence no cell can live (a live class after Senescent).
        """
        value = self._value(value)
        targets = self._targets(int(row), value, fill)
        rows = self.track_rows(int(row))
        would = dict(self.user)
        for r in targets:
            would[int(r)] = value
        check_fixed(self._fixed(rows, would), self.sink, self.class_names, self._frame[rows], int(self._track[row]))
        todo = [int(r) for r in targets if self.user.get(int(r)) != value]
        if not todo:
            return Outcome(message="already labelled so")
        mark = value if value in MARKS else ""
        ann = pd.DataFrame({
            "frame": self._frame[todo], "label": self._label[todo], "track_id": self._track[todo],
            "phenotype": "" if mark else value, "mark": mark, "split": self.split,
            "experiment": self.experiment, "source": self.movie_path.rsplit("/", 1)[-1] or self.experiment,
            "movie_id": self.movie_id, "movie_path": self.movie_path,
            "model_phenotype": self.cells["phenotype_raw"].to_numpy()[todo]})
        report = self.curated.add(self.crops(todo), ann, self.annotator, replace=True, model=self.model)
        for r in todo:
            self.user[r] = value
        changed = self._resmooth(rows)
        self._queue = None
        msg = f"{len(todo)} frame{'s' if len(todo) > 1 else ''} of track {int(self._track[row])} labelled {value}"
        if report.split_kept:
            msg += f" (into {self.curated.track_split(self.movie_id, int(self._track[row]))}, where this track is)"
        if report.conflicts:
            msg += "; " + "; ".join(report.conflicts)
        return Outcome(changed, msg, len(todo))

    def clear(self, row: int) -> Outcome:
        """Take the person's label off ``row`` (its crop leaves the curated set, undoably)."""
        row = int(row)
        if row not in self.user:
            return Outcome(message="this cell-frame has no label to clear")
        self.curated.remove_cells([(self.movie_id, int(self._frame[row]), int(self._label[row]))], self.annotator)
        del self.user[row]
        self._queue = None
        return Outcome(self._resmooth(self.track_rows(row)), f"label cleared at frame {self._frame[row]}", 1)

    def undo(self) -> Outcome:
        """Undo this session's last label (or fill, or clear)."""
        kind = self.curated.undo()
        if kind is None:
            return Outcome(message="nothing to undo")
        return self._after_history(f"undone: {kind}")

    def redo(self) -> Outcome:
        """Redo what :meth:`undo` took back."""
        kind = self.curated.redo()
        if kind is None:
            return Outcome(message="nothing to redo")
        return self._after_history(f"redone: {kind}")

    def _after_history(self, msg: str) -> Outcome:
        before = dict(self.user)
        phen = self.cells["phenotype"].to_numpy().copy()
        conf = self.cells["confidence"].to_numpy().copy()
        warnings = self.sync_from_set()
        changed = np.flatnonzero((self.cells["phenotype"].to_numpy() != phen) | (self.cells["confidence"].to_numpy()
                                                                                  != conf))
        touched = sorted(set(before) ^ set(self.user) | {r for r in before if self.user.get(r, before[r]) != before[r]})
        rows = np.union1d(changed, np.asarray(touched, dtype=np.int64))
        return Outcome(rows, "; ".join([msg, *warnings]), len(touched))

    def _value(self, value: str) -> str:
        from ...phenotypes import class_index

        try:
            mark = normalise_mark(value)
        except InputError:
            mark = ""
        if mark:
            return mark
        try:
            return self.class_names[class_index(value, self.class_names)]
        except ValueError as exc:
            raise InputError(str(exc)) from exc

    def _resmooth(self, rows: np.ndarray, use_labels: bool = True) -> np.ndarray:
        """Smooth one track again (the labels as fixed evidence); returns the rows whose class changed."""
        fixed = self._fixed(rows) if use_labels else None
        path, post = smooth_track_posterior(self._probs[rows], self.sink, self.timeline, fixed)
        names = np.asarray(self.class_names, dtype=object)
        old = self.cells["phenotype"].to_numpy()[rows]
        new = names[path]
        pcol = self.cells.columns.get_loc("phenotype")
        self.cells.iloc[rows, pcol] = new
        self.cells.iloc[rows, self.cells.columns.get_loc("confidence")] = post[np.arange(len(rows)), path]
        self.cells.iloc[rows, self.cells.columns.get_loc("annotated")] = (fixed >= 0) if fixed is not None else False
        self._update_track_summary(rows)
        return rows[old != new]

    def _update_track_summary(self, rows: np.ndarray) -> None:
        tracks = getattr(self.result, "tracks", None)
        if tracks is None or not len(tracks):
            return
        tid = int(self._track[rows[0]])
        at = np.flatnonzero(tracks["track_id"].to_numpy() == tid)
        if not at.size:
            return
        # only the columns the summary reads: copying whole rows of a wide table costs more than the summary
        new = track_summary(pd.DataFrame({"track_id": self._track[rows], "frame": self._frame[rows],
                                          "phenotype": self.cells["phenotype"].to_numpy()[rows]}), self.class_names)
        cols = [c for c in new.columns if c in tracks.columns]
        tracks.iloc[at[0], [tracks.columns.get_loc(c) for c in cols]] = new[cols].iloc[0].tolist()

    # ------------------------------------------------------------------ the track model
    def labels_table(self) -> pd.DataFrame:
        """This movie's class labels (``frame, label, track_id, phenotype``); marks are no class and are left out."""
        rows = np.asarray(sorted(r for r, v in self.user.items() if v in self.class_names), dtype=np.int64)
        return pd.DataFrame({"frame": self._frame[rows], "label": self._label[rows], "track_id": self._track[rows],
                             "phenotype": [self.user[int(r)] for r in rows]})

    def fit_track_model(self, *, min_tracks: int | None = None, seed: int = 0):
        """The track model fitted on this movie's cells and labels (the command line's
        :func:`~napari_yeast_phenotypes.core.track.track_model.fit_on_labels`).

        Raises
        ------
        InputError
            Fewer than ``min_tracks`` (default :data:`~.track_model.MIN_LABELLED_TRACKS`) labelled tracks.
        """
        from .track_model import MIN_LABELLED_TRACKS, fit_on_labels

        source = f"curated set {self.curated.root} (movie id {self.movie_id})"
        fit = fit_on_labels(self.cells, self.labels_table(), self.class_names, source=source,
                            min_tracks=min_tracks or MIN_LABELLED_TRACKS, seed=seed)
        fit.report["fitted_on"] = {"labels": source, "movie": self.movie_path or self.experiment, "model": self.model}
        return fit

    def save_track_model(self, fit) -> Path:
        """Write ``fit`` as the curated set's ``track_model.json``; an earlier one is kept beside it, renamed
        ``track_model-<when it was saved>.json`` (nothing a user saved is lost)."""
        from .track_model_file import save_track_model

        return save_track_model(Path(self.curated.root) / TRACK_MODEL_FILE, fit, keep_earlier=True)

    def adopt(self, probabilities: np.ndarray, calls: pd.DataFrame) -> np.ndarray:
        """Take another model's probabilities (N, n_classes, in this session's class order) and its smoothed
        calls (``phenotype_raw, phenotype, confidence, annotated``, rows in the table's order) for every
        cell-frame: a live model's update. Returns the rows whose class changed."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        old = self.cells["phenotype"].to_numpy().copy()
        self._probs = probabilities
        self.cells[prob_columns(self.class_names)] = probabilities
        for col in ("phenotype_raw", "phenotype", "confidence", "annotated"):
            self.cells[col] = calls[col].to_numpy()
        if hasattr(self.result, "tracks"):
            self.result.tracks = track_summary(self.cells, self.class_names)
        self._queue = None
        return np.flatnonzero(self.cells["phenotype"].to_numpy() != old)

    def set_timeline(self, settings: TimelineSettings) -> np.ndarray:
        """Smooth every track again with ``settings`` (the labels stay fixed evidence); the rows whose class changed.

        Confidences change on every row; a track whose labels disagree is smoothed without them, as
        in :meth:`sync_from_set`.
        """
        settings.check_classes(self.n_classes)
        self.timeline = settings
        changed = [np.zeros(0, np.int64)]
        for rows in self._track_rows.values():
            try:
                changed.append(self._resmooth(rows))
            except InputError:
                changed.append(self._resmooth(rows, use_labels=False))
        self._queue = None
        return np.sort(np.concatenate(changed))

    # ------------------------------------------------------------------ the queue
    def labelled_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.cells), dtype=bool)
        if self.user:
            mask[list(self.user)] = True
        return mask

    def queue(self) -> pd.DataFrame:
        """The "next cell to check" queue (unlabelled cell-frames, best first), recomputed after changes."""
        if self._queue is None:
            self._queue = review_queue(self.cells, self.class_names, self.labelled_mask())
        return self._queue

    def next_to_check(self, back: bool = False) -> tuple[int, str] | None:
        """The next cell-frame to check and why (``back``: the one shown before); ``None`` at the end."""
        if back:
            if len(self._visited) < 2:
                return None
            self._visited.pop()
            r = self._visited[-1]
            return r, "shown before: " + self.reason(r)
        seen = set(self._visited)
        q = self.queue()
        for r, k in zip(q["row"].to_numpy(), q["kind"].to_numpy()):
            if int(r) not in seen:
                self._visited.append(int(r))
                return int(r), reason(self.cells, int(r), int(k), self.class_names)
        return None

    def reason(self, row: int) -> str:
        q = self.queue()
        hit = q[q["row"] == row]
        return reason(self.cells, row, int(hit["kind"].iloc[0]), self.class_names) if len(hit) else "labelled"


__all__ = ["TRACK_MODEL_FILE", "AnnotationSession", "Outcome"]
