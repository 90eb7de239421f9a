"""What the numbers of a trained model mean: metrics, calibration, grouped splits and their pictures.

No torch here: everything works on class indices and probabilities, so a report can be made,
tested and drawn without the network.

- :func:`metrics`: accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1, confusion;
- :func:`intervals`, :func:`with_intervals`, :func:`compare_paired`: 95% intervals of those figures
  (bootstrap over tracks: the crops of one cell are not independent; Wilson and crops resampled for
  sets of few tracks) and the verdict of a new model against the previous one on the same crops
  (a paired bootstrap of the difference);
- :func:`expected_calibration_error`, :func:`fit_temperature`, :func:`scale_probabilities`:
  temperature scaling (Guo et al. 2017) from probabilities alone (``log p`` is the logits up to
  a per-crop constant, which a softmax ignores);
- :func:`holdout_groups`, :func:`group_folds`, :func:`grouping`: splits that never put one cell
  (track) or, where there are enough of them, one experiment on both sides;
- ``draw_*`` / :func:`report_figure`: confusion matrices (counts and row-normalised), the
  reliability diagram, curves of a training run, cross-validation and the learning curve.
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


# ---------------------------------------------------------------------------------------- intervals

#: intervals resample whole tracks from this many tracks on; below, crops are taken as independent
MIN_BOOTSTRAP_TRACKS = 20
#: bootstrap replicates: percentiles of 2,000 are stable to about 0.005 for figures near 0.9
BOOTSTRAP_REPLICATES = 2000
LEVEL = 0.95
_CHUNK = 250  # replicates per matrix product (memory: _CHUNK x groups weights)


def wilson(k: int, n: int, level: float = LEVEL) -> list[float] | None:
    """Wilson score interval of a proportion ``k / n`` (good for small ``n`` and for 0 or ``n`` successes)."""
    if n <= 0:
        return None
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(float(max(0.0, centre - half)), 4), round(float(min(1.0, centre + half)), 4)]


def _resamplings(groups, n: int) -> tuple[list[tuple[np.ndarray, int]], int]:
    """The ways of resampling ``n`` crops: ``(unit of each crop, number of units)`` for each, and the number of
    tracks.

    Whole tracks from :data:`MIN_BOOTSTRAP_TRACKS` on; with 2 to that many tracks, whole tracks AND crops one by
    one (the wider interval of the two is given: a bootstrap over few tracks can be too narrow, one over crops
    is too narrow when the crops of a cell look alike); without tracks, crops one by one.
    """
    crops = (np.arange(n), n)
    if groups is None or n == 0:
        return [crops], 0
    _, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    k = int(codes.max()) + 1
    if k >= MIN_BOOTSTRAP_TRACKS:
        return [(codes, k)], k
    return ([(codes, k), crops] if k >= 2 else [crops]), k


def _hull(pairs) -> list[float] | None:
    pairs = [p for p in pairs if p]
    if not pairs:
        return None
    return [float(min(p[0] for p in pairs)), float(max(p[1] for p in pairs))]


def _method(k: int, n: int, replicates: int, paired: bool = False) -> tuple[str, str]:
    """The method's name and a note on what it assumes."""
    what = "paired bootstrap" if paired else "bootstrap"
    wilson_too = "" if paired else "; never narrower than Wilson's for accuracy"
    if k >= MIN_BOOTSTRAP_TRACKS:
        return f"{what} over {k} tracks ({replicates} replicates){wilson_too}", ""
    if k >= 2:
        return (f"the wider of a {what} over {k} tracks and one over {n} crops ({replicates} replicates){wilson_too}",
                (f"only {k} tracks (fewer than {MIN_BOOTSTRAP_TRACKS}): the intervals are rough; label more cells "
                 "(whole tracks) to narrow them"))
    return (f"{what} over {n} crops, as if independent ({replicates} replicates){wilson_too}",
            ("the crops carry no track (or all come from one): resampled one by one, as if independent; crops of "
             "one cell look alike, so the true uncertainty is larger"))


