"""Small data: below 50 labels in a class the training adapts (steps rather than epochs, class-balanced batches,
the stopping step chosen on folds of whole tracks). What it does to accuracy on real labels is measured by
``benchmarks/small_data.py`` (not here)."""

import numpy as np
import pytest
import torch

from napari_yeast_phenotypes.core.config import (
    SMALL_DATA_FOLDS,
    SMALL_DATA_MIN_STEPS,
    SMALL_DATA_PER_CLASS,
    TrainConfig,
    adapt_to_data,
)
from napari_yeast_phenotypes.core.data.cropset import CropSet
from napari_yeast_phenotypes.core.network.train import train_iter
from napari_yeast_phenotypes.core.network.train_steps import epoch_batches, schedule_length

NAMES = ("Aggregate", "Cytoplasm", "Circular")


def test_the_defaults_adapt_below_fifty_labels_in_a_class():
    counts = {"Aggregate": 169, "Cytoplasm": 116, "Circular": 5, "Nuclear": 0}
    cfg, notes = adapt_to_data(TrainConfig(), counts, has_validation=False)
    assert (cfg.min_steps, cfg.sampling, cfg.stop_folds) == (SMALL_DATA_MIN_STEPS, "balanced", SMALL_DATA_FOLDS)
    assert cfg.class_weighting == "none"  # balanced batches: the loss does not weigh classes again
    assert cfg.class_prior == "labels"  # ... and the calls weigh them by how often they are among the labels
    assert len(notes) == 1 and "Circular (5)" in notes[0] and "Nuclear" not in notes[0]  # 0: not labelled, not few
    # with a validation set, the epoch is chosen on it (no folds)
    assert adapt_to_data(TrainConfig(), counts, has_validation=True)[0].stop_folds == 0
    # enough labels, or small_data off: as configured
    many = dict.fromkeys(NAMES, SMALL_DATA_PER_CLASS)
    assert adapt_to_data(TrainConfig(), many, False) == (TrainConfig(), [])
    off = TrainConfig(small_data="off")
    assert adapt_to_data(off, counts, False) == (off, [])
    # what a user set above the adaptation stays
    assert adapt_to_data(TrainConfig(min_steps=500, stop_folds=5), counts, False)[0].min_steps == 500
    assert adapt_to_data(TrainConfig(min_steps=500, stop_folds=5), counts, False)[0].stop_folds == 5


