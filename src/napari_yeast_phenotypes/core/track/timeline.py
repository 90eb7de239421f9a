"""Per-track smoothing of per-frame class probabilities, transitions and senescence.

Each track is a hidden Markov chain over the classes: a live cell keeps its phenotype from one
frame to the next with high probability, switches rarely, and may become Senescent, which is
absorbing (a senescent or dead cell does not come back). The per-frame network probabilities are
the emissions. Viterbi gives the smoothed phenotype path; forward-backward gives each frame's
confidence (the posterior probability of the chosen class).

The emissions can be fitted (:mod:`~napari_yeast_phenotypes.core.track.track_model`): a temperature
that calibrates the network's probabilities, and a confusion matrix ``P(network's call | true
class)``. The matrix is what makes a senescence onset need sustained evidence: a senescent cell
is rarely called live, so live calls after a senescent one count against the onset, while a live
cell that the network sometimes calls Senescent keeps its class (the emission is the network's
call, not its probabilities: a confident error repeated on the same cell would otherwise count as
strong evidence at every frame). Unfitted settings (temperature 1,
no matrix) give exactly the smoothing of earlier versions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from ...phenotypes import CLASS_NAMES
from ..errors import InputError
from ..results.schema import prob_columns, track_columns
from .hmm import _normalise_log, emissions, messages, transition_matrix

#: the smallest emission floor accepted (:attr:`TimelineSettings.min_probability`)
MIN_EMISSION_FLOOR = 1e-12


#: a confusion matrix whose rows are all closer than this (total variation) says nothing of the class
MIN_CONFUSION_SPREAD = 0.05


def confusion_spread(confusion) -> float:
    """How much a confusion matrix's call says of the class: the largest total-variation distance between
    two of its rows (0: every class is called alike; below :data:`MIN_CONFUSION_SPREAD` it is refused)."""
    m = np.asarray(confusion, dtype=np.float64)
    return float(0.5 * np.abs(m[:, None, :] - m[None, :, :]).sum(axis=2).max())


@dataclass(frozen=True)
class TimelineSettings:
    """Transition rates (per frame) and emission model of the per-track model.

    Attributes
    ----------
    switch_rate
        Chance that a live cell changes to another live phenotype.
    senescence_rate
        Chance that a live cell becomes senescent.
    min_probability
        Floor of each emission, so a single overconfident frame cannot forbid a class outright.
    temperature
        The network's log-probabilities are divided by it before use (above 1: the network is
        over-confident and its probabilities are flattened); fitted on annotated cells.
    confusion
        ``None``, or a (C, C) row-stochastic matrix ``confusion[s][c] = P(call c | true class s)``
        (fitted on annotated cells); the emission of class ``s`` at a frame whose top class is
        ``c`` is then ``confusion[s][c]``. The network's call, not its probabilities: its errors
        are confident and repeat on the same cell, and its probabilities would count them as
        strong evidence frame after frame.
    smooth
        ``False``: no smoothing; ``phenotype`` is the network's own call (the fitted choice when
        smoothing did worse than the raw calls on validation tracks).
    """

    switch_rate: float = 0.05
    senescence_rate: float = 0.05
    min_probability: float = 1e-4
    temperature: float = 1.0
    confusion: tuple[tuple[float, ...], ...] | None = None
    smooth: bool = True

    def __post_init__(self):
        for name in ("switch_rate", "senescence_rate", "min_probability"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and 0 <= v < 1):
                raise InputError(f"timeline {name} must be a number in [0, 1), not {v!r}")
        for name in ("switch_rate", "senescence_rate"):
            if not getattr(self, name) >= MIN_EMISSION_FLOOR:
                # a rate of 0 forbids every such change: a person's label of one makes the track impossible
                raise InputError(f"timeline {name} must be at least {MIN_EMISSION_FLOOR:g} (a rate of 0 forbids "
                                 f"every such change, so a labelled one could not be followed), not "
                                 f"{getattr(self, name)!r}")
        if not self.min_probability >= MIN_EMISSION_FLOOR:
            # a floor of 0 lets one frame rule out every class (a confusion matrix with a column of
            # zeros: the network's call has no true class), and the track becomes NaN
            raise InputError(f"timeline min_probability must be at least {MIN_EMISSION_FLOOR:g} (a floor of 0 lets a "
                             f"single frame rule out every class), not {self.min_probability!r}")
        if self.switch_rate + self.senescence_rate >= 1:
            raise InputError("timeline switch_rate + senescence_rate must stay below 1")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and 0.01 <= t <= 100):
            raise InputError(f"timeline temperature must be a number from 0.01 to 100, not {t!r}")
        if not isinstance(self.smooth, bool):
            raise InputError(f"timeline smooth must be true or false, not {self.smooth!r}")
        if self.confusion is not None:
            try:
                m = np.asarray(self.confusion, dtype=np.float64)
            except (TypeError, ValueError):
                m = np.zeros(0)
            if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2 or not np.isfinite(m).all() \
                    or (m < 0).any() or not np.allclose(m.sum(axis=1), 1.0, atol=1e-6):
                raise InputError("timeline confusion must be a square matrix of probabilities whose rows "
                                 "sum to 1 (P(call | true class)), one row and column per class")
            # rows that differ by a hair (1e-9) said as little as equal ones: every cell became Senescent
            if confusion_spread(m) < MIN_CONFUSION_SPREAD:
                raise InputError(f"timeline confusion has (almost) the same row for every true class (no two rows "
                                 f"differ by {MIN_CONFUSION_SPREAD:g} or more in total variation): the network's "
                                 "call would say nothing about the class, and every cell would get the class the "
                                 "transitions favour. Fit the track model again on labelled cells")
            # a tuple of tuples: the settings stay hashable and compare by value
            object.__setattr__(self, "confusion", tuple(tuple(float(v) for v in row) for row in m))

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["confusion"] is not None:
            d["confusion"] = [list(row) for row in d["confusion"]]  # JSON-friendly
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> TimelineSettings:
        if d is not None and not isinstance(d, dict):
            raise InputError(f"timeline settings must be a mapping of names to values, not {type(d).__name__}")
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"unknown timeline settings {unknown}")
        return cls(**d)

    def check_classes(self, n: int) -> None:
        """Refuse a confusion matrix fitted for another number of classes, and an emission floor that would
        flatten the evidence of every frame for ``n`` classes."""
        if self.confusion is not None and len(self.confusion) != n:
            raise InputError(f"the track model's confusion matrix is for {len(self.confusion)} classes, but the "
                             f"model classifies into {n}; fit the track model again for this model")
        if n and self.min_probability >= 1.0 / n:
            raise InputError(f"the track model's min_probability {self.min_probability:g} is at least 1/{n}: every "
                             f"frame's evidence would be flattened to the same value for all {n} classes, and the "
                             "network's calls ignored; use a small floor (the default is 0.0001)")


def check_probabilities(probs: np.ndarray, where: str = "the cell table") -> np.ndarray:
    """``probs`` as float64, refused (:class:`InputError`) unless every value is a finite number in [0, 1]
    and no row is all zero: such a row would make the track model compute NaN for a whole track."""
    probs = np.asarray(probs, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(probs) & (probs >= 0) & (probs <= 1 + 1e-6)).all(axis=1) | ~(probs.sum(axis=1) > 0)
    if bad.any():
        raise InputError(f"{int(bad.sum())} row(s) of {where} hold class probabilities that are not numbers from 0 "
                         "to 1 summing above 0 (NaN, infinite, negative or all zero), so their tracks cannot be "
                         "smoothed; classify the movie again")
    return probs


def check_fixed(fixed, absorbing: int | None, class_names=CLASS_NAMES, frames=None, track=None) -> None:
    """Refuse user labels that no track can follow: a live phenotype after Senescent.

    Parameters
    ----------
    fixed
        (T,) class index fixed by a person at each frame of one track, ``-1`` where free.
    frames, track
        The track's frame numbers and id, for the message.

    Raises
    ------
    InputError
        Naming the frames: a senescent (or dead) cell does not come back.
    """
    if absorbing is None:
        return
    fixed = np.asarray(fixed)
    sen = np.flatnonzero(fixed == absorbing)
    if not sen.size:
        return
    later = np.flatnonzero((np.arange(fixed.size) > sen[0]) & (fixed >= 0) & (fixed != absorbing))
    if later.size:
        fr = np.asarray(frames) if frames is not None else np.arange(fixed.size)
        names = list(class_names)
        what = f"track {track}: " if track is not None else ""
        raise InputError(
            f"{what}frame {fr[later[0]]} is labelled {names[fixed[later[0]]]} after frame {fr[sen[0]]} was labelled "
            f"{names[absorbing]}; a senescent cell does not come back. Change one of the two labels."
        )


def smooth_track(probs: np.ndarray, absorbing: int | None, settings: TimelineSettings = TimelineSettings(),
                 fixed=None) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed class path and its per-frame confidence for one track.

    Parameters
    ----------
    probs
        (T, C) per-frame class probabilities, frames in time order.
    absorbing
        Index of the absorbing class (Senescent), or ``None``.
    fixed
        Optional (T,) class index a person gave at each frame (``-1`` where none): fixed
        evidence. The path goes through every fixed class and the frames around follow the
        transition model (a label of Senescent also makes every later frame senescent).

    Returns
    -------
    path
        (T,) class indices (Viterbi); once ``absorbing`` is reached it is never left.
    confidence
        (T,) posterior probability of the chosen class at each frame (1 at fixed frames).
    """
    path, post = smooth_track_posterior(probs, absorbing, settings, fixed)
    return path, post[np.arange(len(path)), path]


