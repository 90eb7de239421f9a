"""The jobs: the units of work that the command line, the napari docks, the benchmark and a cluster
worker all call.

- :func:`classify_movie`: one movie (arrays or files) + a model + a :class:`ClassifyConfig` ->
  a :class:`~napari_yeast_phenotypes.core.schema.Result`, and, given ``out``, a result folder;
- :func:`write_result`: a result folder, whole or not at all: ``cells.csv``, ``tracks.csv``,
  ``summary.png`` and, last, ``run.json`` (how it was made: package version, config, model
  fingerprint, inputs with their sizes and hashes, start and end, the precision and path used);
- :func:`load_crop_folder`: a curated set's split or a plain ImageFolder of crops made elsewhere;
- :func:`fit_track_model_job`: the track model of a classified result folder, fitted on a
  person's labels (the curated set's rows of that movie, or a CSV) or by EM without labels;
- :func:`train_model`, :func:`crossvalidate`, :func:`curate_movie`: the other jobs of the CLI.

A result folder is complete when its ``run.json`` is there and the files it lists have the
hashes it records (:func:`result_complete`). While a job writes into a folder it holds the
folder's lock, so a second job into the same folder is refused instead of mixing the two.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Generator

from .. import __version__
from .config import ClassifyConfig, TrainConfig
from .fingerprint import array_sha256, describe_file, file_sha256, model_fingerprint
from .io import (
    WRITE_ERRNOS,
    InputError,
    _fsync_dir,
    atomic_write,
    check_writable_dir,
    check_writable_file,
    read_array,
    write_error,
)
from .locking import FileLock
from .progress import run_to_end
from .schema import Result
from .track_model import MIN_LABELLED_TRACKS

RESULT_FILES = ("cells.csv", "tracks.csv", "summary.png")
RUN_FILE = "run.json"
LOCK_FILE = ".yeast-phenotypes.lock"
WRITING_MARK = ".yeast-phenotypes.writing"
PREVIOUS = ".previous"  # inside a staging folder: the earlier result, while a commit replaces it
EXTERNAL_CROPS_WARNING = (
    "this model learnt from crops made elsewhere ({how}), not by this package's crop function: the "
    "crops of this movie may not look like the ones it was trained on (scale, margin, intensity range), "
    "so its calls may be off. Train it on a curated set made by `yeast-phenotypes curate` or the "
    "viewer's Annotate dock to be sure."
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ClassifyJob:
    """What :func:`classify_movie` returns: the result, the folder written, how it was made."""

    result: Result
    out: Path | None
    run: dict
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- output folders

def result_complete(out: str | os.PathLike, run_file: str = RUN_FILE) -> bool:
    """Whether ``out`` holds a complete result: ``run.json`` and every file it lists, unchanged."""
    out = Path(out)
    try:
        run = json.loads((out / run_file).read_text())
        outputs = run["outputs"]
        return bool(outputs) and all(file_sha256(out / name) == meta["sha256"] for name, meta in outputs.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _existing_results(out: Path, files=RESULT_FILES, run_file: str = RUN_FILE) -> list[str]:
    """Result files already in ``out`` that a new run must not replace silently."""
    if (out / WRITING_MARK).exists():
        return []  # an interrupted write: nothing complete to protect, the new run replaces it
    return [n for n in (*files, run_file) if (out / n).exists()]


def _plain_name(name) -> bool:
    return isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..")


def _read_mark(out: Path) -> dict:
    """The mark of an interrupted commit; names that are not plain file names in ``out`` are dropped."""
    try:
        mark = json.loads((out / WRITING_MARK).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(mark, dict):
        return {}
    if not (_plain_name(mark.get("staging")) and str(mark["staging"]).startswith(".staging-")):
        mark.pop("staging", None)
    if not (isinstance(mark.get("files"), list) and all(_plain_name(n) for n in mark["files"])
            and _plain_name(mark.get("run_file"))):
        mark.pop("files", None)
    return mark


def recover_result_folder(out: str | os.PathLike, files=RESULT_FILES, run_file: str = RUN_FILE) -> str | None:
    """Undo a commit that was interrupted (a killed or failed job); call it holding the folder's lock.

    A commit first moves the earlier results aside (``run.json`` first, so the folder stops looking
    complete at once), then moves the new files in, then writes ``run.json``; the mark file says
    which phase it was in. Interrupted before ``run.json``, the new files go and the earlier results
    come back, whole, as they were. Returns what was done (``None`` when there was nothing to do).
    Staging folders of dead jobs are removed.
    """
    out = Path(out)
    done = None
    if (out / WRITING_MARK).exists():
        mark = _read_mark(out)
        if "files" in mark:
            files, run_file = mark["files"], mark["run_file"]  # the interrupted job's own
        names = [*files, run_file]
        previous = out / str(mark.get("staging", "")) / PREVIOUS if mark.get("staging") else None
        if mark.get("phase") == "in" and result_complete(out, run_file):
            done = "finished"  # killed after run.json: the new result is whole
        else:
            if mark.get("phase") != "aside":
                # moving new files in (or a mark of unknown form): what is in place is not a whole result
                for name in names:
                    try:
                        os.unlink(out / name)
                    except FileNotFoundError:
                        pass
            restored = []
            if previous is not None and previous.is_dir():
                for p in sorted(previous.iterdir(), key=lambda p: p.name == run_file):  # run.json last
                    os.replace(p, out / p.name)
                    restored.append(p.name)
            done = "restored" if restored else "removed"
        _fsync_dir(out)
        os.unlink(out / WRITING_MARK)
    for stale in out.glob(".staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return done


class ResultFolder:
    """Exclusive, all-or-nothing writing of one result folder (a ``with`` block).

    On entry: the folder is created and checked writable, its lock taken (a second writer is
    refused at once), a commit that an earlier job left unfinished undone
    (:func:`recover_result_folder`), and earlier complete results refused unless ``overwrite``.
    :meth:`commit` moves the files written into :attr:`staging` into place, ``run.json`` last; a
    job that fails or is killed before that leaves the earlier results as they were (killed during
    the moves: a folder without ``run.json``, which the next job restores).

    ``files`` and ``run_file`` name a job's outputs and its record (``simulate`` writes a movie).
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False, what: str = "classify",
                 files=RESULT_FILES, run_file: str = RUN_FILE):
        self.out, self.overwrite, self.what = Path(out), overwrite, what
        self.files, self.run_file = tuple(files), run_file
        self._lock: FileLock | None = None
        self.staging: Path | None = None
        self._created = self._committed = False

    def __enter__(self) -> ResultFolder:
        self._created = not self.out.exists()
        check_writable_dir(self.out)
        self._lock = FileLock(self.out / LOCK_FILE, timeout=0, what=f"yeast-phenotypes {self.what}").acquire()
        try:
            recover_result_folder(self.out, self.files, self.run_file)
            existing = _existing_results(self.out, self.files, self.run_file)
            if existing and not self.overwrite:
                raise InputError(
                    f"{self.out} already holds results ({', '.join(existing)}); choose another --out, or "
                    "pass --overwrite to replace them"
                )
            self.staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.out))
        except OSError as exc:
            self._lock.release()
            raise write_error(self.out, exc) from exc
        except BaseException:
            self._lock.release()
            raise
        return self

    def _mark(self, phase: str) -> None:
        with atomic_write(self.out / WRITING_MARK) as fh:
            json.dump({"staging": self.staging.name, "phase": phase, "files": list(self.files),
                       "run_file": self.run_file, "pid": os.getpid(), "since": _now()}, fh)

    def commit(self, run: dict) -> None:
        """Move the staged files into place (``run.json`` last, listing their hashes)."""
        staged = sorted(p.name for p in self.staging.iterdir() if not p.name.startswith("."))
        try:
            run = {**run, "outputs": {n: {"bytes": (self.staging / n).stat().st_size,
                                          "sha256": file_sha256(self.staging / n)} for n in staged}}
            previous = self.staging / PREVIOUS
            previous.mkdir()
            self._mark("aside")
            # the earlier result leaves first, its run.json before the rest: the folder never holds
            # new files beside old ones, nor a run.json that does not describe the files beside it
            for name in (self.run_file, *self.files):
                if (self.out / name).exists():
                    os.replace(self.out / name, previous / name)
            self._mark("in")
            for name in staged:
                os.replace(self.staging / name, self.out / name)
            with atomic_write(self.out / self.run_file) as fh:
                json.dump(run, fh, indent=2, default=str)
            _fsync_dir(self.out)
            os.unlink(self.out / WRITING_MARK)
        except BaseException as exc:
            if (self.out / WRITING_MARK).exists():
                recover_result_folder(self.out, self.files, self.run_file)  # the earlier result comes back
            if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
                raise write_error(self.out, exc) from exc
            raise
        self._committed = True

    def __exit__(self, *exc) -> None:
        try:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self._lock.release()
        # a folder this job made and filled with nothing goes again
        if self._created and not self._committed and not [p for p in self.out.iterdir() if p.name != LOCK_FILE]:
            shutil.rmtree(self.out, ignore_errors=True)


