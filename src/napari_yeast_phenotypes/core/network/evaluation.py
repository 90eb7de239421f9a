"""What the numbers of a trained model mean: metrics, calibration and grouped splits.

No torch here: everything works on class indices and probabilities, so a report can be made,
tested and drawn without the network.

- :func:`metrics`: accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1, confusion;
- :func:`expected_calibration_error`, :func:`fit_temperature`, :func:`scale_probabilities`:
  temperature scaling (Guo et al. 2017) from probabilities alone (``log p`` is the logits up to
  a per-crop constant, which a softmax ignores);
- :func:`holdout_groups`, :func:`group_folds`, :func:`grouping`: splits that never put one cell
  (track) or, where there are enough of them, one experiment on both sides.

The 95% intervals of these figures and the paired verdict are in :mod:`.intervals`; their pictures
(``draw_*``, :func:`~.evaluation_figures.report_figure`) in :mod:`.evaluation_figures`.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import InputError

ECE_BINS = 15
#: a class with fewer crops than this in the data a figure is computed on is named as too few
MIN_SUPPORT = 10
_TINY = 1e-30  # floor of probabilities before the log: float32 softmax underflows to 0


def _f(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def metrics(targets: np.ndarray, pred: np.ndarray, class_names) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1/support and confusion matrix.

    Macro-F1 and balanced accuracy average over the classes present in ``targets``; a present
    class that is never predicted counts with F1 = 0.
    """
    n = len(class_names)
    targets, pred = np.asarray(targets, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (targets, pred), 1)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    recall = np.divide(tp, support, out=np.full(n, np.nan), where=support > 0)
    precision = np.divide(tp, predicted, out=np.full(n, np.nan), where=predicted > 0)
    f1 = np.where(np.isfinite(precision + recall) & ((precision + recall) > 0),
                  2 * precision * recall / np.where(precision + recall > 0, precision + recall, 1), np.nan)
    per_class = {
        c: {"precision": _f(precision[i]), "recall": _f(recall[i]), "f1": _f(f1[i]), "support": int(support[i])}
        for i, c in enumerate(class_names)
    }
    present = support > 0
    f1_present = np.where(np.isfinite(f1), f1, 0.0)[present]
    return {
        "n": int(len(targets)),
        "accuracy": float(tp.sum() / max(len(targets), 1)),
        "balanced_accuracy": float(np.nanmean(recall[present])) if present.any() else float("nan"),
        "macro_f1": float(f1_present.mean()) if present.any() else float("nan"),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def log_loss(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    p = np.clip(probs[np.arange(len(targets)), targets], _TINY, 1.0)
    return float(-np.log(p).mean()) if len(targets) else float("nan")


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the mean gap between confidence and accuracy over equal-width confidence bins, weighted by size."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    if len(targets) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    which = np.minimum((conf * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def reliability_bins(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per confidence bin: its edges, count, mean confidence and accuracy (NaN where empty)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    which = np.minimum((conf * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, bins) / count
        acc = np.bincount(which, correct.astype(float), bins) / count
    return {"edges": np.linspace(0, 1, bins + 1), "count": count, "confidence": mean_conf, "accuracy": acc}


def scale_probabilities(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)``: what the classifier gives once its logits are divided by ``T``."""
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, 1.0)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_temperature(probs: np.ndarray, targets: np.ndarray, bounds=(0.05, 20.0)) -> float:
    """The temperature ``T`` that minimises the log-loss of ``softmax(log(p) / T)`` on these crops.

    ``T > 1`` softens an over-confident model, ``T < 1`` sharpens an under-confident one; the
    predicted class never changes, so accuracy and F1 stay as they are.
    """
    from scipy.optimize import minimize_scalar

    targets = np.asarray(targets)
    if len(targets) < 2:
        return 1.0
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, 1.0))

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(axis=1, keepdims=True)
        return float(-(s[np.arange(len(targets)), targets] - np.log(np.exp(s).sum(axis=1))).mean())

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def few_classes(m: dict, minimum: int = MIN_SUPPORT) -> list[str]:
    """Classes with fewer than ``minimum`` crops in the data behind ``m`` (``"Name (n)"``)."""
    return [f"{c} ({v['support']})" for c, v in m["per_class"].items() if v["support"] < minimum]


# ---------------------------------------------------------------------------------------- splits

def grouping(tracks, experiments, n: int, min_experiments: int = 3) -> tuple[np.ndarray, str]:
    """The groups a held-out part or a fold must keep whole, and their name.

    Experiments when there are at least ``min_experiments`` (a validation that stands for other
    experiments); else tracks (no cell on both sides); else each crop alone.
    """
    if experiments is not None and len(np.unique(experiments)) >= min_experiments:
        return np.asarray(experiments, dtype=object), "experiment"
    if tracks is not None:
        return np.asarray(tracks, dtype=object), "track"
    return np.arange(n).astype(object), "crop"


def holdout_groups(groups: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A boolean mask of about ``fraction`` of the crops, made of whole groups (at least one, not all)."""
    groups = np.asarray(groups, dtype=object)
    uniq = np.unique(groups.astype(str))
    if len(uniq) < 2:
        raise InputError("a part cannot be held out of a set with a single group (experiment or track)")
    order = np.random.default_rng(seed).permutation(uniq)
    sizes = {g: int(k) for g, k in zip(*np.unique(groups.astype(str), return_counts=True))}
    want, taken, chosen = fraction * len(groups), 0, []
    for g in order:
        if taken >= want or len(chosen) == len(uniq) - 1:
            break
        chosen.append(g)
        taken += sizes[g]
    return np.isin(groups.astype(str), chosen)


def group_folds(groups: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """Split indices into ``k`` folds so that no group (experiment, movie, track) is in two folds.

    Groups are dealt largest first to the fold with the fewest crops so far, so folds are of
    similar size.
    """
    groups = np.asarray(groups).astype(str)
    uniq, counts = np.unique(groups, return_counts=True)
    if len(uniq) < k:
        raise InputError(f"{len(uniq)} groups cannot make {k} folds; use --folds {max(2, len(uniq))} or fewer")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]
    size = np.zeros(k, dtype=np.int64)
    fold_of = {}
    for i in order:
        f = int(np.argmin(size))
        fold_of[uniq[i]] = f
        size[f] += counts[i]
    f = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(f == i) for i in range(k)]


def random_folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` folds of crops drawn at random, cells and experiments ignored (what a random split claims)."""
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(perm[i::k]) for i in range(k)]


def fingerprint_ids(ids) -> str:
    """SHA-256 of a set of crop ids (sorted, one per line): equal sets, equal fingerprints."""
    h = hashlib.sha256()
    for i in sorted(str(x) for x in ids):
        h.update(i.encode() + b"\n")
    return h.hexdigest()


def summarise_folds(folds: list[dict], class_names) -> dict:
    """Mean and spread (sample standard deviation) of accuracy, macro-F1 and per-class F1 over folds.

    A class present in a fold but never predicted there has F1 0 in that fold (as in macro-F1);
    only folds without the class are left out of its figures.
    """
    def f1_of(m: dict, c) -> float | None:
        pc = m["per_class"][c]
        return (pc["f1"] if pc["f1"] is not None else 0.0) if pc["support"] else None

    def ms(values) -> dict:
        v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
        return {"mean": _f(v.mean()) if len(v) else None, "sd": _f(v.std(ddof=1)) if len(v) > 1 else None,
                "n_folds": int(len(v))}

    return {"accuracy": ms([m["accuracy"] for m in folds]),
            "balanced_accuracy": ms([m["balanced_accuracy"] for m in folds]),
            "macro_f1": ms([m["macro_f1"] for m in folds]),
            "f1": {c: ms([f1_of(m, c) for m in folds])
                   for c in class_names}}


__all__ = ["ECE_BINS", "MIN_SUPPORT", "expected_calibration_error", "few_classes", "fingerprint_ids",
           "fit_temperature", "group_folds", "grouping", "holdout_groups", "log_loss", "metrics", "random_folds",
           "reliability_bins", "scale_probabilities", "summarise_folds"]
