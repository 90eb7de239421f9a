"""The track model from the command line: fit-track-model (labels, curated set, EM), classify and
classify-many --track-model, and the plain one-line errors of bad inputs."""

import json

import numpy as np
import pandas as pd
import pytest

from napari_yeast_phenotypes.cli import main
from napari_yeast_phenotypes.core.track.timeline import TimelineSettings, add_timeline
from napari_yeast_phenotypes.core.track.track_model_file import load_track_model
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

PROBS = [f"p_{c}" for c in CLASS_NAMES]


def _simulate(out, seed):
    assert main(["simulate", "--out", str(out), "--frames", "5", "--size", "128", "--cells", "8", "--seed",
                 str(seed), "--no-births"]) == 0
    return out


def _classify(movie, model, out, *extra):
    return main(["classify", "--image", str(movie / "image.tif"), "--labels", str(movie / "labels.tif"),
                 "--model", str(model), "--out", str(out), "--device", "cpu", "--precision", "fp32", *extra])


@pytest.fixture(scope="module")
def classified(tmp_path_factory, random_checkpoint):
    """A simulated movie (its truth stands for a person's labels) classified with default smoothing."""
    root = tmp_path_factory.mktemp("trackcli")
    movie = _simulate(root / "movie", seed=1)
    assert _classify(movie, random_checkpoint, root / "res") == 0
    return root, movie, root / "res"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_fit_on_labels_then_classify_with_it(classified, random_checkpoint, capsys):
    root, movie, res = classified
    capsys.readouterr()
    out = root / "tm.json"
    assert main(["fit-track-model", str(res), "--labels", str(movie / "truth.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    val = saved["report"]["validation"]
    # the report printed is the one saved: raw vs smoothed accuracy and false senescence on held-out tracks
    assert f"accuracy {val['raw_accuracy']:.3f} raw, {val['smoothed_accuracy']:.3f} smoothed" in printed
    assert "live tracks called senescent" in printed
    assert saved["report"]["method"] == "labels"
    assert saved["report"]["fit_tracks"] + saved["report"]["validation_tracks"] == 8
    # what the fit uses, and why, in words: never lower agreement with the labels than the raw calls
    decision = saved["report"]["decision"]
    assert f"uses: {decision['why']}" in printed
    assert saved["report"]["labelled"]["smoothed_accuracy"] >= saved["report"]["labelled"]["raw_accuracy"]
    settings = load_track_model(out, CLASS_NAMES)
    assert settings != TimelineSettings()  # fitted: a temperature (and a confusion matrix unless refused)

    capsys.readouterr()
    assert _classify(movie, random_checkpoint, root / "res_tm", "--track-model", str(out)) == 0
    run = json.loads((root / "res_tm" / "run.json").read_text())
    assert TimelineSettings.from_dict(run["config"]["timeline"]) == settings
    # run.json and the command line say what the classification used: smoothing or raw calls, and why
    assert run["track_model"]["use"] == decision["use"] and run["track_model"]["why"] == decision["why"]
    assert f"track model {out}: {decision['why']}" in capsys.readouterr().out
    assert run["model"]["sha256"] == json.loads((res / "run.json").read_text())["model"]["sha256"]
    cells = pd.read_csv(root / "res_tm" / "cells.csv")
    # the phenotype column is the fitted model's smoothing of these very probabilities ...
    again = add_timeline(cells.drop(columns=["phenotype", "confidence"]), CLASS_NAMES, settings)
    assert (again["phenotype"].to_numpy() == cells["phenotype"].to_numpy()).all()
    np.testing.assert_allclose(again["confidence"], cells["confidence"], rtol=1e-4)
    # ... and not the defaults' (the same probabilities smoothed otherwise give other confidences)
    default = pd.read_csv(res / "cells.csv")
    np.testing.assert_allclose(default[PROBS], cells[PROBS], rtol=1e-4, atol=1e-6)
    assert not np.allclose(default["confidence"], cells["confidence"], rtol=1e-3)


def test_fit_from_the_curated_set_finds_this_movie_by_content(classified, tmp_path, capsys):
    root, movie, res = classified
    curated = tmp_path / "set"
    assert main(["curate", "--image", str(movie / "image.tif"), "--labels", str(movie / "labels.tif"),
                 "--annotations", str(movie / "truth.csv"), "--out", str(curated)]) == 0
    capsys.readouterr()
    out = tmp_path / "tm.json"
    assert main(["fit-track-model", str(res), "--curated", str(curated), "--out", str(out)]) == 0
    assert "movie id" in capsys.readouterr().out
    by_set = json.loads(out.read_text())
    assert main(["fit-track-model", str(res), "--labels", str(movie / "truth.csv"), "--out",
                 str(tmp_path / "by_csv.json")]) == 0
    # the same labels through either door: the same fit
    assert by_set["timeline"] == json.loads((tmp_path / "by_csv.json").read_text())["timeline"]

    # a set that only holds another movie's labels has none of this one
    other = _simulate(tmp_path / "other", seed=2)
    assert main(["curate", "--image", str(other / "image.tif"), "--labels", str(other / "labels.tif"),
                 "--annotations", str(other / "truth.csv"), "--out", str(tmp_path / "set2")]) == 0
    capsys.readouterr()
    assert main(["fit-track-model", str(res), "--curated", str(tmp_path / "set2"), "--out",
                 str(tmp_path / "x.json")]) == 2
    assert "no labels of this movie" in _one_error_line(capsys)
    assert not (tmp_path / "x.json").exists()


def test_fit_by_em_without_labels(classified, tmp_path, capsys):
    _, _, res = classified
    out = tmp_path / "em.json"
    assert main(["fit-track-model", str(res), "--em", "--out", str(out)]) == 0
    assert "EM" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["report"]["method"] == "em" and saved["report"]["validation"] is None
    settings = load_track_model(out, CLASS_NAMES)
    assert (settings.switch_rate, settings.senescence_rate) == (saved["report"]["em"]["switch_rate"],
                                                                 saved["report"]["em"]["senescence_rate"])
    assert (settings.temperature, settings.confusion) == (1.0, None)  # only the rates are fitted by EM


def test_bad_inputs_are_one_plain_line(classified, random_checkpoint, tmp_path, capsys):
    root, movie, res = classified
    truth = pd.read_csv(movie / "truth.csv")
    capsys.readouterr()

    def fit(*args, result=res):
        return main(["fit-track-model", str(result), *args, "--out", str(tmp_path / "tm.json")])

    few = truth[truth["label"].isin(sorted(truth["label"].unique())[:3])]
    few.to_csv(tmp_path / "few.csv", index=False)
    assert fit("--labels", str(tmp_path / "few.csv")) == 2
    assert "only 3 track(s)" in _one_error_line(capsys)

    renamed = truth.assign(phenotype="Budding")
    renamed.to_csv(tmp_path / "renamed.csv", index=False)
    assert fit("--labels", str(tmp_path / "renamed.csv")) == 2
    assert "unknown phenotypes ['Budding']" in _one_error_line(capsys)

    elsewhere = truth.assign(label=truth["label"] + 1000)
    elsewhere.to_csv(tmp_path / "elsewhere.csv", index=False)
    assert fit("--labels", str(tmp_path / "elsewhere.csv")) == 2
    assert "names a cell of this movie" in _one_error_line(capsys)

    assert fit("--curated", str(tmp_path / "nothing")) == 2
    assert "not a curated set" in _one_error_line(capsys)
    assert not (tmp_path / "nothing").exists()  # looking did not create a set

    assert fit("--labels", str(movie / "truth.csv"), result=movie) == 2  # a movie folder, not a result
    assert "not a complete result folder" in _one_error_line(capsys)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(res, broken)
    with open(broken / "cells.csv", "a") as fh:
        fh.write("1,2,3\n")
    assert fit("--labels", str(movie / "truth.csv"), result=broken) == 2
    assert "not a complete result folder" in _one_error_line(capsys)
    assert not (tmp_path / "tm.json").exists()

    # classify --track-model: a file that is not a track model, and one fitted for other classes
    assert _classify(movie, random_checkpoint, tmp_path / "r1", "--track-model", str(random_checkpoint)) == 2
    assert "is not a track model file" in _one_error_line(capsys)
    assert main(["fit-track-model", str(res), "--em", "--out", str(tmp_path / "em.json")]) == 0
    data = json.loads((tmp_path / "em.json").read_text())
    data["class_names"] = [f"class{i}" for i in range(8)]
    (tmp_path / "other.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert _classify(movie, random_checkpoint, tmp_path / "r2", "--track-model", str(tmp_path / "other.json")) == 2
    assert "fitted for the classes class0" in _one_error_line(capsys)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_classify_many_with_a_track_model(classified, random_checkpoint, tmp_path, capsys):
    root, movie, res = classified
    assert main(["fit-track-model", str(res), "--labels", str(movie / "truth.csv"), "--out",
                 str(tmp_path / "tm.json")]) == 0
    pd.DataFrame({"image": [str(movie / "image.tif")], "labels": [str(movie / "labels.tif")],
                  "movie": ["m1"]}).to_csv(tmp_path / "spec.csv", index=False)
    assert main(["classify-many", str(tmp_path / "spec.csv"), "--model", str(random_checkpoint), "--out",
                 str(tmp_path / "exp"), "--workers", "0", "--device", "cpu", "--precision", "fp32",
                 "--track-model", str(tmp_path / "tm.json")]) == 0
    run = json.loads((tmp_path / "exp" / "movies" / "m1" / "run.json").read_text())
    assert TimelineSettings.from_dict(run["config"]["timeline"]) == load_track_model(tmp_path / "tm.json")
    capsys.readouterr()
    assert main(["classify-many", str(tmp_path / "spec.csv"), "--model", str(random_checkpoint), "--out",
                 str(tmp_path / "exp2"), "--workers", "0", "--track-model", str(movie / "truth.csv")]) == 2
    assert "is not a track model file" in _one_error_line(capsys)


def test_classify_with_a_track_model_that_lowered_agreement_uses_raw_calls_and_says_so(classified, random_checkpoint,
                                                                                       capsys):
    root, movie, res = classified
    out = root / "tm_old.json"
    assert main(["fit-track-model", str(res), "--labels", str(movie / "truth.csv"), "--out", str(out)]) == 0
    data = json.loads(out.read_text())  # as a file written before decisions were recorded, whose smoothing did worse
    data["timeline"]["smooth"] = True
    del data["report"]["decision"]
    data["report"]["validation"].update(raw_accuracy=0.75, smoothed_accuracy=0.5)
    out.write_text(json.dumps(data))
    capsys.readouterr()
    assert _classify(movie, random_checkpoint, root / "res_old", "--track-model", str(out)) == 0
    err = capsys.readouterr().err
    assert "raw calls: the file's smoothing lowered agreement" in err and "0.500 vs 0.750" in err
    run = json.loads((root / "res_old" / "run.json").read_text())
    assert run["track_model"]["use"] == "raw calls" and run["track_model"]["fell_back"]
    assert run["config"]["timeline"]["smooth"] is False
    cells = pd.read_csv(root / "res_old" / "cells.csv")
    assert (cells["phenotype"] == cells["phenotype_raw"]).all()


@pytest.mark.slow
def test_the_demo_fits_its_track_model_on_the_validation_movies_labels(tmp_path, random_checkpoint):
    from napari_yeast_phenotypes.core.data.crops import CropSettings
    from napari_yeast_phenotypes.core.data.curated import CuratedSet, crops_for_annotations
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie, write_movie
    from napari_yeast_phenotypes.demo import fit_demo_track_model

    movie = simulate_movie(n_frames=6, size=128, n_cells=8, seed=5)
    write_movie(movie, tmp_path / "training_movies" / "exp3")
    cs = CuratedSet(tmp_path / "curated", CropSettings())
    ann = movie.truth.iloc[::2].assign(split="val", experiment="exp3")
    crops, rows = crops_for_annotations(movie.image, movie.labels, ann, cs.crop_settings, source="image.tif",
                                        experiment="exp3")
    cs.add(crops, rows, annotator="simulation truth")
    path, report = fit_demo_track_model(tmp_path, random_checkpoint, "cpu")
    assert path.is_file() and report["method"] == "labels" and report["fit_tracks"] + report["validation_tracks"] >= 4
    assert report["labelled"]["smoothed_accuracy"] >= report["labelled"]["raw_accuracy"]
    assert report["decision"]["use"] in ("smoothing", "raw calls")
