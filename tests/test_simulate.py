"""Tests of the synthetic movie generator (core.simulate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from napari_yeast_phenotypes.core.data.simulate import (
    SyntheticMovie,
    render_cell_examples,
    simulate_movie,
    write_movie,
)
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES, N_CLASSES

SEED = 0


@pytest.fixture(scope="module")
def movie() -> SyntheticMovie:
    return simulate_movie(n_frames=40, size=256, n_cells=30, seed=SEED)


def test_shapes_and_dtypes(movie):
    assert movie.image.shape == (40, 256, 256)
    assert movie.labels.shape == movie.image.shape
    assert movie.image.dtype == np.uint16
    assert movie.labels.dtype == np.uint16
    assert list(movie.truth.columns) == ["frame", "label", "phenotype"]
    assert pd.api.types.is_integer_dtype(movie.truth["frame"])
    assert pd.api.types.is_integer_dtype(movie.truth["label"])
    assert set(movie.truth["phenotype"]) <= set(CLASS_NAMES)
    sorted_truth = movie.truth.sort_values(["frame", "label"], ignore_index=True)
    pd.testing.assert_frame_equal(movie.truth, sorted_truth)


def test_rectangular_size_and_small_movie():
    m = simulate_movie(n_frames=3, size=(80, 120), n_cells=4, seed=1)
    assert m.image.shape == (3, 80, 120) and m.labels.shape == (3, 80, 120)
    assert m.truth["frame"].between(0, 2).all()
    single = simulate_movie(n_frames=1, size=64, n_cells=2, seed=1, births=False, drift=False)
    assert single.image.shape == (1, 64, 64)
    assert len(single.truth) == len(np.unique(single.labels)) - 1 >= 1


def test_cell_count_and_births(movie):
    at_start = movie.truth.loc[movie.truth["frame"] == 0, "label"]
    assert len(at_start) == 30
    n_total = movie.truth["label"].nunique()
    assert 30 * 1.15 <= n_total <= 30 * 1.35  # births add about 20-30 % more cells
    # ids are 1..n in order of appearance and never reused
    first = movie.truth.groupby("label")["frame"].min()
    assert list(first.index) == list(range(1, n_total + 1))
    assert first.is_monotonic_increasing
    no_births = simulate_movie(n_frames=20, size=256, n_cells=10, seed=3, births=False)
    assert no_births.truth.groupby("frame")["label"].nunique().eq(10).all()


def test_deterministic_per_seed_and_varies_across_seeds():
    a = simulate_movie(n_frames=8, size=128, n_cells=8, seed=5)
    b = simulate_movie(n_frames=8, size=128, n_cells=8, seed=5)
    c = simulate_movie(n_frames=8, size=128, n_cells=8, seed=6)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


def test_truth_matches_labels_exactly(movie):
    present = set()
    for t, frame in enumerate(movie.labels):
        present |= {(t, int(lab)) for lab in np.unique(frame) if lab}
    in_truth = set(zip(movie.truth["frame"].tolist(), movie.truth["label"].tolist()))
    assert present == in_truth
    assert len(in_truth) == len(movie.truth)  # no duplicated rows


def test_each_label_is_one_component_over_a_contiguous_frame_range(movie):
    for lab, rows in movie.truth.groupby("label"):
        frames = rows["frame"].to_numpy()
        assert np.array_equal(frames, np.arange(frames.min(), frames.max() + 1))
        assert frames.max() == movie.image.shape[0] - 1  # cells live to the end of the movie
        for t in frames[:: max(1, len(frames) // 5)]:
            _, n = ndi.label(movie.labels[t] == lab)
            assert n == 1, f"label {lab} has {n} components in frame {t}"


def test_cells_do_not_touch(movie):
    # at least 2 background px between cells: no 3x3 window holds two different ids
    for frame in movie.labels[::6].astype(np.int64):
        big = np.where(frame == 0, frame.max() + 1, frame)
        hi, lo = ndi.maximum_filter(frame, size=3), ndi.minimum_filter(big, size=3)
        near = lo <= frame.max()
        assert np.array_equal(hi[near], lo[near])


def test_senescent_is_absorbing(movie):
    for _, rows in movie.truth.groupby("label"):
        sen = (rows["phenotype"] == "Senescent").to_numpy()
        if sen.any():
            assert sen[np.argmax(sen):].all()


def test_every_class_and_a_fraction_senescent(movie):
    assert set(movie.truth["phenotype"]) == set(CLASS_NAMES)
    ever_senescent = movie.truth.groupby("label")["phenotype"].apply(lambda s: (s == "Senescent").any())
    assert 0.2 <= ever_senescent.mean() <= 0.55


def test_phenotype_weights_and_switching():
    m = simulate_movie(n_frames=10, size=128, n_cells=10, seed=2, p_switch=0.0, p_senesce=0.0,
                       phenotype_weights={"Circular": 1.0})
    assert (m.truth["phenotype"] == "Circular").all()
    m = simulate_movie(n_frames=5, size=128, n_cells=10, seed=2, phenotype_weights=[0] * 7 + [1])
    assert (m.truth["phenotype"] == "Senescent").all()


def test_image_brighter_in_cells_and_aligned_under_drift():
    m = simulate_movie(n_frames=60, size=256, n_cells=25, seed=4, drift=True)
    # the labels must actually move for this test to mean something
    centroid0 = np.argwhere(m.labels[0] == 1).mean(0)
    shifts = [np.abs(np.argwhere(m.labels[t] == 1).mean(0) - centroid0).max() for t in range(60)]
    assert max(shifts) >= 1.0
    offsets = [(dy, dx) for dy in (-2, -1, 0, 1, 2) for dx in (-2, -1, 0, 1, 2)]
    for img, lab in zip(m.image.astype(float), m.labels):
        inside, outside = img[lab > 0].mean(), img[lab == 0].mean()
        assert inside > outside + 50
        # the mask picks up the most signal where it is, not shifted by a pixel or two
        score = [img[np.roll(lab > 0, o, axis=(0, 1))].mean() for o in offsets]
        assert offsets[int(np.argmax(score))] == (0, 0)


def test_background_and_bleaching():
    m = simulate_movie(n_frames=30, size=256, n_cells=20, seed=7, p_switch=0.0, p_senesce=0.0,
                       births=False, drift=False)
    bg = [np.median(f[lab == 0]) for f, lab in zip(m.image, m.labels)]
    assert 95 <= np.median(bg) <= 105
    signal = [f[lab > 0].mean() - 100 for f, lab in zip(m.image.astype(float), m.labels)]
    assert 100 < signal[0] < 600  # a typical cell is a few hundred counts above background
    assert 0.6 < signal[-1] / signal[0] < 0.85  # ~20-30 % photobleaching over the movie


def test_write_movie(tmp_path, movie):
    tifffile = pytest.importorskip("tifffile")
    paths = write_movie(movie, tmp_path / "out")
    assert set(paths) == {"image", "labels", "truth"}
    np.testing.assert_array_equal(tifffile.imread(paths["image"]), movie.image)
    np.testing.assert_array_equal(tifffile.imread(paths["labels"]), movie.labels)
    pd.testing.assert_frame_equal(pd.read_csv(paths["truth"]), movie.truth)


def test_render_cell_examples():
    patches, classes = render_cell_examples(n_per_class=3, seed=1)
    assert patches.ndim == 3 and patches.shape[0] == 3 * N_CLASSES
    assert patches.dtype == np.float32
    assert np.array_equal(np.bincount(classes, minlength=N_CLASSES), [3] * N_CLASSES)
    for p in patches:
        corners = np.concatenate([p[:3, :3], p[:3, -3:], p[-3:, :3], p[-3:, -3:]])
        assert p.max() > 150 and corners.mean() < 110  # a cell in the middle, background around
    again, _ = render_cell_examples(n_per_class=3, seed=1)
    np.testing.assert_array_equal(patches, again)


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_frames=0), dict(size=32), dict(size=(64, 40)), dict(n_cells=0), dict(p_switch=1.5),
     dict(phenotype_weights=[1, 2, 3]), dict(phenotype_weights=[0] * 7), dict(phenotype_weights={"Nope": 1})],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        simulate_movie(**kwargs)
