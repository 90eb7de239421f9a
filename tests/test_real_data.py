"""Real third-party yeast data from ../shared/data/real (skipped where it is absent)."""

import numpy as np
import pandas as pd
import pytest
import tifffile
from realdata import real_data

from napari_yeast_phenotypes.core.data.tracking import build_cell_table, labels_look_tracked
from napari_yeast_phenotypes.core.network.checkpoint import load_classifier
from napari_yeast_phenotypes.core.pipeline import analyse


def test_baby_trap_sequences_keep_ids_and_empty_traps_work():
    d = np.load(real_data("baby-trap-timelapse", "baby_trap_labels.npz"))
    seq = np.stack([d[f"prime95b_testC_tp{i}__label_image"] for i in range(1, 6)])
    assert labels_look_tracked(seq)  # the tile order changes at tp5; ids still match by label
    table = build_cell_table(seq)
    assert sorted(table["track_id"].unique()) == [1, 9, 12, 13]
    assert (table.groupby("track_id").size() == 5).all()
    empty = np.stack([d[f"{s}__label_image"] for s in ("evolve_testC", "evolve_testD", "evolve_testF_tp3")])
    assert len(build_cell_table(empty)) == 0


def test_sporulation_movie_untracked_ids_are_relinked():
    masks = tifffile.imread(real_data("yeastvision-sporulation-crop", "cell_masks_crop.tif"))[:120]
    table = build_cell_table(masks, relink=True)
    # early in the movie 5 cells sit in the crop: few tracks, most of them long
    assert table["track_id"].nunique() < 0.2 * len(table)
    lengths = table.groupby("track_id").size()
    assert lengths.max() >= 100
    # linking is one-to-one within each frame
    assert not table.duplicated(["frame", "track_id"]).any()


@pytest.mark.slow
def test_real_movie_end_to_end(random_checkpoint):
    img = tifffile.imread(real_data("yeastvision-sample-movie", "cdc_fluorescence.tif"))[:4]
    lab = tifffile.imread(real_data("yeastvision-sample-movie", "masks.tif"))[:4]
    res = analyse(img, lab, load_classifier(random_checkpoint))
    n_cells = sum(len(np.unique(f)) - 1 for f in lab)
    assert len(res.cells) == n_cells
    assert (res.cells["track_id"] == res.cells["label"]).all()  # the shipped ids are tracked
    p = res.cells[[c for c in res.cells.columns if c.startswith("p_")]].to_numpy()
    assert np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1, atol=1e-4)
    assert set(res.tracks["track_id"]) == set(np.unique(lab[lab > 0]))
    assert isinstance(res.tracks, pd.DataFrame)


@pytest.mark.parametrize("dtype, mean_tol, max_tol", [(np.uint8, 0.025, 0.6), (np.float32, 1e-4, 1e-3)])
def test_real_movie_dtype_does_not_change_crops(dtype, mean_tol, max_tol):
    from napari_yeast_phenotypes.core.data.crops import movie_crops

    img = tifffile.imread(real_data("yeastvision-sample-movie", "cdc_fluorescence.tif"))[:2]
    lab = tifffile.imread(real_data("yeastvision-sample-movie", "masks.tif"))[:2]
    table = build_cell_table(lab)
    base = movie_crops(img, lab, table)
    scaled = (img.astype(np.float64) - img.min()) / (img.max() - img.min())
    other = (scaled * 255).round().astype(dtype) if dtype == np.uint8 else scaled.astype(dtype)
    # 8-bit quantisation of a dim 16-bit movie costs precision (a few grey levels), nothing else
    diff = np.abs(movie_crops(other, lab, table) - base)
    assert diff.mean() < mean_tol and diff.max() < max_tol
