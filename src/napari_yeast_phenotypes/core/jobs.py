"""The jobs: the units of work that the command line, the napari docks, the benchmark and a cluster
worker all call.

- :func:`classify_movie`: one movie (arrays or files) + a model + a :class:`ClassifyConfig` ->
  a :class:`~napari_yeast_phenotypes.core.schema.Result`, and, given ``out``, a result folder;
- :func:`write_result`: a result folder, whole or not at all: ``cells.csv``, ``tracks.csv``,
  ``summary.png`` and, last, ``run.json`` (how it was made: package version, config, model
  fingerprint, inputs with their sizes and hashes, start and end, the precision and path used);
- :func:`load_crop_folder`: a curated set's split or a plain ImageFolder of crops made elsewhere;
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
from .io import InputError, atomic_write, read_array
from .locking import FileLock
from .progress import run_to_end
from .schema import Result

RESULT_FILES = ("cells.csv", "tracks.csv", "summary.png")
RUN_FILE = "run.json"
LOCK_FILE = ".yeast-phenotypes.lock"
WRITING_MARK = ".yeast-phenotypes.writing"
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

def check_writable_dir(folder: str | os.PathLike, what: str = "--out") -> Path:
    """Create ``folder`` if needed and prove a file can be written there, before any long work."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} exists and is not a folder; choose another {what}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"cannot write into {folder} ({reason}); choose a folder you can write to for {what}") \
            from exc
    return folder


def check_writable_file(path: str | os.PathLike, overwrite: bool, what: str = "--out") -> Path:
    """Refuse an existing file unless ``overwrite``, and prove its folder is writable (before any work)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name for {what} (e.g. {path / 'model.pt'})")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; choose another {what} or pass --overwrite to replace it")
    check_writable_dir(path.parent if str(path.parent) else Path("."), what)
    return path


def result_complete(out: str | os.PathLike) -> bool:
    """Whether ``out`` holds a complete result: ``run.json`` and every file it lists, unchanged."""
    out = Path(out)
    try:
        run = json.loads((out / RUN_FILE).read_text())
        outputs = run["outputs"]
        return bool(outputs) and all(file_sha256(out / name) == meta["sha256"] for name, meta in outputs.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _existing_results(out: Path) -> list[str]:
    """Result files already in ``out`` that a new run must not replace silently."""
    if (out / WRITING_MARK).exists():
        return []  # an interrupted write: nothing complete to protect, the new run replaces it
    return [n for n in (*RESULT_FILES, RUN_FILE) if (out / n).exists()]


class ResultFolder:
    """Exclusive, all-or-nothing writing of one result folder (a ``with`` block).

    On entry: the folder is created and checked writable, its lock taken (a second writer is
    refused at once), and earlier complete results refused unless ``overwrite``. :meth:`commit`
    moves the files written into :attr:`staging` into place, ``run.json`` last; a job that fails
    or is killed before that leaves the earlier results as they were (or, killed during the moves,
    a folder without ``run.json`` that the next run may replace).
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False, what: str = "classify"):
        self.out, self.overwrite, self.what = Path(out), overwrite, what
        self._lock: FileLock | None = None
        self.staging: Path | None = None
        self._created = self._committed = False

    def __enter__(self) -> ResultFolder:
        self._created = not self.out.exists()
        check_writable_dir(self.out)
        self._lock = FileLock(self.out / LOCK_FILE, timeout=0, what=f"yeast-phenotypes {self.what}").acquire()
        try:
            existing = _existing_results(self.out)
            if existing and not self.overwrite:
                raise InputError(
                    f"{self.out} already holds results ({', '.join(existing)}); choose another --out, or "
                    "pass --overwrite to replace them"
                )
            self.staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.out))
        except BaseException:
            self._lock.release()
            raise
        return self

    def commit(self, run: dict) -> None:
        """Move the staged files into place (``run.json`` last, listing their hashes)."""
        staged = sorted(p.name for p in self.staging.iterdir())
        run = {**run, "outputs": {n: {"bytes": (self.staging / n).stat().st_size,
                                      "sha256": file_sha256(self.staging / n)} for n in staged}}
        with atomic_write(self.out / WRITING_MARK) as fh:
            fh.write(_now() + "\n")
        try:
            os.unlink(self.out / RUN_FILE)
        except FileNotFoundError:
            pass
        for old in RESULT_FILES:  # an earlier run's file that this run does not write must not stay beside it
            if old not in staged and (self.out / old).exists():
                os.replace(self.out / old, self.staging / f"replaced-{old}")
        for name in staged:
            os.replace(self.staging / name, self.out / name)
        with atomic_write(self.out / RUN_FILE) as fh:
            json.dump(run, fh, indent=2, default=str)
        os.unlink(self.out / WRITING_MARK)
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
    """A :class:`~napari_yeast_phenotypes.core.model.Classifier` from a file (or as given) and its file."""
    from .model import Classifier, load_classifier

    if isinstance(model, Classifier):
        return model, None
    return load_classifier(model, class_names, trust=trust), Path(model)


