"""Round three, class 4 (and the curated-set cases of class 7): data that is not data (issue 21).

Crops with NaN or infinity are refused by name (never set to 0 and trained on); cells whose pixels
are mostly NaN are left out of a classification and said; labels numbered pixel by pixel are
diagnosed; validation crops that are training crops are refused; damaged crops of a set are one
plain message. And a curated set reads without the writers' lock, its history agrees with its
manifest when the disk fills up, and a checkpoint written during training never says "finished".
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_yeast_phenotypes.core.data.cropfolder import load_image_folder
from napari_yeast_phenotypes.core.data.crops import CropSettings, finite_share, movie_stats
from napari_yeast_phenotypes.core.data.cropset import CropSet
from napari_yeast_phenotypes.core.data.curated import CuratedSet, crops_for_annotations
from napari_yeast_phenotypes.core.data.curated.history import read_history
from napari_yeast_phenotypes.core.data.movies import as_movie
from napari_yeast_phenotypes.core.data.tracking import labels_look_tracked, measure_frame
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


def rows_for(n: int, split="train", movie="m1", start=0) -> pd.DataFrame:
    return pd.DataFrame({"frame": np.arange(start, start + n) // 4, "label": np.arange(start, start + n) % 4 + 1,
                         "track_id": np.arange(start, start + n) % 4 + 1 + (100 if split != "train" else 0),
                         "phenotype": [CLASS_NAMES[i % 2] for i in range(n)], "split": split, "experiment": "e",
                         "source": "m.tif", "movie_id": movie})


def crops_for(n: int, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 40, 40)).astype(np.float32)


def filled_set(root: Path, n_train=8, n_val=4) -> CuratedSet:
    cs = CuratedSet(root)
    cs.add(crops_for(n_train), rows_for(n_train))
    cs.add(crops_for(n_val, 1), rows_for(n_val, "val", "m2"))
    return cs


# ------------------------------------------------------------------ crops that are not numbers

@FAST
@given(st.integers(0, 39), st.integers(0, 39), st.sampled_from([np.nan, np.inf, -np.inf]), st.integers(0, 5))
def test_a_crop_folder_with_nan_or_inf_is_refused_naming_the_file(y, x, value, which):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = []
        for i in range(6):
            (root / CLASS_NAMES[i % 2]).mkdir(exist_ok=True)
            crop = np.random.default_rng(i).random((40, 40)).astype(np.float32)
            if i == which:
                crop[y, x] = value
            paths.append(root / CLASS_NAMES[i % 2] / f"c{i}.tif")
            tifffile.imwrite(paths[-1], crop)
        with pytest.raises(InputError, match=rf"1 of the 6 crops .* NaN or infinite pixels: .*c{which}\.tif"):
            load_image_folder(root)


def test_a_nan_crop_in_a_curated_set_is_refused_not_a_learning_rate(tmp_path):
    from napari_yeast_phenotypes.cli import main

    cs = filled_set(tmp_path / "set")
    bad = cs.manifest["path"].iloc[3]
    crop = tifffile.imread(tmp_path / "set" / bad)
    crop[5, 5] = np.nan
    tifffile.imwrite(tmp_path / "set" / bad, crop)
    with pytest.raises(InputError, match=rf"NaN or infinite pixels: {bad}") as info:
        CuratedSet.read(tmp_path / "set").load_split("train")
    assert "learning rate" not in str(info.value)
    code = main(["train", "--train", str(tmp_path / "set" / "train"), "--out", str(tmp_path / "m.pt"), "--epochs", "1",
                 "--base-weights", "none"])
    assert code == 2 and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("damage", ["truncated", "wrong size", "not a tiff", "missing", "3d"])
def test_a_damaged_crop_in_a_set_is_one_plain_message(tmp_path, damage):
    cs = filled_set(tmp_path / "set")
    bad = tmp_path / "set" / cs.manifest["path"].iloc[2]
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:300])
    elif damage == "wrong size":
        tifffile.imwrite(bad, np.zeros((32, 40), np.float32))
    elif damage == "not a tiff":
        bad.write_text("hello")
    elif damage == "3d":
        tifffile.imwrite(bad, np.zeros((2, 40, 40), np.float32))
    else:
        bad.unlink()
    with pytest.raises(InputError, match=str(bad.name)):
        CuratedSet.read(tmp_path / "set").load_split("train")


def test_crops_with_nan_never_join_a_set(tmp_path):
    cs = CuratedSet(tmp_path / "set")
    crops = crops_for(4)
    crops[2, 0, 1, 1] = np.inf
    with pytest.raises(InputError, match="1 of the 4 crops hold NaN or infinite pixels .*frame 0 label 3"):
        cs.add(crops, rows_for(4))
    with pytest.raises(InputError, match="cannot join a set of 40x40"):
        cs.add(crops_for(4)[:, :, :32], rows_for(4))
    assert len(CuratedSet(tmp_path / "set")) == 0 and not list((tmp_path / "set").glob("*/*/*.tif"))


def test_training_refuses_nan_crops_given_in_memory():
    from napari_yeast_phenotypes.core.network.train import train_iter

    crops = crops_for(8)
    crops[1, 0, 0, 0] = np.nan
    data = CropSet(crops, np.arange(8) % 2, CLASS_NAMES, [f"x{i}.tif" for i in range(8)])
    with pytest.raises(InputError, match=r"x1\.tif"):
        next(train_iter(data, None))


# ------------------------------------------------------------------ cells whose pixels are not numbers

@FAST
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 7, 64, 10_000]))
def test_finite_share_counts_each_cells_pixels(seed, band):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, (23, 17)).astype(np.int32) * 1000
    image = rng.random((23, 17)).astype(np.float32)
    image[rng.random((23, 17)) < rng.random()] = rng.choice([np.nan, np.inf, -np.inf])
    cells = measure_frame(labels)
    share = finite_share(image, labels, cells, band_pixels=band)
    for lab, s in zip(cells["label"], share):
        inside = labels == lab
        assert s == pytest.approx(np.isfinite(image[inside]).mean(), rel=1e-12)


@pytest.mark.slow
def test_cells_without_finite_pixels_are_left_out_and_said(small_movie, random_checkpoint, tmp_path):
    from napari_yeast_phenotypes.core.jobs.classify import classify_movie

    image = small_movie.image.astype(np.float32)
    labels = small_movie.labels
    lab = int(np.unique(labels[2][labels[2] > 0])[0])
    image[2][labels[2] == lab] = np.nan  # all of one cell in frame 2
    lab4 = int(np.unique(labels[4][labels[4] > 0])[1])
    cell4 = np.flatnonzero(labels[4].ravel() == lab4)
    image[4].ravel()[cell4[: int(0.7 * cell4.size)]] = np.inf  # most of another in frame 4
    job = classify_movie(image, labels, random_checkpoint, out=tmp_path / "res")
    assert any("2 cell-frame" in w for w in job.warnings)  # said to the user (the CLI prints them)
    cells = job.result.cells
    keys = set(zip(cells["frame"], cells["label"]))
    assert (2, lab) not in keys and (4, lab4) not in keys
    n_cells = sum(len(np.unique(f[f > 0])) for f in labels)
    assert len(cells) == n_cells - 2
    assert np.isfinite(cells[[c for c in cells if c.startswith("p_")]].to_numpy()).all()
    run = json.loads((tmp_path / "res" / "run.json").read_text())
    assert run["cells_without_data"] == {"cells": 2, "frames": [2, 4]}
    assert any("NaN or infinite" in w for w in run["warnings"])


def test_annotated_cells_without_data_cannot_be_curated(small_movie):
    image = small_movie.image.astype(np.float32)
    ann = small_movie.truth.iloc[:3]
    f, lab = int(ann["frame"].iloc[1]), int(ann["label"].iloc[1])
    image[f][small_movie.labels[f] == lab] = np.nan
    with pytest.raises(InputError, match=f"frame {f} label {lab}"):
        crops_for_annotations(image, small_movie.labels, ann, CropSettings(), "m.tif")


# ------------------------------------------------------------------ labels numbered pixel by pixel

@FAST
@given(st.integers(5, 80), st.integers(5, 80), st.integers(0, 2**31), st.booleans())
def test_labels_with_one_id_per_pixel_get_a_diagnosis(h, w, offset, shuffled):
    if h * w < 20:
        return
    ids = np.arange(1, h * w + 1, dtype=np.int64)
    if shuffled:
        ids = np.random.default_rng(h * w).permutation(ids)
    labels = np.repeat((ids.reshape(1, h, w) + offset).astype(np.int64), 2, axis=0)
    image = np.random.default_rng(0).random((2, h, w)).astype(np.float32)
    img, lab = as_movie(image, labels)
    with pytest.raises(InputError, match="single pixels"):
        labels_look_tracked(lab)  # the first check that classify makes on the labels
    with pytest.raises(InputError, match="single pixels"):
        movie_stats(img, lab)


def test_ordinary_small_cells_are_not_called_pixels():
    labels = np.zeros((1, 60, 60), np.int32)
    for i in range(25):  # 25 cells of 2x2 = 4 pixels: small, but cells
        y, x = divmod(i, 5)
        labels[0, 10 * y:10 * y + 2, 10 * x:10 * x + 2] = i + 1
    movie_stats(np.ones((1, 60, 60), np.float32), labels)


@pytest.mark.parametrize("value", [3e38, -1e30, 2e6])
def test_a_crop_with_absurdly_large_pixels_is_refused_naming_the_file(tmp_path, value):
    """Finite but not data: 3e38 overflowed the first convolution and ended in "learning rate too high"."""
    from napari_yeast_phenotypes.core.data.cropfolder import load_image_folder

    for i in range(4):
        (tmp_path / CLASS_NAMES[i % 2]).mkdir(exist_ok=True)
        crop = np.random.default_rng(i).random((40, 40)).astype(np.float32)
        if i == 2:
            crop[3, 4] = value
        tifffile.imwrite(tmp_path / CLASS_NAMES[i % 2] / f"c{i}.tif", crop)
    with pytest.raises(InputError, match=r"NaN or infinite pixels: .*c2\.tif \(or absurdly large"):
        load_image_folder(tmp_path)
    cs = CuratedSet(tmp_path / "set")
    crops = crops_for(2)
    crops[1, 0, 5, 5] = value
    with pytest.raises(InputError, match="absurdly large"):
        cs.add(crops, rows_for(2))
    assert len(CuratedSet(tmp_path / "set")) == 0


@pytest.mark.parametrize("kind", ["planes", "complex", "bomb", "bool-ok"])
def test_crop_files_that_are_not_one_plane_of_intensities(tmp_path, kind):
    """A 2x40x40 stack (read as a 2x40 image), a complex crop (imaginary part dropped), a 20,000 x 20,000
    zlib file of 600 KB (GBs once decoded): refused, the last from its header."""
    from napari_yeast_phenotypes.core.data.cropfolder import load_image_folder

    for i in range(4):
        (tmp_path / CLASS_NAMES[i % 2]).mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / CLASS_NAMES[i % 2] / f"c{i}.tif",
                         np.random.default_rng(i).random((40, 40)).astype(np.float32))
    odd = tmp_path / CLASS_NAMES[0] / "odd.tif"
    if kind == "planes":
        tifffile.imwrite(odd, np.full((2, 40, 40), 0.5, np.float32))
    elif kind == "complex":
        tifffile.imwrite(odd, np.full((40, 40), 0.5 + 1j, np.complex64))
    elif kind == "bomb":
        tifffile.imwrite(odd, np.zeros((20000, 20000), np.uint8), compression="zlib")
        assert odd.stat().st_size < 2_000_000
    else:
        tifffile.imwrite(odd, np.eye(40, dtype=bool))
    if kind == "bool-ok":
        assert len(load_image_folder(tmp_path)) == 5
        return
    words = {"planes": "2D single-channel", "complex": "complex", "bomb": "not a crop of one cell"}[kind]
    with pytest.raises(InputError, match=words):
        load_image_folder(tmp_path)


# ------------------------------------------------------------------ validation that is not held out

def _set(crops, names, tracks=None):
    return CropSet(crops, np.arange(len(crops)) % 2, CLASS_NAMES, names, tracks=tracks)


def test_validation_equal_to_training_is_refused():
    from napari_yeast_phenotypes.core.network.train import train_iter

    train = _set(crops_for(8), [f"t{i}.tif" for i in range(8)])
    with pytest.raises(InputError, match="all validation crops are also training crops"):
        next(train_iter(train, train))
    # the same pixels under other names, in part
    val = _set(np.concatenate([crops_for(3, 5), train.crops[6:7]]), [f"v{i}.tif" for i in range(4)])
    with pytest.raises(InputError, match=r"1 of the 4 validation crops .* v3 is t6"):
        next(train_iter(train, val))
    # one cell on both sides
    train = _set(crops_for(8), [f"t{i}.tif" for i in range(8)], np.array(["a"] * 4 + ["b"] * 4, dtype=object))
    val = _set(crops_for(4, 9), [f"v{i}.tif" for i in range(4)], np.array(["b", "c", "c", "c"], dtype=object))
    with pytest.raises(InputError, match="1 cell.* both the training and the validation"):
        next(train_iter(train, val))
    test = _set(val.crops[:2], ["w0.tif", "w1.tif"])
    val = _set(crops_for(4, 9), [f"v{i}.tif" for i in range(4)])
    with pytest.raises(InputError, match="test crops are also validation crops"):
        next(train_iter(_set(crops_for(8), [f"t{i}.tif" for i in range(8)]), val, test=test))


def test_val_equal_to_train_on_the_command_line(tmp_path):
    from napari_yeast_phenotypes.cli import main

    filled_set(tmp_path / "set")
    train = str(tmp_path / "set" / "train")
    code = main(["train", "--train", train, "--val", train, "--out", str(tmp_path / "m.pt"), "--epochs", "1",
                 "--base-weights", "none"])
    assert code == 2 and not (tmp_path / "m.pt").exists()


def test_a_learning_curve_judged_on_its_training_crops_is_refused(tmp_path, capsys):
    """learning-curve --val equal to --train: refused before any training (it trained and called it held out)."""
    from napari_yeast_phenotypes.cli import main
    from napari_yeast_phenotypes.core.network.crossval import learning_curve

    train = _set(crops_for(8), [f"t{i}.tif" for i in range(8)])
    with pytest.raises(InputError, match="validation crops are also training crops"):
        learning_curve(train, train, per_class=(2,))
    filled_set(tmp_path / "set")
    folder = str(tmp_path / "set" / "train")
    assert main(["learning-curve", "--train", folder, "--val", folder, "--epochs", "1", "--base-weights", "none"]) == 2
    assert "also training crops" in capsys.readouterr().err


# ------------------------------------------------------------------ class 7: a curated set read without the lock

@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_curated_set_can_be_trained_on(tmp_path):
    from napari_yeast_phenotypes.core.jobs.training import load_crop_folder

    filled_set(tmp_path / "set")
    (tmp_path / "set" / ".curated.lock").unlink()
    for p in sorted(tmp_path.rglob("*"), reverse=True):
        p.chmod(p.stat().st_mode & ~0o222)
    (tmp_path / "set").chmod(0o555)
    try:
        data, settings = load_crop_folder(tmp_path / "set" / "train", CLASS_NAMES)
        assert len(data) == 8 and settings == CropSettings()
        with pytest.raises(InputError, match="opened to read only"):
            CuratedSet.read(tmp_path / "set").remove(data.paths[0].split("/")[-1][:-4])
    finally:
        for p in [tmp_path / "set", *(tmp_path / "set").rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def test_a_set_whose_lock_cannot_be_made_is_read_all_the_same(tmp_path, monkeypatch):
    """A read-only disk, even for root: the lock file cannot be created, and reading wants none."""
    import napari_yeast_phenotypes.core.files.locking as locking
    from napari_yeast_phenotypes.core.jobs.training import crossval_data, load_crop_folder, training_data

    filled_set(tmp_path / "set")
    (tmp_path / "set" / ".curated.lock").unlink()
    real_open = locking.os.open

    def read_only_disk(path, flags, *a):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *a)

    monkeypatch.setattr(locking.os, "open", read_only_disk)
    with pytest.raises(InputError, match="lock file"):
        CuratedSet(tmp_path / "set")
    data, _ = load_crop_folder(tmp_path / "set" / "train", CLASS_NAMES)
    assert len(data) == 8
    # what train, crossval and learning-curve --curated open: the set read, no lock wanted
    assert len(training_data(curated=tmp_path / "set").train) == 8
    assert len(crossval_data(curated=tmp_path / "set")[0]) == 12


def test_reading_a_set_does_not_wait_for_its_writer(tmp_path):
    from napari_yeast_phenotypes.core.files.locking import FileLock
    from napari_yeast_phenotypes.core.jobs.training import training_data

    filled_set(tmp_path / "set")
    with FileLock(tmp_path / "set" / ".curated.lock", timeout=0, what="another writer"):
        assert len(CuratedSet.read(tmp_path / "set").load_split("val")) == 4
        data = training_data(curated=tmp_path / "set")  # train --curated while the Annotate dock curates
        assert len(data.train) == 8 and len(data.val) == 4
        with pytest.raises(InputError, match="in use"):
            CuratedSet(tmp_path / "set", lock_timeout=0)


def _fail_after(monkeypatch, module, name, n_bytes=None):
    """Make ``module.name`` (os.write, ...) write ``n_bytes`` and then fail as a full disk does."""
    real = getattr(module, name)
    calls = {"n": 0}

    def broken(fd, *data):
        calls["n"] += 1
        if n_bytes is not None and calls["n"] == 1:
            real(fd, bytes(data[0])[:n_bytes])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, name, broken)


def _files(root: Path) -> list[str]:
    """Every file of a set but its lock: what a change that did not happen must leave as it was."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".curated.lock")