def _replicate_confusions(targets, preds, units: np.ndarray, n_units: int, n_classes: int, replicates: int,
                          seed: int) -> list[np.ndarray]:
    """(R, C, C) confusion matrices of ``replicates`` bootstrap samples of whole units, one per prediction
    array in ``preds``, all on the SAME samples (a paired bootstrap).

    Vectorised: the confusion counts of each unit (U, C*C) are summed with multinomial weights
    (how often each unit is drawn in a replicate), a matrix product per chunk of replicates.
    """
    targets = np.asarray(targets, dtype=np.int64)
    per_unit = []
    for pred in preds:
        k = np.zeros((n_units, n_classes * n_classes))
        np.add.at(k, (units, targets * n_classes + np.asarray(pred, dtype=np.int64)), 1.0)
        per_unit.append(k)
    rng = np.random.default_rng(seed)
    out = [np.empty((replicates, n_classes * n_classes)) for _ in preds]
    for start in range(0, replicates, _CHUNK):
        r = min(_CHUNK, replicates - start)
        w = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=r).astype(np.float64)
        for o, k in zip(out, per_unit):
            o[start:start + r] = w @ k
    return [o.reshape(replicates, n_classes, n_classes) for o in out]


def _scores(cm: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, macro-F1 and per-class F1 of each (C, C) matrix of ``cm`` (R, C, C),
    as :func:`metrics` computes them (a class present but never predicted: F1 0; absent: NaN)."""
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(axis=2), cm.sum(axis=1)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = tp.sum(axis=1) / cm.sum(axis=(1, 2))
        recall = np.where(present, tp / np.where(present, support, 1), np.nan)
        f1 = np.where(present, 2 * tp / np.where(present, support + predicted, 1), np.nan)
        n_present = present.sum(axis=1)
        bal = np.where(n_present > 0, np.nansum(recall, axis=1) / np.maximum(n_present, 1), np.nan)
        macro = np.where(n_present > 0, np.nansum(f1, axis=1) / np.maximum(n_present, 1), np.nan)
    return {"accuracy": acc, "balanced_accuracy": bal, "macro_f1": macro, "f1": f1}


def _percentiles(x: np.ndarray, level: float) -> list[float] | None:
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return None
    lo, hi = np.percentile(x, [50 * (1 - level), 50 * (1 + level)])
    return [round(float(lo), 4), round(float(hi), 4)]


def intervals(targets, pred, class_names, groups=None, *, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0,
              level: float = LEVEL) -> dict:
    """95% intervals of accuracy, balanced accuracy, macro-F1 and per-class F1 of ``pred`` against ``targets``.

    A percentile bootstrap that resamples whole tracks (``groups``: the track of each crop): the
    crops of one cell look alike, and resampling them one by one would give intervals too narrow.
    With fewer than :data:`MIN_BOOTSTRAP_TRACKS` tracks the wider of that and of a bootstrap over
    crops is given, and the note says the intervals are rough; without tracks, crops are resampled
    one by one (the note says so). Accuracy's interval is never narrower than Wilson's for the
    crops (good for small n; a bootstrap of a set the model gets all right would give
    1.000-1.000). Seeded: the same inputs give the same intervals.

    Returns plain values, for a checkpoint's record: ``{"level", "method", "note", "n_tracks",
    "accuracy": [lo, hi], "balanced_accuracy", "macro_f1", "f1": {class: [lo, hi] or None}}``.
    """
    targets = np.asarray(targets, dtype=np.int64)
    n, c = len(targets), len(class_names)
    ways, k = _resamplings(groups, n)
    method, note = _method(k, n, replicates)
    out = {"level": level, "method": method, "note": note, "n_tracks": int(k)}
    if n == 0:
        return {**out, "method": "none (no crops)", "accuracy": None, "balanced_accuracy": None, "macro_f1": None,
                "f1": dict.fromkeys(class_names)}
    scores = [_scores(_replicate_confusions(targets, [pred], units, n_units, c, replicates, seed)[0])
              for units, n_units in ways]
    hull = lambda key, i=None: _hull([_percentiles(sc[key] if i is None else sc[key][:, i], level) for sc in scores])
    out["accuracy"] = _hull([hull("accuracy"), wilson(int((np.asarray(pred) == targets).sum()), n, level)])
    out["balanced_accuracy"] = hull("balanced_accuracy")
    out["macro_f1"] = hull("macro_f1")
    out["f1"] = {name: hull("f1", i) for i, name in enumerate(class_names)}
    return out


def with_intervals(m: dict, targets, pred, groups=None, **kw) -> dict:
    """``m`` (a :func:`metrics` dict) with its intervals under ``"ci"`` (see :func:`intervals`)."""
    m["ci"] = intervals(targets, pred, list(m["per_class"]), groups, **kw)
    return m


VERDICTS = ("better", "worse", "cannot tell")


def compare_paired(targets, pred_new, pred_old, class_names, groups=None, *,
                   replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0, level: float = LEVEL) -> dict:
    """Is the new model better than the old one on these crops? A paired bootstrap of the differences.

    Both models' calls are resampled together (the same tracks in each replicate; see
    :func:`intervals` for few tracks or none), so the interval is of the difference itself, not of
    two figures that vary with the draw. The verdict: ``worse`` when the interval of the accuracy
    or of the macro-F1 difference lies below 0; ``better`` when neither does and one lies above 0;
    else ``cannot tell``. Returns plain values: ``{"verdict", "n", "n_tracks", "accuracy":
    {"difference", "interval"}, "macro_f1": {...}, "method", "note", "words"}``.
    """
    targets = np.asarray(targets, dtype=np.int64)
    n = len(targets)
    ways, k = _resamplings(groups, n)
    method, note = _method(k, n, replicates, paired=True)
    out = {"n": int(n), "n_tracks": int(k), "level": level, "method": method, "note": note}
    if n == 0:
        return {**out, "verdict": "cannot tell", "accuracy": None, "macro_f1": None, "method": "none",
                "words": "cannot tell with 0 crops"}
    diffs = []
    for units, n_units in ways:
        new_cm, old_cm = _replicate_confusions(targets, [pred_new, pred_old], units, n_units, len(class_names),
                                               replicates, seed)
        new_s, old_s = _scores(new_cm), _scores(old_cm)
        diffs.append({key: new_s[key] - old_s[key] for key in ("accuracy", "macro_f1")})
    m_new, m_old = metrics(targets, pred_new, class_names), metrics(targets, pred_old, class_names)
    for key in ("accuracy", "macro_f1"):
        out[key] = {"difference": round(float(m_new[key] - m_old[key]), 4),
                    "interval": _hull([_percentiles(d[key], level) for d in diffs])}
    below = [key for key in ("accuracy", "macro_f1") if out[key]["interval"] and out[key]["interval"][1] < 0]
    above = [key for key in ("accuracy", "macro_f1") if out[key]["interval"] and out[key]["interval"][0] > 0]
    out["verdict"] = "worse" if below else "better" if above else "cannot tell"
    a, f = out["accuracy"], out["macro_f1"]
    diff = (f"accuracy difference {a['difference']:+.3f}, {round(100 * level)}% interval "
            f"{a['interval'][0]:+.3f} to {a['interval'][1]:+.3f}; macro-F1 difference {f['difference']:+.3f} "
            f"({f['interval'][0]:+.3f} to {f['interval'][1]:+.3f})")
    where = f"{n} crops" + (f" of {k} tracks" if k else "")
    out["words"] = (f"cannot tell with {where} ({diff})" if out["verdict"] == "cannot tell"
                    else f"{out['verdict']} on {where} ({diff})")
    return out


def fmt_ci(value, ci, digits: int = 3) -> str:
    """``0.947 (0.921-0.968)``: a figure and its interval (``0.947`` alone when it has none)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if not ci:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({ci[0]:.{digits}f}-{ci[1]:.{digits}f})"


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


