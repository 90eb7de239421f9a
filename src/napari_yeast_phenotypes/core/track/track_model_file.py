"""Track model files (JSON, never code): written whole, read back checked against the model's classes,
and their report in words."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..config import parse_class_names
from ..errors import InputError
from ..files.atomic import atomic_write
from ..files.jsonfile import TooDeep, loads_json
from .timeline import TimelineSettings
from .track_model import TRACK_MODEL_FORMAT, TRACK_MODEL_VERSION, TrackModelFit


def save_track_model(path: str | os.PathLike, fit: TrackModelFit, *, keep_earlier: bool = False,
                     run: dict | None = None) -> Path:
    """Write the fitted settings and their report as JSON, atomically.

    ``keep_earlier``: a file already at ``path`` is kept beside it, renamed
    ``<name>-<when it was saved>.json`` (the Annotate dock saves into the curated set, where nothing a
    user saved is lost). ``run``: the job's record, kept in the file under ``"run"``.
    """
    from datetime import datetime

    path = Path(path)
    if keep_earlier and path.exists():
        stamp = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        keep, i = path.with_name(f"{path.stem}-{stamp}.json"), 1
        while keep.exists():
            keep, i = path.with_name(f"{path.stem}-{stamp}-{i}.json"), i + 1
        os.replace(path, keep)
    data = fit.to_dict()
    if run is not None:
        data["run"] = run
    with atomic_write(path) as fh:
        json.dump(_plain(data), fh, indent=2)
    return path


def load_track_model(path: str | os.PathLike, class_names=None) -> TimelineSettings:
    """The :class:`TimelineSettings` saved by :func:`save_track_model` (checked against ``class_names``)."""
    return read_track_model(path, class_names)[0]


def read_track_model(path: str | os.PathLike, class_names=None) -> tuple[TimelineSettings, dict]:
    """The settings saved by :func:`save_track_model` (checked against ``class_names``) and the fit's report."""
    path = Path(path)
    try:
        data = loads_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"track model file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder; give a track model file (written by yeast-phenotypes "
                         "fit-track-model)") from None
    except (OSError, ValueError) as exc:
        why = (str(exc) if isinstance(exc, TooDeep) else "not JSON text" if isinstance(exc, ValueError)
               else exc.strerror)
        raise InputError(f"{path} is not a track model file ({why}); give the JSON file written by yeast-phenotypes "
                         "fit-track-model (or the Annotate dock's track_model.json)") from exc
    if not isinstance(data, dict) or data.get("format") != TRACK_MODEL_FORMAT:
        raise InputError(f"{path} is not a track model file saved by napari-yeast-phenotypes; give the JSON file "
                         "written by yeast-phenotypes fit-track-model (or the Annotate dock's track_model.json)")
    version = data.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(f"{path}: its format_version is {version!r}, not a version number this package writes; the "
                         "file was changed or made by another program. Fit the track model again")
    if version > TRACK_MODEL_VERSION:
        raise InputError(f"{path} was written by a newer napari-yeast-phenotypes (track model format {version}; "
                         f"this version reads up to {TRACK_MODEL_VERSION}); update the package, or fit the track "
                         "model again with this version")
    names = parse_class_names(data.get("class_names"), f"{path}'s class_names")
    if class_names is not None and list(names) != list(class_names):
        raise InputError(f"{path} was fitted for the classes {', '.join(names)}, "
                         f"but the model classifies into {', '.join(class_names)}; fit a track model on a movie "
                         "classified by this model")
    try:
        settings = TimelineSettings.from_dict(data.get("timeline"))
        if settings.confusion is not None and len(settings.confusion) != len(names):
            raise InputError(f"its confusion matrix is for {len(settings.confusion)} classes but it names "
                             f"{len(names)} ({', '.join(names)}): the file was changed or made by another program; "
                             "fit the track model again")
        settings.check_classes(len(names))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    if not isinstance(data.get("report", {}), dict):
        raise InputError(f"{path}: its report is not a mapping; the file was changed or made by another program")
    return settings, data.get("report", {})


