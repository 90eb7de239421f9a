"""Models that compute NaN or infinity are never used, and model files, options and settings that
are wrong say so in one line (issue 12, items 7 and 10)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch

from napari_yeast_phenotypes.cli import main
from napari_yeast_phenotypes.core.config import ClassifyConfig, TrainConfig, parse_class_names
from napari_yeast_phenotypes.core.data.crops import CropSettings
from napari_yeast_phenotypes.core.data.cropset import CropSet
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.network.base_weights import build_model
from napari_yeast_phenotypes.core.network.checkpoint import load_classifier
from napari_yeast_phenotypes.core.network.train import train
from napari_yeast_phenotypes.core.network.train_report import TrainingDiverged
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES


@pytest.fixture
def checkpoint(random_checkpoint):
    return torch.load(random_checkpoint, weights_only=True)


def crops(n: int = 8) -> CropSet:
    rng = np.random.default_rng(0)
    return CropSet(rng.random((n, 1, 40, 40), dtype=np.float32), np.arange(n) % len(CLASS_NAMES), CLASS_NAMES)


# ------------------------------------------------------------------------------ item 7: non-finite numbers

@pytest.mark.slow
def test_a_huge_learning_rate_stops_training_without_a_checkpoint(tmp_path):
    out = tmp_path / "m.pt"
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite.*no checkpoint was written.*lower one \(e.g. --lr"):
        train(crops(), None, TrainConfig(epochs=3, batch_size=4, lr=1e12, base_weights="none", small_data="off"),
              out=out)
    assert not out.exists()


@pytest.mark.slow
def test_a_nan_loss_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """Epoch 1 is good and saved; the loss turns NaN in epoch 2: training stops, epoch 1 stays."""
    import napari_yeast_phenotypes.core.network.train_steps as steps_mod

    real = steps_mod.F.cross_entropy
    calls = []

    def nan_from_the_third_step(*a, **kw):
        calls.append(1)
        loss = real(*a, **kw)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(steps_mod.F, "cross_entropy", nan_from_the_third_step)
    out = tmp_path / "m.pt"
    kept = rf"epoch 2, step 1: the loss.*{out} keeps the best epoch before that \(1\)"
    with pytest.raises(TrainingDiverged, match=kept):
        train(crops(), None, TrainConfig(epochs=3, batch_size=4, base_weights="none", small_data="off"), out=out)
    clf = load_classifier(out)  # whole, finite, from epoch 1
    assert clf.metadata["best_epoch"] == 1
    assert all(torch.isfinite(v).all() for v in clf.model.state_dict().values() if v.is_floating_point())


@pytest.mark.slow
def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path, checkpoint):
    checkpoint["model_state"]["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    checkpoint["model_state"]["fc.bias"][3] = float("inf")
    path = tmp_path / "nan.pt"
    torch.save(checkpoint, path)
    with pytest.raises(InputError, match=r"not finite numbers.*fc.bias.*training that diverged"):
        load_classifier(path)
    with pytest.raises(InputError, match="not finite numbers"):  # nor as base weights to train from
        build_model(8, base_weights=path)


@pytest.mark.slow
def test_a_model_whose_outputs_overflow_is_refused_naming_the_frames(tmp_path, checkpoint, small_movie):
    from napari_yeast_phenotypes.core.jobs import classify_movie

    # finite weights whose products overflow float32: infinite logits, NaN probabilities
    checkpoint["model_state"]["fc.weight"][:] = 3e38
    checkpoint["model_state"]["fc.weight"][::2] = -3e38
    path = tmp_path / "overflow.pt"
    torch.save(checkpoint, path)
    out = tmp_path / "res"
    with pytest.raises(InputError, match=r"NaN or infinite probabilities for \d+ cells \(frames 0, 1"):
        classify_movie(small_movie.image, small_movie.labels, path, ClassifyConfig(device="cpu", chunk_frames=2),
                       out=out)
    assert not out.exists()


# ------------------------------------------------------------------------------ item 10: model files

@pytest.mark.parametrize("field, value, words", [
    ("class_names", "Nuclear", "class_names"),
    ("class_names", list(range(8)), "list of text"),
    ("class_names", ["Nuclear"] * 8, "must differ"),
    ("class_names", ["A", "a", "B", "C", "D", "E", "F", "G"], "must differ"),
    ("crop_settings", {"size": "40"}, "whole number"),
    ("crop_settings", {"margin": float("nan")}, "finite number"),
    ("crop_settings", [40], "crop_settings"),
    ("crop_settings", {"reference": -1.0}, "reference"),
    ("trainable", ["conv9"], "trained layers"),
    ("format_version", "1", "format_version"),
    ("metadata", "notes", "metadata"),
    ("metadata", {"crop_origin": "external"}, "crop_origin"),
])
def test_checkpoint_fields_of_the_wrong_type_or_range(tmp_path, checkpoint, field, value, words):
    checkpoint[field] = value
    path = tmp_path / "edited.pt"
    torch.save(checkpoint, path)
    with pytest.raises(InputError, match=words) as info:
        load_classifier(path)
    assert str(path) in str(info.value)


def test_duplicate_class_names_given_for_a_bare_state_dict(tmp_path, checkpoint):
    path = tmp_path / "bare.pt"
    torch.save(checkpoint["model_state"], path)
    with pytest.raises(InputError, match="must differ"):
        load_classifier(path, class_names=["A", "B", "C", "D", "E", "F", "G", "A"])
    assert load_classifier(path, class_names=list("ABCDEFGH")).class_names == tuple("ABCDEFGH")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from napari_yeast_phenotypes.core.network.base_weights import imagenet_weights_path

    path = imagenet_weights_path()
    path.parent.mkdir(parents=True)
    return path


@pytest.mark.parametrize("content", [b"", b"<html>proxy error</html>", "state dict"])
def test_a_damaged_imagenet_file_in_the_cache(torch_home, content):
    if content == "state dict":  # a loadable file, but not the one its name promises
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, torch_home)
    else:
        torch_home.write_bytes(content)
    with pytest.raises(InputError, match=rf"{torch_home} is damaged.*Delete it.*replace it with a good copy"):
        build_model(8, "imagenet")


# ------------------------------------------------------------------------------ item 10: options and configs

def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("argv, words", [
    (["simulate", "--out", "o", "--frames", "0"], "--frames: must be from 1"),
    (["simulate", "--out", "o", "--cells", "-3"], "--cells: must be from 1"),
    (["simulate", "--out", "o", "--size", "0"], "--size: must be from 64"),
    (["simulate", "--out", "o", "--seed", "-1"], "--seed: must be from 0"),
    (["classify", "--image", "i", "--labels", "l", "--model", "m", "--out", "o", "--batch-size", "0"],
     "--batch-size: must be at least 1"),
    (["classify", "--image", "i", "--labels", "l", "--model", "m", "--out", "o", "--chunk-frames", "-1"],
     "--chunk-frames: must be at least 1"),
    (["classify", "--image", "i", "--labels", "l", "--model", "m", "--out", "o", "--channel", "-1"],
     "--channel: must be at least 0"),
    (["classify", "--image", "i", "--labels", "l", "--model", "m", "--out", "o", "--batch-size", "2.5"],
     "'2.5' is not a whole number"),
    (["train", "--train", "t", "--out", "m.pt", "--epochs", "0"], "--epochs: must be at least 1"),
    (["train", "--train", "t", "--out", "m.pt", "--batch-size", "1"], "--batch-size: must be at least 2"),
    (["train", "--train", "t", "--out", "m.pt", "--lr", "0"], "--lr: must be a positive finite number"),
    (["train", "--train", "t", "--out", "m.pt", "--lr", "inf"], "--lr: must be a positive finite number"),
    (["crossval", "--data", "d", "--folds", "1"], "--folds: must be at least 2"),
    (["curate", "--image", "i", "--labels", "l", "--annotations", "a", "--out", "o", "--channel", "-2"],
     "--channel: must be at least 0"),
    (["demo", "--out", "o", "--epochs", "0"], "--epochs: must be at least 1"),
])
def test_counts_in_options_are_checked(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    line = one_line_error(capsys)
    assert words in line and "--help" in line


@pytest.mark.parametrize("argv, words", [
    (["classify", "--image", "i", "--labels", "l", "--model", "m", "--out", "o", "--device", "gpu"], "unknown device"),
    (["train", "--train", "t", "--out", "m.pt", "--device", "cuda:-1"], "unknown device"),
    (["classify", "--image", "i", "--labels", "l", "--model", "m", "--out", "o", "--class-names", "A,B,A"],
     "must differ"),
    (["train", "--train", "t", "--out", "m.pt", "--class-names", "A,,B"], "empty class name"),
])
def test_devices_and_class_names_are_checked_before_work(argv, words, capsys):
    assert main(argv) == 2
    assert words in one_line_error(capsys)


@pytest.mark.parametrize("bad, words", [
    ({"lr": float("inf")}, "learning rate"), ({"lr": float("nan")}, "learning rate"),
    ({"weight_decay": float("inf")}, "weight decay"), ({"seed": -1}, "seed"), ({"seed": "0"}, "seed"),
    ({"augment": "yes"}, "augment"), ({"device": "gpu"}, "unknown device"), ({"base_weights": None}, "base weights"),
    ({"trainable": 3}, "trainable"), ({"label_smoothing": float("nan")}, "label smoothing"),
])
def test_train_config_checks(bad, words):
    with pytest.raises(InputError, match=words):
        TrainConfig(**bad)
    with pytest.raises(InputError):
        TrainConfig.from_dict(bad)


@pytest.mark.parametrize("bad, words", [({"device": "tpu"}, "unknown device"), ({"fast_path": "no"}, "fast_path"),
                                        ({"batch_size": True}, "batch size")])
def test_classify_config_checks(bad, words):
    with pytest.raises(InputError, match=words):
        ClassifyConfig(**bad)


def test_config_dicts_of_the_wrong_type():
    for cls in (TrainConfig, ClassifyConfig, CropSettings):
        with pytest.raises(InputError, match="mapping"):
            cls.from_dict(["epochs", 3])


@pytest.mark.parametrize("settings, words", [
    ({"size": "40"}, "size must be a whole number"), ({"size": 40.0}, "size must be a whole number"),
    ({"size": True}, "size must be a whole number"), ({"margin": "0.1"}, "margin must be a finite number"),
    ({"mask": 0}, "mask must be text"), ({"min_side": 0}, "min_side"), ({"max_supersample": 0}, "max_supersample"),
    ({"reference": float("inf")}, "reference"), ({"size": 100000}, "too large"), ({"colour": 1}, "unknown"),
])
def test_hand_edited_crop_settings(settings, words):
    with pytest.raises(InputError, match=words):
        CropSettings.from_dict(settings)


def test_class_names_parsing():
    assert parse_class_names(" A , B ") == ("A", "B")
    for bad in ("A,a", "A,,B", "", ["A", 3]):
        with pytest.raises(InputError):
            parse_class_names(bad)


def test_unknown_devices_are_refused():
    from napari_yeast_phenotypes.core.network.device import select_device

    assert select_device(" CPU ").type == "cpu"
    for name in ("gpu", "meta", "xla", "cuda:x", "cpu:0", "", None):
        with pytest.raises(InputError, match="unknown device"):
            select_device(name)


# ------------------------------------------------------------------------------ item 10: training's --out

def test_training_checks_out_before_the_first_epoch(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    steps = []
    for out in (blocker / "m.pt", tmp_path):
        with pytest.raises(InputError, match="not a folder|is a folder"):
            train(crops(), None, TrainConfig(epochs=1, batch_size=4, base_weights="none", small_data="off"), out=out,
                  progress=steps.append)
    assert steps == []


@pytest.mark.slow
def test_a_disk_full_at_the_checkpoint_is_one_plain_message(tmp_path, monkeypatch, capsys):
    """The folder check passed, then the disk filled up: the error names the file; nothing half-written."""
    import napari_yeast_phenotypes.core.files.atomic as io_mod

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_mod.os, "fdopen", lambda fd, *a, **kw: Full(real_fdopen(fd, *a, **kw)))
    out = tmp_path / "m.pt"
    with pytest.raises(InputError, match=rf"cannot write {out} \(No space left on device\): free some space"):
        train(crops(), None, TrainConfig(epochs=1, batch_size=4, base_weights="none", small_data="off"), out=out)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ item 10: every command's --out

@pytest.mark.parametrize("command", ["simulate", "classify", "train", "crossval", "curate", "demo"])
def test_every_command_checks_its_destination_first(tmp_path, capsys, command, random_checkpoint):
    """--out under a file: refused in one line before any input is read (the inputs do not even exist)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = str(blocker / "out")
    missing = str(tmp_path / "missing")
    argv = {"simulate": ["simulate", "--out", out],
            "classify": ["classify", "--image", missing, "--labels", missing, "--model", str(random_checkpoint),
                         "--out", out],
            "train": ["train", "--train", missing, "--out", out + ".pt", "--base-weights", "none"],
            "crossval": ["crossval", "--data", missing, "--out", out + ".json", "--base-weights", "none"],
            "curate": ["curate", "--image", missing, "--labels", missing, "--annotations", missing, "--out", out],
            "demo": ["demo", "--out", out]}[command]
    if command == "classify":  # classify opens its inputs lazily first (a missing file is said at once)
        import tifffile

        for name in ("image.tif", "labels.tif"):
            tifffile.imwrite(tmp_path / name, np.zeros((2, 64, 64), np.uint16))
        argv[2], argv[4] = str(tmp_path / "image.tif"), str(tmp_path / "labels.tif")
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "not a folder" in line or "cannot write" in line, line
    assert blocker.read_text() == "x"


def test_an_empty_movie_file(tmp_path, capsys, random_checkpoint):
    np.save(tmp_path / "empty.npy", np.zeros((0, 64, 64), np.uint16))
    assert main(["classify", "--image", str(tmp_path / "empty.npy"), "--labels", str(tmp_path / "empty.npy"),
                 "--model", str(random_checkpoint), "--out", str(tmp_path / "res")]) == 2
    assert "the movie is empty" in one_line_error(capsys)
    assert not (tmp_path / "res").exists()
