"""Judging a training recipe rather than one model: grouped cross-validation (whole experiments or tracks in
a fold, a random split beside it for comparison) and the learning curve (macro-F1 against labels per class)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..config import TrainConfig, adapt_to_data
from ..data.crops import CropSettings
from ..data.cropset import CropSet
from ..errors import InputError
from .device import select_device
from .evaluation import group_folds, grouping, metrics, random_folds, summarise_folds
from .intervals import with_intervals
from .train import train
from .train_report import evaluate, predict_probabilities


def _quick(config: TrainConfig, data: CropSet) -> TrainConfig:
    """The config of a training inside an evaluation: no inner hold-out, no calibration, no early stop, no inner
    folds; adapted to small data as a training of these crops would be (steps, balanced batches)."""
    adapted, _ = adapt_to_data(config, data.counts(), has_validation=True)
    return replace(adapted, holdout=0.0, calibrate=False, patience=0, stop_folds=0, small_data="off")


def crossval_folds(data: CropSet, k: int = 5, by: str = "auto", seed: int = 0) -> tuple[list[np.ndarray], str, int]:
    """The folds of a grouped cross-validation, what they group by, and their number.

    ``by``: ``experiment`` (leave one experiment out: ``k`` = the number of experiments),
    ``track`` (whole tracks in one fold) or ``auto`` (experiments when there are at least ``k``,
    else tracks).
    """
    experiments = data.groups
    n_exp = len(np.unique(np.asarray(experiments).astype(str))) if experiments is not None else 0
    if by == "experiment":
        if n_exp < 2:
            raise InputError(f"leave-one-experiment-out needs 2 or more experiments; these crops come from {n_exp}")
        k = n_exp
        groups, name = np.asarray(experiments), "experiment"
    elif by in ("auto", "track"):
        if by == "auto" and n_exp >= k:
            groups, name = np.asarray(experiments), "experiment"
        else:
            groups, name = grouping(data.tracks, None, len(data))
    else:
        raise InputError(f"cross-validation by {by!r}: use auto, experiment or track")
    return group_folds(groups, k, seed), name, k


def _run_folds(data: CropSet, folds: list[np.ndarray], config: TrainConfig, crop_settings, progress) -> dict:
    """Train and judge each fold; per-fold figures and the pooled out-of-fold calls, each with its 95% intervals
    (bootstrap over the tracks of the crops judged)."""
    pooled_t, pooled_p, pooled_g, per_fold = [], [], [], []
    for i, test_idx in enumerate(folds):
        train_idx = np.setdiff1d(np.arange(len(data)), test_idx)
        part = data.subset(train_idx)
        clf = train(part, None, _quick(config, part), crop_settings,
                    progress=(lambda p, i=i: progress({**p, "fold": i + 1, "folds": len(folds)})) if progress else None)
        test = data.subset(test_idx)
        pred = predict_probabilities(clf.model, test, device=select_device(config.device)).argmax(axis=1)
        per_fold.append(with_intervals(metrics(test.targets, pred, data.class_names), test.targets, pred,
                                       test.tracks))
        pooled_t.append(test.targets)
        pooled_p.append(pred)
        pooled_g.append(test.tracks)
    t, p = np.concatenate(pooled_t), np.concatenate(pooled_p)
    groups = None if any(g is None for g in pooled_g) else np.concatenate(
        [np.asarray(g, dtype=object) for g in pooled_g])
    pooled = with_intervals(metrics(t, p, data.class_names), t, p, groups)
    return {"folds": per_fold, "pooled": pooled, "summary": summarise_folds(per_fold, data.class_names),
            "fold_sizes": [int(len(f)) for f in folds]}


def crossval(data: CropSet, k: int = 5, config: TrainConfig = TrainConfig(),
             crop_settings: CropSettings = CropSettings(), progress=None, *, by: str = "auto",
             random_split: bool = True) -> dict:
    """Grouped k-fold (or leave-one-experiment-out) cross-validation, and a random split beside it.

    Each fold trains on the other folds for ``config.epochs`` epochs (the last epoch is kept: no
    choice is made on the held-out fold) and is judged on its own crops. With ``random_split``,
    the same number of folds drawn at random (cells and experiments ignored) shows how much a
    random split would have flattered the model.
    """
    folds, name, k = crossval_folds(data, k, by, config.seed)
    res = {"k": k, "by": name, **_run_folds(data, folds, config, crop_settings, progress)}
    notes = []
    n_exp = len(np.unique(np.asarray(data.groups).astype(str))) if data.groups is not None else 0
    if name == "track" and n_exp > 1:
        notes.append(f"{n_exp} experiments are fewer than {k} folds: folds keep whole tracks, but one experiment "
                     "may be on both sides (use --folds {0} or --by experiment)".format(n_exp))
    if name == "crop":
        notes.append("the crops carry no track: folds are of single crops, and frames of one cell may be on "
                     "both sides (as in a random split)")
    res["notes"] = notes
    if random_split:
        res["random"] = _run_folds(data, random_folds(len(data), k, config.seed), config, crop_settings, progress)
    return res


def learning_curve(train_set: CropSet, val_set: CropSet, per_class=(5, 10, 20, 40), config: TrainConfig = TrainConfig(),
                   crop_settings: CropSettings = CropSettings(), progress=None) -> list[dict]:
    """Validation macro-F1 and accuracy after training on at most ``n`` crops per class, for each ``n``.

    Subsets are nested (the crops of a smaller one are in every larger one), drawn once with
    ``config.seed``, so the curve shows the effect of more labels and not of another draw.
    """
    if val_set is None or len(val_set) == 0:
        raise InputError("a learning curve needs validation crops (a validation split, or --val)")
    from .train_splits import check_held_out

    check_held_out(train_set, val_set, "validation")  # a curve judged on crops it learnt from would flatter
    rng = np.random.default_rng(config.seed)
    order = {c: rng.permutation(np.flatnonzero(train_set.targets == c)) for c in range(len(train_set.class_names))}
    curve = []
    for n in sorted({int(v) for v in per_class}):
        idx = np.sort(np.concatenate([o[:n] for o in order.values()]))
        if len(idx) < 2:
            continue
        part = train_set.subset(idx)
        clf = train(part, None, _quick(config, part), crop_settings,
                    progress=(lambda p, n=n: progress({**p, "per_class": n})) if progress else None)
        m = evaluate(clf.model, val_set, device=select_device(config.device))
        curve.append({"per_class": n, "n_train": int(len(idx)), "macro_f1": m["macro_f1"],
                      "accuracy": m["accuracy"], "per_class_f1": {c: v["f1"] for c, v in m["per_class"].items()}})
    return curve


__all__ = ["crossval", "crossval_folds", "learning_curve"]
