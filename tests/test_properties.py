"""Property-based tests (hypothesis) of the pure parts."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_yeast_phenotypes.core.data.crops import CropSettings, MovieStats, extract_crops
from napari_yeast_phenotypes.core.data.tracking import build_cell_table, measure_frame
from napari_yeast_phenotypes.core.results.export import write_tables
from napari_yeast_phenotypes.core.track.timeline import add_timeline, smooth_track, track_summary
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES, SENESCENT

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def frame_with_cells(draw):
    """A frame with 1-4 cells of any shape (blobs, lines, single pixels), anywhere, borders included."""
    ny, nx = draw(st.integers(8, 90)), draw(st.integers(8, 90))
    lab = np.zeros((ny, nx), np.int32)
    n = draw(st.integers(1, 4))
    for i in range(1, n + 1):
        y0, x0 = draw(st.integers(0, ny - 1)), draw(st.integers(0, nx - 1))
        h, w = draw(st.integers(1, ny)), draw(st.integers(1, nx))
        lab[y0:y0 + h, x0:x0 + w] = i
    ids = np.unique(lab)
    if (ids > 0).sum() == 0:
        lab[0, 0] = 1
    seed = draw(st.integers(0, 2**16))
    img = np.random.default_rng(seed).normal(100, 20, size=lab.shape).astype(np.float32)
    img[lab > 0] += 300
    return img, lab


@FAST
@given(frame_with_cells(), st.sampled_from(["movie", "cell"]), st.sampled_from(["others", "outside", "none"]))
def test_any_cell_gives_a_finite_crop(frame, scale, mask):
    img, lab = frame
    cells = measure_frame(lab)
    stats = MovieStats(100.0, 400.0, float(np.median(cells["bbox_y1"] - cells["bbox_y0"])))
    crops = extract_crops(img, lab, cells, CropSettings(scale=scale, mask=mask), stats)
    assert crops.shape == (len(cells), 1, 40, 40)
    assert np.isfinite(crops).all()
    norm = (img - 100) / 300
    assert crops.min() >= min(norm.min(), 0) - 1e-4 and crops.max() <= max(norm.max(), 0) + 1e-4


@FAST
@given(frame_with_cells(), st.integers(0, 30), st.integers(0, 30))
def test_translation_does_not_change_crops(frame, dy, dx):
    img, lab = frame
    pad = 60  # the frame sits inside a larger one, so windows never leave it
    big_img = np.zeros((img.shape[0] + 2 * pad + 30, img.shape[1] + 2 * pad + 30), np.float32)
    big_lab = np.zeros(big_img.shape, np.int32)
    big_img[pad:pad + img.shape[0], pad:pad + img.shape[1]] = img
    big_lab[pad:pad + img.shape[0], pad:pad + img.shape[1]] = lab
    moved_img = np.roll(big_img, (dy, dx), axis=(0, 1))
    moved_lab = np.roll(big_lab, (dy, dx), axis=(0, 1))
    stats = MovieStats(0.0, 400.0, 20.0)
    a = extract_crops(big_img, big_lab, measure_frame(big_lab), CropSettings(), stats)
    b = extract_crops(moved_img, moved_lab, measure_frame(moved_lab), CropSettings(), stats)
    assert np.allclose(a, b, atol=1e-5 * max(1.0, np.abs(a).max()))  # relative to the crops' magnitude


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_relinking_undoes_any_permutation_of_ids(small_movie, seed):
    movie = small_movie
    rng = np.random.default_rng(seed)
    shuffled = np.zeros(movie.labels.shape, np.int32)
    for t in range(movie.labels.shape[0]):
        lut = np.concatenate([[0], rng.permutation(np.arange(1, movie.labels.max() + 1)) + 100 * t])
        shuffled[t] = lut[movie.labels[t]]
    table = build_cell_table(shuffled, relink=True)
    orig = movie.labels[table["frame"], table["y"].round().astype(int), table["x"].round().astype(int)]
    pairs = pd.DataFrame({"track": table["track_id"], "orig": orig})
    assert (pairs.groupby("track")["orig"].nunique() == 1).all()
    assert (pairs.groupby("orig")["track"].nunique() == 1).all()


probs_strategy = st.integers(1, 40).flatmap(
    lambda n: st.lists(st.lists(st.floats(0.001, 1.0), min_size=8, max_size=8), min_size=n, max_size=n))


@FAST
@given(probs_strategy)
def test_senescent_stays_absorbing(probs):
    p = np.asarray(probs)
    p /= p.sum(axis=1, keepdims=True)
    path, conf = smooth_track(p, SENESCENT)
    hit = np.flatnonzero(path == SENESCENT)
    if hit.size:
        assert (path[hit[0]:] == SENESCENT).all()
    assert ((conf >= 0) & (conf <= 1 + 1e-9)).all()


@FAST
@given(st.integers(0, 7), st.integers(1, 40), st.floats(0.2, 0.99))
def test_constant_track_stays_constant(cls, n, conf):
    p = np.full((n, 8), (1 - conf) / 7)
    p[:, cls] = conf
    path, _ = smooth_track(p, SENESCENT)
    assert (path == cls).all()


@pytest.mark.slow
@FAST
@given(st.integers(0, 2**16), st.integers(1, 6), st.integers(1, 12))
def test_csv_round_trip(tmp_path_factory, seed, n_tracks, n_frames):
    rng = np.random.default_rng(seed)
    rows = []
    for tid in range(1, n_tracks + 1):
        p = rng.dirichlet(np.ones(8), size=n_frames)
        for f in range(n_frames):
            rows.append({"frame": f, "label": tid, "track_id": tid, "y": rng.uniform(0, 500), "x": rng.uniform(0, 500),
                         "area": int(rng.integers(1, 900)), **{f"p_{c}": p[f, j] for j, c in enumerate(CLASS_NAMES)}})
    cells = add_timeline(pd.DataFrame(rows))
    tracks = track_summary(cells)
    out = tmp_path_factory.mktemp("csv")
    write_tables(cells, tracks, out)
    back = pd.read_csv(out / "cells.csv")
    assert len(back) == len(cells)
    merged = back.merge(cells, on=["frame", "label"], suffixes=("", "_mem"))
    for c in ["y", "x", "confidence"] + [f"p_{n}" for n in CLASS_NAMES]:
        assert np.allclose(merged[c], merged[f"{c}_mem"], rtol=1e-5, atol=1e-6)
    assert (merged["phenotype"] == merged["phenotype_mem"]).all()
    tback = pd.read_csv(out / "tracks.csv", keep_default_na=False)
    assert list(tback["track_id"]) == list(tracks["track_id"])
    expected = ["" if pd.isna(x) else str(x) for x in tracks["senescence_frame"]]
    assert [str(x) for x in tback["senescence_frame"]] == expected
    assert list(tback["transitions"]) == list(tracks["transitions"])