def smooth_track_posterior(probs: np.ndarray, absorbing: int | None, settings: TimelineSettings = TimelineSettings(),
                           fixed=None) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`smooth_track`, with the whole (T, C) posterior instead of the chosen class's."""
    probs = check_probabilities(probs, "this track")
    t_len, n = probs.shape
    settings.check_classes(n)
    if not settings.smooth:
        # the network's own call at every frame (calibrated; a confusion matrix, which could move the top class,
        # is for smoothing only)
        return _unsmoothed(emissions(probs, replace(settings, confusion=None)), absorbing, fixed)
    emis = emissions(probs, settings)
    if fixed is not None:
        fixed = np.asarray(fixed, dtype=np.int64)
        check_fixed(fixed, absorbing)
        at = np.flatnonzero(fixed >= 0)
        emis[at] = 0.0
        emis[at, fixed[at]] = 1.0  # a person's label: the only possible state at that frame
    a = transition_matrix(n, absorbing, settings)
    with np.errstate(divide="ignore"):
        log_a = np.log(a)
        log_e = np.log(emis)
    if t_len == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, n))
    # Viterbi with a flat prior over the start state
    score = log_e[0].copy()
    back = np.zeros((t_len, n), dtype=np.int64)
    for t in range(1, t_len):
        cand = score[:, None] + log_a
        back[t] = cand.argmax(axis=0)
        score = cand.max(axis=0) + log_e[t]
    path = np.empty(t_len, dtype=np.int64)
    path[-1] = int(score.argmax())
    for t in range(t_len - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    lf, lb = messages(emis, a)
    return path, _normalise_log(lf + lb)


def smooth_tracks(probs: np.ndarray, track_ids: np.ndarray, absorbing: int | None,
                  settings: TimelineSettings = TimelineSettings(), fixed=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`smooth_track_posterior` of many tracks at once: the same numbers, vectorised over tracks.

    Parameters
    ----------
    probs
        (N, C) per-frame probabilities, rows grouped by track and in time order within a track
        (as :func:`add_timeline` sorts them).
    track_ids
        (N,) track of each row; a track's rows are consecutive.
    fixed
        Optional (N,) class a person gave each row (``-1`` where none); checked per track.

    Returns
    -------
    path, posterior
        (N,) smoothed class and (N, C) posterior of each row, equal to calling
        :func:`smooth_track_posterior` track by track (the same float operations, in the same
        order), in time proportional to the longest track rather than to the number of rows: the
        live head re-smooths a movie of 40,000 cell-frames after each label.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n_rows, n = probs.shape if probs.ndim == 2 else (0, 0)
    settings.check_classes(n)
    if n_rows == 0:
        return np.zeros(0, np.int64), np.zeros((0, n))
    emis = emissions(probs, settings)
    tracks = np.asarray(track_ids)
    starts = np.r_[0, np.flatnonzero(tracks[1:] != tracks[:-1]) + 1]
    lengths = np.diff(np.r_[starts, n_rows])
    if fixed is not None:
        fixed = np.asarray(fixed, dtype=np.int64)
        for a, ln in zip(starts, lengths):
            if (fixed[a:a + ln] >= 0).any():
                check_fixed(fixed[a:a + ln], absorbing)
    if not settings.smooth:
        return _unsmoothed(emis, absorbing, fixed)
    if fixed is not None:
        at = np.flatnonzero(fixed >= 0)
        emis[at] = 0.0
        emis[at, fixed[at]] = 1.0
    # tracks longest first: the tracks still running at step t are the first n_at[t]
    order = np.argsort(-lengths, kind="stable")
    starts, lengths = starts[order], lengths[order]
    n_tracks, longest = len(lengths), int(lengths[0])
    n_at = np.array([int((lengths > t).sum()) for t in range(longest)])
    # the row of track i at step t (rows of finished tracks are never read)
    rows = starts[:, None] + np.minimum(np.arange(longest)[None, :], (lengths - 1)[:, None])
    e = emis[rows]  # (tracks, longest, C)
    a = transition_matrix(n, absorbing, settings)
    with np.errstate(divide="ignore"):
        log_a = np.log(a)
        log_e = np.log(e)
    score = log_e[:, 0].copy()
    back = np.zeros((n_tracks, longest, n), dtype=np.int64)
    for t in range(1, longest):
        m = n_at[t]
        cand = score[:m, :, None] + log_a
        back[:m, t] = cand.argmax(axis=1)
        score[:m] = cand.max(axis=1) + log_e[:m, t]
    path = np.empty((n_tracks, longest), dtype=np.int64)
    last = lengths - 1
    path[np.arange(n_tracks), last] = score.argmax(axis=1)
    for t in range(longest - 1, 0, -1):
        m = n_at[t]
        path[:m, t - 1] = back[np.arange(m), t, path[:m, t]]
    fwd = np.empty((n_tracks, longest, n))
    f = e[:, 0] / n
    fwd[:, 0] = f / f.sum(axis=1, keepdims=True)
    for t in range(1, longest):
        m = n_at[t]
        f = (fwd[:m, t - 1] @ a) * e[:m, t]
        fwd[:m, t] = f / f.sum(axis=1, keepdims=True)
    post = np.empty((n_tracks, longest, n))
    post[np.arange(n_tracks), last] = fwd[np.arange(n_tracks), last]
    b = np.ones((n_tracks, n))
    for t in range(longest - 2, -1, -1):
        m = n_at[t + 1]  # tracks with a frame after t: their backward message moves one step
        bm = (e[:m, t + 1] * b[:m]) @ a.T
        b[:m] = bm / bm.sum(axis=1, keepdims=True)
        p = fwd[:m, t] * b[:m]
        post[:m, t] = p / p.sum(axis=1, keepdims=True)
    out_path = np.empty(n_rows, dtype=np.int64)
    out_post = np.empty((n_rows, n))
    for_rows = np.arange(longest)[None, :] < lengths[:, None]
    out_path[rows[for_rows]] = path[for_rows]
    out_post[rows[for_rows]] = post[for_rows]
    return out_path, out_post


def _unsmoothed(emis: np.ndarray, absorbing: int | None, fixed) -> tuple[np.ndarray, np.ndarray]:
    """No smoothing: each frame on its own (calibrated probabilities; a person's labels win)."""
    post = emis.copy()
    if fixed is not None:
        fixed = np.asarray(fixed, dtype=np.int64)
        check_fixed(fixed, absorbing)
        at = np.flatnonzero(fixed >= 0)
        post[at] = 0.0
        post[at, fixed[at]] = 1.0
    return post.argmax(axis=1), post


def fixed_classes(cells: pd.DataFrame, annotations: pd.DataFrame | None, class_names=CLASS_NAMES) -> np.ndarray:
    """(N,) class index a person gave each row of ``cells`` (``-1`` where none).

    ``annotations`` has ``frame, label, phenotype``; rows without a class (marks such as
    "unsure") are no evidence and are ignored. The same label given twice counts once.

    Raises
    ------
    InputError
        When one cell-frame is given two different classes: which one is true cannot be told,
        and either would shape the track model silently.
    """
    out = np.full(len(cells), -1, dtype=np.int64)
    if annotations is None or not len(annotations):
        return out
    names = list(class_names)
    ann = annotations[annotations["phenotype"].isin(names)]
    kinds = ann.groupby([ann["frame"].astype(np.int64), ann["label"].astype(np.int64)])["phenotype"].nunique()
    torn = kinds[kinds > 1]
    if len(torn):
        f, lab = torn.index[0]
        said = sorted(set(ann["phenotype"][(ann["frame"] == f) & (ann["label"] == lab)]))
        raise InputError(f"{len(torn)} cell-frame(s) are labelled with two different classes (e.g. frame {f}, label "
                         f"{lab}: {' and '.join(said)}); a cell shows one phenotype at a time, so which label is "
                         "true cannot be told. Keep one label for each (the curated set lists its conflicts in the "
                         "manifest's conflict column)")
    ann = ann.drop_duplicates(["frame", "label"], keep="last")
    where = pd.MultiIndex.from_arrays([ann["frame"].astype(np.int64), ann["label"].astype(np.int64)])
    pos = where.get_indexer(pd.MultiIndex.from_arrays([cells["frame"].astype(np.int64),
                                                       cells["label"].astype(np.int64)]))
    codes = pd.Categorical(ann["phenotype"], categories=names).codes
    out[pos >= 0] = codes[pos[pos >= 0]]
    return out


def add_timeline(cells: pd.DataFrame, class_names=CLASS_NAMES, settings: TimelineSettings = TimelineSettings(),
                 absorbing: str | None = "Senescent", annotations: pd.DataFrame | None = None) -> pd.DataFrame:
    """Add ``phenotype_raw`` (per-frame argmax), ``phenotype`` (smoothed), ``confidence`` and ``annotated``.

    ``cells`` needs ``track_id``, ``frame`` and one ``p_<class>`` column per class.
    ``annotations`` (``frame, label, phenotype``) are a person's labels: fixed evidence for the
    track model (see :func:`smooth_track`); their cells get ``annotated`` True.

    Raises
    ------
    InputError
        When the labels of a track are impossible (a live phenotype after Senescent).
    """
    names = list(class_names)
    settings.check_classes(len(names))
    cells = cells.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)
    probs = check_probabilities(cells[prob_columns(names)].to_numpy(dtype=np.float64))
    raw = probs.argmax(axis=1) if len(cells) else np.zeros(0, int)
    smooth = raw.copy()
    conf = probs.max(axis=1) if len(cells) else np.zeros(0)
    sink = names.index(absorbing) if absorbing in names else None
    fixed = fixed_classes(cells, annotations, names)
    tracks = cells["track_id"].to_numpy()
    frames = cells["frame"].to_numpy()
    bounds = np.flatnonzero(np.diff(tracks)) + 1
    starts, stops = np.r_[0, bounds], np.r_[bounds, len(cells)]
    for a, b in zip(starts, stops):
        if b > a and (fixed[a:b] >= 0).any():
            check_fixed(fixed[a:b], sink, names, frames[a:b], tracks[a])  # said with the track and frames
    if len(cells):
        # all tracks at once: the same numbers as smooth_track track by track (tests/test_live_head.py)
        smooth, post = smooth_tracks(probs, tracks, sink, settings, fixed if (fixed >= 0).any() else None)
        conf = post[np.arange(len(cells)), smooth]
        # a long track whose messages underflow (labels far from their evidence): smooth_track's log-space
        # messages give it exactly, never NaN
        bad = ~np.isfinite(conf)
        for a, b in zip(starts, stops):
            if bad[a:b].any():
                fx = fixed[a:b] if (fixed[a:b] >= 0).any() else None
                smooth[a:b], conf[a:b] = smooth_track(probs[a:b], sink, settings, fx)
    out = cells.copy()
    out["phenotype_raw"] = np.asarray(names, dtype=object)[raw]
    out["phenotype"] = np.asarray(names, dtype=object)[smooth]
    out["confidence"] = conf
    out["annotated"] = fixed >= 0
    return out.sort_values(["frame", "label"], kind="stable").reset_index(drop=True)


def track_summary(cells: pd.DataFrame, class_names=CLASS_NAMES, absorbing: str = "Senescent") -> pd.DataFrame:
    """One row per track: span, dominant phenotype, senescence frame, frames per class, transitions.

    Computed for all tracks at once (a frame of a million cells is a million tracks: a loop over
    them took minutes and a dictionary per track).
    """
    names = list(class_names)
    cols = track_columns(names)
    if not len(cells):
        out = pd.DataFrame(columns=cols)
        out["senescence_frame"] = out["senescence_frame"].astype("Int64")
        return out
    c = cells.sort_values(["track_id", "frame"], kind="stable")
    tid = c["track_id"].to_numpy(np.int64)
    fr = c["frame"].to_numpy(np.int64)
    ph = c["phenotype"].to_numpy(dtype=object)
    code = pd.Categorical(ph, categories=names).codes.astype(np.int64)
    start = np.r_[0, np.flatnonzero(np.diff(tid)) + 1]
    stop = np.r_[start[1:], len(c)]
    track = np.repeat(np.arange(start.size), stop - start)
    counts = np.zeros((start.size, len(names)), dtype=np.int64)
    known = code >= 0
    np.add.at(counts, (track[known], code[known]), 1)
    out = pd.DataFrame({"track_id": tid[start], "first_frame": fr[start], "last_frame": fr[stop - 1],
                        "n_frames": (stop - start).astype(np.int64),
                        "dominant_phenotype": np.asarray(names, dtype=object)[counts.argmax(axis=1)]})
    sen = pd.array([pd.NA] * start.size, dtype="Int64")
    if absorbing in names:
        at = np.flatnonzero(code == names.index(absorbing))
        first = pd.Series(fr[at]).groupby(track[at]).first()
        sen[first.index.to_numpy()] = first.to_numpy()
    out["senescence_frame"] = sen
    for j, name in enumerate(names):
        out[f"frames_{name}"] = counts[:, j]
    change = np.flatnonzero((ph[1:] != ph[:-1]) & (track[1:] == track[:-1])) + 1
    text = pd.Series([f"{fr[i]}:{ph[i - 1]}>{ph[i]}" for i in change], dtype=object)
    joined = text.groupby(track[change]).agg("; ".join) if change.size else pd.Series(dtype=object)
    trans = np.full(start.size, "", dtype=object)
    trans[joined.index.to_numpy(np.int64)] = joined.to_numpy()
    out["transitions"] = trans
    return out[cols]
