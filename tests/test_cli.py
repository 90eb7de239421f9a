"""The command line, end to end, on small synthetic movies."""

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from napari_yeast_phenotypes.cli import main
from napari_yeast_phenotypes.core.network.checkpoint import load_classifier
from napari_yeast_phenotypes.core.results.export import cell_columns
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES


@pytest.fixture
def movie_dir(tmp_path):
    assert main(["simulate", "--out", str(tmp_path / "movie"), "--frames", "5", "--size", "128",
                 "--cells", "6", "--seed", "1"]) == 0
    return tmp_path / "movie"


def classify(movie_dir, model, out, *extra):
    return main(["classify", "--image", str(movie_dir / "image.tif"), "--labels", str(movie_dir / "labels.tif"),
                 "--model", str(model), "--out", str(out), *extra])


def test_simulate_writes_movie_and_truth(movie_dir):
    img = tifffile.imread(movie_dir / "image.tif")
    lab = tifffile.imread(movie_dir / "labels.tif")
    truth = pd.read_csv(movie_dir / "truth.csv")
    assert img.shape == lab.shape == (5, 128, 128)
    assert set(truth.columns) == {"frame", "label", "phenotype"}
    assert set(truth["phenotype"]) <= set(CLASS_NAMES)


@pytest.mark.slow
def test_classify_writes_documented_tables(movie_dir, random_checkpoint, tmp_path, capsys):
    out = tmp_path / "res"
    assert classify(movie_dir, random_checkpoint, out) == 0
    cells = pd.read_csv(out / "cells.csv")
    tracks = pd.read_csv(out / "tracks.csv")
    assert list(cells.columns) == cell_columns()
    truth = pd.read_csv(movie_dir / "truth.csv")
    assert len(cells) == len(truth)
    assert set(zip(cells["frame"], cells["label"])) == set(zip(truth["frame"], truth["label"]))
    p = cells[[f"p_{c}" for c in CLASS_NAMES]].to_numpy()
    assert np.allclose(p.sum(axis=1), 1, atol=1e-4)
    assert set(cells["phenotype"]) <= set(CLASS_NAMES)
    assert list(tracks.columns) == (["track_id", "first_frame", "last_frame", "n_frames", "dominant_phenotype",
                                     "senescence_frame"] + [f"frames_{c}" for c in CLASS_NAMES] + ["transitions"])
    assert (tracks[[f"frames_{c}" for c in CLASS_NAMES]].sum(axis=1) == tracks["n_frames"]).all()
    assert (out / "summary.png").stat().st_size > 10_000
    # results are never replaced silently
    before = (out / "cells.csv").read_bytes()
    assert classify(movie_dir, random_checkpoint, out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "cells.csv").read_bytes() == before
    assert classify(movie_dir, random_checkpoint, out, "--overwrite") == 0


@pytest.mark.slow
def test_classify_npy_2d_and_untracked(tmp_path, movie_dir, random_checkpoint, capsys):
    img = tifffile.imread(movie_dir / "image.tif")
    lab = tifffile.imread(movie_dir / "labels.tif")
    np.save(tmp_path / "img2d.npy", img[0])
    np.save(tmp_path / "lab2d.npy", lab[0])
    assert main(["classify", "--image", str(tmp_path / "img2d.npy"), "--labels", str(tmp_path / "lab2d.npy"),
                 "--model", str(random_checkpoint), "--out", str(tmp_path / "one")]) == 0
    cells = pd.read_csv(tmp_path / "one" / "cells.csv")
    assert (cells["frame"] == 0).all() and len(cells) == len(np.unique(lab[0])) - 1
    # ids swapped in every other frame: relinked, one track per cell
    swapped = lab.astype(np.int32).copy()
    swapped[1::2] = np.where(swapped[1::2] > 0, 500 - swapped[1::2], 0)
    np.save(tmp_path / "lab_untracked.npy", swapped)
    capsys.readouterr()
    assert main(["classify", "--image", str(movie_dir / "image.tif"), "--labels", str(tmp_path / "lab_untracked.npy"),
                 "--model", str(random_checkpoint), "--out", str(tmp_path / "relinked")]) == 0
    assert "relinked" in capsys.readouterr().out
    tracks = pd.read_csv(tmp_path / "relinked" / "tracks.csv")
    assert len(tracks) == len(np.unique(lab)) - 1