# ---------------------------------------------------------------------------- classification

def _as_input(x, name: str, inputs: dict):
    """An array from an array or a file name; the file's description goes into ``inputs``."""
    if isinstance(x, (str, os.PathLike)):
        arr = read_array(x, lazy=True)
        inputs[name] = describe_file(x)
        inputs[name].update(shape=list(arr.shape), dtype=str(arr.dtype))
        return arr
    return x


def _describe_array(arr, name: str) -> dict:
    return {"name": name, "shape": [int(s) for s in arr.shape], "dtype": str(arr.dtype), "sha256": array_sha256(arr)}


def load_model(model, class_names=None, trust: bool = False):
    """A :class:`~napari_yeast_phenotypes.core.model.Classifier` from a file (or as given) and its file.

    A loaded classifier names its file by a ``source_path`` attribute where it has one (a cluster
    worker loads the model once and reuses it), so ``run.json`` still records the file's hash.
    """
    from .model import Classifier, load_classifier

    if isinstance(model, Classifier):
        return model, getattr(model, "source_path", None)
    return load_classifier(model, class_names, trust=trust), Path(model)


def external_crops_warning(clf) -> str | None:
    """The plain-words warning for a model trained on crops made elsewhere, or ``None``."""
    if not clf.external_crops:
        return None
    how = (clf.metadata.get("crop_origin") or {}).get("normalisation", "unknown normalisation")
    return EXTERNAL_CROPS_WARNING.format(how=how)