def test_a_full_disk_during_the_history_append_changes_nothing(tmp_path, monkeypatch):
    import napari_yeast_phenotypes.core.files.inside as inside

    cs = filled_set(tmp_path / "set")
    before_manifest = (tmp_path / "set" / "manifest.csv").read_bytes()
    before_history = (tmp_path / "set" / "history.jsonl").read_bytes()
    before_files = _files(tmp_path / "set")
    with monkeypatch.context() as m:
        _fail_after(m, inside.os, "write", 37)  # a part of the line, then the disk is full
        with pytest.raises(InputError, match="No space left.*nothing was changed"):
            cs.add(crops_for(2, 7), rows_for(2, movie="m3"))
    assert (tmp_path / "set" / "manifest.csv").read_bytes() == before_manifest
    assert _files(tmp_path / "set") == before_files  # the new crops were taken away too
    assert (tmp_path / "set" / "history.jsonl").read_bytes() == before_history
    # the set works on, and its history reads whole
    CuratedSet(tmp_path / "set").add(crops_for(2, 7), rows_for(2, movie="m3"))
    records, skipped = read_history(tmp_path / "set")
    assert skipped == 0 and [r["op"] for r in records] == ["add", "add", "add"]


def test_a_full_disk_while_the_manifest_is_written_takes_the_record_back(tmp_path, monkeypatch):
    import napari_yeast_phenotypes.core.data.curated.manifest as manifest
    from napari_yeast_phenotypes.core.errors import write_error

    cs = filled_set(tmp_path / "set")
    before = (tmp_path / "set" / "history.jsonl").read_bytes()
    real = manifest.atomic_write

    def full_disk(path, *a, **k):
        if Path(path).name == "manifest.csv":
            raise write_error(path, OSError(errno.ENOSPC, "No space left on device"))
        return real(path, *a, **k)

    before_files = _files(tmp_path / "set")
    with monkeypatch.context() as m:
        m.setattr(manifest, "atomic_write", full_disk)
        with pytest.raises(InputError, match="manifest.csv.*nothing was changed"):
            cs.add(crops_for(2, 7), rows_for(2, movie="m3"))
    assert (tmp_path / "set" / "history.jsonl").read_bytes() == before
    assert _files(tmp_path / "set") == before_files
    assert len(CuratedSet(tmp_path / "set")) == 12


