"""Training, honest evaluation, calibration, grouped cross-validation and the learning curve.

What the original study learnt shapes this module: the validation set is never augmented; the
figures a user decides on are per-class metrics on a hand-curated validation set (and grouped
cross-validation), not training curves; augmentation is flips, 90-degree rotations and mild
intensity changes (MixUp/CutMix did not help); a random split flatters the model.

Three roles of data in :func:`train_iter`: the *training* crops; the *selection* crops, on which
the best epoch is chosen (validation macro-F1), early stopping decides and the temperature is
fitted; and the *report* crops, on which the final figures are computed. The report crops are the
test split when one is given; else a part of the validation set held out from the choice (whole
tracks, or whole experiments where there are three or more); else, for sets too small to split,
the selection crops themselves, and the report says plainly that its figures are optimistic.
Without a validation set, a part of the training set (again whole tracks) becomes it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Generator

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DEFAULT_AUGMENT, TrainConfig, parse_augment
from ..data.crops import CropSettings
from ..data.cropset import CropSet
from ..errors import InputError
from ..files.atomic import check_writable_file
from ..progress import run_to_end
from .cpu_training import gemm_weight_grads
from .device import select_device
from .evaluation import (
    expected_calibration_error,
    few_classes,
    fingerprint_ids,
    fit_temperature,
    grouping,
    holdout_groups,
    log_loss,
    metrics,
    scale_probabilities,
)
from .model import Classifier, build_model, non_finite, save_checkpoint
from .ood import summarise_training
from .predict import predict_crops

#: a set is split (a part held out) only from this many crops and three groups on: below that, a
#: held-out part is too small to say anything, and the report says its figures are optimistic
MIN_HOLDOUT_CROPS = 40


class TrainingDiverged(InputError):
    """The loss or the weights stopped being finite numbers (a learning rate too high, mostly)."""


class TrainingCancelled(InputError):
    """Cancelled before the first epoch ended: there is no model to keep."""


def _diverged(what: str, epoch: int, step: int | None, config: TrainConfig, out, best_epoch: int | None
              ) -> TrainingDiverged:
    where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
    kept = (f"{out} keeps the best epoch before that ({best_epoch})" if out is not None and best_epoch
            else "no checkpoint was written")
    return TrainingDiverged(
        f"training stopped in {where}: {what} became NaN or infinite, so the network learns nothing from "
        f"here on; {kept}. This usually means the learning rate ({config.lr:g}) is too high: train again "
        f"with a lower one (e.g. --lr {config.lr / 10:g})"
    )


def _weights_finite(model) -> bool:
    return not non_finite(model.state_dict())  # one sum per tensor: 12 ms, not 0.2-0.7 s of masks per epoch


def augment_batch(x: torch.Tensor, gen: torch.Generator, augment=DEFAULT_AUGMENT) -> torch.Tensor:
    """Random changes of a training batch (never of validation data).

    ``flips`` (left-right, up-down), ``rot90`` (turns by 90 degrees; with ``flips`` the eight
    symmetries of a square), ``affine`` (turns up to 15 degrees, scale 0.9-1.1, shifts up to 2
    pixels), ``intensity`` (gain x0.82-1.22, offset +-0.03), ``noise`` (Gaussian, sigma up to 0.03).
    """
    names = parse_augment(augment)
    n = x.shape[0]
    out = x
    if "flips" in names or "rot90" in names:
        k = torch.randint(0, 4, (n,), generator=gen) if "rot90" in names else torch.zeros(n, dtype=torch.long)
        flip = torch.randint(0, 2, (n,), generator=gen).bool() if "flips" in names else torch.zeros(n, dtype=bool)
        out = torch.empty_like(x)
        for r in range(4):
            for f in (False, True):
                sel = (k == r) & (flip == f)
                if sel.any():
                    v = torch.rot90(x[sel], r, dims=(2, 3))
                    out[sel] = v.flip(3) if f else v
        # rot90 and one flip give all eight symmetries; flips alone need the up-down flip too
        if "flips" in names and "rot90" not in names:
            ud = torch.randint(0, 2, (n,), generator=gen).bool()
            out[ud] = out[ud].flip(2)
    if "affine" in names:
        ang = torch.empty(n).uniform_(-15, 15, generator=gen) * math.pi / 180
        scale = torch.empty(n).uniform_(0.9, 1.1, generator=gen)
        shift = torch.empty(n, 2).uniform_(-2, 2, generator=gen) * 2 / x.shape[-1]
        cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(out.dtype), list(out.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if "intensity" in names:
        gain = torch.exp(torch.empty(n, 1, 1, 1).uniform_(-0.2, 0.2, generator=gen))
        offset = torch.empty(n, 1, 1, 1).uniform_(-0.03, 0.03, generator=gen)
        out = out * gain + offset
    if "noise" in names:
        sigma = torch.empty(n, 1, 1, 1).uniform_(0, 0.03, generator=gen)
        out = out + sigma * torch.randn(out.shape, generator=gen)
    return out


def class_weights(targets: np.ndarray, n_classes: int, mode: str = "balanced") -> torch.Tensor | None:
    """Loss weights per class: ``balanced`` makes every present class weigh the same in the loss
    (weight proportional to 1 / its number of crops), ``none`` gives ``None`` (every crop the same)."""
    if mode == "none":
        return None
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def training_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy; with ``weights`` the weighted mean ``sum(w_y * loss) / sum(w_y)``."""
    return F.cross_entropy(logits, y, weight=weights, label_smoothing=label_smoothing)


