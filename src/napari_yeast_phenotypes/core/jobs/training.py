"""The training jobs: train, cross-validate and the learning curve, from a curated set or from folders of crops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..config import TrainConfig
from ..errors import InputError
from ..files.atomic import atomic_write, check_writable_file
from .classify import load_model


def load_crop_folder(path, class_names):
    """A curated set's split (manifest-backed) or a plain ImageFolder, with the crop settings its
    crops were made with (the curated set's own; the defaults for a plain folder, whose crops are
    marked external in ``CropSet.origin``)."""
    from ..data.cropfolder import load_image_folder
    from ..data.crops import CropSettings
    from ..data.curated.store import CuratedSet

    path = Path(path)
    if (path.parent / "manifest.csv").exists() and (path.parent / "settings.json").exists():
        cs = CuratedSet.read(path.parent)  # reading wants no writers' lock: a read-only set trains too
        return cs.load_split(path.name), cs.crop_settings
    if (path / "manifest.csv").exists() and (path / "settings.json").exists():
        raise InputError(f"{path} is a whole curated set; name one of its splits, e.g. {path / 'train'}")
    return load_image_folder(path, class_names), CropSettings()


def _same_settings(other_dir, other_settings, settings, train_dir) -> None:
    if other_settings != settings:
        raise InputError(f"{other_dir} holds crops made with other crop settings than {train_dir}; "
                         "train and validate on crops made the same way")


def train_model(train_dir, val_dir=None, config: TrainConfig | None = None, out=None, *, class_names,
                overwrite: bool = False, progress=None, notes: Callable[[str], None] | None = None,
                test_dir=None, previous=None):
    """Train on a crop folder (validation on another, never augmented); the best epoch goes to ``out``.

    ``out`` is checked writable before any crop is read or epoch run. ``notes`` receives what the
    user should know (what was done to external crops, what the final figures are computed on).
    ``test_dir``: crops no choice is made on, for the final figures. ``previous``: a model (file
    or ``Classifier``) judged on the same crops, for comparison.
    """
    from ..network.train import train

    config = config or TrainConfig()
    say = notes or (lambda _m: None)
    if out is not None:
        check_writable_file(out, overwrite)
    train_set, settings = load_crop_folder(train_dir, class_names)
    val_set = test_set = None
    if val_dir:
        val_set, val_settings = load_crop_folder(val_dir, class_names)
        _same_settings(val_dir, val_settings, settings, train_dir)
    if test_dir:
        test_set, test_settings = load_crop_folder(test_dir, class_names)
        _same_settings(test_dir, test_settings, settings, train_dir)
    prev = load_model(previous)[0] if previous is not None else None
    for note in train_set.notes:
        say(f"note: {note}")
    say(f"training on {len(train_set)} crops " + ", ".join(f"{k} {v}" for k, v in train_set.counts().items()))
    clf = train(train_set, val_set, config, settings, out=out, progress=progress, test=test_set, previous=prev)
    for note in clf.metadata["report"]["notes"]:
        say(f"note: {note}")
    return clf


def crossvalidate(data_dir, folds: int, config: TrainConfig | None = None, *, class_names, out=None,
                  overwrite: bool = True, progress=None, by: str = "auto", random_split: bool = True) -> dict:
    """Grouped k-fold (or leave-one-experiment-out) cross-validation on a crop folder, with a random
    split beside it; the metrics go to ``out`` (JSON) if given."""
    from ..network.crossval import crossval

    if out is not None:
        check_writable_file(out, overwrite)
    data, settings = load_crop_folder(data_dir, class_names)
    res = crossval(data, folds, config or TrainConfig(), settings, progress=progress, by=by,
                   random_split=random_split)
    if out is not None:
        with atomic_write(out) as fh:
            json.dump(res, fh, indent=2)
    return res


def learning_curve_job(train_dir, val_dir, per_class, config: TrainConfig | None = None, *, class_names,
                       out=None, overwrite: bool = True, progress=None) -> list[dict]:
    """Validation macro-F1 against labelled crops per class (see :func:`~.train.learning_curve`);
    the points go to ``out`` (JSON) if given."""
    from ..network.crossval import learning_curve

    if out is not None:
        check_writable_file(out, overwrite)
    train_set, settings = load_crop_folder(train_dir, class_names)
    val_set, val_settings = load_crop_folder(val_dir, class_names)
    _same_settings(val_dir, val_settings, settings, train_dir)
    curve = learning_curve(train_set, val_set, per_class, config or TrainConfig(), settings, progress)
    if out is not None:
        with atomic_write(out) as fh:
            json.dump(curve, fh, indent=2)
    return curve


__all__ = ["crossvalidate", "learning_curve_job", "load_crop_folder", "train_model"]
