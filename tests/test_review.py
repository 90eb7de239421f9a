"""The "next cell to check" queue: each reason, labelled cells left out, tracks interleaved."""

import numpy as np
import pandas as pd
import pytest

from napari_yeast_phenotypes.core.track.review import KINDS, reason, review_queue, uncertainty
from napari_yeast_phenotypes.core.track.timeline import add_timeline
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES, SENESCENT


def _cells(tracks: dict[int, np.ndarray]) -> pd.DataFrame:
    """A classified table from per-track (T, 8) probabilities, through the real timeline."""
    rows = []
    for tid, probs in tracks.items():
        for t, p in enumerate(probs):
            rows.append({"track_id": tid, "label": tid, "frame": t,
                         **{f"p_{c}": p[j] for j, c in enumerate(CLASS_NAMES)}})
    return add_timeline(pd.DataFrame(rows))


def _sure(seq, conf=0.95):
    p = np.full((len(seq), 8), (1 - conf) / 7)
    p[np.arange(len(seq)), seq] = conf
    return p


def _top(cells, kind_name):
    q = review_queue(cells)
    first = q.iloc[0]
    assert KINDS[int(first["kind"])] == kind_name, reason(cells, first["row"], first["kind"])
    return cells.iloc[int(first["row"])], reason(cells, first["row"], first["kind"])


def test_uncertainty_is_margin_or_entropy():
    p = np.array([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.25] * 4])
    u = uncertainty(p)
    assert u[0] == pytest.approx(0.0, abs=1e-9) and u[1] == pytest.approx(1.0) and u[2] == pytest.approx(1.0)


def test_an_uncertain_frame_comes_first():
    probs = _sure([2] * 10)
    probs[4] = 0.02
    probs[4, 2], probs[4, 5] = 0.44, 0.42
    row, text = _top(_cells({1: probs}), "uncertain")
    assert row["frame"] == 4 and "Cytoplasm 0.44" in text and "Fragmented 0.42" in text


def test_raw_disagreeing_with_the_track_model():
    probs = _sure([1] * 12, conf=0.6)
    probs[6:8] = _sure([4, 4], conf=0.55)  # two moderately sure frames of another class: smoothed away
    cells = _cells({1: probs})
    row, text = _top(cells, "disagrees")
    assert row["frame"] in (6, 7) and row["phenotype"] == "Aggregate" and row["phenotype_raw"] == "BinaryAggregate"
    assert "network says BinaryAggregate" in text


def test_one_frame_flicker():
    probs = _sure([0] * 5 + [6] + [0] * 5, conf=0.9)
    cells = _cells({1: probs})
    assert (cells["phenotype"] == "Nuclear").all()  # the track model smooths it away
    row, text = _top(cells, "flicker")
    assert row["frame"] == 5 and text == "one-frame flicker: Circular between two frames of Nuclear"


def test_class_change_and_senescence_onset():
    cells = _cells({1: _sure([0] * 6 + [2] * 6), 2: _sure([3] * 5 + [SENESCENT] * 7)})
    q = review_queue(cells)
    by_kind = {KINDS[int(k)]: cells.iloc[int(r)] for r, k in zip(q["row"], q["kind"])}
    onset = by_kind["senescence onset"]
    assert (onset["track_id"], onset["frame"]) == (2, 5)
    assert q.iloc[0]["kind"] == KINDS.index("senescence onset")
    change = q[(q["kind"] == KINDS.index("class change")) & (q["row"].map(cells["track_id"]) == 1)]
    assert set(cells.iloc[change["row"]]["frame"]) == {5, 6}
    text = reason(cells, change["row"].iloc[0], KINDS.index("class change"))
    assert "Nuclear -> Cytoplasm" in text


def test_labelled_rows_are_left_out_and_tracks_interleave():
    cells = _cells({1: _sure([0] * 6 + [2] * 6), 2: _sure([3] * 5 + [SENESCENT] * 7), 3: _sure([5] * 8, conf=0.5)})
    labelled = np.zeros(len(cells), bool)
    labelled[:4] = True
    q = review_queue(cells, labelled=labelled)
    assert not set(q["row"]) & set(range(4)) and len(q) == len(cells) - 4
    first_three = cells.iloc[q["row"].iloc[:3]]["track_id"]
    assert first_three.nunique() == 3  # the best frame of each track before any second one


def test_no_track_twice_before_every_track_once_and_labelled_tracks_last():
    rng = np.random.default_rng(0)
    tracks = {t: _sure(rng.integers(0, 7, 10), conf=0.4 + 0.05 * (t % 3)) for t in range(1, 13)}
    cells = _cells(tracks)
    cells["ood_score"] = np.where(cells["track_id"] <= 2, 5.0, 0.5)  # two tracks very unlike the training data
    q = review_queue(cells)
    first = cells["track_id"].to_numpy()[q["row"].to_numpy()[:12]]
    assert sorted(first) == list(range(1, 13))  # the unlike tracks do not take the first picks over
    labelled = (cells["track_id"] == 5).to_numpy() & (cells["frame"] == 0).to_numpy()
    q = review_queue(cells, labelled=labelled)
    first = cells["track_id"].to_numpy()[q["row"].to_numpy()[:12]]
    assert sorted(first) == list(range(1, 13)) and first[-1] == 5  # a labelled track comes last in its round
