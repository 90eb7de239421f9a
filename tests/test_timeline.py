import numpy as np
import pandas as pd
import pytest

from napari_yeast_phenotypes.core.timeline import (
    TimelineSettings,
    add_timeline,
    smooth_track,
    track_summary,
    transition_matrix,
)
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES, SENESCENT


def onehot_probs(classes, conf=0.9, n=8):
    p = np.full((len(classes), n), (1 - conf) / (n - 1))
    p[np.arange(len(classes)), classes] = conf
    return p


def test_isolated_wrong_frame_is_fixed():
    seq = [0] * 10 + [4] + [0] * 10
    path, conf = smooth_track(onehot_probs(seq), SENESCENT)
    assert (path == 0).all()
    assert conf[10] < conf[0]  # the corrected frame is less certain


def test_real_changes_are_kept():
    seq = [0] * 8 + [2] * 8 + [SENESCENT] * 6
    path, _ = smooth_track(onehot_probs(seq), SENESCENT)
    assert list(path) == seq


def test_isolated_senescent_frame_does_not_start_senescence():
    seq = [1] * 10 + [SENESCENT] + [1] * 10
    path, _ = smooth_track(onehot_probs(seq, conf=0.95), SENESCENT)
    assert (path == 1).all()


def test_senescent_is_absorbing(rng):
    for _ in range(50):
        probs = rng.dirichlet(np.ones(8) * 0.3, size=30)
        path, conf = smooth_track(probs, SENESCENT)
        hit = np.flatnonzero(path == SENESCENT)
        if hit.size:
            assert (path[hit[0]:] == SENESCENT).all()
        assert np.all((conf >= 0) & (conf <= 1 + 1e-9))


def test_constant_track_stays_constant():
    for c in range(8):
        path, conf = smooth_track(onehot_probs([c] * 15, conf=0.6), SENESCENT)
        assert (path == c).all() and (conf > 0.6).all()


def test_transition_matrix_rows_sum_to_one():
    a = transition_matrix(8, SENESCENT, TimelineSettings())
    assert np.allclose(a.sum(axis=1), 1) and a[SENESCENT, SENESCENT] == 1
    assert (a[SENESCENT, :SENESCENT] == 0).all()


def make_cells(tracks: dict[int, list[int]], start: dict[int, int] | None = None) -> pd.DataFrame:
    rows = []
    for tid, seq in tracks.items():
        p = onehot_probs(seq)
        for i in range(len(seq)):
            rows.append({"track_id": tid, "label": tid, "frame": (start or {}).get(tid, 0) + i,
                         **{f"p_{n}": p[i, j] for j, n in enumerate(CLASS_NAMES)}})
    return pd.DataFrame(rows)


def test_add_timeline_and_track_summary():
    cells = make_cells({1: [0] * 5 + [2] * 5 + [SENESCENT] * 3, 2: [6] * 4 + [3] + [6] * 4}, start={2: 3})
    out = add_timeline(cells)
    assert list(out.columns[-3:]) == ["phenotype_raw", "phenotype", "confidence"]
    assert (out.loc[out["track_id"] == 2, "phenotype"] == "Circular").all()
    assert (out.loc[(out["track_id"] == 2) & (out["frame"] == 7), "phenotype_raw"] == "Triple").all()
    tracks = track_summary(out).set_index("track_id")
    assert tracks.loc[1, "senescence_frame"] == 10
    assert pd.isna(tracks.loc[2, "senescence_frame"])
    assert tracks.loc[1, "transitions"] == "5:Nuclear>Cytoplasm; 10:Cytoplasm>Senescent"
    assert tracks.loc[2, "transitions"] == ""
    assert (tracks.loc[2, "first_frame"], tracks.loc[2, "last_frame"], tracks.loc[2, "n_frames"]) == (3, 11, 9)
    assert tracks.loc[1, "frames_Nuclear"] == 5 and tracks.loc[1, "dominant_phenotype"] in ("Nuclear", "Cytoplasm")
    assert sum(tracks.loc[1, f"frames_{c}"] for c in CLASS_NAMES) == 13


@pytest.mark.parametrize("n", [1, 2])
def test_short_tracks(n):
    path, conf = smooth_track(onehot_probs([3] * n), SENESCENT)
    assert (path == 3).all() and conf.shape == (n,)
