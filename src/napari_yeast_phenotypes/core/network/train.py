"""Training: the loop (:func:`train_iter`, :func:`train`) and the folds that choose when to stop
(:func:`steps_by_folds`).

What the original study learnt shapes training: the validation set is never augmented; the
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

The parts: one training step, the augmentations and the recipes' weight averaging in :mod:`.train_steps`;
the roles of the crops in :mod:`.train_splits`; calibration, the class prior and the final report in
:mod:`.train_report`; grouped cross-validation and the learning curve in :mod:`.crossval`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Generator

import numpy as np
import torch

from ..config import TrainConfig, adapt_to_data
from ..data.crops import CropSettings
from ..data.cropset import CropSet
from ..errors import InputError
from ..files.atomic import check_writable_file
from ..progress import run_to_end
from .base_weights import build_model
from .checkpoint import save_checkpoint
from .cpu_training import gemm_weight_grads
from .device import select_device
from .evaluation import group_folds, grouping, log_loss, metrics
from .intervals import with_intervals
from .model import Classifier, non_finite
from .ood import summarise_training
from .train_report import TrainingDiverged, _final_report, fold_prior, log_prior, predict_probabilities, with_prior
from .train_splits import check_held_out, plan_splits, training_set_fingerprint
from .train_steps import _Optimiser, deterministic_cuda, epoch_batches, schedule_length


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


def unfinished_record(epoch: int, epochs: int) -> str:
    """The ``stopped`` record of a checkpoint written while training still runs (each better epoch)."""
    return (f"not finished: written after epoch {epoch} of {epochs} while the training ran; it was interrupted "
            "before the end (or is still running), so this model was not calibrated nor judged on its report crops")


def steps_by_folds(train: CropSet, config: TrainConfig, device="cpu",
                   should_stop: Callable[[], bool] | None = None) -> Generator[dict, None, dict | None]:
    """Choose how many optimiser steps to train for on ``config.stop_folds`` folds of whole tracks of ``train``.

    Each fold's model trains on the other folds with the full schedule and is judged on its own
    crops at ten evenly spaced steps; the step whose pooled out-of-fold macro-F1 is highest (the
    later one of a tie) is chosen. Yields progress dicts (with ``fold``); returns ``{"steps",
    "total", "by", "curve": [{"step", "macro_f1", "accuracy"}], "probs"}`` (``probs``: the
    out-of-fold probabilities at the chosen step, in the order of ``train``), or ``None`` when
    there are too few tracks to make the folds (or when cancelled).
    """
    k = config.stop_folds
    groups, by = grouping(train.tracks, None, len(train))
    if len(np.unique(groups.astype(str))) < max(k, 2) * 2:
        return None
    folds = group_folds(groups, k, config.seed)
    _, _, total = schedule_length(len(train) - min(len(f) for f in folds), config)
    eval_at = sorted({max(1, int(round(total * f))) for f in np.linspace(0.1, 1.0, 10)})
    n_classes = len(train.class_names)
    prior = log_prior(train, config)
    probs = np.zeros((len(eval_at), len(train), n_classes), dtype=np.float32)
    for i, held in enumerate(folds):
        part = train.subset(np.setdiff1d(np.arange(len(train)), held))
        judge = train.subset(held)
        torch.manual_seed(config.seed + 1000 * (i + 1))
        gen = torch.Generator().manual_seed(config.seed + 1000 * (i + 1))
        model = build_model(n_classes, config.base_weights, config.trainable).to(device,
                                                                                 memory_format=torch.channels_last)
        opt = _Optimiser(model, part, config, total, device)
        bs, steps_per_epoch, _ = schedule_length(len(part), config)
        step = 0
        while step < total:
            model.train()
            with gemm_weight_grads(model, device):
                for idx in epoch_batches(part.targets, bs, steps_per_epoch, config.sampling, gen):
                    loss = opt.step(idx, gen)
                    if not bool(torch.isfinite(loss)):
                        raise TrainingDiverged(f"choosing when to stop, fold {i + 1}: the loss became NaN or "
                                               f"infinite at step {step + 1}; lower the learning rate (--lr "
                                               f"{config.lr / 10:g})")
                    step += 1
                    yield {"fold": i + 1, "folds": k, "epoch": i + 1, "epochs": k, "step": step, "steps": total,
                           "loss": float(loss.item())}
                    if step in eval_at:
                        model.eval()
                        probs[eval_at.index(step), held] = predict_probabilities(opt.judged, judge, device=device)
                        model.train()
                    if should_stop is not None and should_stop():
                        return None
                    if step >= total:
                        break
    curve = []
    for j, at in enumerate(eval_at):
        m = metrics(train.targets, with_prior(probs[j], prior).argmax(axis=1), train.class_names)
        point = {"step": at, "macro_f1": round(m["macro_f1"], 4), "accuracy": round(m["accuracy"], 4)}
        if prior is not None:  # what the calls would be without the labels' prior (for the record)
            u = metrics(train.targets, probs[j].argmax(axis=1), train.class_names)
            point.update(macro_f1_uniform_prior=round(u["macro_f1"], 4), accuracy_uniform_prior=round(u["accuracy"], 4))
        curve.append(point)
    best = max(range(len(eval_at)), key=lambda j: (curve[j]["macro_f1"], j))
    return {"steps": eval_at[best], "total": total, "by": by, "folds": k, "curve": curve,
            "probs": with_prior(probs[best], prior)}


def train_iter(train: CropSet, val: CropSet | None, config: TrainConfig = TrainConfig(),
               crop_settings: CropSettings = CropSettings(), out: str | Path | None = None,
               should_stop: Callable[[], bool] | None = None, *, test: CropSet | None = None,
               previous=None, metadata: dict | None = None) -> Generator[dict, None, Classifier]:
    """Train; yields progress dicts, returns the best :class:`Classifier`, calibrated, with its report.

    ``metadata``: plain values kept in the checkpoint's record besides what training measures (e.g. the
    classes that are not labelled yet).

    The config is first adapted to the data (:func:`~napari_yeast_phenotypes.core.config.adapt_to_data`:
    small data train for steps rather than epochs, on class-balanced batches, and without a
    validation set stop where folds of whole tracks say: :func:`steps_by_folds`).

    After every epoch that improves the validation macro-F1 (or every epoch without validation
    data), the checkpoint is written atomically to ``out``, so a crash or a cancel (``should_stop``
    returning True) keeps the best model so far. At the end (also after a cancel or an early stop)
    the best epoch is calibrated, evaluated on the report crops (see the module notes), compared
    with ``previous`` (a :class:`Classifier`) on the same crops, and saved with its record.

    Yields ``{"epoch", "epochs", "step", "steps", "loss"}`` per batch (with ``fold`` while folds
    choose when to stop) and, per epoch, ``{"done_epoch": True, "train_loss", "val_loss",
    "val_accuracy", "val_macro_f1", ...}``.
    """
    if len(train) == 0:
        raise InputError("the training set is empty")
    if out is not None:
        check_writable_file(out, overwrite=True)  # before the first epoch, not after it
    train.check_finite("the training set")
    for other, what in ((val, "validation"), (test, "test")):
        if other is not None and tuple(other.class_names) != tuple(train.class_names):
            raise InputError(f"training and {what} sets use different class lists")
        if other is not None:
            other.check_finite(f"the {what} set")
            check_held_out(train, other, what)
    if val is not None and test is not None:
        check_held_out(val, test, "test", "validation")
    asked = config
    config, adapted = adapt_to_data(config, train.counts(), val is not None and len(val) > 0)
    device = select_device(config.device)
    deterministic_cuda(device)
    folds = None
    if config.stop_folds and (val is None or len(val) == 0):
        folds = yield from steps_by_folds(train, config, device, should_stop)
        if folds is None and should_stop is not None and should_stop():
            raise TrainingCancelled("training was cancelled while folds chose when to stop: no model was kept")
        if folds is None:
            adapted.append(f"too few tracks ({len(np.unique(np.asarray(train.tracks).astype(str)))}) for "
                           f"{config.stop_folds} folds: a part of the training crops is held out instead")
    plan = plan_splits(train, val, test, config, folds)
    train, select, report_set = plan["train"], plan["select"], plan["report"]
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    n_classes = len(train.class_names)
    # channels-last layout: oneDNN runs the convolutions without layout conversions (measured
    # 13-19% faster training steps on CPU, benchmarks/README.md)
    model = build_model(n_classes, config.base_weights, config.trainable).to(device,
                                                                             memory_format=torch.channels_last)
    n = len(train)
    bs, steps_per_epoch, total = schedule_length(n, config)
    stop_at = total
    if folds is not None:  # the folds' schedule, stopped where they were best
        total, stop_at = folds["total"], folds["steps"]
    epochs = -(-stop_at // steps_per_epoch)
    opt = _Optimiser(model, train, config, total, device)
    prior = log_prior(train, config)  # the calls' class prior: in the choice of the epoch, then in the bias
    history, best, best_state, best_epoch = [], -1.0, None, None
    best_metrics = best_probs = None
    info = {**(metadata or {}), "class_counts_train": train.counts(),
            "class_counts_val": select.counts() if select is not None and folds is None else None,
            "train_notes": train.notes + adapted + plan["notes"],
            "crop_origin": train.origin or {"kind": "unknown"},
            "training_set": training_set_fingerprint(train),
            "effective_training": config.to_dict(), "steps": stop_at,
            "stopping_folds": None if folds is None else {k: v for k, v in folds.items() if k != "probs"}}
    record_config = asked.to_dict()
    t0 = time.perf_counter()
    seen, stopped, done = 0, None, 0
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        steps = min(steps_per_epoch, stop_at - done)
        # on the CPU the convolutions' weight gradients are GEMMs in the training steps (core/cpu_training.py;
        # evaluation and the checkpoint see plain convolutions)
        with gemm_weight_grads(model, device):
            for step, idx in enumerate(epoch_batches(train.targets, bs, steps, config.sampling, gen)):
                loss = opt.step(idx, gen)
                if not bool(torch.isfinite(loss)):
                    raise _diverged("the loss", epoch, step + 1, config, out, best_epoch)
                losses.append(loss.item())
                seen += len(idx)
                done += 1
                yield {"epoch": epoch, "epochs": epochs, "step": step + 1, "steps": steps_per_epoch,
                       "loss": losses[-1]}
                if should_stop is not None and should_stop():
                    stopped = "cancelled"
                    break
        if stopped and step + 1 < steps and best_state is not None:
            break  # a part-epoch is not a model to judge: the best whole epoch is kept
        judge = opt.judged  # the weight average, when there is one
        if not _weights_finite(model) or not _weights_finite(judge):  # the last step may have broken them
            raise _diverged("the weights", epoch, None, config, out, best_epoch)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                  "crops_per_s": seen / max(time.perf_counter() - t0, 1e-9), "lr": opt.lr, "steps_done": done}
        judged = select is not None and len(select) and folds is None
        try:
            if judged:
                probs = with_prior(predict_probabilities(judge, select, device=device), prior)
                m = metrics(select.targets, probs.argmax(axis=1), select.class_names)
            else:  # no validation data: the checkpoint must still compute numbers
                predict_probabilities(judge, train.subset(np.arange(min(n, 32))), device=device)
        except TrainingDiverged:
            raise _diverged("the network's outputs (in evaluation mode)", epoch, None, config, out, best_epoch) \
                from None
        if judged:
            record.update(val_loss=log_loss(probs, select.targets), val_accuracy=m["accuracy"],
                          val_balanced_accuracy=m["balanced_accuracy"], val_macro_f1=m["macro_f1"])
            score = m["macro_f1"]
        else:
            m, score = None, float(epoch)
        history.append(record)
        if score > best:
            best, best_epoch, best_metrics = score, epoch, m
            best_probs = probs if m is not None else None
            best_state = {k: v.detach().clone() for k, v in judge.state_dict().items()}
            if out is not None:
                # what this file says until the training ends: a SIGINT, a crash or a kill leaves it so
                save_checkpoint(out, Classifier(judge, train.class_names, crop_settings),
                                base_weights=config.base_weights, training=record_config, history=history,
                                validation=m, best_epoch=epoch, stopped=unfinished_record(epoch, epochs),
                                **info)
        elif config.patience and epoch - best_epoch >= config.patience:
            stopped = f"stopped early: the validation macro-F1 has not improved for {config.patience} epochs"
        yield {"epoch": epoch, "epochs": epochs, "done_epoch": True, "best_epoch": best_epoch, **record}
        if stopped or (should_stop is not None and should_stop()):
            stopped = stopped or "cancelled"
            break
    if best_state is None:
        raise TrainingCancelled("training was cancelled before its first epoch ended: no model was kept")
    model.load_state_dict(best_state)
    model.eval()
    fold_prior(model, prior)  # the probabilities of the choice (best_probs, the folds') already have it
    if best_metrics is not None and best_probs is not None:
        sel_pred = best_probs.argmax(axis=1)
        with_intervals(best_metrics, select.targets, sel_pred, select.tracks)
    clf = Classifier(model, train.class_names, crop_settings)
    if folds is not None:  # calibrated on (and, without test crops, judged on) the folds' out-of-fold calls
        best_probs = folds["probs"]
    evaluation = _final_report(clf, select, report_set, plan, config, device, previous, best_probs)
    meta = {"base_weights": config.base_weights, "training": record_config, "history": history,
            "best_epoch": best_epoch, "stopped": stopped or "finished", "validation": best_metrics,
            "report": evaluation["record"], "calibration": evaluation["calibration"], **info}
    clf.metadata = meta
    clf.evaluation = evaluation
    # a summary of the training crops, so a movie unlike them is said (core/ood.py)
    clf.ood = summarise_training(model, train, None if folds is not None else (select if select is not None else val),
                                 device=device, seed=config.seed)
    if out is not None:
        save_checkpoint(out, clf)
    return clf


def train(train_set: CropSet, val_set: CropSet | None = None, config: TrainConfig = TrainConfig(),
          crop_settings: CropSettings = CropSettings(), out=None, progress=None, *, test: CropSet | None = None,
          previous=None) -> Classifier:
    """Train to the end (see :func:`train_iter`); ``progress`` gets every progress dict."""
    return run_to_end(train_iter(train_set, val_set, config, crop_settings, out, test=test, previous=previous),
                      progress)


__all__ = ["TrainingCancelled", "steps_by_folds", "train", "train_iter"]