def ood_report(result: Result, clf) -> dict:
    """How unlike the model's training data this movie is (:func:`~napari_yeast_phenotypes.core.ood.movie_report`),
    with a plain-words ``warning`` when a large share of its cells is outside; for ``run.json``."""
    from .ood import movie_report

    cells = result.cells
    if getattr(clf, "ood", None) is None or "ood_score" not in cells:
        return {"available": False, "warning": None,
                "why": "the model keeps no summary of its training data (trained before this version, or a bare "
                       "state dict), so whether this movie is like it cannot be said"}
    return movie_report(cells["ood_score"].to_numpy(), cells["track_id"].to_numpy(), summary=clf.ood)


def classify_movie(image, labels, model, config: ClassifyConfig | None = None, out=None, *,
                   overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                   class_names=None, trust: bool = False, title: str | None = None,
                   names: dict | None = None) -> ClassifyJob:
    """Classify one movie; with ``out``, write its result folder (see :func:`write_result`).

    Parameters
    ----------
    image, labels
        Arrays ((T, Y, X), (Y, X), or (T, C, Y, X) with ``config.channel``; numpy, dask, memory
        maps) or file names (TIFF or .npy, read lazily).
    model
        A checkpoint file or a loaded ``Classifier``.
    config
        How to classify (:class:`ClassifyConfig`; the defaults when ``None``).
    out
        Result folder, or ``None`` to only return the result. It is checked (writable, not in
        use, no earlier results unless ``overwrite``) before the movie is read.
    progress
        ``callback(frames_done, n_frames)``.
    names
        Names of array inputs for ``run.json`` (e.g. the napari layers'): ``{"image": ..., "labels": ...}``.
    """
    return run_to_end(classify_movie_iter(image, labels, model, config, out, overwrite=overwrite,
                                          class_names=class_names, trust=trust, title=title, names=names),
                      progress)


