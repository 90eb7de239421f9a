"""95% intervals of a model's figures and the verdict of a new model against the previous one.

:func:`intervals`, :func:`with_intervals`: intervals of accuracy, balanced accuracy, macro-F1 and
per-class F1 (bootstrap over tracks: the crops of one cell are not independent; Wilson and crops
resampled for sets of few tracks); :func:`compare_paired`: the verdict on the same crops (a paired
bootstrap of the difference); :func:`fmt_ci`: a figure with its interval, in words. No torch here.
"""

from __future__ import annotations

import numpy as np

from .evaluation import metrics

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


__all__ = ["BOOTSTRAP_REPLICATES", "MIN_BOOTSTRAP_TRACKS", "VERDICTS", "compare_paired", "fmt_ci", "intervals",
           "wilson", "with_intervals"]
