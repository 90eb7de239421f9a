"""The pictures of a model's figures, on matplotlib axes: confusion matrices (counts and row-normalised), F1
per class with its 95% intervals and the reliability diagram (the four together: :func:`report_figure`, the
end-of-training picture), the curves of a training run, cross-validation and the learning curve. No torch here.
"""

from __future__ import annotations

import numpy as np

from .evaluation import expected_calibration_error, reliability_bins
from .intervals import fmt_ci


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


__all__ = ["draw_confusion", "draw_crossval", "draw_history", "draw_learning_curve", "draw_per_class",
           "draw_reliability", "report_figure"]
