"""What a track model is estimated from: the temperature of the network's probabilities, the confusion matrix
``P(call | true class)`` (the emissions, shrunk towards a near-identity prior), transitions counted between
consecutive labelled frames and the rates they give, and, on a movie without labels, Baum-Welch with the
emissions held fixed (:func:`fit_em`). Pure numpy/pandas; no torch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from ...phenotypes import CLASS_NAMES
from ..results.schema import prob_columns
from .hmm import emissions, messages, transition_matrix
from .timeline import TimelineSettings, check_fixed, check_probabilities, fixed_classes

#: the confusion matrix's prior: this share of calls off the diagonal, worth this many cells
PRIOR_OFF_DIAGONAL = 0.05


PRIOR_CELLS = 4.0


#: pseudo-transitions that pull fitted rates towards the defaults when few transitions are seen
PRIOR_TRANSITIONS = 10.0


MIN_RATE = 1e-4


def _sorted_tracks(cells: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    """``cells`` sorted by track and frame, and the (start, stop) rows of each track."""
    cells = cells.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)
    tracks = cells["track_id"].to_numpy()
    cut = np.flatnonzero(np.diff(tracks)) + 1
    return cells, [(int(a), int(b)) for a, b in zip(np.r_[0, cut], np.r_[cut, len(cells)]) if b > a]


def truth_codes(cells: pd.DataFrame, truth: pd.DataFrame, class_names=CLASS_NAMES) -> np.ndarray:
    """(N,) class index of each row of ``cells`` from ``truth`` (``frame, label, phenotype``), -1 where none."""
    return fixed_classes(cells, truth, class_names)


def _check_label_sequences(cells: pd.DataFrame, bounds, codes: np.ndarray, sink: int | None, names) -> None:
    """Refuse labels no track can follow (a live phenotype after Senescent), naming the track and frames:
    fitted on, they would teach the model transitions it forbids."""
    frames, tracks = cells["frame"].to_numpy(), cells["track_id"].to_numpy()
    for a, b in bounds:
        if (codes[a:b] >= 0).any():
            check_fixed(codes[a:b], sink, names, frames[a:b], tracks[a])


def fit_temperature(probs: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that maximises the likelihood of ``targets`` under ``probs`` (rows).

    A grid over log-temperature from 0.2 to 20, refined by golden section around the best.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return 1.0
    logp = np.log(np.clip(probs, 1e-12, 1.0))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(z)), targets]))

    grid = np.linspace(np.log(0.2), np.log(20.0), 41)
    values = [nll(g) for g in grid]
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    golden = (np.sqrt(5) - 1) / 2
    for _ in range(30):
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if nll(a) < nll(b):
            hi = b
        else:
            lo = a
    return float(np.clip(np.exp((lo + hi) / 2), 0.01, 100.0))


def prior_confusion(n: int, off: float = PRIOR_OFF_DIAGONAL) -> np.ndarray:
    """A near-identity ``P(call | true class)``: ``off`` of the calls spread over the other classes."""
    m = np.full((n, n), off / max(n - 1, 1))
    np.fill_diagonal(m, 1.0 - off)
    return m


def fit_confusion(calls: np.ndarray, targets: np.ndarray, n: int, prior_cells: float = PRIOR_CELLS) -> np.ndarray:
    """``P(call | true class)`` from the network's calls (top class) on cells whose class is known.

    Each row is shrunk towards :func:`prior_confusion` by ``prior_cells`` pseudo-cells, so a class
    with few annotated cells keeps a near-identity row.
    """
    counts = np.zeros((n, n))
    np.add.at(counts, (np.asarray(targets, dtype=np.int64), np.asarray(calls, dtype=np.int64)), 1.0)
    m = counts + prior_cells * prior_confusion(n)
    return m / m.sum(axis=1, keepdims=True)


def count_transitions(codes: np.ndarray, frames: np.ndarray, bounds, absorbing: int | None) -> dict:
    """Transitions between consecutive annotated frames (frame t and t+1 of one track, both known).

    Returns ``{"stay", "switch", "senesce", "back"}``: a live class kept, changed to another live
    class, changed to the absorbing one; ``back`` counts absorbing -> live (impossible for the
    model, so not used; a person may still have labelled it).
    """
    out = {"stay": 0, "switch": 0, "senesce": 0, "back": 0}
    for a, b in bounds:
        c, f = codes[a:b], frames[a:b]
        ok = (c[:-1] >= 0) & (c[1:] >= 0) & (np.diff(f) == 1)
        prev, nxt = c[:-1][ok], c[1:][ok]
        live = prev != absorbing if absorbing is not None else np.ones(len(prev), bool)
        out["stay"] += int((live & (nxt == prev)).sum())
        to_sink = nxt == absorbing if absorbing is not None else np.zeros(len(prev), bool)
        out["senesce"] += int((live & to_sink).sum())
        out["switch"] += int((live & (nxt != prev) & ~to_sink).sum())
        out["back"] += int((~live & (nxt != prev)).sum())
    return out


def rates_from_counts(switch: float, senesce: float, live: float, default: TimelineSettings = TimelineSettings(),
                      prior: float = PRIOR_TRANSITIONS) -> tuple[float, float]:
    """Per-frame switch and senescence rates from (expected) counts, shrunk towards ``default``."""
    total = live + prior
    sw = (switch + prior * default.switch_rate) / total
    se = (senesce + prior * default.senescence_rate) / total
    sw, se = max(sw, MIN_RATE), max(se, MIN_RATE)
    if sw + se >= 0.99:  # a model that changes class at nearly every frame smooths nothing
        scale = 0.99 / (sw + se)
        sw, se = sw * scale, se * scale
    return float(sw), float(se)


def expected_transitions(probs: np.ndarray, settings: TimelineSettings, absorbing: int | None,
                         fixed=None) -> tuple[float, float, float]:
    """Expected (switch, senesce, live) transitions of one track under ``settings`` (the E step of EM)."""
    n = probs.shape[1]
    emis = emissions(probs, settings)
    if fixed is not None:
        at = np.flatnonzero(np.asarray(fixed) >= 0)
        emis[at] = 0.0
        emis[at, np.asarray(fixed)[at]] = 1.0
    if len(emis) < 2:
        return 0.0, 0.0, 0.0
    a = transition_matrix(n, absorbing, settings)
    with np.errstate(divide="ignore"):
        log_a, log_e = np.log(a), np.log(emis)
    lf, lb = messages(emis, a)
    # xi[t, i, j] for the transition into frame t+1, normalised per t (in log space: long tracks never underflow)
    log_xi = lf[:-1, :, None] + log_a[None] + (log_e[1:] + lb[1:])[:, None, :]
    log_xi -= log_xi.max(axis=(1, 2), keepdims=True)
    xi = np.exp(log_xi)
    xi /= xi.sum(axis=(1, 2), keepdims=True)
    tot = xi.sum(axis=0)
    live = [i for i in range(n) if i != absorbing]
    sub = tot[np.ix_(live, live)]
    switch = float(sub.sum() - np.trace(sub))
    senesce = float(tot[live, absorbing].sum()) if absorbing is not None else 0.0
    return switch, senesce, float(tot[live].sum())


def fit_em(cells: pd.DataFrame, class_names=CLASS_NAMES, settings: TimelineSettings = TimelineSettings(),
           absorbing: str | None = "Senescent", annotations: pd.DataFrame | None = None,
           iterations: int = 30, tol: float = 1e-4) -> tuple[TimelineSettings, dict]:
    """Transition rates fitted on a movie without labels (Baum-Welch; emissions held fixed).

    Parameters
    ----------
    cells
        A classified movie's cell table (``track_id, frame, label, p_<class>``).
    settings
        Starting rates and the emission model (temperature, confusion) that stays fixed.
    annotations
        Optional labels of a person (``frame, label, phenotype``), used as fixed evidence.

    Returns
    -------
    settings, info
        The fitted settings and ``{"iterations", "converged", "rates"}`` (rates per iteration).
    """
    names = list(class_names)
    settings.check_classes(len(names))
    sink = names.index(absorbing) if absorbing in names else None
    cells, bounds = _sorted_tracks(cells)
    probs = cells[prob_columns(names)].to_numpy(dtype=np.float64)
    check_probabilities(probs)
    fixed = fixed_classes(cells, annotations, names)
    _check_label_sequences(cells, bounds, fixed, sink, names)
    history, converged = [], False
    for _ in range(iterations):
        sw = se = live = 0.0
        for a, b in bounds:
            fx = fixed[a:b] if (fixed[a:b] >= 0).any() else None
            e = expected_transitions(probs[a:b], settings, sink, fx)
            sw, se, live = sw + e[0], se + e[1], live + e[2]
        # the prior is light here: the whole movie is the evidence
        new_sw, new_se = rates_from_counts(sw, se, live, settings, prior=1.0)
        history.append((new_sw, new_se))
        moved = abs(new_sw - settings.switch_rate) + abs(new_se - settings.senescence_rate)
        settings = replace(settings, switch_rate=new_sw, senescence_rate=new_se)
        if moved < tol:
            converged = True
            break
    return settings, {"iterations": len(history), "converged": converged, "rates": history}


__all__ = ["count_transitions", "fit_confusion", "fit_em", "fit_temperature", "prior_confusion", "truth_codes"]
