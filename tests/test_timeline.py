import numpy as np
import pandas as pd
import pytest

from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.track.hmm import transition_matrix
from napari_yeast_phenotypes.core.track.timeline import (
    TimelineSettings,
    add_timeline,
    smooth_track,
    smooth_track_posterior,
    track_summary,
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
    assert list(out.columns[-4:]) == ["phenotype_raw", "phenotype", "confidence", "annotated"]
    assert not out["annotated"].any()
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


def test_a_user_label_is_fixed_evidence_and_its_neighbours_follow():
    # the network leans to Triple at frames 8-12, too weakly to outweigh two switches of the track
    # model; a person says frame 10 is Triple
    probs = onehot_probs([0] * 20, conf=0.9)
    probs[8:13] = onehot_probs([3] * 5, conf=0.45)
    probs[8:13, 0] = 0.3
    probs[8:13] /= probs[8:13].sum(axis=1, keepdims=True)
    free, _ = smooth_track(probs, SENESCENT)
    assert (free == 0).all()
    fixed = np.full(20, -1)
    fixed[10] = 3
    path, conf = smooth_track(probs, SENESCENT, fixed=fixed)
    assert path[10] == 3 and conf[10] == pytest.approx(1.0)
    assert (path[8:13] == 3).all()  # the uncertain frames around the label follow it
    assert (path[:6] == 0).all() and (path[15:] == 0).all()  # confident frames far away do not


def test_a_senescent_label_makes_the_rest_of_the_track_senescent():
    probs = onehot_probs([2] * 12, conf=0.8)
    fixed = np.full(12, -1)
    fixed[5] = SENESCENT
    path, post = smooth_track_posterior(probs, SENESCENT, fixed=fixed)
    assert (path[5:] == SENESCENT).all() and (path[:5] != SENESCENT).all()
    assert np.allclose(post.sum(axis=1), 1.0, rtol=1e-9)
    assert post[5, SENESCENT] == pytest.approx(1.0)


def test_an_impossible_sequence_of_labels_is_refused():
    fixed = np.full(10, -1)
    fixed[3], fixed[7] = SENESCENT, 1
    with pytest.raises(InputError, match="does not come back"):
        smooth_track(onehot_probs([1] * 10), SENESCENT, fixed=fixed)
    cells = make_cells({4: [1] * 10})
    ann = pd.DataFrame({"frame": [3, 7], "label": [4, 4], "phenotype": ["Senescent", "Aggregate"]})
    with pytest.raises(InputError, match="track 4: frame 7 is labelled Aggregate after frame 3"):
        add_timeline(cells, annotations=ann)


def test_add_timeline_marks_annotated_cells_and_ignores_marks():
    cells = make_cells({1: [0] * 8, 2: [5] * 8})
    ann = pd.DataFrame({"frame": [2, 3, 4], "label": [1, 1, 2], "phenotype": ["Circular", "Circular", ""]})
    out = add_timeline(cells, annotations=ann).set_index(["track_id", "frame"])
    assert out.loc[(1, 2), "annotated"] and out.loc[(1, 3), "annotated"]
    assert out.loc[(1, 2), "phenotype"] == "Circular" and out.loc[(1, 2), "phenotype_raw"] == "Nuclear"
    assert not out.loc[(2, 4), "annotated"]  # a mark without a class is no evidence
    assert int(out["annotated"].sum()) == 2
