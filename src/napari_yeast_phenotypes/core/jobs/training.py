"""The training jobs: train, cross-validate and the learning curve, from a curated set or from folders of crops.

The command line, the Train dock, the demo and the benchmarks call these. Each leaves a record of
itself (:mod:`.record`): beside the checkpoint for ``train`` (``model.run.json``), inside the JSON
of figures for ``crossval`` and ``learning-curve``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator

from ..config import TrainConfig
from ..data.crops import CropSettings
from ..data.cropset import CropSet
from ..errors import InputError
from ..files.atomic import atomic_write, check_writable_file
from ..progress import run_to_end
from .classify import load_model
from .record import RunRecord, record_path, write_record


def load_crop_folder(path, class_names):
    """A curated set's split (manifest-backed) or a plain ImageFolder, with the crop settings its
    crops were made with (the curated set's own; the defaults for a plain folder, whose crops are
    marked external in ``CropSet.origin``)."""
    from ..data.cropfolder import load_image_folder
    from ..data.curated.store import CuratedSet

    path = Path(path)
    if (path.parent / "manifest.csv").exists() and (path.parent / "settings.json").exists():
        cs = CuratedSet.read(path.parent)  # reading wants no writers' lock: a read-only set trains too
        return cs.load_split(path.name), cs.crop_settings
    if (path / "manifest.csv").exists() and (path / "settings.json").exists():
        raise InputError(f"{path} is a whole curated set; name one of its splits, e.g. {path / 'train'}, or "
                         "give it as the curated set (--curated)")
    return load_image_folder(path, class_names), CropSettings()


def _same_settings(other_dir, other_settings, settings, train_dir) -> None:
    if other_settings != settings:
        raise InputError(f"{other_dir} holds crops made with other crop settings than {train_dir}; "
                         "train and validate on crops made the same way")


@dataclass
class TrainingData:
    """What a training reads: the crops to learn from, to choose the epoch on, to report on, and their settings."""

    train: CropSet
    val: CropSet | None
    test: CropSet | None
    settings: CropSettings
    #: where each part came from, for the record
    sources: dict = field(default_factory=dict)
    #: classes of the set that have no training crop (the model cannot call them: "not labelled yet")
    not_labelled: tuple[str, ...] = ()

    def labelled_only(self) -> TrainingData:
        """The same data restricted to the classes that have training crops: a lab whose reporter shows two
        phenotypes trains a model of two. Validation and test crops of other classes are left out (said in
        ``notes``)."""
        counts = self.train.counts()
        keep = tuple(c for c in self.train.class_names if counts.get(c, 0) > 0)
        missing = tuple(c for c in self.train.class_names if c not in keep)
        if not missing:
            return self
        if len(keep) < 2:
            raise InputError(f"the training crops hold only {', '.join(keep) or 'no class'}; a classifier needs "
                             "labelled crops of at least two classes")
        out = TrainingData(self.train.restrict(keep), None, None, self.settings, dict(self.sources), missing)
        for part in ("val", "test"):
            crops = getattr(self, part)
            if crops is not None:
                sub = crops.restrict(keep)
                if len(sub) < len(crops):
                    sub.notes.append(f"{len(crops) - len(sub)} {part} crops of classes with no training crop "
                                     f"({', '.join(missing)}) were left out")
                setattr(out, part, sub if len(sub) else None)
        out.train.notes.append(f"not labelled yet (no training crop): {', '.join(missing)}; the model calls only "
                               f"{', '.join(keep)}")
        return out


def open_curated_set(folder):
    """The curated set in ``folder``, refused in plain words when the folder holds none."""
    from ..data.curated.store import CuratedSet

    root = Path(str(folder))
    if not str(folder).strip() or not (root / "settings.json").is_file():
        raise InputError(f"{folder or 'no folder'} is not a curated set (no settings.json): choose the folder the "
                         "Annotate dock (or yeast-phenotypes curate) writes into")
    return CuratedSet.read(root)  # a reader: no lock wanted, so a read-only set or one being curated is read


def training_data(*, curated=None, train=None, val=None, test=None, class_names=None) -> TrainingData:
    """The crops of a training, from a curated set or from folders (exactly one of ``curated`` and ``train``).

    Parameters
    ----------
    curated
        A curated set's folder: its ``train`` split learns; its ``val`` split (or ``val``, a folder,
        when given) chooses the epoch; its ``test`` split, if any, gives the final figures.
    train, val, test
        Folders of crops (a curated set's split, or ``<class>/<crop>`` images made elsewhere).
    class_names
        The classes of folders of crops made elsewhere (a curated set names its own).
    """
    if (curated is None) == (train is None):
        raise InputError("say what to train on: a curated set, or a folder of training crops (exactly one)")
    if curated is not None:
        cs = open_curated_set(curated)
        splits = set(cs.trainable()["split"])
        data = TrainingData(cs.load_split("train"), None, None, cs.crop_settings,
                            {"train": f"{cs.root}/train"})
        if val:
            data.val, settings = load_crop_folder(val, cs.class_names)
            _same_settings(val, settings, cs.crop_settings, cs.root)
            data.sources["val"] = str(val)
        elif "val" in splits:
            data.val, data.sources["val"] = cs.load_split("val"), f"{cs.root}/val"
        if test:
            data.test, settings = load_crop_folder(test, cs.class_names)
            _same_settings(test, settings, cs.crop_settings, cs.root)
            data.sources["test"] = str(test)
        elif "test" in splits:
            data.test, data.sources["test"] = cs.load_split("test"), f"{cs.root}/test"
        return data
    train_set, settings = load_crop_folder(train, class_names)
    data = TrainingData(train_set, None, None, settings, {"train": str(train)})
    for part, folder in (("val", val), ("test", test)):
        if folder:
            crops, other = load_crop_folder(folder, class_names)
            _same_settings(folder, other, settings, train)
            setattr(data, part, crops)
            data.sources[part] = str(folder)
    return data


def _describe_set(crops: CropSet | None) -> dict | None:
    if crops is None:
        return None
    from ..network.train_splits import training_set_fingerprint

    return {**training_set_fingerprint(crops), "origin": crops.origin}


def train_model_iter(data: TrainingData, config: TrainConfig | None = None, out=None, *, overwrite: bool = False,
                     should_stop: Callable[[], bool] | None = None, notes: Callable[[str], None] | None = None,
                     previous=None, labelled_only: bool = True) -> Generator[dict, None, object]:
    """Train on ``data`` (:func:`training_data`); yields progress dicts, returns the best ``Classifier``.

    ``labelled_only``: the model calls only the classes that have training crops
    (:meth:`TrainingData.labelled_only`); the others are named in the record and the report.

    The best epoch goes to ``out`` (checked writable before any epoch), its record beside it
    (:func:`~.record.record_path`). ``should_stop()`` is asked after every batch (a dock's Cancel):
    the best epoch so far is kept. ``notes`` receives what the user should know (what was done to
    external crops, what the final figures are computed on). ``previous``: a model (file or
    ``Classifier``) judged on the same crops, for comparison; one that cannot be read is not
    compared (and said).
    """
    from ..network.train import train_iter

    config = config or TrainConfig()
    say = notes or (lambda _m: None)
    if out is not None:
        check_writable_file(out, overwrite)
    if labelled_only:
        data = data.labelled_only()
    record = RunRecord("train", config, not_labelled=list(data.not_labelled),
                       inputs={**data.sources, "train_set": _describe_set(data.train),
                               "val_set": _describe_set(data.val), "test_set": _describe_set(data.test)})
    prev = None
    if previous is not None:
        try:
            prev = load_model(previous)[0]
        except InputError as exc:
            say(f"note: the previous model is not compared: {exc}")
    for note in data.train.notes:
        say(f"note: {note}")
    say(f"training on {len(data.train)} crops " + ", ".join(f"{k} {v}" for k, v in data.train.counts().items()))
    clf = yield from train_iter(data.train, data.val, config, data.settings, out, should_stop, test=data.test,
                                previous=prev, metadata={"not_labelled": list(data.not_labelled)})
    for note in clf.metadata["report"]["notes"]:
        say(f"note: {note}")
    if out is not None:
        from ..files.fingerprint import model_fingerprint

        meta = clf.metadata
        write_record(record_path(out), record.finish(
            model=model_fingerprint(out, clf.class_names), best_epoch=meta.get("best_epoch"),
            stopped=meta.get("stopped"), report={k: meta["report"].get(k) for k in ("on", "optimistic", "n",
                                                                                    "metrics", "comparison")}))
    return clf


def train_model(train_dir=None, val_dir=None, config: TrainConfig | None = None, out=None, *, class_names=None,
                overwrite: bool = False, progress=None, notes: Callable[[str], None] | None = None,
                test_dir=None, previous=None, curated=None):
    """Train on a curated set (``curated``) or a crop folder (validation on another, never augmented) to the
    end; the best epoch goes to ``out``. See :func:`train_model_iter`."""
    if out is not None:
        check_writable_file(out, overwrite)  # before any crop is read
    data = training_data(curated=curated, train=train_dir, val=val_dir, test=test_dir, class_names=class_names)
    return run_to_end(train_model_iter(data, config, out, overwrite=True, notes=notes, previous=previous),
                      progress)


def crossval_data(*, curated=None, data_dir=None, class_names=None) -> tuple[CropSet, CropSettings, str]:
    """The crops a cross-validation pools: every labelled crop of a curated set (train and val splits), or a
    crop folder; their settings and where they came from."""
    if (curated is None) == (data_dir is None):
        raise InputError("say what to cross-validate on: a curated set, or a folder of crops (exactly one)")
    if curated is not None:
        cs = open_curated_set(curated)
        splits = [s for s in ("train", "val") if s in set(cs.trainable()["split"])]
        if not splits:
            raise InputError(f"the curated set in {cs.root} has no labelled crops in train or val yet")
        return CropSet.concat([cs.load_split(s) for s in splits]), cs.crop_settings, f"{cs.root} ({', '.join(splits)})"
    crops, settings = load_crop_folder(data_dir, class_names)
    return crops, settings, str(data_dir)


def crossvalidate(data_dir=None, folds: int = 5, config: TrainConfig | None = None, *, class_names=None, out=None,
                  overwrite: bool = True, progress=None, by: str = "auto", random_split: bool = True,
                  curated=None) -> dict:
    """Grouped k-fold (or leave-one-experiment-out) cross-validation on a crop folder or a whole curated set,
    with a random split beside it; the figures (and the record, under ``"run"``) go to ``out`` (JSON) if given."""
    from ..network.crossval import crossval

    if out is not None:
        check_writable_file(out, overwrite)
    config = config or TrainConfig()
    data, settings, source = crossval_data(curated=curated, data_dir=data_dir, class_names=class_names)
    record = RunRecord("crossval", config, inputs={"data": source, "crops": _describe_set(data)},
                       folds=folds, by=by)
    res = crossval(data, folds, config, settings, progress=progress, by=by, random_split=random_split)
    res["run"] = record.finish()
    if out is not None:
        with atomic_write(out) as fh:
            json.dump(res, fh, indent=2)
    return res


def learning_curve_job(train_dir=None, val_dir=None, per_class=(5, 10, 20, 40), config: TrainConfig | None = None,
                       *, class_names=None, out=None, overwrite: bool = True, progress=None, curated=None) -> dict:
    """Validation macro-F1 against labelled crops per class (see
    :func:`~napari_yeast_phenotypes.core.network.crossval.learning_curve`), from a curated set (its train and val
    splits) or two folders; ``{"points": [...], "run": {...}}``, also written to ``out`` (JSON) if given."""
    from ..network.crossval import learning_curve

    if out is not None:
        check_writable_file(out, overwrite)
    config = config or TrainConfig()
    data = training_data(curated=curated, train=train_dir, val=val_dir, class_names=class_names)
    if data.val is None:
        raise InputError("the learning curve needs validation crops: a val split in the curated set, or --val")
    record = RunRecord("learning-curve", config, inputs=data.sources, per_class=list(per_class))
    curve = learning_curve(data.train, data.val, per_class, config, data.settings, progress)
    res = {"points": curve, "run": record.finish()}
    if out is not None:
        with atomic_write(out) as fh:
            json.dump(res, fh, indent=2)
    return res


__all__ = ["TrainingData", "crossval_data", "crossvalidate", "learning_curve_job", "load_crop_folder",
           "open_curated_set", "train_model", "train_model_iter", "training_data"]