@pytest.mark.parametrize("fail_at", [1, 3])
def test_a_full_disk_while_crops_are_written_leaves_no_crop_behind(tmp_path, monkeypatch, fail_at):
    """The disk fills after some of a change's crops are written: those are taken away, nothing else moves."""
    import napari_yeast_phenotypes.core.data.curated.writer as writer
    from napari_yeast_phenotypes.core.errors import write_error

    cs = filled_set(tmp_path / "set")
    before_files = _files(tmp_path / "set")
    real, calls = writer._write_tif, {"n": 0}

    def fills(path, crop):
        calls["n"] += 1
        if calls["n"] == fail_at:
            Path(path).write_bytes(b"II*\x00 part")  # a part written, then the disk is full
            raise write_error(path, OSError(errno.ENOSPC, "No space left on device"))
        return real(path, crop)

    with monkeypatch.context() as m:
        m.setattr(writer, "_write_tif", fills)
        with pytest.raises(InputError, match="No space left"):
            cs.add(crops_for(4, 7), rows_for(4, movie="m3"))
    assert _files(tmp_path / "set") == before_files
    again = CuratedSet(tmp_path / "set")
    again.add(crops_for(4, 7), rows_for(4, movie="m3"))
    assert len(again) == 16 and not (tmp_path / "set" / ".orphans").exists()