def external_crops_warning(clf) -> str | None:
    """The plain-words warning for a model trained on crops made elsewhere, or ``None``."""
    if not clf.external_crops:
        return None
    how = (clf.metadata.get("crop_origin") or {}).get("normalisation", "unknown normalisation")
    return EXTERNAL_CROPS_WARNING.format(how=how)


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

    write_tables(result.cells, result.tracks, folder.staging, result.class_names)
    save_summary(result.cells, result.tracks, folder.staging / "summary.png", result.class_names, title=title)
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


def train_model(train_dir, val_dir=None, config: TrainConfig | None = None, out=None, *, class_names,
                overwrite: bool = False, progress=None, notes: Callable[[str], None] | None = None):
    """Train on a crop folder (validation on another, never augmented); the best epoch goes to ``out``.

    ``out`` is checked writable before any crop is read or epoch run. ``notes`` receives what the
    user should know (what was done to external crops, the lack of a validation set).
    """
    from .train import train

    config = config or TrainConfig()
    say = notes or (lambda _m: None)
    if out is not None:
        check_writable_file(out, overwrite)
    train_set, settings = load_crop_folder(train_dir, class_names)
    val_set = None
    if val_dir:
        val_set, val_settings = load_crop_folder(val_dir, class_names)
        if val_settings != settings:
            raise InputError(f"{val_dir} holds crops made with other crop settings than {train_dir}; "
                             "train and validate on crops made the same way")
    for note in train_set.notes:
        say(f"note: {note}")
    say(f"training on {len(train_set)} crops " + ", ".join(f"{k} {v}" for k, v in train_set.counts().items()))
    if val_set is None:
        say("note: no validation set: the figures below are on the training data, which flatter. Keep a "
            "hand-curated validation set of difficult cells from other experiments.")
    return train(train_set, val_set, config, settings, out=out, progress=progress)


def crossvalidate(data_dir, folds: int, config: TrainConfig | None = None, *, class_names, out=None,
                  overwrite: bool = True, progress=None) -> dict:
    """Grouped k-fold cross-validation on a crop folder; the metrics go to ``out`` (JSON) if given."""
    from .train import crossval

    if out is not None:
        check_writable_file(out, overwrite)
    data, settings = load_crop_folder(data_dir, class_names)
    res = crossval(data, folds, config or TrainConfig(), settings, progress=progress)
    if out is not None:
        with atomic_write(out) as fh:
            json.dump(res, fh, indent=2)
    return res


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


__all__ = ["ClassifyConfig", "ClassifyJob", "ResultFolder", "TrainConfig", "check_writable_dir",
           "check_writable_file", "classify_movie", "classify_movie_iter", "crossvalidate", "curate_movie",
           "external_crops_warning",
           "load_crop_folder", "load_model", "result_complete", "train_model", "write_result"]
