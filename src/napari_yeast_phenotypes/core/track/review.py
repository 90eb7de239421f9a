"""The "next cell to check" queue: unlabelled cell-frames ranked by what a person's label would fix most.

Each cell-frame of a classified movie gets a score from five signs that the model may be wrong
there, or that a label would change much:

- ``uncertain``: the network hesitates, low top-2 margin or high entropy (``1 - margin`` or the
  normalised entropy, whichever is larger; 0..1);
- ``disagrees``: the network's own class differs from the track model's (smoothed) class;
- ``flicker``: a one-frame change of the network's class, between two frames that agree;
- ``class change``: the track's smoothed class changes between this frame and a neighbour (a
  label there places the transition);
- ``senescence onset``: the first senescent frame of a track (a label there sets the age at
  senescence, the figure the biology is about);
- ``unlike the training data``: the cell's ``ood_score`` is above 1 (:mod:`..network.ood`): the
  model has not learnt cells like it, so its call says little however confident. On a movie unlike
  the training data most cells are, so this sign alone cannot choose among them: it adds to the
  score like the others (it was once offered first, which spent the first 55 picks of a real movie
  on 7 tracks).

The score is the uncertainty plus a fixed weight per sign (:data:`WEIGHTS`); the reason shown is
the strongest sign other than uncertainty, or uncertainty when it is the only one. The queue
interleaves tracks: first the best frame of every track, then the second best, so no track comes
twice before every track with a cell to check has come once, and one long uncertain track does not
fill the queue. Once a person has labelled cells and a live model (or a retrained one) has given
new probabilities, the same signs rank what would change the model most: where the model's own
call and the track model disagree, where its margin is small, where its calls flicker; tracks
already labelled come after the others in each round.

Pure numpy/pandas: the viewer's Annotate dock and the benchmark of labels chosen this way vs at
random (``benchmarks/annotate_learning_curve.py``) call the same function.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...phenotypes import CLASS_NAMES
from ..results.schema import prob_columns

UNCERTAIN, DISAGREES, FLICKER, CHANGE, ONSET, UNLIKE = range(6)
KINDS = ("uncertain", "disagrees", "flicker", "class change", "senescence onset", "unlike the training data")
#: what each sign adds to the score (uncertainty adds itself, 0..1)
WEIGHTS = {DISAGREES: 0.6, FLICKER: 0.7, CHANGE: 0.8, ONSET: 1.0, UNLIKE: 0.4}


def uncertainty(probs: np.ndarray) -> np.ndarray:
    """Per row: ``max(1 - (p1 - p2), H / log C)`` (top-2 margin or normalised entropy), in [0, 1]."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[0] == 0:
        return np.zeros(0)
    top = np.sort(probs, axis=1)
    margin = top[:, -1] - (top[:, -2] if probs.shape[1] > 1 else 0.0)
    p = np.clip(probs, 1e-12, 1.0)
    ent = -(p * np.log(p)).sum(axis=1) / np.log(max(probs.shape[1], 2))
    return np.clip(np.maximum(1.0 - margin, ent), 0.0, 1.0)


