"""Fitting the per-track model: its transition rates, and the emission model that feeds it.

The track model of :mod:`~napari_yeast_phenotypes.core.track.timeline` has defaults that were set by
hand. Tried on a simulated movie they made accuracy worse than the network's own calls, and live
tracks whose calls alternated Fragmented/Senescent became confident senescence events (Senescent
is absorbing, and a floor of 1e-4 on both sides made the alternation a coin toss won by the more
confident frames). Here the model learns from cells whose class a person knows:

- the **calibration** of the network's probabilities: one temperature, fitted by likelihood;
- the **emissions**: a confusion matrix ``P(call | true class)`` (counts of the network's top
  class, shrunk towards a near-identity prior for classes with few cells). It is
  asymmetric where the network is: a senescent cell is rarely called live, so live calls after
  a senescent one count against the onset, and an onset needs sustained evidence;
- the **transition rates** (switch between live classes, become senescent) from consecutive
  annotated frames of a track, or, without labels, by expectation-maximisation on the movie
  (:func:`fit_em`, Baum-Welch with the emissions held fixed).

:func:`fit_track_model` fits on part of the annotated tracks, chooses among the fitted model and
simpler ones on those same tracks, and reports on the **other** tracks (validation): raw vs
smoothed accuracy and the false-senescence rate. The guarantee: **the track model never lowers
agreement with the labels**. Only candidates at least as accurate as the raw calls on the fitting
tracks are chosen from; if the chosen one is less accurate than the raw calls on the validation
tracks, the fit falls back to the fitted model (when it was not the one chosen and does not lower
agreement on either set of tracks) or else to the raw calls (smoothing off), and ``report["decision"]``
says which and why; ``report["labelled"]`` gives raw vs used accuracy on all labelled tracks.

The estimators it fits with (temperature, confusion matrix, transition rates, and :func:`fit_em` for a movie
without labels) are in :mod:`.track_estimates`. Pure numpy/pandas; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ...phenotypes import CLASS_NAMES
from ..errors import InputError
from ..results.schema import prob_columns
from .timeline import MIN_CONFUSION_SPREAD, TimelineSettings, check_probabilities, confusion_spread, smooth_track
from .track_estimates import (
    _check_label_sequences,
    _sorted_tracks,
    count_transitions,
    fit_confusion,
    fit_temperature,
    rates_from_counts,
    truth_codes,
)

TRACK_MODEL_FORMAT = "napari-yeast-phenotypes/track-model"
TRACK_MODEL_VERSION = 1

#: labelled tracks a fit from a person's labels needs: two to fit on and two to check on, the fewest
#: whose figures say anything (the command line and the Annotate dock ask this many)
MIN_LABELLED_TRACKS = 4


def evaluate_tracks(cells: pd.DataFrame, codes: np.ndarray, settings: TimelineSettings,
                    class_names=CLASS_NAMES, absorbing: str | None = "Senescent") -> dict:
    """Raw (network's own call) vs smoothed accuracy and false senescence on annotated tracks.

    ``cells`` must be sorted by track and frame (as :func:`_sorted_tracks` gives) and ``codes``
    the true class of each row (-1 where unknown). A *live track* is one whose known frames are all
    live; its false senescence is any frame called senescent (raw: any single senescent call, the
    event a user of raw calls would see; smoothed: the track model's onset). Frame-level: the share
    of truly live frames called senescent.
    """
    names = list(class_names)
    sink = names.index(absorbing) if absorbing in names else None
    _, bounds = _sorted_tracks(cells[["track_id", "frame"]])
    probs = cells[prob_columns(names)].to_numpy(dtype=np.float64)
    raw = probs.argmax(axis=1)
    smooth = np.empty_like(raw)
    for a, b in bounds:
        smooth[a:b], _ = smooth_track(probs[a:b], sink, settings)
    known = codes >= 0
    out = {"tracks": 0, "cell_frames": int(known.sum()),
           "raw_accuracy": float((raw[known] == codes[known]).mean()) if known.any() else float("nan"),
           "smoothed_accuracy": float((smooth[known] == codes[known]).mean()) if known.any() else float("nan")}
    if sink is not None:
        live_frames = known & (codes != sink)
        live_tracks = raw_events = smooth_events = sen_tracks = missed = 0
        for a, b in bounds:
            k = known[a:b]
            if not k.any():
                continue
            c = codes[a:b][k]
            if (c == sink).any():
                sen_tracks += 1
                missed += int(not (smooth[a:b] == sink).any())
            else:
                live_tracks += 1
                raw_events += int((raw[a:b][k] == sink).any())
                smooth_events += int((smooth[a:b][k] == sink).any())
        out.update(
            tracks=int(sum(known[a:b].any() for a, b in bounds)),
            live_tracks=live_tracks, senescent_tracks=sen_tracks,
            raw_false_senescence_tracks=raw_events / live_tracks if live_tracks else float("nan"),
            smoothed_false_senescence_tracks=smooth_events / live_tracks if live_tracks else float("nan"),
            raw_false_senescence_frames=float((raw[live_frames] == sink).mean()) if live_frames.any() else float("nan"),
            smoothed_false_senescence_frames=(float((smooth[live_frames] == sink).mean()) if live_frames.any()
                                              else float("nan")),
            missed_senescence_tracks=missed / sen_tracks if sen_tracks else float("nan"),
        )
    else:
        out["tracks"] = int(sum(known[a:b].any() for a, b in bounds))
    return out


@dataclass
class TrackModelFit:
    """What :func:`fit_track_model` returns: the settings to classify with, and how they were chosen."""

    settings: TimelineSettings
    report: dict = field(default_factory=dict)
    class_names: tuple[str, ...] = CLASS_NAMES

    def to_dict(self) -> dict:
        return {"format": TRACK_MODEL_FORMAT, "format_version": TRACK_MODEL_VERSION,
                "class_names": list(self.class_names), "timeline": self.settings.to_dict(), "report": self.report}


def split_tracks(track_ids, validation_fraction: float, seed: int) -> np.ndarray:
    """The track ids held out for validation: a seeded draw of whole tracks (at least one on each side)."""
    uniq = np.unique(np.asarray(track_ids))
    if not 0 < validation_fraction < 1:
        raise InputError(f"the validation fraction must be between 0 and 1, not {validation_fraction!r}")
    n_val = int(round(len(uniq) * validation_fraction))
    n_val = min(max(n_val, 1), len(uniq) - 1)
    return np.sort(np.random.default_rng(seed).permutation(uniq)[:n_val])


#: what a fit decided, in ``report["decision"]["use"]``
USE_SMOOTHING, USE_RAW = "smoothing", "raw calls"


def _not_lower(m: dict) -> bool:
    """Whether smoothing agrees with the labels at least as well as the raw calls on these tracks."""
    return not m["smoothed_accuracy"] < m["raw_accuracy"]


def _objective(m: dict) -> tuple:
    # accuracy first; then fewer false senescence events (a biologist's costliest mistake)
    fs = m.get("smoothed_false_senescence_tracks", 0.0)
    return (round(m["smoothed_accuracy"], 4), -(0.0 if fs != fs else fs))


def fit_track_model(cells: pd.DataFrame, truth: pd.DataFrame, class_names=CLASS_NAMES, *,
                    absorbing: str | None = "Senescent", validation_fraction: float = 0.5, seed: int = 0,
                    base: TimelineSettings = TimelineSettings()) -> TrackModelFit:
    """Fit the track model on annotated tracks and report on held-out ones.

    Parameters
    ----------
    cells
        A classified movie's (or several movies') cell table: ``track_id, frame, label, p_<class>``.
        Track ids must be unique over the table.
    truth
        The known class of cells: ``frame, label, phenotype`` (a person's labels, or a simulation's
        truth). Transition rates come from consecutive annotated frames of a track.
    validation_fraction
        Share of the annotated tracks held out (whole tracks, seeded draw) to report on.
    base
        Settings the fitted rates are shrunk towards when few transitions are seen.

    Returns
    -------
    TrackModelFit
        ``settings`` to classify with (:class:`ClassifyConfig` ``timeline``) and ``report``: the
        candidates' figures on the fitting tracks, the chosen one, and on the validation tracks raw
        vs smoothed accuracy and false senescence (the figures to trust).

    Raises
    ------
    InputError
        When no track has an annotated frame, or fewer than two tracks do (nothing to hold out).
    """
    names = list(class_names)
    n = len(names)
    sink = names.index(absorbing) if absorbing in names else None
    cells, bounds = _sorted_tracks(cells)
    check_probabilities(cells[prob_columns(names)].to_numpy(dtype=np.float64))
    codes = truth_codes(cells, truth, names)
    _check_label_sequences(cells, bounds, codes, sink, names)
    annotated_tracks = np.unique(cells["track_id"].to_numpy()[codes >= 0])
    if len(annotated_tracks) < 2:
        raise InputError(f"{len(annotated_tracks)} track(s) have a labelled cell; the track model needs labelled "
                         "frames on at least two tracks (one to fit on, one to check on), more for figures that mean "
                         "something")
    tid = cells["track_id"].to_numpy()
    val_tracks = split_tracks(annotated_tracks, validation_fraction, seed)
    # tracks without any label are on neither side: they carry no evidence to fit or check
    val_rows = np.isin(tid, val_tracks)
    fit_rows = np.isin(tid, annotated_tracks) & ~val_rows
    fit_cells, val_cells = cells[fit_rows].reset_index(drop=True), cells[val_rows].reset_index(drop=True)
    fit_codes, val_codes = codes[fit_rows], codes[val_rows]

    probs = fit_cells[prob_columns(names)].to_numpy(dtype=np.float64)
    k = fit_codes >= 0
    temperature = fit_temperature(probs[k], fit_codes[k])
    confusion = fit_confusion(probs[k].argmax(axis=1), fit_codes[k], n)
    _, fit_bounds = _sorted_tracks(fit_cells[["track_id", "frame"]])
    counts = count_transitions(fit_codes, fit_cells["frame"].to_numpy(), fit_bounds, sink)
    live = counts["stay"] + counts["switch"] + counts["senesce"]
    sw, se = rates_from_counts(counts["switch"], counts["senesce"], live, base)
    no_confusion = replace(base, switch_rate=sw, senescence_rate=se, temperature=temperature, confusion=None,
                           smooth=True)
    # where the network's calls say (almost) nothing of the class there is no confusion matrix to use
    fitted = (replace(no_confusion, confusion=tuple(map(tuple, confusion)))
              if confusion_spread(confusion) >= MIN_CONFUSION_SPREAD else None)
    candidates = {
        **({"fitted": fitted} if fitted is not None else {}),
        "fitted rates and temperature, no confusion matrix": no_confusion,
        "unfitted defaults": base,
        # the network's own calls: no confusion matrix, so phenotype == the top class at every frame
        "no smoothing": replace(base, temperature=temperature, confusion=None, smooth=False),
    }
    on_fit = {name: evaluate_tracks(fit_cells, fit_codes, s, names, absorbing) for name, s in candidates.items()}
    # never a model that lowers agreement on the tracks it is chosen on ("no smoothing" always qualifies)
    allowed = [name for name in candidates if _not_lower(on_fit[name])]
    first_choice = chosen = max(allowed, key=lambda name: _objective(on_fit[name]))
    on_val = evaluate_tracks(val_cells, val_codes, candidates[chosen], names, absorbing)
    notes = [] if fitted is not None else [
        ("the network's calls on the labelled cells were (almost) the same whatever the class, so no confusion "
         "matrix was used (it would have said nothing of the class)")]
    decision = {"first_choice": first_choice, "fell_back": False}
    if not _not_lower(on_val):
        # fall back: to the fitted model if it does not lower agreement on either set of tracks, else to raw calls
        fallback = "no smoothing"
        if chosen != "fitted" and "fitted" in allowed:
            on_val_fitted = evaluate_tracks(val_cells, val_codes, candidates["fitted"], names, absorbing)
            if _not_lower(on_val_fitted):
                fallback = "fitted"
        notes.append(f"smoothing ({chosen}) was less accurate than the raw calls on the validation tracks "
                     f"({on_val['smoothed_accuracy']:.3f} vs {on_val['raw_accuracy']:.3f}), so the fit falls back to "
                     + ("the fitted model, which lowers it on neither the fitting nor the validation tracks"
                        if fallback == "fitted" else
                        "the raw calls: smoothing is turned off and phenotype is the network's own call")
                     + ". This choice was made on the validation tracks, so their figures below are no longer "
                     "independent of it. Label more tracks to fit it better.")
        decision.update(fell_back=True, lower_on_validation={"smoothed_accuracy": on_val["smoothed_accuracy"],
                                                             "raw_accuracy": on_val["raw_accuracy"]})
        chosen = fallback
        on_val = evaluate_tracks(val_cells, val_codes, candidates[chosen], names, absorbing)
    settings = candidates[chosen]
    # not lower on the fitting tracks nor on the validation tracks: so not lower on all of them (said, and tested)
    labelled_rows = np.isin(tid, annotated_tracks)
    on_labelled = evaluate_tracks(cells[labelled_rows].reset_index(drop=True), codes[labelled_rows], settings, names,
                                  absorbing)
    decision.update(use=USE_SMOOTHING if settings.smooth else USE_RAW, model=chosen,
                    why=_decision_words(chosen, settings.smooth, on_fit[chosen], on_val, decision))
    report = {
        "fit_tracks": int(len(np.unique(fit_cells["track_id"][fit_codes >= 0]))),
        "validation_tracks": int(len(val_tracks)),
        "annotated_cell_frames": int((codes >= 0).sum()),
        "transitions_seen": counts,
        "temperature": temperature,
        "fitted": (fitted or no_confusion).to_dict(),
        "candidates_on_fit_tracks": on_fit,
        "chosen": chosen,
        "validation": on_val,
        "labelled": {k: on_labelled[k] for k in ("tracks", "cell_frames", "raw_accuracy", "smoothed_accuracy")},
        "decision": decision,
        "notes": notes,
    }
    return TrackModelFit(settings, report, tuple(names))


def _decision_words(chosen: str, smooth: bool, on_fit: dict, on_val: dict, decision: dict) -> str:
    """Why the fit uses what it uses, in words (the fit's report, the command line, the Annotate dock)."""
    figures = (f"accuracy on the fitting tracks {on_fit['smoothed_accuracy']:.3f} vs {on_fit['raw_accuracy']:.3f} "
               f"raw, on the validation tracks {on_val['smoothed_accuracy']:.3f} vs {on_val['raw_accuracy']:.3f} raw")
    if not smooth:
        if decision.get("fell_back"):
            return (f"raw calls: smoothing ({decision['first_choice']}) would have lowered agreement with the labels "
                    f"on the validation tracks, so phenotype is the network's own call ({figures})")
        return ("raw calls: no smoothing agreed better with the labels on the fitting tracks than the raw calls, so "
                f"phenotype is the network's own call ({figures})")
    fell = (f"; {decision['first_choice']} would have lowered agreement on the validation tracks, so the fit fell "
            "back to it") if decision.get("fell_back") else ""
    return f"smoothing along tracks ({chosen}): it does not lower agreement with the labels ({figures}){fell}"


def require_labelled_tracks(n_tracks: int, min_tracks: int = MIN_LABELLED_TRACKS) -> None:
    """Refuse, in plain words, a fit on fewer than ``min_tracks`` labelled tracks."""
    if n_tracks < min_tracks:
        raise InputError(f"only {n_tracks} track(s) of this movie have a labelled cell; the track model needs "
                         f"labelled cells on at least {min_tracks} tracks (half to fit on, half to check the fit "
                         "on). Label a few more tracks (e.g. with the Annotate dock)")


def fit_on_labels(cells: pd.DataFrame, truth: pd.DataFrame, class_names, *, source: str = "",
                  min_tracks: int = MIN_LABELLED_TRACKS, validation_fraction: float = 0.5,
                  seed: int = 0) -> TrackModelFit:
    """The track model of a movie's cells fitted on a person's labels of it: the one path of the command line
    (``fit-track-model``) and the Annotate dock.

    ``truth`` holds ``frame, label, phenotype`` (classes only: marks are no class); labels that name no
    cell of ``cells`` are left out and said in the report's notes.

    Raises
    ------
    InputError
        No label names a cell of this movie, or fewer than ``min_tracks`` tracks are labelled.
    """
    keys = cells[["frame", "label", "track_id"]]
    known = truth[["frame", "label", "phenotype"]].merge(keys, on=["frame", "label"], how="inner")
    if known.empty:
        raise InputError(f"none of the {len(truth)} labels of {source or 'the labels given'} names a cell of this "
                         "movie (frame, label): are they the labels of another movie?")
    require_labelled_tracks(int(known["track_id"].nunique()), min_tracks)
    fit = fit_track_model(cells, known[["frame", "label", "phenotype"]], class_names,
                          validation_fraction=validation_fraction, seed=seed)
    fit.report["method"] = "labels"
    if len(known) < len(truth):
        fit.report["notes"].append(f"{len(truth) - len(known)} of the {len(truth)} labels name no cell of this "
                                   "movie and were left out")
    return fit


__all__ = ["MIN_LABELLED_TRACKS", "USE_RAW", "USE_SMOOTHING", "TrackModelFit", "evaluate_tracks", "fit_on_labels",
           "fit_track_model", "require_labelled_tracks", "split_tracks"]