def test_a_history_line_cut_short_does_not_break_reading(tmp_path):
    filled_set(tmp_path / "set")
    with open(tmp_path / "set" / "history.jsonl", "ab") as fh:
        fh.write(b'{"op": "add", "id": "cut", "cel')  # a writer killed mid-line (older versions; a kill)
    CuratedSet(tmp_path / "set").add(crops_for(1, 3), rows_for(1, movie="m4"))
    records, skipped = read_history(tmp_path / "set")
    assert skipped == 1 and [r["op"] for r in records] == ["add", "add", "add"]
    assert CuratedSet(tmp_path / "set").history()[-1]["cells"][0][0] == "m4"


@pytest.mark.slow
def test_a_checkpoint_of_an_interrupted_training_does_not_say_finished(tmp_path):
    import torch

    from napari_yeast_phenotypes.core.config import TrainConfig
    from napari_yeast_phenotypes.core.network.train import train_iter

    data = CropSet(crops_for(16), np.arange(16) % 2, CLASS_NAMES)
    steps = train_iter(data, None, TrainConfig(epochs=3, batch_size=8, base_weights="none", augment="none",
                                               small_data="off"), out=tmp_path / "m.pt")
    for update in steps:
        if update.get("done_epoch"):
            break
    with pytest.raises(KeyboardInterrupt):  # what Ctrl-C does in the middle of the second epoch
        steps.throw(KeyboardInterrupt)
    meta = torch.load(tmp_path / "m.pt", weights_only=True)["metadata"]
    assert meta["stopped"].startswith("not finished: written after epoch 1 of 3")