def review_queue(cells: pd.DataFrame, class_names=CLASS_NAMES, labelled=None,
                 absorbing: str | None = "Senescent") -> pd.DataFrame:
    """Unlabelled cell-frames of ``cells``, best to check first.

    Parameters
    ----------
    cells
        A classified movie's cell table (``track_id, frame, p_<class>, phenotype, phenotype_raw``).
    labelled
        (N,) bool: rows a person has labelled (or marked) already; they are left out.

    Returns
    -------
    DataFrame
        ``row`` (position in ``cells``), ``score``, ``kind`` (index into :data:`KINDS`),
        ``uncertainty``; best first, tracks interleaved. :func:`reason` says it in words.
    """
    names = list(class_names)
    n = len(cells)
    if n == 0:
        return pd.DataFrame({"row": np.zeros(0, np.int64), "score": np.zeros(0), "kind": np.zeros(0, np.int64),
                             "uncertainty": np.zeros(0)})
    probs = cells[prob_columns(names)].to_numpy(dtype=np.float64)
    order = np.lexsort((cells["frame"].to_numpy(), cells["track_id"].to_numpy()))
    track = cells["track_id"].to_numpy()[order]
    frame = cells["frame"].to_numpy()[order]
    raw = probs.argmax(axis=1)[order]
    smooth = pd.Categorical(cells["phenotype"], categories=names).codes.astype(np.int64)[order]
    same_prev = np.r_[False, (track[1:] == track[:-1]) & (frame[1:] == frame[:-1] + 1)]
    same_next = np.r_[same_prev[1:], False]

    signs = np.zeros((n, len(KINDS)))
    signs[:, UNCERTAIN] = uncertainty(probs)[order]
    signs[:, DISAGREES] = (raw != smooth) * WEIGHTS[DISAGREES]
    prev_raw, next_raw = np.r_[-1, raw[:-1]], np.r_[raw[1:], -1]
    flick = same_prev & same_next & (raw != prev_raw) & (prev_raw == next_raw)
    signs[:, FLICKER] = flick * WEIGHTS[FLICKER]
    changes_next = same_next & (smooth != np.r_[smooth[1:], -1])
    changes_prev = same_prev & (smooth != np.r_[-1, smooth[:-1]])
    signs[:, CHANGE] = (changes_next | changes_prev) * WEIGHTS[CHANGE]
    if absorbing in names:
        sen = smooth == names.index(absorbing)
        first_of_track = np.r_[True, track[1:] != track[:-1]]
        prev_sen = np.r_[False, sen[:-1]] & ~first_of_track
        signs[:, ONSET] = (sen & ~prev_sen & ~first_of_track) * WEIGHTS[ONSET]

    if "ood_score" in cells:
        unlike = (cells["ood_score"].to_numpy(dtype=np.float64)[order] > 1)  # NaN (no summary): False
        signs[:, UNLIKE] = unlike * WEIGHTS[UNLIKE]

    score = signs.sum(axis=1)
    # the reason shown: the strongest sign other than uncertainty when there is one (it says more)
    other = signs[:, 1:]
    kind = np.where(other.max(axis=1) > 0, other.argmax(axis=1) + 1, UNCERTAIN)
    rows = order
    keep = np.ones(n, dtype=bool)
    seen_track = np.zeros(n, dtype=bool)
    if labelled is not None:
        done = np.asarray(labelled, dtype=bool)[order]
        keep = ~done
        seen_track = np.isin(track, np.unique(track[done]))
    q = pd.DataFrame({"row": rows[keep], "score": score[keep], "kind": kind[keep],
                      "uncertainty": signs[keep, UNCERTAIN], "track_id": track[keep], "seen": seen_track[keep]})
    q = q.sort_values("score", ascending=False, kind="stable")
    q["round"] = q.groupby("track_id").cumcount()
    q = q.sort_values(["round", "seen", "score"], ascending=[True, True, False], kind="stable")
    return q.drop(columns=["round", "track_id", "seen"]).reset_index(drop=True)


def reason(cells: pd.DataFrame, row: int, kind: int, class_names=CLASS_NAMES) -> str:
    """Why ``row`` of ``cells`` is in the queue, in words (``kind`` from :func:`review_queue`)."""
    names = list(class_names)
    r = cells.iloc[int(row)]
    probs = r[prob_columns(names)].to_numpy(dtype=np.float64)
    top = np.argsort(probs)[::-1]
    if kind == UNCERTAIN:
        return (f"uncertain: the network hesitates between {names[top[0]]} {probs[top[0]]:.2f} "
                f"and {names[top[1]]} {probs[top[1]]:.2f}")
    if kind == UNLIKE:
        return (f"unlike the training data: ood_score {float(r['ood_score']):.1f} (above 1: unlike the crops the "
                f"model learnt from), so its call {r['phenotype_raw']} may be wrong however confident")
    if kind == DISAGREES:
        return f"the network says {r['phenotype_raw']} here, the track model says {r['phenotype']}"
    track = cells[(cells["track_id"] == r["track_id"])].sort_values("frame")
    fr = track["frame"].to_numpy()
    i = int(np.searchsorted(fr, r["frame"]))
    if kind == FLICKER:
        around = track["phenotype_raw"].iloc[i - 1] if i > 0 else "?"
        return f"one-frame flicker: {r['phenotype_raw']} between two frames of {around}"
    if kind == CHANGE:
        ph = track["phenotype"].to_numpy()
        if i + 1 < len(ph) and ph[i + 1] != ph[i]:
            return f"class change: {ph[i]} -> {ph[i + 1]} after this frame (track {r['track_id']})"
        return f"class change: {ph[i - 1]} -> {ph[i]} at this frame (track {r['track_id']})"
    return f"senescence onset of track {r['track_id']} at frame {r['frame']}: is it senescent from here?"


__all__ = ["KINDS", "WEIGHTS", "reason", "review_queue", "uncertainty"]