# ---------------------------------------------------------------------------------------- pictures

def draw_confusion(ax, m: dict, class_names, normalise: bool = False, title: str = "") -> None:
    """A confusion matrix (rows: true class, columns: predicted), counts or row-normalised."""
    cm = np.asarray(m["confusion"], dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalise else cm
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else max(cm.max(), 1))
    n = len(class_names)
    for i in range(n):
        for j in range(n):
            v = shown[i, j]
            if cm[i, j] or (i == j and cm[i].sum()):  # absent classes stay blank
                txt = f"{v:.2f}" if normalise else f"{int(v)}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=6,
                        color="white" if v > (0.5 if normalise else cm.max() / 2) else "black")
    short = [c[:4] for c in class_names]
    ax.set_xticks(range(n), short, rotation=90, fontsize=7)
    ax.set_yticks(range(n), short, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(title or ("row-normalised (recall)" if normalise else "counts"), fontsize=9)


def draw_reliability(ax, probs_before: np.ndarray, probs_after: np.ndarray | None, targets: np.ndarray,
                     title: str = "reliability") -> None:
    """Accuracy against confidence per bin, before (and after) temperature scaling; ECE in the legend."""
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1)
    for probs, colour, name in ((probs_before, "tab:red", "before"), (probs_after, "tab:blue", "after")):
        if probs is None:
            continue
        b = reliability_bins(probs, targets)
        ok = b["count"] > 0
        ece = expected_calibration_error(probs, targets)
        ax.plot(b["confidence"][ok], b["accuracy"][ok], "o-", color=colour, ms=3, lw=1,
                label=f"{name}: ECE {ece:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence", fontsize=8)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")  # the points of a useful model lie high
    ax.set_title(title, fontsize=9)


