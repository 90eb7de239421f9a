"""What the command line prints of a training: a checkpoint's report (figures with their 95% intervals, the
verdict against the previous model, calibration), ``info``'s description of a model file, and the
cross-validation's summary lines: text made from the records, nothing computed here."""

from __future__ import annotations


def _fmt(x) -> str:
    return "   -" if x is None else f"{x:.3f}"


def _ci(m: dict, key: str, value=None) -> str:
    """A figure of ``m`` with its 95% interval when ``m`` has one: ``0.947 (0.921-0.968)``."""
    from .core.network.intervals import fmt_ci

    ci = (m.get("ci") or m.get("_wilson") or {}).get(key)
    return fmt_ci(m.get(key) if value is None else value, ci)


def _interval_line(m: dict) -> str | None:
    ci = m.get("ci")
    if not ci:
        return ("  (in brackets: Wilson's 95% interval, crops taken as independent; figures recorded before "
                "intervals were, so the F1 have none: train again for them)") if m.get("n") else None
    line = f"  (in brackets: {round(100 * ci['level'])}% intervals, {ci['method']})"
    return line + (f"; note: {ci['note']}" if ci.get("note") else "")


def _with_wilson(m: dict) -> dict:
    """A record made before intervals were: Wilson's interval of its accuracy, from its crops (no F1 interval)."""
    if m.get("ci") or not m.get("n"):
        return m
    from .core.network.intervals import wilson

    return {**m, "ci": None, "_wilson": {"accuracy": wilson(round(m["accuracy"] * m["n"]), m["n"])}}


def _metrics_lines(title: str, m: dict, previous: dict | None = None, comparison: dict | None = None) -> list[str]:
    from .core.network.intervals import fmt_ci

    m = _with_wilson(m)
    if previous:
        previous = _with_wilson(previous)
    lines = [(f"{title}: accuracy {_ci(m, 'accuracy')}, macro-F1 {_ci(m, 'macro_f1')}, "
              f"balanced accuracy {_ci(m, 'balanced_accuracy')} (n={m['n']})")]
    if _interval_line(m):
        lines.append(_interval_line(m))
    if previous:
        lines.append(f"  previous model on the same crops: accuracy {_ci(previous, 'accuracy')}, "
                     f"macro-F1 {_ci(previous, 'macro_f1')}")
    if comparison:
        lines.append(f"  the new model is {comparison['words']} ({comparison['method']})")
    f1_ci = (m.get("ci") or {}).get("f1") or {}
    w = 22 if f1_ci else 8
    lines.append(f"  {'class':<16}{'precision':>10}{'recall':>8}{'f1':>{w}}{'n':>6}"
                 + ("  f1 before" if previous else ""))
    for c, v in m["per_class"].items():
        prev = f"  {_fmt(previous['per_class'][c]['f1'])}" if previous else ""
        f1 = _fmt(v["f1"]) if not f1_ci.get(c) or v["f1"] is None else fmt_ci(v["f1"], f1_ci[c])
        lines.append(f"  {c:<16}{_fmt(v['precision']):>10}{_fmt(v['recall']):>8}{f1:>{w}}{v['support']:>6}{prev}")
    return lines


def report_lines(meta: dict) -> list[str]:
    """The honest part of a checkpoint's record: what the figures are on, the figures with their 95% intervals,
    the verdict against the previous model, calibration, and the classes the model cannot call (no labelled crop)."""
    lines: list[str] = []
    if meta.get("not_labelled"):
        lines.append(f"not labelled yet (the model cannot call them): {', '.join(meta['not_labelled'])}")
    rep = meta.get("report")
    same = rep and rep.get("optimistic") and meta.get("validation") and rep["n"] == meta["validation"]["n"]
    if meta.get("validation") and not same:
        lines += _metrics_lines("validation (best epoch; the epoch was chosen on these crops)", meta["validation"])
    if not rep:
        return lines
    lines.append(f"final figures on {rep['on']}" + (" -- OPTIMISTIC" if rep.get("optimistic") else ""))
    lines += _metrics_lines("  report", rep["metrics"], rep.get("previous"), rep.get("comparison"))
    if rep.get("few_classes"):
        lines.append(f"  too few crops for a meaningful figure: {', '.join(rep['few_classes'])}")
    cal = meta.get("calibration") or {}
    if cal.get("fitted_on"):
        lines.append(f"calibration: temperature {cal['temperature']:.3f} fitted on {cal['fitted_on']}; expected "
                     f"calibration error {rep['ece_before']:.3f} before, {rep['ece_after']:.3f} after")
    else:
        lines.append(f"calibration: none (expected calibration error {rep['ece_before']:.3f})")
    return lines


def print_report(meta: dict) -> None:
    """Print :func:`report_lines`."""
    for line in report_lines(meta):
        print(line)


def _summary_line(name: str, res: dict) -> str:
    s = res["summary"]
    sd = lambda d: f" ± {d['sd']:.3f}" if d["sd"] is not None else ""
    return (f"{name}: accuracy {s['accuracy']['mean']:.3f}{sd(s['accuracy'])}, "
            f"macro-F1 {s['macro_f1']['mean']:.3f}{sd(s['macro_f1'])} (mean ± sd over {len(res['folds'])} folds)")


def _pooled_line(res: dict) -> str:
    p = res["pooled"]
    return (f"  pooled out-of-fold calls ({p['n']} crops): accuracy {_ci(p, 'accuracy')}, "
            f"macro-F1 {_ci(p, 'macro_f1')}")


def info_lines(path, clf) -> list[str]:
    """What ``yeast-phenotypes info`` prints of a loaded model file."""
    meta = clf.metadata
    lines = [f"{path}: adapted ResNet50, {len(clf.class_names)} classes: {', '.join(clf.class_names)}",
             f"trained layers: {','.join(clf.model.trainable)}; base weights: {meta.get('base_weights', 'unknown')}",
             f"crop settings: {clf.crop_settings.to_dict()}"]
    origin = meta.get("crop_origin") or {}
    lines.append(f"crops: {origin.get('kind', 'unknown')}" + (f" ({origin['normalisation']})"
                                                             if "normalisation" in origin else ""))
    if not meta.get("training"):
        lines.append("no training record (a bare state dict or a model made elsewhere)")
        return lines
    lines.append("training config: " + ", ".join(f"{k}={v}" for k, v in meta["training"].items()))
    eff = meta.get("effective_training") or {}
    changed = {k: v for k, v in eff.items() if meta["training"].get(k) != v}
    if changed:
        lines.append("adapted to the data: " + ", ".join(f"{k}={v}" for k, v in changed.items())
                     + f" ({meta.get('steps')} optimiser steps)")
    lines.append(f"best epoch {meta.get('best_epoch')} of {len(meta.get('history') or [])} run "
                 f"({meta.get('stopped', 'not recorded: written during a training, which may not have finished')})")
    ts = meta.get("training_set") or {}
    if ts:
        lines.append(f"training set: {ts['n']} crops (" + ", ".join(f"{k} {v}" for k, v in ts["counts"].items())
                     + f"); crop ids sha256 {ts['ids_sha256'][:16]}, pixels sha256 {ts['crops_sha256'][:16]}")
    lines += [f"note: {note}" for note in (meta.get("train_notes") or [])]
    return lines + report_lines(meta)


__all__ = ["info_lines", "print_report", "report_lines"]