def classify_movie_iter(image, labels, model, config: ClassifyConfig | None = None, out=None, *,
                        overwrite: bool = False, class_names=None, trust: bool = False, title: str | None = None,
                        names: dict | None = None) -> Generator[tuple[int, int], None, ClassifyJob]:
    """:func:`classify_movie` as a generator of ``(frames_done, n_frames)`` (for a napari ``thread_worker``)."""
    from .pipeline import analyse_iter

    config = config or ClassifyConfig()
    started, t0 = _now(), time.perf_counter()
    inputs: dict = {}
    image = _as_input(image, "image", inputs)  # opened lazily: quick, and a missing file is said at once
    labels = _as_input(labels, "labels", inputs)
    clf, model_path = load_model(model, class_names, trust)
    config.timeline.check_classes(len(clf.class_names))  # a track model fitted for other classes: said at once
    folder = ResultFolder(out, overwrite) if out is not None else None
    if folder is not None:
        folder.__enter__()  # before the long work: an unusable --out is said at once
    try:
        notes = []
        warning = external_crops_warning(clf)
        if warning:
            notes.append(warning)
            warnings.warn(warning, UserWarning, stacklevel=2)
        result = yield from analyse_iter(image, labels, clf, config)
        ood = ood_report(result, clf)
        if ood.get("warning"):
            notes.append(ood["warning"])
            warnings.warn(ood["warning"], UserWarning, stacklevel=2)
        for key, arr in (("image", image), ("labels", labels)):
            if key not in inputs:
                inputs[key] = _describe_array(arr, (names or {}).get(key, key))
        attrs = result.cells.attrs
        run = {
            "package": "napari-yeast-phenotypes",
            "version": __version__,
            "job": "classify",
            "config": config.to_dict(),
            "model": model_fingerprint(model_path, clf.class_names),
            "inputs": inputs,
            "started": started,
            "finished": _now(),
            "seconds": round(time.perf_counter() - t0, 3),
            "inference": attrs.get("inference", {}),
            "relinked": bool(attrs.get("relinked", False)),
            "movie_stats": attrs.get("movie_stats"),
            "crop_settings": clf.crop_settings.to_dict(),
            "ood": ood,
            "warnings": notes,
        }
        if folder is not None:
            _write_into(folder, result, run, title or str(inputs["image"].get("name", "")))
        return ClassifyJob(result, folder.out if folder else None, run, notes)
    finally:
        if folder is not None:
            folder.__exit__(*sys.exc_info())


def _write_into(folder: ResultFolder, result: Result, run: dict, title: str) -> None:
    from .export import write_tables
    from .plots import save_summary

    try:
        write_tables(result.cells, result.tracks, folder.staging, result.class_names)
        save_summary(result.cells, result.tracks, folder.staging / "summary.png", result.class_names, title=title)
    except OSError as exc:  # a full disk, mostly: said in plain words; the earlier result stays
        if exc.errno in WRITE_ERRNOS:
            raise write_error(folder.out, exc) from exc
        raise
    folder.commit(run)


def write_result(result: Result, out, run: dict | None = None, *, overwrite: bool = False, title: str = "") -> Path:
    """Write a result folder whole: ``cells.csv``, ``tracks.csv``, ``summary.png``, then ``run.json``.

    ``run`` is what :func:`classify_movie` records (the viewer passes what it knows); the
    package version, the end time and the outputs' hashes are added here.
    """
    run = {"package": "napari-yeast-phenotypes", "version": __version__, "job": "classify",
           **(run or {}), "finished": _now()}
    with ResultFolder(out, overwrite) as folder:
        _write_into(folder, result, run, title)
    return Path(out)