def _f1_errors(m: dict, names) -> np.ndarray | None:
    """(2, C) distances below and above each class's F1 to its 95% interval (for error bars), or ``None``."""
    ci = (m.get("ci") or {}).get("f1")
    if not ci:
        return None
    err = np.zeros((2, len(names)))
    for i, c in enumerate(names):
        f, lim = m["per_class"][c]["f1"] or 0.0, ci.get(c)
        if lim and m["per_class"][c]["support"]:
            err[:, i] = max(f - lim[0], 0.0), max(lim[1] - f, 0.0)
    return err


def draw_per_class(ax, m: dict, previous: dict | None = None, title: str = "F1 per class") -> None:
    """F1 per class as bars with their 95% intervals (and the previous model's beside them)."""
    names = list(m["per_class"])
    x = np.arange(len(names))
    w = 0.4 if previous else 0.7
    f1 = [m["per_class"][c]["f1"] or 0 for c in names]
    bars = dict(capsize=2, error_kw={"elinewidth": 0.8, "ecolor": "0.2"})
    ax.bar(x - (w / 2 if previous else 0), f1, w, yerr=_f1_errors(m, names),
           label=f"new (macro-F1 {fmt_ci(m['macro_f1'], (m.get('ci') or {}).get('macro_f1'), 2)})", color="tab:blue",
           **bars)
    if previous:
        pf = [(previous["per_class"].get(c) or {}).get("f1") or 0 for c in names]
        ax.bar(x + w / 2, pf, w, yerr=_f1_errors(previous, names),
               label=f"previous ({fmt_ci(previous['macro_f1'], (previous.get('ci') or {}).get('macro_f1'), 2)})",
               color="0.6", **bars)
    ax.set_xticks(x, [c[:4] for c in names], rotation=90, fontsize=7)
    ax.set_ylim(0, 1.4)  # the legend sits above the bars (F1 near 1 left no room inside)
    ax.set_yticks([0, 0.5, 1], ["0", "0.5", "1"], fontsize=7)
    ax.legend(fontsize=7, loc="upper center", frameon=False)
    ax.set_title(title + (" (bars: 95% intervals)" if m.get("ci") else ""), fontsize=9)


