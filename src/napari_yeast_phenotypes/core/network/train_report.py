"""What a training measures of its model: the probabilities of crops (never augmented; non-finite outputs
are a :class:`TrainingDiverged`), the class prior and the temperature folded into the last layer, and the
final report: calibrated on the selection crops, judged on the report crops, compared with the previous
model on the same crops."""

from __future__ import annotations

import numpy as np
import torch

from ..config import TrainConfig
from ..data.cropset import CropSet
from ..errors import InputError
from .evaluation import expected_calibration_error, few_classes, fit_temperature, log_loss, metrics, scale_probabilities
from .intervals import compare_paired, with_intervals
from .model import Classifier
from .predict import predict_crops


class TrainingDiverged(InputError):
    """The loss or the weights stopped being finite numbers (a learning rate too high, mostly)."""


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


def fold_temperature(model, temperature: float) -> None:
    """Divide the logits by ``temperature`` for good: the last layer's weights and bias are scaled."""
    with torch.no_grad():
        model.fc.weight.div_(temperature)
        model.fc.bias.div_(temperature)


def log_prior(data: CropSet, config: TrainConfig) -> np.ndarray | None:
    """The log of the training crops' class frequencies, added to the calls with ``class_prior="labels"``
    (``None``: the uniform prior, nothing added)."""
    if config.class_prior != "labels":
        return None
    counts = np.bincount(data.targets, minlength=len(data.class_names)).astype(np.float64)
    return np.log(np.maximum(counts, 0.5) / counts.sum())


def with_prior(probs: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """``probs`` reweighted by the class prior ``exp(prior)`` and renormalised (as when it is in the bias)."""
    if prior is None:
        return probs
    q = np.asarray(probs, dtype=np.float64) * np.exp(prior - prior.max())[None]
    return (q / q.sum(axis=1, keepdims=True)).astype(np.float32)


def fold_prior(model, prior: np.ndarray | None) -> None:
    """Add the log class prior to the last layer's bias for good: every path that classifies with the
    checkpoint makes the calls :func:`with_prior` describes."""
    if prior is None:
        return
    with torch.no_grad():
        model.fc.bias.add_(torch.as_tensor(prior, dtype=model.fc.bias.dtype, device=model.fc.bias.device))


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
        cal = {"temperature": round(t, 4),
               "fitted_on": plan.get("select_on") or f"{len(select)} validation crops (the selection part)",
               "ece_before_on_those": round(expected_calibration_error(sel_probs, select.targets), 4),
               "ece_after_on_those": round(expected_calibration_error(scale_probabilities(sel_probs, t),
                                                                      select.targets), 4)}
    before = sel_probs if report is select else predict_probabilities(clf.model, report, device=device)
    after = scale_probabilities(before, t) if t != 1.0 else before
    pred = after.argmax(axis=1)
    m = with_intervals(metrics(report.targets, pred, report.class_names), report.targets, pred, report.tracks)
    record = {"on": plan["report_on"], "optimistic": plan["optimistic"], "n": len(report), "metrics": m,
              "ece_before": round(expected_calibration_error(before, report.targets), 4),
              "ece_after": round(expected_calibration_error(after, report.targets), 4),
              "log_loss_before": round(log_loss(before, report.targets), 4),
              "log_loss_after": round(log_loss(after, report.targets), 4),
              "few_classes": few_classes(m), "notes": plan["notes"], "previous": None, "comparison": None}
    cal.update(ece_before=record["ece_before"], ece_after=record["ece_after"], measured_on=plan["report_on"])
    if previous is not None:
        _compare_with_previous(record, previous, report, pred, device)
    if t != 1.0:
        fold_temperature(clf.model, t)  # the checkpoint gives calibrated probabilities everywhere
    return {"record": record, "calibration": cal, "targets": report.targets, "before": before, "after": after,
            "report_set": report}


#: the column of a previous model's calls of classes the new model does not have (counted wrong)
OTHER_CLASSES = "(other classes)"


def _compare_with_previous(record: dict, previous, report: CropSet, pred: np.ndarray, device) -> None:
    """Judge ``previous`` on the report crops and add its figures and the paired verdict to ``record``.

    A previous model with more classes (the new one calls only the classes labelled so far) is
    judged by its own calls: a call of a class the new model does not have is wrong, counted in a
    column of its own (``(other classes)``), so neither model is flattered.
    """
    names = tuple(report.class_names)
    prev_names = tuple(previous.class_names)
    if not set(names) <= set(prev_names):
        missing = ", ".join(c for c in names if c not in prev_names)
        record["notes"] = [*record["notes"], f"the previous model does not have the classes {missing}: not compared"]
        return
    probs = predict_probabilities(previous.model, report, device=device)
    where = {c: i for i, c in enumerate(names)}
    extra = names != prev_names and len(prev_names) > len(names)
    as_new = np.array([where.get(c, len(names)) for c in prev_names])  # other classes -> the extra column
    prev_pred = as_new[probs.argmax(axis=1)]
    judged = (*names, OTHER_CLASSES) if extra else names
    record["previous"] = with_intervals(metrics(report.targets, prev_pred, judged), report.targets, prev_pred,
                                        report.tracks)
    if names == prev_names:
        record["previous"]["ece"] = round(expected_calibration_error(probs, report.targets), 4)
    else:
        record["notes"] = [*record["notes"], (f"the previous model has {len(prev_names)} classes; on these crops its "
                                              f"calls of the {len(prev_names) - len(names)} the new model does not "
                                              "have count as wrong")]
    # the verdict: the same resampled tracks for both models (a paired bootstrap of the difference)
    record["comparison"] = compare_paired(report.targets, pred, prev_pred, judged, report.tracks)


__all__ = ["TrainingDiverged", "evaluate", "fold_prior", "fold_temperature", "predict_probabilities", "with_prior"]
