"""Training: options, frozen layers, class weighting, honest splits, calibration, cancel, the record.

Every training here is tiny (a few dozen 40x40 crops, one epoch, random base weights): the tests
check behaviour, not accuracy.
"""

import json

import numpy as np
import pytest
import torch

from napari_yeast_phenotypes.cli import main
from napari_yeast_phenotypes.core.config import TrainConfig
from napari_yeast_phenotypes.core.data.cropset import CropSet
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.network.checkpoint import load_classifier, save_checkpoint
from napari_yeast_phenotypes.core.network.crossval import crossval_folds
from napari_yeast_phenotypes.core.network.evaluation import (
    expected_calibration_error,
    fingerprint_ids,
    fit_temperature,
    group_folds,
    metrics,
    scale_probabilities,
    summarise_folds,
)
from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet
from napari_yeast_phenotypes.core.network.train import train, train_iter
from napari_yeast_phenotypes.core.network.train_splits import plan_splits
from napari_yeast_phenotypes.core.network.train_steps import augment_batch, class_weights, training_loss
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES


def crop_set(n, seed=0, n_tracks=None, experiments=None, prefix="c"):
    """``n`` crops, classes in turn, slightly class-dependent; tracks of whole classes, experiments in turn."""
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % 8
    crops = rng.random((n, 1, 40, 40), dtype=np.float32) + targets[:, None, None, None] * 0.1
    n_tracks = n_tracks or n
    tracks = np.array([f"{prefix}t{i % n_tracks}" for i in range(n)], dtype=object)
    exp = None if experiments is None else np.array([f"e{(i % n_tracks) % experiments}" for i in range(n)],
                                                    dtype=object)
    return CropSet(crops, targets, CLASS_NAMES, [f"{prefix}{i}.tif" for i in range(n)], exp, tracks=tracks)


@pytest.fixture(scope="module")
def tiny():
    return crop_set(16)


CFG = TrainConfig(epochs=3, batch_size=8, base_weights="none", seed=1, small_data="off")


# --------------------------------------------------------------------------- options

def test_config_round_trip_and_old_configs():
    cfg = TrainConfig(augment="noise,flips", schedule="step", class_weighting="none", patience=2, holdout=0.25,
                      calibrate=False, trainable="conv1,layer4,fc")
    assert cfg.augment == "flips,noise"  # one canonical order
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # a config stored before augmentations had names: True/False
    assert TrainConfig.from_dict({"augment": True}).augmentations == ("flips", "rot90", "intensity")
    assert TrainConfig.from_dict({"augment": False}).augmentations == ()
    for bad, match in (({"augment": "mixup"}, "unknown augmentation mixup"), ({"schedule": "linear"}, "schedule"),
                       ({"class_weighting": "inverse"}, "class weighting"), ({"patience": -1}, "patience"),
                       ({"holdout": 1.0}, "held-out fraction")):
        with pytest.raises(InputError, match=match):
            TrainConfig.from_dict(bad)


def test_cli_takes_its_defaults_from_the_config():
    from napari_yeast_phenotypes.cli import _train_config, build_parser

    d = TrainConfig()
    args = build_parser().parse_args(["train", "--train", "t", "--out", "m.pt"])
    assert _train_config(args) == d
    args = build_parser().parse_args(["train", "--train", "t", "--out", "m.pt", "--augment", "affine,noise",
                                      "--schedule", "constant", "--patience", "3", "--no-calibrate"])
    c = _train_config(args)
    assert (c.augment, c.schedule, c.patience, c.calibrate) == ("affine,noise", "constant", 3, False)


def test_dihedral_augmentation_is_a_symmetry_plus_mild_intensity_change():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    # sorted pixel values are those of x up to gain and offset: the same picture, turned or flipped
    flat = out.flatten(1)
    gain = (flat.max(1).values - flat.min(1).values) / 15
    assert ((gain > 0.8) & (gain < 1.25)).all()
    d8 = {tuple(torch.rot90(x[0, 0], k).flatten().tolist()) for k in range(4)}
    d8 |= {tuple(torch.rot90(x[0, 0], k).flip(1).flatten().tolist()) for k in range(4)}
    restored = ((out - flat.min(1).values[:, None, None, None]) / gain[:, None, None, None]).round()
    assert all(tuple(r.flatten().tolist()) in d8 for r in restored)
    assert len({tuple(r.flatten().tolist()) for r in restored}) > 4


