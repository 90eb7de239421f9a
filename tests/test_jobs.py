"""The job layer: config objects, classify_movie and its result folder with run.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_yeast_phenotypes import __version__
from napari_yeast_phenotypes.cli import build_parser
from napari_yeast_phenotypes.core.config import ClassifyConfig, TrainConfig
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.files.fingerprint import array_sha256, file_sha256
from napari_yeast_phenotypes.core.files.locking import FileLock, LockHeld
from napari_yeast_phenotypes.core.jobs import ClassifyJob, classify_movie, load_crop_folder
from napari_yeast_phenotypes.core.network.checkpoint import load_classifier
from napari_yeast_phenotypes.core.pipeline import analyse
from napari_yeast_phenotypes.core.results.folder import (
    RESULT_FILES,
    RUN_FILE,
    WRITING_MARK,
    ResultFolder,
    result_complete,
)
from napari_yeast_phenotypes.core.results.schema import MovieStats
from napari_yeast_phenotypes.core.track.timeline import TimelineSettings


@pytest.fixture(scope="module")
def movie_files(small_movie, tmp_path_factory):
    d = tmp_path_factory.mktemp("movie")
    tifffile.imwrite(d / "image.tif", small_movie.image)
    tifffile.imwrite(d / "labels.tif", small_movie.labels)
    return d / "image.tif", d / "labels.tif"


# ------------------------------------------------------------------------------ config objects

def test_classify_config_round_trip():
    cfg = ClassifyConfig(relink="yes", channel=1, chunk_frames=3, batch_size=17, device="cpu", precision="fp32",
                         fast_path=False, timeline=TimelineSettings(switch_rate=0.1, senescence_rate=0.01))
    d = json.loads(json.dumps(cfg.to_dict()))  # as stored in run.json
    assert ClassifyConfig.from_dict(d) == cfg
    assert ClassifyConfig.from_dict({}) == ClassifyConfig()


def test_train_config_round_trip():
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.01, seed=4, base_weights="none", trainable="all", augment=False,
                      small_data="off")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("bad, match", [
    ({"batch_size": 0}, "batch size"), ({"chunk_frames": -2}, "chunk frames"), ({"relink": "maybe"}, "relink"),
    ({"precision": "fp8"}, "precision"), ({"channel": -1}, "channel"), ({"colour": 3}, "unknown classify"),
    ({"timeline": {"switch_rate": 2.0}}, "switch_rate"),
])
def test_classify_config_refuses_bad_values(bad, match):
    with pytest.raises(InputError, match=match):
        ClassifyConfig.from_dict(bad)


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"batch_size": 1}, {"lr": -1.0}, {"trainable": "conv9"},
                                 {"epochs": 2.5}])
def test_train_config_refuses_bad_values(bad):
    with pytest.raises(InputError):
        TrainConfig.from_dict(bad)


def test_cli_defaults_come_from_the_configs():
    args = build_parser().parse_args(["classify", "--image", "i", "--labels", "l", "--model", "m", "--out", "o"])
    c = ClassifyConfig()
    assert (args.batch_size, args.chunk_frames, args.device, args.relink, args.precision) == \
        (c.batch_size, c.chunk_frames, c.device, c.relink, c.precision)
    args = build_parser().parse_args(["train", "--train", "t", "--out", "m.pt"])
    t = TrainConfig()
    assert (args.epochs, args.batch_size, args.lr, args.trainable, args.base_weights) == \
        (t.epochs, t.batch_size, t.lr, t.trainable, t.base_weights)


def test_every_cli_option_explains_itself():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = [f"{name} {a.option_strings[0]}" for name, p in sub.choices.items() for a in p._actions
               if a.option_strings and a.help is None]
    assert missing == []


def test_movie_stats_round_trip():
    s = MovieStats(1.5, 200.25, 17.0)
    assert MovieStats.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match="cell_side"):
        MovieStats.from_dict({"low": 0, "high": 1})


# ------------------------------------------------------------------------------ classify_movie

@pytest.mark.slow
def test_classify_movie_writes_a_complete_folder(movie_files, random_checkpoint, small_movie, tmp_path):
    out = tmp_path / "res"
    job = classify_movie(*movie_files, random_checkpoint, ClassifyConfig(device="cpu"), out)
    assert isinstance(job, ClassifyJob) and job.out == out
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted([*RESULT_FILES, RUN_FILE])
    assert not list(out.glob(".staging-*")) and not (out / WRITING_MARK).exists()
    run = json.loads((out / RUN_FILE).read_text())
    assert run["version"] == __version__
    assert ClassifyConfig.from_dict(run["config"]) == ClassifyConfig(device="cpu")
    assert run["model"]["sha256"] == file_sha256(random_checkpoint)
    assert run["model"]["class_names"] == list(job.result.class_names)
    assert run["inputs"]["image"]["sha256"] == file_sha256(movie_files[0])
    assert run["inputs"]["labels"]["bytes"] == movie_files[1].stat().st_size
    assert run["inputs"]["image"]["shape"] == list(small_movie.image.shape)
    assert run["inference"]["precision"] in ("fp32", "bf16") and run["inference"]["path"]
    assert run["started"] <= run["finished"]
    assert MovieStats.from_dict(run["movie_stats"]).high > MovieStats.from_dict(run["movie_stats"]).low
    assert result_complete(out)
    # the same as the pipeline called directly
    direct = analyse(small_movie.image, small_movie.labels, load_classifier(random_checkpoint))
    cells = pd.read_csv(out / "cells.csv")
    np.testing.assert_allclose(cells["p_Nuclear"], direct.cells["p_Nuclear"], rtol=1e-5, atol=1e-6)
    # a changed output file makes the folder incomplete
    with open(out / "tracks.csv", "a") as fh:
        fh.write("\n")
    assert not result_complete(out)


@pytest.mark.slow
def test_arrays_are_described_by_content(small_movie, random_checkpoint):
    job = classify_movie(small_movie.image, small_movie.labels, random_checkpoint, names={"image": "layer A"})
    assert job.out is None
    assert job.run["inputs"]["image"] == {"name": "layer A", "shape": list(small_movie.image.shape),
                                          "dtype": str(small_movie.image.dtype),
                                          "sha256": array_sha256(small_movie.image)}


def test_array_digest_follows_content_not_storage(small_movie):
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(small_movie.labels, chunks=(2, -1, -1))
    assert array_sha256(lazy) == array_sha256(small_movie.labels)
    other = small_movie.labels.copy()
    other[0, 0, 0] += 1
    assert array_sha256(other) != array_sha256(small_movie.labels)
    assert array_sha256(small_movie.labels.astype(np.int64)) != array_sha256(small_movie.labels)


def test_result_folder_is_checked_before_the_long_work(movie_files, random_checkpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    frames_done = []
    for out, match in ((blocker, "not a folder"), (blocker / "sub", "cannot be made")):
        with pytest.raises(InputError, match=match):
            classify_movie(*movie_files, random_checkpoint, out=out, progress=lambda d, n: frames_done.append(d))
    assert frames_done == []  # not one frame was classified


def test_a_new_folder_is_not_left_behind_by_a_failed_run(small_movie, random_checkpoint, tmp_path):
    with pytest.raises(InputError, match="integers"):
        classify_movie(small_movie.image, small_movie.labels.astype(np.float32), random_checkpoint,
                       out=tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_failed_run_leaves_earlier_results_alone(movie_files, random_checkpoint, tmp_path):
    out = tmp_path / "res"
    classify_movie(*movie_files, random_checkpoint, out=out)
    before = {n: (out / n).read_bytes() for n in (*RESULT_FILES, RUN_FILE)}
    bad = tmp_path / "bad.tif"
    tifffile.imwrite(bad, np.zeros((2, 8, 8), np.float32))  # labels that are not integers
    with pytest.raises(InputError):
        classify_movie(movie_files[0], bad, random_checkpoint, out=out, overwrite=True)
    assert {n: (out / n).read_bytes() for n in before} == before
    assert not list(out.glob(".staging-*"))


@pytest.mark.slow
def test_a_second_writer_is_refused(movie_files, random_checkpoint, tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    with ResultFolder(out), pytest.raises(LockHeld, match="in use"):
        classify_movie(*movie_files, random_checkpoint, out=out)
    classify_movie(*movie_files, random_checkpoint, out=out)  # free again
    assert result_complete(out)


def test_lock_is_held_across_processes_and_freed_by_death(tmp_path):
    lock = tmp_path / "x.lock"
    code = ("import sys, time; from napari_yeast_phenotypes.core.files.locking import FileLock\n"
            f"l = FileLock({str(lock)!r}, what='test holder').acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match="test holder"):
            FileLock(lock, timeout=0.2).acquire()
    finally:
        proc.kill()
        proc.wait()
    with FileLock(lock, timeout=5):  # the dead holder's lock is gone with it
        pass


@pytest.mark.slow
def test_an_interrupted_write_is_replaced_without_overwrite(movie_files, random_checkpoint, tmp_path):
    """A run killed while moving its files into place leaves the mark and no run.json: the next run
    may replace that half folder; complete results still need --overwrite."""
    out = tmp_path / "res"
    classify_movie(*movie_files, random_checkpoint, out=out)
    os.unlink(out / RUN_FILE)
    (out / WRITING_MARK).write_text("killed")
    classify_movie(*movie_files, random_checkpoint, out=out)
    assert result_complete(out) and not (out / WRITING_MARK).exists()
    with pytest.raises(InputError, match="already holds results"):
        classify_movie(*movie_files, random_checkpoint, out=out)


# ------------------------------------------------------------------------------ crops made elsewhere

@pytest.mark.slow
def test_external_crops_are_recorded_and_warned_about(tmp_path, small_movie, random_checkpoint):
    from napari_yeast_phenotypes.core.config import TrainConfig
    from napari_yeast_phenotypes.core.jobs import train_model
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    rng = np.random.default_rng(0)
    for c in CLASS_NAMES[:2]:
        (tmp_path / "crops" / c).mkdir(parents=True)
        for i in range(3):
            tifffile.imwrite(tmp_path / "crops" / c / f"{i}.tif", rng.integers(0, 4000, (64, 48), dtype=np.uint16))
    said = []
    clf = train_model(tmp_path / "crops", None,
                      TrainConfig(epochs=1, batch_size=2, base_weights="none", small_data="off"), tmp_path / "m.pt",
                      class_names=CLASS_NAMES, notes=said.append)
    assert any("64x48" in s and "resized to 40x40" in s for s in said)
    origin = load_classifier(tmp_path / "m.pt").metadata["crop_origin"]
    assert origin["kind"] == "external" and "percentile" in origin["normalisation"]
    job = classify_movie(small_movie.image, small_movie.labels, tmp_path / "m.pt")
    assert "crops made elsewhere" in job.warnings[0] and job.run["warnings"] == job.warnings
    # a model trained on this package's own crops gives no such warning
    assert classify_movie(small_movie.image, small_movie.labels, random_checkpoint).warnings == []
    assert clf.external_crops


def test_a_whole_curated_set_is_not_a_split(tmp_path):
    from napari_yeast_phenotypes.core.data.curated import CuratedSet

    CuratedSet(tmp_path / "set")
    (tmp_path / "set" / "manifest.csv").write_text("crop_id,split,phenotype,path,experiment,source,frame,label,"
                                                   "track_id,annotated_at,annotator\n")
    with pytest.raises(InputError, match="name one of its splits"):
        load_crop_folder(tmp_path / "set", ["Nuclear"])