@pytest.mark.parametrize("case, pattern", [
    ("shape", "differ"),
    ("float", "integers"),
    ("empty", "no cells"),
    ("bool", "boolean mask"),
    ("channels", "--channel"),
])
def test_bad_movies_get_a_clear_error_and_no_output(tmp_path, movie_dir, random_checkpoint, capsys, case, pattern):
    img = tifffile.imread(movie_dir / "image.tif")
    lab = tifffile.imread(movie_dir / "labels.tif")
    if case == "shape":
        lab = lab[:, :100]
    elif case == "float":
        lab = lab.astype(np.float32)
    elif case == "empty":
        lab = np.zeros_like(lab)
    elif case == "bool":
        lab = lab > 0
    elif case == "channels":
        img = np.stack([img, img], axis=1)
    np.save(tmp_path / "i.npy", img)
    np.save(tmp_path / "l.npy", lab)
    rc = main(["classify", "--image", str(tmp_path / "i.npy"), "--labels", str(tmp_path / "l.npy"),
               "--model", str(random_checkpoint), "--out", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and pattern in err and "Traceback" not in err
    assert not (tmp_path / "res" / "cells.csv").exists()


@pytest.mark.slow
def test_channel_option_picks_the_reporter(tmp_path, movie_dir, random_checkpoint):
    img = tifffile.imread(movie_dir / "image.tif")
    np.save(tmp_path / "tc.npy", np.stack([np.zeros_like(img), img], axis=1))
    assert main(["classify", "--image", str(tmp_path / "tc.npy"), "--labels", str(movie_dir / "labels.tif"),
                 "--model", str(random_checkpoint), "--out", str(tmp_path / "a"), "--channel", "1"]) == 0
    assert classify(movie_dir, random_checkpoint, tmp_path / "b") == 0
    a = pd.read_csv(tmp_path / "a" / "cells.csv")
    b = pd.read_csv(tmp_path / "b" / "cells.csv")
    pd.testing.assert_frame_equal(a, b)


def test_bad_model_file(tmp_path, movie_dir, capsys):
    (tmp_path / "m.pt").write_bytes(b"\x00" * 100)
    assert classify(movie_dir, tmp_path / "m.pt", tmp_path / "res") == 2
    assert "not a readable model file" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_train_from_a_curated_split_and_offline_message(tmp_path, movie_dir, capsys, monkeypatch):
    truth = pd.read_csv(movie_dir / "truth.csv")
    truth.assign(split=np.where(truth.index % 3 == 0, "val", "train")).to_csv(tmp_path / "ann.csv", index=False)
    cur = tmp_path / "cur"
    assert main(["curate", "--image", str(movie_dir / "image.tif"), "--labels", str(movie_dir / "labels.tif"),
                 "--annotations", str(tmp_path / "ann.csv"), "--out", str(cur)]) == 0
    model = tmp_path / "model.pt"
    assert main(["train", "--train", str(cur / "train"), "--val", str(cur / "val"), "--out", str(model),
                 "--epochs", "1", "--batch-size", "8", "--base-weights", "none", "--seed", "3",
                 "--small-data", "off"]) == 0
    clf = load_classifier(model)
    meta = clf.metadata
    assert meta["training"]["epochs"] == 1 and meta["base_weights"] == "none"
    is_val = truth.index % 3 == 0
    # the epoch is chosen on a part, the figures are on the rest (of the classes the model learnt)
    n_val = int((is_val & truth["phenotype"].isin(set(truth.loc[~is_val, "phenotype"]))).sum())
    assert meta["validation"]["n"] + (0 if meta["report"]["optimistic"] else meta["report"]["n"]) == n_val
    assert clf.model.trainable == ("conv1", "fc")
    assert "final figures on" in capsys.readouterr().out
    # the checkpoint classifies a movie
    assert classify(movie_dir, model, tmp_path / "res") == 0
    # offline ImageNet: a plain message, exit 2, no file written
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    rc = main(["train", "--train", str(cur / "train"), "--out", str(tmp_path / "m2.pt"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "ImageNet weights" in err and "--base-weights none" in err
    assert not (tmp_path / "m2.pt").exists()


@pytest.mark.slow
def test_crossval_groups_by_experiment(tmp_path, movie_dir, capsys):
    cur = tmp_path / "cur"
    sizes = []
    for i, exp in enumerate(("e1", "e2", "e3")):
        # three movies (a movie is known by its content: the same one under another name is the same cells)
        movie = movie_dir if i == 0 else tmp_path / f"movie{i}"
        if i:
            assert main(["simulate", "--out", str(movie), "--frames", "5", "--size", "128", "--cells", "6",
                         "--seed", str(10 + i)]) == 0
        truth = pd.read_csv(movie / "truth.csv")
        truth.iloc[::3].to_csv(tmp_path / "ann.csv", index=False)
        sizes.append(len(truth.iloc[::3]))
        assert main(["curate", "--image", str(movie / "image.tif"), "--labels", str(movie / "labels.tif"),
                     "--annotations", str(tmp_path / "ann.csv"), "--out", str(cur), "--experiment", exp]) == 0
    out = tmp_path / "cv.json"
    assert main(["crossval", "--data", str(cur / "train"), "--folds", "3", "--epochs", "1", "--batch-size", "8",
                 "--small-data", "off",
                 "--base-weights", "none", "--out", str(out)]) == 0
    import json

    res = json.loads(out.read_text())
    # each fold tests exactly one experiment's crops, never seen in its training
    assert sorted(f["n"] for f in res["folds"]) == sorted(sizes)
    assert res["pooled"]["n"] == sum(sizes)
    # every fold's figures and the pooled out-of-fold ones carry their 95% intervals
    assert all(f["ci"]["accuracy"][0] <= f["accuracy"] <= f["ci"]["accuracy"][1] for f in res["folds"])
    assert res["pooled"]["ci"]["macro_f1"] and res["random"]["pooled"]["ci"]["accuracy"]
    printed = capsys.readouterr().out
    assert "pooled out-of-fold calls" in printed and "95% intervals" in printed
    # leave-one-experiment-out: one fold per experiment, whatever --folds says
    assert main(["crossval", "--data", str(cur / "train"), "--folds", "4", "--by", "experiment", "--epochs", "1",
                 "--small-data", "off",
                 "--batch-size", "8", "--base-weights", "none", "--out", str(tmp_path / "cv2.json")]) == 0
    assert sorted(f["n"] for f in json.loads((tmp_path / "cv2.json").read_text())["folds"]) == sorted(sizes)


@pytest.mark.slow
def test_training_on_a_curated_set_keeps_its_crop_settings(tmp_path, movie_dir):
    from napari_yeast_phenotypes.core.data.crops import CropSettings
    from napari_yeast_phenotypes.core.data.curated import CuratedSet

    cur = tmp_path / "cur"
    CuratedSet(cur, CropSettings(margin=0.3, mask="outside"))  # a set made with other settings
    pd.read_csv(movie_dir / "truth.csv").to_csv(tmp_path / "ann.csv", index=False)
    assert main(["curate", "--image", str(movie_dir / "image.tif"), "--labels", str(movie_dir / "labels.tif"),
                 "--annotations", str(tmp_path / "ann.csv"), "--out", str(cur)]) == 0
    assert CuratedSet(cur).crop_settings.margin == 0.3
    model = tmp_path / "m.pt"
    assert main(["train", "--train", str(cur / "train"), "--out", str(model), "--epochs", "1", "--small-data", "off",
                 "--batch-size", "8", "--base-weights", "none"]) == 0
    # the checkpoint makes crops at inference exactly as the set's crops were made
    assert load_classifier(model).crop_settings == CropSettings(margin=0.3, mask="outside")


def test_messages_say_what_happened(tmp_path, movie_dir, random_checkpoint, capsys):
    """A forced --relink does not claim the ids were untracked; simulate says when cells were born."""
    assert classify(movie_dir, random_checkpoint, tmp_path / "r", "--relink") == 0
    out = capsys.readouterr().out
    assert "relinked by overlap (--relink)" in out and "were not tracked" not in out
    assert main(["simulate", "--out", str(tmp_path / "m"), "--frames", "6", "--size", "96", "--cells", "5",
                 "--seed", "2"]) == 0
    n = pd.read_csv(tmp_path / "m" / "truth.csv")["label"].nunique()
    said = capsys.readouterr().out
    assert f"{n} cells" in said and ((f"{n - 5} of them born" in said) == (n > 5))
    assert main(["simulate", "--out", str(tmp_path / "m2"), "--frames", "6", "--size", "96", "--cells", "5",
                 "--seed", "2", "--no-births"]) == 0
    assert pd.read_csv(tmp_path / "m2" / "truth.csv")["label"].nunique() == 5
