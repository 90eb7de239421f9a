"""Inputs from many segmentation tools: lazy arrays, gaps, empty frames, odd cells, other settings."""

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_yeast_phenotypes.core.config import ClassifyConfig
from napari_yeast_phenotypes.core.data.crops import CropSettings
from napari_yeast_phenotypes.core.data.movies import as_movie, read_array
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.network.checkpoint import load_classifier, save_checkpoint
from napari_yeast_phenotypes.core.network.model import Classifier
from napari_yeast_phenotypes.core.pipeline import analyse


@pytest.fixture(scope="module")
def clf(random_checkpoint):
    return load_classifier(random_checkpoint)


@pytest.fixture(scope="module")
def reference(small_movie, clf):
    return analyse(small_movie.image, small_movie.labels, clf)


@pytest.mark.slow
def test_dask_and_memmap_give_the_same_result(tmp_path, small_movie, clf, reference):
    da = pytest.importorskip("dask.array")
    lazy = analyse(da.from_array(small_movie.image, chunks=(1, -1, -1)),
                   da.from_array(small_movie.labels, chunks=(1, -1, -1)), clf, ClassifyConfig(chunk_frames=2))
    pd.testing.assert_frame_equal(lazy.cells, reference.cells)
    tifffile.imwrite(tmp_path / "i.tif", small_movie.image)
    tifffile.imwrite(tmp_path / "l.tif", small_movie.labels)
    img, lab = read_array(tmp_path / "i.tif", lazy=True), read_array(tmp_path / "l.tif", lazy=True)
    assert isinstance(img, np.memmap)
    pd.testing.assert_frame_equal(analyse(img, lab, clf).cells, reference.cells)


@pytest.mark.slow
def test_chunking_does_not_change_results(small_movie, clf, reference):
    for chunk in (1, 4, 100):
        res = analyse(small_movie.image, small_movie.labels, clf, ClassifyConfig(chunk_frames=chunk))
        pd.testing.assert_frame_equal(res.cells,
                                      reference.cells)


def test_empty_frames_and_gaps(small_movie, clf):
    lab = small_movie.labels.copy()
    lab[2] = 0  # an empty frame in the middle: every track has a gap
    res = analyse(small_movie.image, lab, clf, ClassifyConfig(relink="no"))
    assert 2 not in set(res.cells["frame"])
    t = res.tracks.set_index("track_id")
    full = t[t["first_frame"] == 0]
    assert (full["n_frames"] == full["last_frame"] - full["first_frame"]).all()  # one frame missing


def test_single_frame_and_2d(small_movie, clf):
    res = analyse(small_movie.image[3], small_movie.labels[3], clf)
    assert (res.cells["frame"] == 0).all() and len(res.tracks) == len(res.cells)


def test_all_empty_movie_is_refused(small_movie, clf):
    with pytest.raises(InputError, match="no cells"):
        analyse(small_movie.image, np.zeros_like(small_movie.labels), clf)


@pytest.mark.slow
def test_checkpoint_crop_settings_are_used(tmp_path, small_movie, clf, reference):
    other = save_checkpoint(tmp_path / "other.pt", Classifier(clf.model, clf.class_names, CropSettings(mask="none")))
    clf2 = load_classifier(other)
    assert clf2.crop_settings.mask == "none"
    res = analyse(small_movie.image, small_movie.labels, clf2)
    p = [c for c in res.cells.columns if c.startswith("p_")]
    assert not np.allclose(res.cells[p].to_numpy(), reference.cells[p].to_numpy())


@pytest.mark.parametrize("image_shape, labels_shape, pattern", [
    ((4, 30, 30), (4, 30, 31), "differ"),
    ((4, 2, 30, 30), (4, 30, 30), "--channel"),
    ((2, 30, 30), (30, 30), "channel"),
    ((2, 3, 4, 30, 30), (2, 3, 4, 30, 30), "expected"),
])
def test_shapes(image_shape, labels_shape, pattern):
    with pytest.raises(InputError, match=pattern):
        as_movie(np.zeros(image_shape), np.zeros(labels_shape, np.uint16))


def test_unreadable_and_unknown_files(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="could not read"):
        read_array(tmp_path / "x.tif")
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(InputError, match="unsupported file type"):
        read_array(tmp_path / "x.png")
    with pytest.raises(InputError, match="not found"):
        read_array(tmp_path / "nope.npy")