# ---------------------------------------------------------------------------- crop sets and training

def load_crop_folder(path, class_names):
    """A curated set's split (manifest-backed) or a plain ImageFolder, with the crop settings its
    crops were made with (the curated set's own; the defaults for a plain folder, whose crops are
    marked external in ``CropSet.origin``)."""
    from .cropfolder import load_image_folder
    from .crops import CropSettings
    from .curated import CuratedSet

    path = Path(path)
    if (path.parent / "manifest.csv").exists() and (path.parent / "settings.json").exists():
        cs = CuratedSet(path.parent)
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
    from .train import train

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
    from .train import crossval

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
    from .train import learning_curve

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


def curate_movie(image, labels, annotations, out, *, experiment: str | None = None, annotator: str = "",
                 channel: int | None = None):
    """Add a movie's annotated cells to the curated set in ``out``; returns ``(set, report)``.

    The movie is known in the set by its content (:func:`~napari_yeast_phenotypes.core.curated.movie_identity`);
    its path and ``experiment`` are kept as provenance. ``report`` is an
    :class:`~napari_yeast_phenotypes.core.curated.AddReport` (added, already there, conflicts).
    """
    from .curated import CuratedSet, crops_for_annotations, movie_identity, read_annotations
    from .io import as_movie

    image_path = Path(image) if isinstance(image, (str, os.PathLike)) else None
    image, labels = as_movie(_as_input(image, "image", {}), _as_input(labels, "labels", {}), channel=channel)
    ann = read_annotations(annotations)
    cs = CuratedSet(out)  # a new set takes the default crop settings, an existing one keeps its own
    source = image_path.name if image_path else "movie"
    crops, rows = crops_for_annotations(image, labels, ann, cs.crop_settings, source=source,
                                        experiment=experiment or (image_path.resolve().parent.name if image_path
                                                                  else ""),
                                        movie_id=movie_identity(image, labels),
                                        movie_path=str(image_path.resolve()) if image_path else "")
    report = cs.add(crops, rows, annotator=annotator)
    return cs, report



# ---------------------------------------------------------------------------- the track model of a result


def read_result_folder(result_dir) -> tuple:
    """The cell table (``cells.csv``), ``run.json`` and class names of a complete result folder.

    Raises
    ------
    InputError
        Not a folder, or not a complete result (no ``run.json``, a file changed since it was
        written, an interrupted write), or a table without the probability columns.
    """
    import pandas as pd

    from .schema import prob_columns

    folder = Path(result_dir)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give the result folder of a classified movie (what "
                         "yeast-phenotypes classify wrote with --out, or the Classify dock exported)")
    if not result_complete(folder):
        why = ("it has no run.json" if not (folder / RUN_FILE).exists() else
               "its files are not the ones its run.json lists: changed since, or an interrupted write")
        raise InputError(f"{folder} is not a complete result folder ({why}); classify the movie into it again")
    run = json.loads((folder / RUN_FILE).read_text())
    if "cells.csv" not in (run.get("outputs") or {}):
        raise InputError(f"{folder} holds no cells.csv of a classified movie (is it a classify-many folder? give "
                         "one of its movies/<movie> folders)")
    cells = pd.read_csv(folder / "cells.csv")
    names = (run.get("model") or {}).get("class_names") or [c[2:] for c in cells.columns if c.startswith("p_")]
    missing = [c for c in ("track_id", "frame", "label", *prob_columns(names)) if c not in cells.columns]
    if missing:
        raise InputError(f"{folder / 'cells.csv'} lacks the columns {missing[:5]}; it is not a cells.csv written by "
                         "this package")
    return cells, run, tuple(names)