def test_each_augmentation_does_what_it_says():
    x = torch.rand(32, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    g = lambda: torch.Generator().manual_seed(3)
    assert torch.equal(augment_batch(x, g(), "none"), x)
    flips = augment_batch(x, g(), "flips")  # mirror images: the same pixel values, not turned by 90 degrees
    assert torch.equal(flips.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    affine = augment_batch(x, g(), "affine")  # resampled: values change, the range stays
    assert not torch.equal(affine, x) and affine.min() >= x.min() - 1e-6 and affine.max() <= x.max() + 1e-6
    noise = augment_batch(x, g(), "noise") - x
    assert 0 < noise.std() < 0.03


def test_balanced_class_weighting_makes_every_class_weigh_the_same():
    torch.manual_seed(0)
    y = torch.tensor([0] * 12 + [1] * 3 + [2] * 1)
    logits = torch.randn(len(y), 3)
    per_crop = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    w = class_weights(y.numpy(), 3, "balanced")
    balanced = training_loss(logits, y, w)
    per_class_means = torch.stack([per_crop[y == c].mean() for c in range(3)])
    assert balanced.item() == pytest.approx(per_class_means.mean().item(), rel=1e-5)
    plain = training_loss(logits, y, class_weights(y.numpy(), 3, "none"))
    assert plain.item() == pytest.approx(per_crop.mean().item(), rel=1e-5)
    assert abs(balanced.item() - plain.item()) > 1e-3 * plain.item()  # unbalanced classes: it matters
    # a class without crops gets no weight (and no division by zero)
    assert class_weights(np.array([0, 0, 1]), 3, "balanced")[2] == 0


# --------------------------------------------------------------------------- splits

def test_grouped_folds_never_share_a_track_or_an_experiment():
    data = crop_set(120, n_tracks=30, experiments=5)
    for by, k in (("auto", 3), ("experiment", 2), ("track", 4)):
        folds, name, k_used = crossval_folds(data, k, by)
        assert sorted(np.concatenate(folds)) == list(range(120))
        assert len(folds) == k_used and k_used == (5 if by == "experiment" else k)
        for i, f in enumerate(folds):
            for g in folds[i + 1:]:
                assert set(data.tracks[f]).isdisjoint(data.tracks[g])
                if name == "experiment":
                    assert set(data.groups[f]).isdisjoint(data.groups[g])
    assert crossval_folds(data, 3, "auto")[1] == "experiment"
    assert crossval_folds(data, 6, "auto")[1] == "track"  # 5 experiments cannot make 6 folds
    with pytest.raises(InputError, match="folds"):
        group_folds(np.zeros(10), 2)


def test_held_out_parts_are_whole_tracks_and_the_test_split_reports():
    train_set, val = crop_set(200, n_tracks=50), crop_set(60, n_tracks=15, prefix="v")
    plan = plan_splits(train_set, None, None, TrainConfig(holdout=0.3))
    assert set(plan["train"].tracks).isdisjoint(plan["select"].tracks)
    assert set(plan["select"].tracks).isdisjoint(plan["report"].tracks)
    assert "no validation set" in plan["notes"][0] and not plan["optimistic"]
    plan = plan_splits(train_set, val, None, TrainConfig(holdout=0.3))
    assert len(plan["select"]) + len(plan["report"]) == 60 and set(plan["select"].tracks).isdisjoint(
        plan["report"].tracks)
    test = crop_set(24, prefix="x")
    plan = plan_splits(train_set, val, test, TrainConfig())
    assert plan["select"] is val and plan["report"] is test and "test split" in plan["report_on"]
    plan = plan_splits(train_set, crop_set(16), None, TrainConfig())  # too few to split: said so
    assert plan["optimistic"] and "optimistic" in plan["report_on"]


# --------------------------------------------------------------------------- calibration

def test_temperature_scaling_lowers_the_ece_of_an_over_confident_model():
    rng = np.random.default_rng(0)
    n, c = 2000, 8
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += 1.5  # right about two times in three...
    logits *= 6  # ...but sure of itself nearly every time
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    fit, held = slice(0, 1000), slice(1000, None)
    t = fit_temperature(p[fit], y[fit])
    assert t > 2  # softens
    before, after = expected_calibration_error(p[held], y[held]), expected_calibration_error(
        scale_probabilities(p[held], t), y[held])
    assert after < before / 3
    assert (scale_probabilities(p, t).argmax(1) == p.argmax(1)).all()  # the calls do not change


# --------------------------------------------------------------------------- training runs

@pytest.mark.slow
def test_frozen_layers_keep_their_weights_and_batchnorm_statistics(tmp_path, tiny):
    torch.manual_seed(5)
    base = tmp_path / "base.pt"
    save_checkpoint(base, Classifier(YeastResNet(8)))
    before = torch.load(base, weights_only=True)["model_state"]
    clf = train(tiny, None, TrainConfig(epochs=1, batch_size=8, base_weights=str(base), trainable="conv1,layer4,fc",
                                        calibrate=False, augment="none", seed=2, small_data="off"))
    after = {k: v.cpu() for k, v in clf.model.state_dict().items()}
    frozen = [k for k in before if k.split(".")[0] in ("bn1", "layer1", "layer2", "layer3")]
    assert any("running_mean" in k for k in frozen) and any("num_batches_tracked" in k for k in frozen)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    for trained in ("conv1.weight", "fc.weight", "layer4.0.bn1.running_mean", "layer4.2.conv3.weight"):
        assert not torch.equal(before[trained], after[trained]), trained


@pytest.mark.slow
def test_augmentation_touches_training_batches_only(tiny, monkeypatch):
    from napari_yeast_phenotypes.core.network import train_report, train_steps

    val = crop_set(8, seed=9, prefix="v")
    augmented, predicted = [], []
    real_aug, real_pred = train_steps.augment_batch, train_report.predict_crops
    monkeypatch.setattr(train_steps, "augment_batch", lambda x, g, a: augmented.append(x.clone()) or real_aug(x, g, a))
    monkeypatch.setattr(train_report, "predict_crops", lambda m, c, *a, **k: predicted.append(c.copy()) or
                        real_pred(m, c, *a, **k))
    train(tiny, val, TrainConfig(epochs=1, batch_size=8, base_weights="none", augment="flips,rot90,noise",
                                 small_data="off"))
    seen = torch.cat(augmented).numpy()
    assert len(seen) == len(tiny)  # every training crop once per epoch, and nothing else
    assert sorted(map(bytes, seen)) == sorted(map(bytes, tiny.crops))
    assert predicted and all(np.array_equal(c, val.crops) for c in predicted)  # validation: as stored


@pytest.mark.slow
def test_cancel_keeps_a_calibrated_checkpoint_with_its_record(tmp_path, tiny):
    out = tmp_path / "m.pt"
    val = crop_set(8, seed=4, prefix="v")
    stop = {"now": False}
    gen = train_iter(tiny, val, CFG, out=out, should_stop=lambda: stop["now"])
    for p in gen:
        if p.get("done_epoch"):
            stop["now"] = True  # the user presses Cancel after the first epoch
    clf = load_classifier(out)
    meta = clf.metadata
    assert meta["best_epoch"] == 1 and len(meta["history"]) == 1 and meta["stopped"] == "cancelled"
    assert meta["report"]["optimistic"] and meta["report"]["n"] == 8
    assert meta["calibration"]["temperature"] > 0 and meta["calibration"]["fitted_on"]
    assert meta["training_set"]["ids_sha256"] == fingerprint_ids([f"c{i}" for i in range(16)])
    assert meta["training"] == CFG.to_dict()
    # the temperature is in the weights: the saved model gives the calibrated probabilities
    from napari_yeast_phenotypes.core.network.predict import predict_crops

    saved = predict_crops(clf.model, val.crops)
    assert meta["report"]["ece_after"] == pytest.approx(expected_calibration_error(saved, val.targets), abs=1e-3)
    if abs(meta["calibration"]["temperature"] - 1) > 0.05:  # a model saved before calibration would differ
        assert meta["report"]["ece_before"] != pytest.approx(meta["report"]["ece_after"], abs=1e-3)


@pytest.mark.slow
def test_a_crash_mid_training_leaves_the_saved_checkpoint_whole(tmp_path, tiny):
    out = tmp_path / "m.pt"

    def crash(p):
        if p["epoch"] == 2 and p.get("step") == 1:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(tiny, None, CFG, out=out, progress=crash)
    assert load_classifier(out).metadata["best_epoch"] == 1


@pytest.mark.slow
def test_info_prints_the_record_and_compares_with_the_previous_model(tmp_path, tiny, capsys):
    val = crop_set(8, seed=4, prefix="v")
    prev = Classifier(YeastResNet(8).eval())
    out = tmp_path / "m.pt"
    clf = train(tiny, val, TrainConfig(epochs=1, batch_size=8, base_weights="none", patience=1, small_data="off"),
                out=out,
                previous=prev)
    rep = clf.metadata["report"]
    assert rep["previous"]["n"] == 8 and 0 <= rep["previous"]["accuracy"] <= 1
    # intervals and the verdict are in the record, as plain values (the checkpoint loads with weights_only)
    saved = load_classifier(out).metadata["report"]
    assert saved["metrics"]["ci"] == rep["metrics"]["ci"] and saved["metrics"]["ci"]["accuracy"]
    assert saved["previous"]["ci"]["accuracy"] and saved["comparison"]["verdict"] in ("better", "worse",
                                                                                       "cannot tell")
    assert saved["comparison"]["n_tracks"] == 8 and "the wider of" in saved["comparison"]["method"]
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "8 classes: Nuclear" in text and "OPTIMISTIC" in text and "temperature" in text
    lo, hi = saved["metrics"]["ci"]["accuracy"]
    assert f"accuracy {saved['metrics']['accuracy']:.3f} ({lo:.3f}-{hi:.3f})" in text
    assert "95% intervals" in text and "only 8 tracks" in text
    assert f"the new model is {saved['comparison']['words']}" in text
    assert f"crop ids sha256 {clf.metadata['training_set']['ids_sha256'][:16]}" in text
    assert "too few crops for a meaningful figure" in text  # 1 crop per class


def test_metrics_per_class_and_macro_f1():
    t = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    m = metrics(t, p, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["c"]["recall"] == 0.0 and m["per_class"]["c"]["precision"] is None
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)  # c never predicted: F1 0, not left out
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_fold_summary_counts_a_class_never_predicted_as_f1_zero():
    names = ["a", "b", "c"]
    folds = [metrics(np.array([0, 1, 2]), np.array([0, 1, 2]), names),  # c right: F1 1
             metrics(np.array([0, 1, 2]), np.array([0, 1, 0]), names),  # c never predicted: F1 0
             metrics(np.array([0, 1]), np.array([0, 1]), names)]        # no c: left out
    s = summarise_folds(folds, names)
    assert s["f1"]["c"]["mean"] == pytest.approx(0.5) and s["f1"]["c"]["n_folds"] == 2
    assert s["f1"]["a"]["n_folds"] == 3


def test_the_report_figure_is_a_row_or_a_grid():
    from napari_yeast_phenotypes.core.network.evaluation_figures import report_figure

    rng = np.random.default_rng(0)
    t = rng.integers(0, 8, 60)
    m = metrics(t, np.where(rng.random(60) < 0.8, t, 0), CLASS_NAMES)
    probs = rng.dirichlet(np.ones(8), 60)
    rep = {"metrics": m, "reliability": {"before": probs, "after": probs, "targets": t}}
    for ncols, rows in ((4, 1), (2, 2)):
        fig = report_figure(rep, CLASS_NAMES, m, ncols=ncols)
        assert len(fig.axes) == 4 and len({round(ax.get_subplotspec().rowspan.start) for ax in fig.axes}) == rows
    with pytest.raises(ValueError, match="ncols"):
        report_figure(rep, CLASS_NAMES, ncols=3)
