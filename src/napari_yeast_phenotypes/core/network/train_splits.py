"""The roles of a training's crops: which train, which choose the epoch (and calibrate), which give the final
figures (:func:`plan_splits`; whole tracks, or whole experiments, held out); refusing validation or test crops
that are training crops (:func:`check_held_out`); and what identifies a training set
(:func:`training_set_fingerprint`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..data.cropset import CropSet
from ..errors import InputError
from .evaluation import fingerprint_ids, grouping, holdout_groups

#: a set is split (a part held out) only from this many crops and three groups on: below that, a
#: held-out part is too small to say anything, and the report says its figures are optimistic
MIN_HOLDOUT_CROPS = 40


def _grouping(data: CropSet) -> tuple[np.ndarray, str]:
    return grouping(data.tracks, data.groups, len(data))


def _held_out(data: CropSet, fraction: float, seed: int) -> tuple[np.ndarray, str] | None:
    """A mask of whole groups to hold out of ``data``, and what the groups are; ``None`` if too small."""
    if fraction <= 0 or len(data) < MIN_HOLDOUT_CROPS:
        return None
    groups, by = _grouping(data)
    if len(np.unique(groups.astype(str))) < 3:
        return None
    mask = holdout_groups(groups, fraction, seed)
    return (mask, by) if 0 < mask.sum() < len(data) else None


def plan_splits(train: CropSet, val: CropSet | None, test: CropSet | None, config: TrainConfig,
                folds: dict | None = None) -> dict:
    """Which crops train, which choose the epoch (and calibrate), which give the final figures.

    ``folds``: the number of steps was chosen on folds of the training crops (:func:`steps_by_folds`):
    every training crop trains, the folds' out-of-fold calls calibrate, and the final figures are
    on the test crops, else on those out-of-fold calls.

    Returns ``{"train", "select", "report", "report_on", "optimistic", "notes"}`` (``select`` and
    ``report`` may be ``None`` for sets too small to hold anything out).
    """
    notes = []
    if folds is not None:
        k, at = folds["folds"], folds["steps"]
        notes.append(f"the number of optimiser steps ({at} of a schedule of {folds['total']}) was chosen on {k} folds "
                     f"of whole {folds['by']}s of the training crops; the model then learnt all {len(train)} of them")
        select_on = f"the out-of-fold calls of those {k} folds ({len(train)} crops)"
        if test is not None and len(test):
            return {"train": train, "select": train, "report": test, "optimistic": False, "notes": notes,
                    "select_on": select_on,
                    "report_on": f"the test split ({len(test)} crops), which no choice was made on (the number of "
                                 f"steps, {at}, was chosen on {k} folds of whole {folds['by']}s of the training crops)"}
        return {"train": train, "select": train, "report": train, "optimistic": True, "notes": notes,
                "select_on": select_on,
                "report_on": f"the out-of-fold calls of {k} folds of whole {folds['by']}s of the {len(train)} "
                             f"training crops at step {at} (each crop judged by a model that did not learn it; the "
                             "step was chosen on them, so slightly optimistic; the final model learnt all of them)"}
    if val is None or len(val) == 0:
        got = _held_out(train, config.holdout, config.seed)
        if got is None:
            notes.append(f"no validation set, and {len(train)} training crops are too few to hold a part out "
                         f"(from {MIN_HOLDOUT_CROPS} crops in 3 or more tracks on): the last epoch is kept and "
                         "the figures are on the training data, which flatter")
            return {"train": train, "select": None, "report": train, "optimistic": True,
                    "report_on": "the training data (optimistic: the model learnt them)", "notes": notes}
        mask, by = got
        notes.append(f"no validation set: {int(mask.sum())} of {len(train)} training crops (whole {by}s) are held "
                     "out as validation data; a hand-curated validation set of other experiments is better")
        train, val = train.subset(np.flatnonzero(~mask)), train.subset(np.flatnonzero(mask))
    if test is not None and len(test):
        return {"train": train, "select": val, "report": test, "optimistic": False,
                "report_on": f"the test split ({len(test)} crops), which no choice was made on", "notes": notes}
    got = _held_out(val, config.holdout, config.seed + 1)
    if got is None:
        notes.append(f"the validation data ({len(val)} crops) are too few to hold a part out: the best epoch and "
                     "the temperature are chosen on the same crops as the figures, which are therefore optimistic")
        return {"train": train, "select": val, "report": val, "optimistic": True,
                "report_on": f"the validation data the best epoch was chosen on ({len(val)} crops; optimistic)",
                "notes": notes}
    mask, by = got
    return {"train": train, "select": val.subset(np.flatnonzero(~mask)), "report": val.subset(np.flatnonzero(mask)),
            "optimistic": False, "notes": notes,
            "report_on": f"{int(mask.sum())} validation crops (whole {by}s) held out from the choice of the best "
                         f"epoch and from calibration; the other {int((~mask).sum())} chose them"}


def check_held_out(train: CropSet, other: CropSet, what: str, against: str = "training") -> None:
    """Refuse ``other`` (validation or test crops) when it shares crops with ``train``: by pixels (the same
    crop under another name, or the same folder given twice) or by cell (one track on both sides).

    Figures on crops the model learnt from would be called held out while they flatter.
    """
    seen = {}
    for i, c in enumerate(train.crops):
        seen.setdefault(hashlib.sha256(c.tobytes()).digest(), i)
    same = [(j, seen[d]) for j, c in enumerate(other.crops) if (d := hashlib.sha256(c.tobytes()).digest()) in seen]
    ids_t, ids_o = crop_ids(train), crop_ids(other)
    if same:
        j, i = same[0]
        whole = "all" if len(same) == len(other) else f"{len(same)} of the {len(other)}"
        raise InputError(f"{whole} {what} crops are also {against} crops (the same pixels: e.g. {ids_o[j]} is "
                         f"{ids_t[i]}), so figures on them would not be held out. Give {what} crops the model does "
                         f"not learn from (another folder, or the set's {what} split), or none: a part of the "
                         "training set, whole tracks, is then held out")
    if train.tracks is not None and other.tracks is not None:
        shared = set(map(str, train.tracks)) & set(map(str, other.tracks))
        if shared:
            raise InputError(f"{len(shared)} cell(s) have crops among both the {against} and the {what} crops (e.g. "
                             f"{sorted(shared)[0]}); the frames of one cell look alike, so figures on them would not "
                             f"be held out. Keep each cell's crops on one side")


def crop_ids(data: CropSet) -> list[str]:
    """The ids of the crops (their file names without suffix; their index when they have no file)."""
    return [Path(p).stem for p in data.paths] if data.paths else [f"#{i}" for i in range(len(data))]


def training_set_fingerprint(data: CropSet) -> dict:
    """What identifies the crops a model learnt from: their ids, the ids' hash, the pixels' hash."""
    from ..files.fingerprint import array_sha256

    ids = crop_ids(data)
    return {"n": len(ids), "counts": data.counts(), "crop_ids": ids, "ids_sha256": fingerprint_ids(ids),
            "crops_sha256": array_sha256(data.crops), "origin": data.origin or {"kind": "unknown"}}


__all__ = ["plan_splits", "training_set_fingerprint"]