def batch_loss(model, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, augmentations=DEFAULT_AUGMENT,
               weights: torch.Tensor | None = None, label_smoothing: float = 0.0, device="cpu",
               memory_format=torch.channels_last) -> torch.Tensor:
    """The loss of one training batch as :func:`train_iter` computes it (the benchmark times the same).

    ``x`` is augmented (training batches only; no ``augmentations``: as it is), moved to ``device``
    in ``memory_format`` (channels-last: oneDNN's convolutions run without layout conversions,
    13-19% faster training steps on CPU, benchmarks/README.md), then :func:`training_loss`.
    """
    if augmentations:
        x = augment_batch(x, gen, augmentations)
    x = x.to(device).contiguous(memory_format=memory_format)
    return training_loss(model(x), y.to(device), weights, label_smoothing)


def make_optimizer(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW, fused where this torch has it for the parameters' device.

    The fused update is one kernel over all parameters instead of a loop of small ones: with
    every layer trained (25 M parameters) it took the optimiser step from 73 to 28 ms per batch of
    64 on a 2-core CPU (benchmarks/README.md). Same arithmetic; torch before 2.4 has no fused CPU
    AdamW, and then the plain one is used.
    """
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """Multiplier of the learning rate at ``step`` of ``total``: linear warm-up, then the schedule."""
    w = min(1.0, (step + 1) / warmup)
    if schedule == "cosine":
        return w * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if schedule == "step":
        return w * (0.1 if step >= 2 * total // 3 else 1.0)
    return w


def predict_probabilities(model, data: CropSet, batch_size: int = 128, device="cpu") -> np.ndarray:
    """Softmax probabilities (N, C) of ``data`` (never augmented); non-finite outputs refused."""
    probs = predict_crops(model, data.crops, batch_size, device)
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        raise TrainingDiverged(f"the network's outputs for {int(bad.sum())} of {len(bad)} crops are NaN or infinite: "
                               "its weights are broken (a training that diverged); lower the learning rate (--lr)")
    return probs


def evaluate(model, data: CropSet, batch_size: int = 128, device="cpu") -> dict:
    """Metrics of ``model`` on ``data`` (never augmented)."""
    probs = predict_probabilities(model, data, batch_size, device)
    return metrics(data.targets, probs.argmax(axis=1), data.class_names)


def _grouping(data: CropSet) -> tuple[np.ndarray, str]:
    return grouping(data.tracks, data.groups, len(data))


def _held_out(data: CropSet, fraction: float, seed: int) -> tuple[np.ndarray, str] | None:
    """A mask of whole groups to hold out of ``data``, and what the groups are; ``None`` if too small."""
    if fraction <= 0 or len(data) < MIN_HOLDOUT_CROPS:
        return None
    groups, by = _grouping(data)
    if len(np.unique(groups.astype(str))) < 3:
        return None
    mask = holdout_groups(groups, fraction, seed)
    return (mask, by) if 0 < mask.sum() < len(data) else None


def plan_splits(train: CropSet, val: CropSet | None, test: CropSet | None, config: TrainConfig) -> dict:
    """Which crops train, which choose the epoch (and calibrate), which give the final figures.

    Returns ``{"train", "select", "report", "report_on", "optimistic", "notes"}`` (``select`` and
    ``report`` may be ``None`` for sets too small to hold anything out).
    """
    notes = []
    if val is None or len(val) == 0:
        got = _held_out(train, config.holdout, config.seed)
        if got is None:
            notes.append(f"no validation set, and {len(train)} training crops are too few to hold a part out "
                         f"(from {MIN_HOLDOUT_CROPS} crops in 3 or more tracks on): the last epoch is kept and "
                         "the figures are on the training data, which flatter")
            return {"train": train, "select": None, "report": train, "optimistic": True,
                    "report_on": "the training data (optimistic: the model learnt them)", "notes": notes}
        mask, by = got
        notes.append(f"no validation set: {int(mask.sum())} of {len(train)} training crops (whole {by}s) are held "
                     "out as validation data; a hand-curated validation set of other experiments is better")
        train, val = train.subset(np.flatnonzero(~mask)), train.subset(np.flatnonzero(mask))
    if test is not None and len(test):
        return {"train": train, "select": val, "report": test, "optimistic": False,
                "report_on": f"the test split ({len(test)} crops), which no choice was made on", "notes": notes}
    got = _held_out(val, config.holdout, config.seed + 1)
    if got is None:
        notes.append(f"the validation data ({len(val)} crops) are too few to hold a part out: the best epoch and "
                     "the temperature are chosen on the same crops as the figures, which are therefore optimistic")
        return {"train": train, "select": val, "report": val, "optimistic": True,
                "report_on": f"the validation data the best epoch was chosen on ({len(val)} crops; optimistic)",
                "notes": notes}
    mask, by = got
    return {"train": train, "select": val.subset(np.flatnonzero(~mask)), "report": val.subset(np.flatnonzero(mask)),
            "optimistic": False, "notes": notes,
            "report_on": f"{int(mask.sum())} validation crops (whole {by}s) held out from the choice of the best "
                         f"epoch and from calibration; the other {int((~mask).sum())} chose them"}


def crop_ids(data: CropSet) -> list[str]:
    """The ids of the crops (their file names without suffix; their index when they have no file)."""
    return [Path(p).stem for p in data.paths] if data.paths else [f"#{i}" for i in range(len(data))]


def training_set_fingerprint(data: CropSet) -> dict:
    """What identifies the crops a model learnt from: their ids, the ids' hash, the pixels' hash."""
    from ..files.fingerprint import array_sha256

    ids = crop_ids(data)
    return {"n": len(ids), "counts": data.counts(), "crop_ids": ids, "ids_sha256": fingerprint_ids(ids),
            "crops_sha256": array_sha256(data.crops), "origin": data.origin or {"kind": "unknown"}}


def fold_temperature(model, temperature: float) -> None:
    """Divide the logits by ``temperature`` for good: the last layer's weights and bias are scaled."""
    with torch.no_grad():
        model.fc.weight.div_(temperature)
        model.fc.bias.div_(temperature)


def train_iter(train: CropSet, val: CropSet | None, config: TrainConfig = TrainConfig(),
               crop_settings: CropSettings = CropSettings(), out: str | Path | None = None,
               should_stop: Callable[[], bool] | None = None, *, test: CropSet | None = None,
               previous=None, metadata: dict | None = None) -> Generator[dict, None, Classifier]:
    """Train; yields progress dicts, returns the best :class:`Classifier`, calibrated, with its report.

    ``metadata``: plain values kept in the checkpoint's record besides what training measures (e.g. the
    classes that are not labelled yet).

    After every epoch that improves the validation macro-F1 (or every epoch without validation
    data), the checkpoint is written atomically to ``out``, so a crash or a cancel (``should_stop``
    returning True) keeps the best model so far. At the end (also after a cancel or an early stop)
    the best epoch is calibrated, evaluated on the report crops (see the module notes), compared
    with ``previous`` (a :class:`Classifier`) on the same crops, and saved with its record.

    Yields ``{"epoch", "epochs", "step", "steps", "loss"}`` per batch and, per epoch,
    ``{"done_epoch": True, "train_loss", "val_loss", "val_accuracy", "val_macro_f1", ...}``.
    """
    if len(train) == 0:
        raise InputError("the training set is empty")
    if out is not None:
        check_writable_file(out, overwrite=True)  # before the first epoch, not after it
    for other, what in ((val, "validation"), (test, "test")):
        if other is not None and tuple(other.class_names) != tuple(train.class_names):
            raise InputError(f"training and {what} sets use different class lists")
    plan = plan_splits(train, val, test, config)
    train, select, report_set = plan["train"], plan["select"], plan["report"]
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    device = select_device(config.device)
    n_classes = len(train.class_names)
    # channels-last layout: oneDNN runs the convolutions without layout conversions (measured
    # 13-19% faster training steps on CPU, benchmarks/README.md)
    model = build_model(n_classes, config.base_weights, config.trainable).to(device,
                                                                             memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, config.lr, config.weight_decay)
    n = len(train)
    bs = min(config.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total = steps_per_epoch * config.epochs
    warmup = max(1, min(total // 10, 100))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(config.schedule, s, total, warmup))
    weights = class_weights(train.targets, n_classes, config.class_weighting)
    weights = weights.to(device) if weights is not None else None
    x_all = torch.from_numpy(train.crops)
    y_all = torch.from_numpy(train.targets)
    history, best, best_state, best_epoch = [], -1.0, None, None
    best_metrics = best_probs = None
    info = {**(metadata or {}), "class_counts_train": train.counts(),
            "class_counts_val": select.counts() if select is not None else None,
            "train_notes": train.notes + plan["notes"],
            "crop_origin": train.origin or {"kind": "unknown"},
            "training_set": training_set_fingerprint(train)}
    t0 = time.perf_counter()
    seen, stopped = 0, None
    for epoch in range(1, config.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        losses = []
        # on the CPU the convolutions' weight gradients are GEMMs in the training steps (core/cpu_training.py;
        # evaluation and the checkpoint see plain convolutions)
        with gemm_weight_grads(model, device):
            for step in range(steps_per_epoch):
                idx = perm[step * bs:(step + 1) * bs]
                loss = batch_loss(model, x_all[idx], y_all[idx], gen, config.augmentations, weights,
                                  config.label_smoothing, device)
                if not bool(torch.isfinite(loss)):
                    raise _diverged("the loss", epoch, step + 1, config, out, best_epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                seen += len(idx)
                yield {"epoch": epoch, "epochs": config.epochs, "step": step + 1, "steps": steps_per_epoch,
                       "loss": losses[-1]}
                if should_stop is not None and should_stop():
                    stopped = "cancelled"
                    break
        if stopped and step + 1 < steps_per_epoch and best_state is not None:
            break  # a part-epoch is not a model to judge: the best whole epoch is kept
        if not _weights_finite(model):  # the last step's update may have broken them
            raise _diverged("the weights", epoch, None, config, out, best_epoch)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                  "crops_per_s": seen / max(time.perf_counter() - t0, 1e-9),
                  "lr": float(opt.param_groups[0]["lr"])}
        try:
            if select is not None and len(select):
                probs = predict_probabilities(model, select, device=device)
                m = metrics(select.targets, probs.argmax(axis=1), select.class_names)
            else:  # no validation data: the checkpoint must still compute numbers
                predict_probabilities(model, train.subset(np.arange(min(n, 32))), device=device)
        except TrainingDiverged:
            raise _diverged("the network's outputs (in evaluation mode)", epoch, None, config, out, best_epoch) \
                from None
        if select is not None and len(select):
            record.update(val_loss=log_loss(probs, select.targets), val_accuracy=m["accuracy"],
                          val_balanced_accuracy=m["balanced_accuracy"], val_macro_f1=m["macro_f1"])
            score = m["macro_f1"]
        else:
            m, score = None, float(epoch)
        history.append(record)
        if score > best:
            best, best_epoch, best_metrics = score, epoch, m
            best_probs = probs if m is not None else None
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if out is not None:
                save_checkpoint(out, Classifier(model, train.class_names, crop_settings),
                                base_weights=config.base_weights, training=config.to_dict(), history=history,
                                validation=m, best_epoch=epoch, **info)
        elif config.patience and epoch - best_epoch >= config.patience:
            stopped = f"stopped early: the validation macro-F1 has not improved for {config.patience} epochs"
        yield {"epoch": epoch, "epochs": config.epochs, "done_epoch": True, "best_epoch": best_epoch, **record}
        if stopped or (should_stop is not None and should_stop()):
            stopped = stopped or "cancelled"
            break
    if best_state is None:
        raise TrainingCancelled("training was cancelled before its first epoch ended: no model was kept")
    model.load_state_dict(best_state)
    model.eval()
    clf = Classifier(model, train.class_names, crop_settings)
    evaluation = _final_report(clf, select, report_set, plan, config, device, previous, best_probs)
    meta = {"base_weights": config.base_weights, "training": config.to_dict(), "history": history,
            "best_epoch": best_epoch, "stopped": stopped or "finished", "validation": best_metrics,
            "report": evaluation["record"], "calibration": evaluation["calibration"], **info}
    clf.metadata = meta
    clf.evaluation = evaluation
    # a summary of the training crops, so a movie unlike them is said (core/ood.py)
    clf.ood = summarise_training(model, train, select if select is not None else val, device=device,
                                 seed=config.seed)
    if out is not None:
        save_checkpoint(out, clf)
    return clf


def _final_report(clf: Classifier, select: CropSet | None, report: CropSet, plan: dict, config: TrainConfig,
                  device, previous, sel_probs: np.ndarray | None = None) -> dict:
    """Calibrate on the selection crops, judge on the report crops, compare with ``previous``.

    ``sel_probs``: the best epoch's probabilities on the selection crops, if at hand.
    """
    t = 1.0
    cal = {"temperature": 1.0, "fitted_on": None}
    if select is not None and sel_probs is None:
        sel_probs = predict_probabilities(clf.model, select, device=device)
    if config.calibrate and select is not None and len(select) >= 2:
        t = fit_temperature(sel_probs, select.targets)
        cal = {"temperature": round(t, 4), "fitted_on": f"{len(select)} validation crops (the selection part)",
               "ece_before_on_those": round(expected_calibration_error(sel_probs, select.targets), 4),
               "ece_after_on_those": round(expected_calibration_error(scale_probabilities(sel_probs, t),
                                                                      select.targets), 4)}
    before = sel_probs if report is select else predict_probabilities(clf.model, report, device=device)
    after = scale_probabilities(before, t) if t != 1.0 else before
    m = metrics(report.targets, after.argmax(axis=1), report.class_names)
    record = {"on": plan["report_on"], "optimistic": plan["optimistic"], "n": len(report), "metrics": m,
              "ece_before": round(expected_calibration_error(before, report.targets), 4),
              "ece_after": round(expected_calibration_error(after, report.targets), 4),
              "log_loss_before": round(log_loss(before, report.targets), 4),
              "log_loss_after": round(log_loss(after, report.targets), 4),
              "few_classes": few_classes(m), "notes": plan["notes"], "previous": None}
    cal.update(ece_before=record["ece_before"], ece_after=record["ece_after"], measured_on=plan["report_on"])
    if previous is not None:
        if tuple(previous.class_names) == tuple(report.class_names):
            prev = predict_probabilities(previous.model, report, device=device)
            record["previous"] = metrics(report.targets, prev.argmax(axis=1), report.class_names)
            record["previous"]["ece"] = round(expected_calibration_error(prev, report.targets), 4)
        else:
            record["notes"] = [*plan["notes"], "the previous model has other classes: not compared"]
    if t != 1.0:
        fold_temperature(clf.model, t)  # the checkpoint gives calibrated probabilities everywhere
    return {"record": record, "calibration": cal, "targets": report.targets, "before": before, "after": after,
            "report_set": report}


def train(train_set: CropSet, val_set: CropSet | None = None, config: TrainConfig = TrainConfig(),
          crop_settings: CropSettings = CropSettings(), out=None, progress=None, *, test: CropSet | None = None,
          previous=None) -> Classifier:
    """Train to the end (see :func:`train_iter`); ``progress`` gets every progress dict."""
    return run_to_end(train_iter(train_set, val_set, config, crop_settings, out, test=test, previous=previous),
                      progress)


__all__ = ["TrainingCancelled", "TrainingDiverged", "augment_batch", "class_weights", "evaluate", "fold_temperature",
           "plan_splits", "predict_probabilities", "train", "train_iter", "training_loss", "training_set_fingerprint"]