def test_steps_rather_than_epochs_make_the_batch_size_not_change_the_training_length():
    cfg = TrainConfig(epochs=10, min_steps=200)
    for bs in (16, 64):
        _, per_epoch, total = schedule_length(294, TrainConfig(**{**cfg.to_dict(), "batch_size": bs}))
        # the epochs stay 10 (each judged once), each lengthened to 20 steps (more than one pass of 294 crops)
        assert total == 200 and per_epoch == 20 > 294 // bs
    # a run that min_steps does not lengthen: one pass of the crops per epoch, as before
    assert schedule_length(294, TrainConfig(epochs=10, batch_size=16, min_steps=100))[1:] == (294 // 16, 294 // 16 * 10)
    # without a minimum, epochs: batch 64 on 294 crops gets a quarter of the steps of batch 16
    assert schedule_length(294, TrainConfig(batch_size=64))[2] * 4 < schedule_length(294, TrainConfig(batch_size=16))[2]


def test_balanced_batches_draw_every_class_alike():
    targets = np.array([0] * 169 + [1] * 116 + [2] * 5)
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat(epoch_batches(targets, 16, 300, "balanced", gen)).numpy()
    share = np.bincount(targets[drawn], minlength=3) / len(drawn)
    assert np.allclose(share, 1 / 3, atol=0.02)
    shuffled = torch.cat(epoch_batches(targets, 16, len(targets) // 16, "shuffle", gen)).numpy()
    assert len(set(shuffled)) == len(shuffled)  # each crop at most once per epoch
    # an epoch lengthened beyond one pass: every batch full, and each pass a permutation of its own
    long = epoch_batches(targets, 16, 40, "shuffle", gen)
    assert len(long) == 40 and all(len(b) == 16 for b in long)
    drawn = torch.cat(long).numpy()
    n = len(targets)
    assert sorted(drawn[:n]) == list(range(n)) and sorted(drawn[n:2 * n]) == list(range(n))


def small_set(n_tracks=12, per_track=4, seed=0, prefix="t"):
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(n_tracks) % 3, per_track)
    crops = rng.random((len(targets), 1, 40, 40), dtype=np.float32) + targets[:, None, None, None] * 0.3
    tracks = np.repeat([f"{prefix}{i}" for i in range(n_tracks)], per_track).astype(object)  # other cells: prefix
    return CropSet(crops, targets, NAMES, [f"c{i}.tif" for i in range(len(targets))], tracks=tracks)


@pytest.mark.slow
def test_folds_of_whole_tracks_choose_when_to_stop_then_all_crops_train(tmp_path):
    train, test = small_set(), small_set(6, 3, seed=1, prefix="test")
    cfg = TrainConfig(epochs=1, batch_size=8, base_weights="none", seed=2, small_data="off", min_steps=6,
                      sampling="balanced", stop_folds=2, augment="none")
    progress = []
    gen = train_iter(train, None, cfg, out=tmp_path / "m.pt", test=test)
    while True:
        try:
            progress.append(next(gen))
        except StopIteration as stop:
            clf = stop.value
            break
    folds = [p for p in progress if "fold" in p]
    assert {p["fold"] for p in folds} == {1, 2} and max(p["step"] for p in folds) == 6  # each fold: the schedule
    meta = clf.metadata
    chosen = meta["stopping_folds"]
    assert chosen["folds"] == 2 and chosen["by"] == "track" and 1 <= chosen["steps"] <= chosen["total"] == 6
    assert [c["step"] for c in chosen["curve"]] == sorted({c["step"] for c in chosen["curve"]})
    assert meta["steps"] == chosen["steps"]  # the final model: all crops, stopped where the folds were best
    assert sum(1 for p in progress if "fold" not in p and "loss" in p and not p.get("done_epoch")) == chosen["steps"]
    assert meta["training_set"]["n"] == len(train)  # nothing held out
    assert meta["report"]["n"] == len(test) and not meta["report"]["optimistic"]
    assert "out-of-fold" in meta["calibration"]["fitted_on"]
    assert any("chosen on 2 folds" in n for n in meta["train_notes"])
    # without test crops the figures are the folds' out-of-fold calls, said to be (slightly) optimistic
    clf2 = None
    gen = train_iter(train, None, cfg)
    while clf2 is None:
        try:
            next(gen)
        except StopIteration as stop:
            clf2 = stop.value
    rep = clf2.metadata["report"]
    assert rep["n"] == len(train) and rep["optimistic"] and "out-of-fold" in rep["on"]
    assert rep["metrics"]["ci"]["n_tracks"] == 12


@pytest.mark.slow
def test_small_data_is_adapted_and_said_in_the_record(tmp_path, monkeypatch, capsys):
    from napari_yeast_phenotypes.cli import main
    from napari_yeast_phenotypes.core import config as config_mod
    from napari_yeast_phenotypes.core.network.train import train

    monkeypatch.setattr(config_mod, "SMALL_DATA_MIN_STEPS", 9)  # the mechanism, quickly
    train_set, val = small_set(6, 2), small_set(3, 2, seed=3, prefix="val")
    clf = train(train_set, val, TrainConfig(epochs=1, batch_size=4, base_weights="none", augment="none"),
                out=tmp_path / "m.pt")
    meta = clf.metadata
    assert meta["training"]["small_data"] == "auto" and meta["training"]["min_steps"] == 0  # as asked
    eff = meta["effective_training"]  # as trained
    assert (eff["min_steps"], eff["sampling"], eff["stop_folds"]) == (9, "balanced", 0)  # a validation set: no folds
    # 9 steps in the one epoch asked for (lengthened from 3 steps), judged once
    assert meta["steps"] == 9 and meta["history"][-1]["steps_done"] == 9 and len(meta["history"]) == 1
    assert any(n.startswith("small data (under 50 labelled crops") for n in meta["train_notes"])
    capsys.readouterr()
    assert main(["info", str(tmp_path / "m.pt")]) == 0
    text = capsys.readouterr().out
    assert "adapted to the data: " in text and "min_steps=9" in text and "(9 optimiser steps)" in text
    assert "note: small data (under 50 labelled crops" in text


def test_the_labels_prior_is_folded_into_the_bias_and_matches_the_reweighted_probabilities():
    from napari_yeast_phenotypes.core.network.model import YeastResNet
    from napari_yeast_phenotypes.core.network.train_report import (
        fold_prior,
        log_prior,
        predict_probabilities,
        with_prior,
    )

    data = small_set()
    data = data.subset(np.r_[np.flatnonzero(data.targets != 2), np.flatnonzero(data.targets == 2)[:2]])
    prior = log_prior(data, TrainConfig(class_prior="labels"))
    assert np.allclose(np.exp(prior), np.bincount(data.targets) / len(data))
    assert log_prior(data, TrainConfig()) is None  # uniform: nothing added
    torch.manual_seed(0)
    model = YeastResNet(3).eval()
    before = predict_probabilities(model, data)
    fold_prior(model, prior)
    after = predict_probabilities(model, data)
    np.testing.assert_allclose(after, with_prior(before, prior), atol=1e-5)
    assert after[:, 2].mean() < before[:, 2].mean()  # the rare class is called less readily
