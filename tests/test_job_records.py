"""Every job is one function that leaves a record of itself (run.json): classify (with the track model loaded
in one place), train from a curated set or folders, cross-validate, the learning curve, curate, fit-track-model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_yeast_phenotypes import __version__
from napari_yeast_phenotypes.cli import main
from napari_yeast_phenotypes.core.config import TrainConfig
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.files.fingerprint import file_sha256
from napari_yeast_phenotypes.core.jobs import classify_movie, crossvalidate, curate_movie, learning_curve_job
from napari_yeast_phenotypes.core.jobs.record import RunRecord, record_path
from napari_yeast_phenotypes.core.jobs.training import train_model, training_data
from napari_yeast_phenotypes.core.track.timeline import TimelineSettings
from napari_yeast_phenotypes.core.track.track_model import TrackModelFit
from napari_yeast_phenotypes.core.track.track_model_file import save_track_model
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

QUICK = TrainConfig(epochs=1, batch_size=8, base_weights="none", seed=1, small_data="off")


def _is_record(run: dict, job: str) -> None:
    assert run["package"] == "napari-yeast-phenotypes" and run["version"] == __version__ and run["job"] == job
    assert run["versions"]["numpy"] == np.__version__ and run["versions"]["python"]
    assert run["started"] <= run["finished"] and run["seconds"] >= 0


@pytest.fixture(scope="module")
def curated(tmp_path_factory, small_movie):
    """A curated set with train and val splits of the small simulated movie, made by the curate job."""
    root = tmp_path_factory.mktemp("jobs")
    from napari_yeast_phenotypes.core.data.simulate import write_movie

    write_movie(small_movie, root / "movie")
    truth = small_movie.truth
    truth.assign(split=np.where(truth["label"] % 3 == 0, "val", "train")).to_csv(root / "ann.csv", index=False)
    cs, report = curate_movie(root / "movie" / "image.tif", root / "movie" / "labels.tif", root / "ann.csv",
                              root / "cur", experiment="e1", annotator="test")
    assert report.added == len(truth)
    return root


def test_record_has_versions_config_and_times():
    run = RunRecord("train", QUICK, inputs={"train": "x"}).finish(best_epoch=1)
    _is_record(run, "train")
    assert run["config"] == QUICK.to_dict() and run["inputs"] == {"train": "x"} and run["best_epoch"] == 1
    assert record_path("out/model.pt").name == "model.run.json"


def test_curate_records_each_run_in_the_set(curated):
    runs = sorted((curated / "cur" / "runs").glob("*-curate-*.json"))
    assert len(runs) == 1
    run = json.loads(runs[0].read_text())
    _is_record(run, "curate")
    assert run["inputs"]["image"]["sha256"] == file_sha256(curated / "movie" / "image.tif")
    assert run["added"] == len(pd.read_csv(curated / "ann.csv")) and run["config"]["annotator"] == "test"


def test_training_data_from_a_curated_set_or_folders(curated):
    cur = curated / "cur"
    whole = training_data(curated=cur)
    assert whole.val is not None and whole.test is None
    assert len(whole.train) + len(whole.val) == len(pd.read_csv(curated / "ann.csv"))
    folders = training_data(train=cur / "train", val=cur / "val")
    assert np.array_equal(folders.train.crops, whole.train.crops) and np.array_equal(folders.val.crops,
                                                                                   whole.val.crops)
    with pytest.raises(InputError, match="exactly one"):
        training_data(curated=cur, train=cur / "train")
    with pytest.raises(InputError, match="not a curated set"):
        training_data(curated=curated / "movie")


@pytest.mark.slow
def test_train_writes_its_record_beside_the_checkpoint(curated, tmp_path):
    out = tmp_path / "model.pt"
    clf = train_model(config=QUICK, out=out, curated=curated / "cur")
    run = json.loads(record_path(out).read_text())
    _is_record(run, "train")
    assert run["config"] == QUICK.to_dict() and run["model"]["sha256"] == file_sha256(out)
    assert run["inputs"]["train"].endswith("train") and run["inputs"]["val"].endswith("val")
    assert run["inputs"]["train_set"]["n"] == len(training_data(curated=curated / "cur").train)
    assert run["best_epoch"] == clf.metadata["best_epoch"]


@pytest.mark.slow
def test_crossval_and_learning_curve_keep_their_record_in_their_json(curated, tmp_path):
    out = tmp_path / "cv.json"
    res = crossvalidate(folds=2, config=QUICK, curated=curated / "cur", by="track", random_split=False, out=out)
    saved = json.loads(out.read_text())
    _is_record(saved["run"], "crossval")
    assert saved["run"]["folds"] == 2 and res["pooled"]["n"] == len(pd.read_csv(curated / "ann.csv"))
    lc = learning_curve_job(per_class=[2], config=QUICK, curated=curated / "cur", out=tmp_path / "lc.json")
    saved = json.loads((tmp_path / "lc.json").read_text())
    _is_record(saved["run"], "learning-curve")
    assert saved["points"] == lc["points"] and lc["points"][0]["per_class"] == 2


def test_the_track_model_is_loaded_by_the_classify_job(small_movie, random_checkpoint, tmp_path):
    settings = TimelineSettings(switch_rate=0.02, senescence_rate=0.003, temperature=1.5)
    path = save_track_model(tmp_path / "tm.json", TrackModelFit(settings, {}, tuple(CLASS_NAMES)))
    job = classify_movie(small_movie.image, small_movie.labels, random_checkpoint, out=tmp_path / "res",
                         track_model=path)
    run = json.loads((tmp_path / "res" / "run.json").read_text())
    assert TimelineSettings.from_dict(run["config"]["timeline"]) == settings
    assert run == job.run | {"outputs": run["outputs"]}
    assert run["track_model"]["sha256"] == file_sha256(path)
    _is_record(run, "classify")
    # a track model of other classes, or a file that is none: said before the movie is read
    other = save_track_model(tmp_path / "other.json", TrackModelFit(settings, {}, tuple(f"c{i}" for i in range(8))))
    with pytest.raises(InputError, match="fitted for the classes c0"):
        classify_movie(small_movie.image, small_movie.labels, random_checkpoint, track_model=other)
    with pytest.raises(InputError, match="not a track model file"):
        classify_movie(small_movie.image, small_movie.labels, random_checkpoint, track_model=random_checkpoint)


def test_fit_track_model_records_its_run_in_the_file(result_folder_with_labels, tmp_path):
    result, labels = result_folder_with_labels
    out = tmp_path / "tm.json"
    assert main(["fit-track-model", str(result), "--labels", str(labels), "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    _is_record(saved["run"], "fit-track-model")
    assert saved["run"]["inputs"]["labels"] == str(labels) and saved["run"]["fitted_on"]["labels"] == str(labels)


@pytest.fixture
def result_folder_with_labels(small_movie, random_checkpoint, tmp_path):
    classify_movie(small_movie.image, small_movie.labels, random_checkpoint, out=tmp_path / "res")
    small_movie.truth.to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "res", tmp_path / "labels.csv"


@pytest.mark.slow
def test_a_model_calls_only_the_labelled_classes(curated, tmp_path, capsys):
    """A lab whose reporter shows two phenotypes trains a model of two; the others are said, not guessed."""
    data = training_data(curated=curated / "cur")
    present = [c for c, n in data.train.counts().items() if n]
    two = present[:2]
    from napari_yeast_phenotypes.core.data.curated import CuratedSet

    cs = CuratedSet(curated / "cur")
    keep = cs.manifest[cs.manifest["phenotype"].isin(two)]
    sub = CuratedSet(tmp_path / "two", cs.crop_settings)
    import tifffile

    crops = np.stack([tifffile.imread(cs.root / p) for p in keep["path"]])
    sub.add(crops, keep.drop(columns=["path", "crop_id"]), annotator="t")
    out = tmp_path / "two.pt"
    assert main(["train", "--curated", str(tmp_path / "two"), "--out", str(out), "--epochs", "1", "--small-data", "off",
                 "--batch-size", "4", "--base-weights", "none"]) == 0
    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier

    clf = load_classifier(out)
    assert list(clf.class_names) == two
    not_labelled = [c for c in CLASS_NAMES if c not in two]
    assert clf.metadata["not_labelled"] == not_labelled
    assert json.loads(record_path(out).read_text())["not_labelled"] == not_labelled
    assert main(["info", str(out)]) == 0
    assert f"not labelled yet (the model cannot call them): {', '.join(not_labelled)}" in capsys.readouterr().out
