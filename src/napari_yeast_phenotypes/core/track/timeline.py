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
        """Refuse a confusion matrix fitted for another number of classes."""
        if self.confusion is not None and len(self.confusion) != n:
            raise InputError(f"the track model's confusion matrix is for {len(self.confusion)} classes, but the "
                             f"model classifies into {n}; fit the track model again for this model")


def calibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities with their log divided by ``temperature`` and renormalised (rows)."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return probs
    logp = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    q = np.exp(logp)
    return q / q.sum(axis=1, keepdims=True)


def emissions(probs: np.ndarray, settings: TimelineSettings) -> np.ndarray:
    """(T, C) emission of each class at each frame from the network's probabilities (rows sum to 1)."""
    if settings.confusion is not None:
        q = np.asarray(settings.confusion, dtype=np.float64).T[np.asarray(probs).argmax(axis=1)]
    else:
        q = calibrated(probs, settings.temperature)
    emis = np.clip(q, settings.min_probability, 1.0)
    emis /= emis.sum(axis=1, keepdims=True)
    return emis


def transition_matrix(n: int, absorbing: int | None, s: TimelineSettings) -> np.ndarray:
    """Row-stochastic (n, n) transition matrix with ``absorbing`` as a sink state."""
    live = [i for i in range(n) if i != absorbing]
    a = np.zeros((n, n))
    for i in live:
        others = [j for j in live if j != i]
        a[i, others] = s.switch_rate / max(len(others), 1)
        if absorbing is not None:
            a[i, absorbing] = s.senescence_rate
        a[i, i] = 1.0 - a[i].sum()
    if absorbing is not None:
        a[absorbing, absorbing] = 1.0
    return a


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
    probs = np.asarray(probs, dtype=np.float64)
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
    fwd, bwd = forward_backward(emis, a)
    post = np.empty((t_len, n))
    post[-1] = fwd[-1]
    for t in range(t_len - 2, -1, -1):
        p = fwd[t] * bwd[t]
        post[t] = p / p.sum()
    return path, post


def forward_backward(emis: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scaled forward and backward messages of one track (flat prior over the start state).

    Each row of both is normalised to sum 1, so ``fwd[t] * bwd[t]`` is proportional to the
    posterior of frame ``t`` and ``fwd[t-1, i] * a[i, j] * emis[t, j] * bwd[t, j]`` to the
    posterior of the transition ``i -> j`` into frame ``t``.
    """
    t_len, n = emis.shape
    fwd = np.empty((t_len, n))
    f = emis[0] / n
    fwd[0] = f / f.sum()
    for t in range(1, t_len):
        f = (fwd[t - 1] @ a) * emis[t]
        fwd[t] = f / f.sum()
    bwd = np.empty((t_len, n))
    bwd[-1] = 1.0
    b = bwd[-1]
    for t in range(t_len - 2, -1, -1):
        b = a @ (emis[t + 1] * b)
        b /= b.sum()
        bwd[t] = b
    return fwd, bwd


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
    "unsure") are no evidence and are ignored.
    """
    out = np.full(len(cells), -1, dtype=np.int64)
    if annotations is None or not len(annotations):
        return out
    names = list(class_names)
    ann = annotations[annotations["phenotype"].isin(names)].drop_duplicates(["frame", "label"], keep="last")
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
    probs = cells[prob_columns(names)].to_numpy(dtype=np.float64)
    raw = probs.argmax(axis=1) if len(cells) else np.zeros(0, int)
    smooth = raw.copy()
    conf = probs.max(axis=1) if len(cells) else np.zeros(0)
    sink = names.index(absorbing) if absorbing in names else None
    fixed = fixed_classes(cells, annotations, names)
    tracks = cells["track_id"].to_numpy()
    frames = cells["frame"].to_numpy()
    bounds = np.flatnonzero(np.diff(tracks)) + 1
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(cells)]):
        if b > a:
            fx = fixed[a:b] if (fixed[a:b] >= 0).any() else None
            if fx is not None:
                check_fixed(fx, sink, names, frames[a:b], tracks[a])
            smooth[a:b], conf[a:b] = smooth_track(probs[a:b], sink, settings, fx)
    out = cells.copy()
    out["phenotype_raw"] = np.asarray(names, dtype=object)[raw]
    out["phenotype"] = np.asarray(names, dtype=object)[smooth]
    out["confidence"] = conf
    out["annotated"] = fixed >= 0
    return out.sort_values(["frame", "label"], kind="stable").reset_index(drop=True)


def track_summary(cells: pd.DataFrame, class_names=CLASS_NAMES, absorbing: str = "Senescent") -> pd.DataFrame:
    """One row per track: span, dominant phenotype, senescence frame, frames per class, transitions."""
    names = list(class_names)
    cols = track_columns(names)
    rows = []
    for tid, g in cells.sort_values(["track_id", "frame"]).groupby("track_id", sort=True):
        ph = g["phenotype"].to_numpy()
        fr = g["frame"].to_numpy()
        counts = {c: int((ph == c).sum()) for c in names}
        sen = fr[ph == absorbing]
        change = np.flatnonzero(ph[1:] != ph[:-1]) + 1
        rows.append({
            "track_id": int(tid),
            "first_frame": int(fr[0]),
            "last_frame": int(fr[-1]),
            "n_frames": int(len(fr)),
            "dominant_phenotype": max(names, key=lambda c: (counts[c], -names.index(c))),
            "senescence_frame": int(sen[0]) if sen.size else pd.NA,
            **{f"frames_{c}": counts[c] for c in names},
            "transitions": "; ".join(f"{fr[i]}:{ph[i - 1]}>{ph[i]}" for i in change),
        })
    out = pd.DataFrame(rows, columns=cols)
    out["senescence_frame"] = out["senescence_frame"].astype("Int64")
    return out
