"""Inputs that used to give a silent wrong answer or a traceback get the right diagnosis (issue 12,
items 8 and 10): overflowing, complex, all-NaN and empty images, an image given as labels, a mask
given as labels, --channel without channels, label ids of any size, files' permissions."""

from __future__ import annotations

import errno
import os
import stat
import tracemalloc

import numpy as np
import pytest
from realdata import real_data

from napari_yeast_phenotypes.core.data.crops import CropSettings, extract_crops, movie_stats
from napari_yeast_phenotypes.core.data.movies import as_movie
from napari_yeast_phenotypes.core.data.tracking import Tracker, labels_look_tracked, measure_frame
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.files.atomic import atomic_write
from napari_yeast_phenotypes.core.results.schema import MovieStats


def diagnose(image, labels, channel=None):
    """What the pipeline says about a movie before the network runs (the checks of classify_iter)."""
    image, labels = as_movie(image, labels, channel=channel)
    labels_look_tracked(labels)
    return movie_stats(image, labels)


# ------------------------------------------------------------------------------ images (item 8)

def test_values_beyond_float32_are_refused(small_movie):
    img = small_movie.image.astype(np.float64) * 1e300
    with pytest.raises(InputError, match=r"beyond what float32 holds.*Rescale"):
        diagnose(img, small_movie.labels)
    # the same when only one frame, not among those sampled for the statistics, overflows
    frame = small_movie.image[2].astype(np.float64)
    frame[small_movie.labels[2] > 0] *= 1e300
    cells = measure_frame(small_movie.labels[2], 2)
    with pytest.raises(InputError, match="frame 2 of the image holds values up to"):
        extract_crops(frame, small_movie.labels[2], cells, CropSettings(), MovieStats(0.0, 1000.0, 10.0))
    # large but representable values are fine, and give the crops of the rescaled movie
    big = small_movie.image.astype(np.float64) * 1e30
    a, b = diagnose(big, small_movie.labels), diagnose(small_movie.image.astype(np.float64), small_movie.labels)
    np.testing.assert_allclose([a.low, a.high], [b.low * 1e30, b.high * 1e30], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_images_are_refused(small_movie, dtype):
    with pytest.raises(InputError, match=r"complex.*np.abs"):
        as_movie(small_movie.image.astype(dtype), small_movie.labels)


def test_an_all_nan_image_is_not_said_to_have_no_cells(small_movie):
    nan = np.full(small_movie.image.shape, np.nan, np.float32)
    with pytest.raises(InputError, match="no finite value anywhere") as info:
        diagnose(nan, small_movie.labels)
    assert "hold no cells" not in str(info.value)
    inside = small_movie.image.astype(np.float32)
    inside[small_movie.labels > 0] = np.nan
    with pytest.raises(InputError, match="no finite value inside the cells"):
        diagnose(inside, small_movie.labels)
    # a movie whose labels really are empty still says so
    with pytest.raises(InputError, match="hold no cells"):
        diagnose(small_movie.image, np.zeros_like(small_movie.labels))


@pytest.mark.parametrize("shape", [(5, 64, 64), (64, 64)])
def test_channel_on_an_image_without_channels(shape, rng):
    img = rng.random(shape).astype(np.float32)
    lab = np.zeros(shape, np.uint16)
    with pytest.raises(InputError, match="has no channel axis.*leave out --channel"):
        as_movie(img, lab, channel=0)


@pytest.mark.parametrize("shape", [(0, 64, 64), (3, 0, 64), (3, 64, 0)])
def test_empty_movies(shape):
    with pytest.raises(InputError, match="the movie is empty"):
        as_movie(np.zeros(shape, np.float32), np.zeros(shape, np.uint16))


def test_an_image_given_as_labels(small_movie):
    """The fluorescence image (integers) given as labels: its grey levels would be thousands of 'cells'."""
    with pytest.raises(InputError, match=r"do not look like a segmentation.*image given as the labels"):
        diagnose(small_movie.image, small_movie.image)
    # the real labels pass, and so do labels with only a few cells (not judged)
    diagnose(small_movie.image, small_movie.labels)


def test_fill_ratio_separates_cells_from_grey_levels(small_movie):
    """The property the diagnosis rests on, measured: cells fill most of their box, grey levels almost none."""
    def median_fill(lab):
        t = measure_frame(lab)
        return float(np.median(t["area"] / ((t["bbox_y1"] - t["bbox_y0"]) * (t["bbox_x1"] - t["bbox_x0"]))))

    assert median_fill(small_movie.labels[0]) > 0.5
    assert median_fill(small_movie.image[0]) < 0.05


def test_a_mask_given_as_labels(rng):
    """16 separate cells: labelled one id each they pass; as a 0/1 mask (one id for all) they are refused."""
    yy, xx = np.mgrid[:128, :128]
    labels = np.zeros((2, 128, 128), np.uint16)
    for i, (cy, cx) in enumerate((cy, cx) for cy in range(16, 128, 32) for cx in range(16, 128, 32)):
        labels[:, (yy - cy) ** 2 + (xx - cx) ** 2 < 100] = i + 1
    image = (100 + 300 * (labels > 0) + rng.normal(0, 5, labels.shape)).astype(np.float32)
    diagnose(image, labels)
    with pytest.raises(InputError, match=r"look like a mask.*1 id\(s\) cover 16 separate objects"):
        diagnose(image, (labels > 0).astype(np.uint8))


def test_real_movie_diagnoses():
    """On the real yeastvision movie: the right pair works, swapped or mistaken files are diagnosed."""
    import tifffile

    d = real_data("yeastvision-sample-movie")
    fluo, masks, phase = (tifffile.imread(d / f)[:3] for f in ("cdc_fluorescence.tif", "masks.tif", "phase.tif"))
    stats = diagnose(fluo, masks)
    assert stats.high > stats.low and 10 < stats.cell_side < 60
    diagnose(phase, masks)  # phase contrast as the reporter: a valid image, nothing to diagnose from pixels
    for image, labels in ((masks, fluo), (fluo, phase)):  # an image given as labels
        with pytest.raises(InputError, match="do not look like a segmentation"):
            diagnose(image, labels)
    with pytest.raises(InputError, match="no finite value"):
        diagnose(np.full(fluo.shape, np.nan, np.float32), masks)


# ------------------------------------------------------------------------------ ids of any size (item 10)

def relabel(lab: np.ndarray, offset: int, dtype) -> np.ndarray:
    out = lab.astype(dtype)
    out[lab > 0] += np.array(offset, dtype)
    return out


@pytest.mark.parametrize("offset, dtype", [(2**31, np.int64), (2**31, np.uint32), (2**40, np.uint64),
                                           (7, np.uint64)])
def test_large_ids_give_the_same_cells_in_little_memory(small_movie, offset, dtype):
    lab = small_movie.labels[1]
    small = measure_frame(lab, 1)
    tracemalloc.start()
    try:
        big = measure_frame(relabel(lab, offset, dtype), 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # arrays indexed by id would need 8 bytes per possible id (16 GiB for 2**31); the frame is 128x128
    assert peak < 50 * lab.size * 8
    assert (big["label"].to_numpy() == small["label"].to_numpy() + offset).all()
    cols = ["y", "x", "area", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"]
    np.testing.assert_array_equal(big[cols].to_numpy(), small[cols].to_numpy())


def test_ids_beyond_int64_are_refused():
    lab = np.zeros((8, 8), np.uint64)
    lab[2:4, 2:4] = np.uint64(2**63 + 5)
    with pytest.raises(InputError, match="too large.*relabel_sequential"):
        measure_frame(lab)


def test_relinking_and_crops_follow_the_cells_not_the_ids(small_movie):
    lab = small_movie.labels
    big = relabel(lab, 2**33, np.int64)
    # relinking (ids permuted between frames, then huge) finds the same tracks
    tr_small, tr_big = Tracker(relink=True), Tracker(relink=True)
    for t in range(lab.shape[0]):
        a, b = tr_small.update(lab[t], t), tr_big.update(big[t], t)
        np.testing.assert_array_equal(a["track_id"], b["track_id"])
    assert labels_look_tracked(big)
    stats = movie_stats(small_movie.image, lab)
    assert movie_stats(small_movie.image, big) == stats
    a = extract_crops(small_movie.image[2], lab[2], measure_frame(lab[2], 2), CropSettings(), stats)
    b = extract_crops(small_movie.image[2], big[2], measure_frame(big[2], 2), CropSettings(), stats)
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ permissions (item 10)

@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_written_follow_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "a.csv") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == expected


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("old")
    path.chmod(0o640)
    with atomic_write(path) as fh:
        fh.write("new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_result_folder_files_follow_the_umask(tmp_path):
    from napari_yeast_phenotypes.core.results.folder import RUN_FILE, ResultFolder

    old = os.umask(0o022)
    try:
        with ResultFolder(tmp_path / "res") as folder:
            (folder.staging / "cells.csv").write_text("x")
            folder.commit({})
    finally:
        os.umask(old)
    for name in ("cells.csv", RUN_FILE):
        assert stat.S_IMODE((tmp_path / "res" / name).stat().st_mode) == 0o644


# ------------------------------------------------------------------------------ destinations (item 10)

@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "free some space"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "may write there")])
def test_a_destination_that_fails_mid_write_is_one_plain_message(tmp_path, monkeypatch, code, words):
    path = tmp_path / "a.csv"
    path.write_text("old")

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(InputError, match=f"cannot write {path}.*{words}"), atomic_write(path) as fh:
        fh.write("new")
    monkeypatch.undo()
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.csv"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_folder_is_refused_before_work(tmp_path):
    from napari_yeast_phenotypes.core.files.atomic import check_writable_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(InputError, match="cannot write into"):
            check_writable_dir(ro)
    finally:
        ro.chmod(0o755)


def test_a_full_disk_is_found_by_the_folder_check(tmp_path, monkeypatch):
    from napari_yeast_phenotypes.core.files.atomic import check_writable_dir

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(InputError, match="No space left on device"):
        check_writable_dir(tmp_path / "out")
