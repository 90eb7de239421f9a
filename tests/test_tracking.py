import numpy as np
import pandas as pd
import pytest
from realdata import real_data

from napari_yeast_phenotypes.core.data.tracking import build_cell_table, labels_look_tracked, measure_frame
from napari_yeast_phenotypes.core.errors import InputError


def test_measure_frame_matches_per_label_reference(small_movie):
    lab = small_movie.labels[2]
    table = measure_frame(lab, 2)
    assert list(table["label"]) == sorted(set(np.unique(lab)) - {0})
    for _, r in table.iterrows():
        ys, xs = np.nonzero(lab == r["label"])
        assert r["area"] == ys.size
        assert r["y"] == pytest.approx(ys.mean())
        assert r["x"] == pytest.approx(xs.mean())
        bbox = (r["bbox_y0"], r["bbox_x0"], r["bbox_y1"], r["bbox_x1"])
        assert bbox == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def test_empty_frame_gives_empty_table():
    t = measure_frame(np.zeros((20, 20), np.uint16))
    assert len(t) == 0 and "track_id" in t


def test_negative_labels_refused():
    lab = np.zeros((10, 10), np.int32)
    lab[2:4, 2:4] = -3
    with pytest.raises(InputError, match="negative"):
        measure_frame(lab)


def permute_ids(labels, rng):
    """Give every frame its own random relabelling, as an untracked segmentation would."""
    out = np.zeros_like(labels, dtype=np.int32)
    for t in range(labels.shape[0]):
        ids = np.unique(labels[t])
        ids = ids[ids > 0]
        new = rng.permutation(np.arange(1, ids.size + 1)) + 1000 * t
        lut = np.zeros(labels.max() + 1, np.int32)
        lut[ids] = new
        out[t] = lut[labels[t]]
    return out


def assert_same_partition(table, original_labels):
    """Each recovered track is exactly one original cell and vice versa."""
    orig = np.array([original_labels[f][int(y), int(x)] for f, y, x in
                     zip(table["frame"], table["y"].round(), table["x"].round())])
    pairs = pd.DataFrame({"track": table["track_id"].to_numpy(), "orig": orig})
    assert pairs.groupby("track")["orig"].nunique().max() == 1
    assert pairs.groupby("orig")["track"].nunique().max() == 1


def test_relinking_recovers_known_tracks(small_movie, rng):
    shuffled = permute_ids(small_movie.labels, rng)
    assert labels_look_tracked(small_movie.labels)
    assert not labels_look_tracked(shuffled)
    table = build_cell_table(shuffled, relink="auto")
    # cells are convex ellipses, so the centroid pixel belongs to the cell
    assert_same_partition(table, small_movie.labels)
    assert table["track_id"].nunique() == small_movie.truth["label"].nunique()


def test_tracked_labels_keep_their_ids(small_movie):
    table = build_cell_table(small_movie.labels)
    assert (table["track_id"] == table["label"]).all()


def test_real_movie_relinking(rng):
    import tifffile

    masks = tifffile.imread(real_data("yeastvision-sample-movie", "masks.tif"))
    assert labels_look_tracked(masks)
    shuffled = permute_ids(masks, rng)
    table = build_cell_table(shuffled, relink=True)
    truth = build_cell_table(masks, relink=False)
    # match rows by (frame, bbox) and compare the partition into tracks
    key = ["frame", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "area"]
    m = table.merge(truth, on=key, suffixes=("", "_true"))
    assert len(m) == len(truth)
    # links between consecutive frames: fraction of true links recovered
    def links(df, col):
        d = df.sort_values("frame")
        nxt = d.merge(d, on=col, suffixes=("_a", "_b"))
        nxt = nxt[nxt["frame_b"] == nxt["frame_a"] + 1]
        return set(zip(nxt["frame_a"], nxt["area_a"], nxt["bbox_y0_a"], nxt["area_b"], nxt["bbox_y0_b"]))
    true_links = links(m, "track_id_true")
    found = links(m, "track_id")
    recall = len(true_links & found) / len(true_links)
    precision = len(true_links & found) / max(len(found), 1)
    assert recall > 0.97 and precision > 0.97, (recall, precision)