def result_movie_id(run: dict) -> str:
    """The content identity of the movie a result was classified from, as the curated set knows it.

    From the movie's files named in ``run.json`` (checked unchanged by their SHA-256), read as the
    pipeline read them (``config.channel``); for a movie classified from arrays (the viewer's
    layers), from the arrays' hashes that ``run.json`` records.
    """
    from .curated import identity_from_hashes, movie_identity

    inputs = run.get("inputs") or {}
    image, labels = inputs.get("image") or {}, inputs.get("labels") or {}
    channel = (run.get("config") or {}).get("channel")
    if image.get("path") and labels.get("path"):
        for what, d in (("image", image), ("labels", labels)):
            p = Path(d["path"])
            if not p.is_file():
                raise InputError(f"the movie's {what} file {p} (named in run.json) is not there any more, so which "
                                 "movie of the curated set this is cannot be told; put it back, or give the labels "
                                 "with --labels CSV (frame, label, phenotype)")
            if d.get("sha256") and file_sha256(p) != d["sha256"]:
                raise InputError(f"the movie's {what} file {p} changed since it was classified; classify it again, "
                                 "or give the labels with --labels CSV (frame, label, phenotype)")
        from .io import as_movie

        img, lab = as_movie(read_array(image["path"], lazy=True), read_array(labels["path"], lazy=True),
                            channel=channel)
        return movie_identity(img, lab)
    shapes = [d.get("shape") or [] for d in (image, labels)]
    if image.get("sha256") and labels.get("sha256") and channel is None and all(len(s) == 3 for s in shapes):
        # arrays were hashed as they were given, and a (T, Y, X) pair is the movie as the curated set hashes it
        return identity_from_hashes(image["sha256"], labels["sha256"])
    raise InputError("run.json does not say which movie was classified (no input files, or a single frame or a "
                     "channel of arrays), so its labels cannot be found in the curated set; give them with "
                     "--labels CSV (frame, label, phenotype)")


def labels_of_result(run: dict, class_names, *, curated=None, labels=None):
    """A person's labels of a result's movie (``frame, label, phenotype``) and where they came from.

    ``curated``: a curated set's folder, whose rows of this movie (by content) are taken, marked
    cells left out; ``labels``: a CSV of ``frame, label, phenotype``.
    """
    from .curated import CuratedSet, read_annotations

    if labels is not None:
        ann = read_annotations(labels, tuple(class_names))  # unknown classes refused, naming the valid ones
        ann = ann[ann["mark"] == ""]
        return ann[["frame", "label", "phenotype"]].reset_index(drop=True), f"{labels}"
    root = Path(curated)
    if not (root / "settings.json").is_file():
        raise InputError(f"{root} is not a curated set (no settings.json): give the folder that the Annotate dock "
                         "or yeast-phenotypes curate writes into")
    cs = CuratedSet(root)
    other = sorted(set(cs.class_names) - set(class_names))
    if other:
        raise InputError(f"the curated set in {root} has the classes {', '.join(other)}, which the model of this "
                         f"result does not ({', '.join(class_names)}); use the set made for this model's classes")
    movie = result_movie_id(run)
    rows = cs.labels_of_movie(movie)
    rows = rows[rows["mark"] == ""]
    if rows.empty:
        path = ((run.get("inputs") or {}).get("image") or {}).get("path")
        same_path = int((cs.manifest["movie_path"] == path).sum()) if path else 0
        hint = (f" It has {same_path} labels of a movie at the same path but with other content: were the files "
                "changed after they were labelled?" if same_path else "")
        raise InputError(f"the curated set in {root} has no labels of this movie (movie id {movie}; it has labels of "
                         f"{cs.manifest['movie_id'].nunique()} other movie(s)).{hint} Label some of its tracks in the "
                         "Annotate dock, or give the labels with --labels CSV")
    return rows[["frame", "label", "phenotype"]].reset_index(drop=True), f"curated set {root} (movie id {movie})"