def track_model_decision(settings: TimelineSettings, report: dict) -> tuple[TimelineSettings, dict]:
    """What a classification with a track model file uses: its smoothing, or the raw calls, and why.

    A file fitted on labels says what it decided (``report["decision"]``: smoothing only where it
    does not lower agreement with the labels). A file from before that decision was recorded whose
    smoothing was less accurate than the raw calls on its validation tracks is not trusted: the raw
    calls are used and said (``fell_back``). A fit by EM has no labels to check on, and says so.

    Returns the settings to classify with and ``{"use", "why", "fell_back"}`` (plain values, for
    ``run.json`` and the command line).
    """
    from dataclasses import replace

    from .track_model import USE_RAW, USE_SMOOTHING

    use = USE_SMOOTHING if settings.smooth else USE_RAW
    decision = report.get("decision") if isinstance(report.get("decision"), dict) else None
    v = report.get("validation") if isinstance(report.get("validation"), dict) else None
    if decision and decision.get("why"):
        why = decision["why"]
    elif report.get("method") == "em":
        why = ("smoothing with transition rates fitted by EM on a movie, without labels: not checked against labels "
               "(fit it on labelled tracks to know whether it lowers agreement)") if settings.smooth else \
            "raw calls (the file turns smoothing off)"
    elif v and v.get("smoothed_accuracy") is not None and v.get("raw_accuracy") is not None:
        if settings.smooth and v["smoothed_accuracy"] < v["raw_accuracy"]:
            return replace(settings, smooth=False), {
                "use": USE_RAW, "fell_back": True,
                "why": (f"raw calls: the file's smoothing lowered agreement with the labels on its validation tracks "
                        f"({v['smoothed_accuracy']:.3f} vs {v['raw_accuracy']:.3f} raw), so phenotype is the "
                        "network's own call")}
        why = (f"{use}: on the file's validation tracks accuracy {v['smoothed_accuracy']:.3f} with it vs "
               f"{v['raw_accuracy']:.3f} raw")
    else:
        why = f"{use}: the file records no check against labels"
    return settings, {"use": use, "why": why, "fell_back": False}


def _share(x) -> str:
    return "-" if x is None or x != x else f"{x:.0%}"


def _acc(x) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


def report_lines(report: dict) -> list[str]:
    """A fit's report in words, one line each: what it was fitted and checked on, and the figures.

    Works on :attr:`TrackModelFit.report` and on the ``report`` of a saved file alike.
    """
    lines = []
    if report.get("method") == "em":
        em = report.get("em") or {}
        lines.append(f"fitted by EM on the movie, without labels ({em.get('iterations')} iterations, "
                     f"{'converged' if em.get('converged') else 'not converged'}): switch rate "
                     f"{em.get('switch_rate', float('nan')):.4f}, senescence rate "
                     f"{em.get('senescence_rate', float('nan')):.4f} per frame")
    else:
        fitted = report.get("fitted") or {}
        lines.append(f"fitted on {report.get('fit_tracks')} labelled tracks, checked on "
                     f"{report.get('validation_tracks')} others ({report.get('annotated_cell_frames')} labelled "
                     "cell-frames in all)")
        lines.append(f"chosen: {report.get('chosen')} (the fit gave temperature {fitted.get('temperature', 1.0):.2f}, "
                     f"switch rate {fitted.get('switch_rate', float('nan')):.4f}, senescence rate "
                     f"{fitted.get('senescence_rate', float('nan')):.4f} per frame)")
        decision = report.get("decision") or {}
        if decision.get("why"):
            lines.append(f"uses: {decision['why']}")
        lab = report.get("labelled") or {}
        if lab:
            lines.append(f"on all {lab.get('tracks')} labelled tracks: accuracy {_acc(lab.get('smoothed_accuracy'))} "
                         f"as classified with it, {_acc(lab.get('raw_accuracy'))} raw (never lower)")
        v = report.get("validation") or {}
        lines.append(f"on the {v.get('tracks')} validation tracks: accuracy {_acc(v.get('raw_accuracy'))} raw, "
                     f"{_acc(v.get('smoothed_accuracy'))} smoothed ({v.get('cell_frames')} labelled cell-frames)")
        if "live_tracks" in v:
            lines.append(f"live tracks called senescent: {_share(v.get('raw_false_senescence_tracks'))} raw, "
                         f"{_share(v.get('smoothed_false_senescence_tracks'))} smoothed (of {v['live_tracks']}); "
                         f"truly live frames called senescent: {_share(v.get('raw_false_senescence_frames'))} raw, "
                         f"{_share(v.get('smoothed_false_senescence_frames'))} smoothed")
            if v.get("senescent_tracks"):
                lines.append(f"senescent tracks whose senescence smoothing missed: "
                             f"{_share(v.get('missed_senescence_tracks'))} (of {v['senescent_tracks']})")
    lines.extend(f"note: {n}" for n in report.get("notes") or [])
    return lines


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


__all__ = ["load_track_model", "read_track_model", "report_lines", "save_track_model", "track_model_decision"]