def draw_history(ax_loss, ax_score, history: list[dict]) -> None:
    """Train and validation loss, validation accuracy and macro-F1 per epoch."""
    ep = [h["epoch"] for h in history]
    ax_loss.plot(ep, [h["train_loss"] for h in history], "o-", ms=3, label="train loss")
    if any("val_loss" in h for h in history):
        ax_loss.plot(ep, [h.get("val_loss", np.nan) for h in history], "o-", ms=3, label="validation loss")
    ax_loss.set_xlabel("epoch", fontsize=8)
    ax_loss.legend(fontsize=7)
    if any("val_macro_f1" in h for h in history):
        ax_score.plot(ep, [h.get("val_accuracy", np.nan) for h in history], "o-", ms=3, label="val accuracy")
        ax_score.plot(ep, [h.get("val_macro_f1", np.nan) for h in history], "o-", ms=3, label="val macro-F1")
        ax_score.set_ylim(0, 1.02)
        ax_score.legend(fontsize=7)
    ax_score.set_xlabel("epoch", fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_score):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 1.2 or 1.4


def report_figure(report: dict, class_names, previous: dict | None = None, fig=None, ncols: int = 4):
    """The end-of-training picture: confusion (counts, row-normalised), F1 per class, reliability.

    ``ncols``: 4 (one row, for a wide page) or 2 (a 2 x 2 grid, for a narrow dock).
    """
    from matplotlib.figure import Figure

    if ncols not in (2, 4):
        raise ValueError(f"ncols must be 2 or 4, not {ncols}")
    fig = fig or Figure(figsize=(12, 3.2) if ncols == 4 else (6.4, 5.6), layout="constrained")
    fig.clear()
    axes = fig.subplots(4 // ncols, ncols).ravel()
    m = report["metrics"]
    acc = fmt_ci(m["accuracy"], (m.get("ci") or {}).get("accuracy"))
    draw_confusion(axes[0], m, class_names, title=f"counts (n={m['n']})\naccuracy {acc}")
    draw_confusion(axes[1], m, class_names, normalise=True)
    draw_per_class(axes[2], m, previous)
    cal = report.get("reliability")
    if cal is not None:
        draw_reliability(axes[3], cal["before"], cal.get("after"), cal["targets"])
    else:
        axes[3].set_axis_off()
    return fig


def draw_crossval(ax, grouped: dict, random: dict | None, class_names) -> None:
    """Per-class F1 (mean and spread over folds) of grouped folds, and of random folds beside them."""
    x = np.arange(len(class_names) + 1)
    labels = ["macro"] + [c[:4] for c in class_names]
    for res, off, colour, name in ((grouped, -0.2, "tab:blue", "grouped folds"), (random, 0.2, "0.6", "random folds")):
        if res is None:
            continue
        s = res["summary"]
        mean = [s["macro_f1"]["mean"]] + [s["f1"][c]["mean"] for c in class_names]
        sd = [s["macro_f1"]["sd"]] + [s["f1"][c]["sd"] for c in class_names]
        ax.bar(x + off, [v or 0 for v in mean], 0.4, yerr=[v or 0 for v in sd], color=colour, capsize=2,
               label=f"{name}: macro-F1 {s['macro_f1']['mean']:.2f} ± {s['macro_f1']['sd'] or 0:.2f}")
    ax.set_xticks(x, labels, rotation=90, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1", fontsize=8)
    ax.legend(fontsize=7, loc="lower left")


def draw_learning_curve(ax, curve: list[dict]) -> None:
    """Validation macro-F1 (and accuracy) against labelled crops per class."""
    n = [p["per_class"] for p in curve]
    ax.plot(n, [p["macro_f1"] for p in curve], "o-", label="validation macro-F1")
    ax.plot(n, [p["accuracy"] for p in curve], "s--", label="validation accuracy", alpha=0.7)
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(v) for v in n])
    ax.set_xlabel("labelled crops per class (training)", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)


__all__ = ["BOOTSTRAP_REPLICATES", "ECE_BINS", "MIN_BOOTSTRAP_TRACKS", "MIN_SUPPORT", "VERDICTS", "compare_paired",
           "draw_confusion", "draw_crossval", "draw_history", "draw_learning_curve",
           "draw_per_class", "draw_reliability", "expected_calibration_error", "few_classes", "fingerprint_ids",
           "fit_temperature", "fmt_ci", "group_folds", "grouping", "holdout_groups", "intervals", "log_loss", "metrics",
           "random_folds", "reliability_bins", "report_figure", "scale_probabilities", "summarise_folds", "wilson",
           "with_intervals"]