def fit_track_model_job(result_dir, out=None, *, curated=None, labels=None, em: bool = False,
                        overwrite: bool = False, validation_fraction: float = 0.5, seed: int = 0,
                        min_tracks: int = MIN_LABELLED_TRACKS):
    """Fit the track model of a classified movie and write it (JSON, atomically) to ``out``.

    Parameters
    ----------
    result_dir
        A complete result folder (``cells.csv`` and ``run.json`` of ``classify`` or of the
        Classify dock's export).
    out
        The track model file to write, or ``None`` to only return the fit. Checked writable
        (and refused if it exists, unless ``overwrite``) before any work.
    curated, labels, em
        Where the labels come from (exactly one): a curated set's folder (its rows of this
        movie), a CSV of ``frame, label, phenotype``, or ``em=True``: no labels, the transition
        rates fitted by EM on the movie (no validation figures then).
    validation_fraction, seed
        Share of the labelled tracks held out to report on, and the seed of that draw.
    min_tracks
        Fewest labelled tracks accepted.

    Returns
    -------
    TrackModelFit
        Its ``report`` has ``method`` (``labels`` or ``em``), the validation figures (with
        labels) and ``fitted_on`` (the result, the labels' source, the model).

    Raises
    ------
    InputError
        No labels of this movie, fewer than ``min_tracks`` labelled tracks, class names that are
        not the model's, a result folder that is not complete, or an unusable ``out``.
    """
    from .track_model import TrackModelFit, fit_em, fit_track_model, require_labelled_tracks, save_track_model

    if sum((curated is not None, labels is not None, bool(em))) != 1:
        raise InputError("say where the labels come from: a curated set (--curated DIR), a CSV of frame, label, "
                         "phenotype (--labels CSV), or none (--em: rates fitted on the movie); exactly one of them")
    if out is not None:
        check_writable_file(out, overwrite)
    cells, run, names = read_result_folder(result_dir)
    if em:
        settings, info = fit_em(cells, names)
        fit = TrackModelFit(settings, {
            "method": "em",
            "em": {"iterations": info["iterations"], "converged": info["converged"],
                   "switch_rate": settings.switch_rate, "senescence_rate": settings.senescence_rate},
            "validation": None,
            "notes": [("fitted without labels: only the transition rates are fitted (the network's probabilities "
                       "are taken as they are), and there are no validation figures: nothing is known to check "
                       "the fit on")]}, names)
        source = "none (EM on the movie)"
    else:
        truth, source = labels_of_result(run, names, curated=curated, labels=labels)
        keys = cells[["frame", "label", "track_id"]]
        known = truth.merge(keys, on=["frame", "label"], how="inner")
        if known.empty:
            raise InputError(f"none of the {len(truth)} labels of {source} names a cell of this movie (frame, label): "
                             "are they the labels of another movie?")
        require_labelled_tracks(int(known["track_id"].nunique()), min_tracks)
        fit = fit_track_model(cells, known[["frame", "label", "phenotype"]], names,
                              validation_fraction=validation_fraction, seed=seed)
        fit.report["method"] = "labels"
        if len(known) < len(truth):
            fit.report["notes"].append(f"{len(truth) - len(known)} of the {len(truth)} labels name no cell of this "
                                       "movie and were left out")
    fit.report["fitted_on"] = {"result": str(Path(result_dir).resolve()), "labels": source,
                               "movie": ((run.get("inputs") or {}).get("image") or {}).get("name"),
                               "model": (run.get("model") or {}).get("fingerprint")}
    if out is not None:
        save_track_model(out, fit)
    return fit


__all__ = ["ClassifyConfig", "ClassifyJob", "MIN_LABELLED_TRACKS", "ResultFolder", "TrainConfig",
           "check_writable_dir", "fit_track_model_job", "read_result_folder", "recover_result_folder",
           "result_movie_id", "labels_of_result",
           "check_writable_file", "classify_movie", "classify_movie_iter", "crossvalidate", "curate_movie",
           "external_crops_warning", "learning_curve_job", "ood_report",
           "load_crop_folder", "load_model", "result_complete", "train_model", "write_result"]
