"""The classify job: one movie (arrays or files) + a model + a
:class:`~napari_yeast_phenotypes.core.config.ClassifyConfig` -> a
:class:`~napari_yeast_phenotypes.core.results.schema.Result`, and, given ``out``, a result folder with
``run.json``."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Generator

from ..config import ClassifyConfig
from ..errors import WRITE_ERRNOS, write_error
from ..files.fingerprint import describe_file, model_fingerprint
from ..progress import run_to_end
from ..results.folder import ResultFolder
from ..results.schema import Result
from .record import BackgroundHashes, RunRecord, _as_input, _describe_array, utc_now

EXTERNAL_CROPS_WARNING = (
    "this model learnt from crops made elsewhere ({how}), not by this package's crop function: the "
    "crops of this movie may not look like the ones it was trained on (scale, margin, intensity range), "
    "so its calls may be off. Train it on a curated set made by `yeast-phenotypes curate` or the "
    "viewer's Annotate dock to be sure."
)


@dataclass
class ClassifyJob:
    """What :func:`classify_movie` returns: the result, the folder written, how it was made."""

    result: Result
    out: Path | None
    run: dict
    warnings: list[str] = field(default_factory=list)


def load_model(model, class_names=None, trust: bool = False):
    """A :class:`~napari_yeast_phenotypes.core.network.model.Classifier` from a file (or as given) and its file.

    A loaded classifier names its file by a ``source_path`` attribute where it has one (a cluster
    worker loads the model once and reuses it), so ``run.json`` still records the file's hash.
    """
    from ..network.checkpoint import load_classifier
    from ..network.model import Classifier

    if isinstance(model, Classifier):
        return model, getattr(model, "source_path", None)
    return load_classifier(model, class_names, trust=trust), Path(model)


def with_track_model(config: ClassifyConfig, track_model, class_names) -> tuple[ClassifyConfig, dict | None]:
    """``config`` with the track model of the file ``track_model`` (``None``: as it is), checked against the
    model's ``class_names``, and the file's description for ``run.json``.

    The one place where a track model file becomes part of a classification: the command line
    (``classify``, ``classify-many``), the Classify dock and the cluster workers all come here. The
    description says what the classification uses, smoothing or the raw calls, and why
    (:func:`~napari_yeast_phenotypes.core.track.track_model_file.track_model_decision`: a file whose
    smoothing lowered agreement on its validation tracks gives the raw calls).
    """
    if track_model is None or str(track_model) in ("", "."):
        return config, None
    from ..track.track_model_file import read_track_model, track_model_decision

    settings, report = read_track_model(track_model, class_names)
    settings, decision = track_model_decision(settings, report)
    return replace(config, timeline=settings), {**describe_file(track_model), **decision}


def check_track_model_file(track_model) -> None:
    """Refuse a file that is no track model at once, before the network is loaded (its classes are checked
    later, against the model's)."""
    if track_model is not None and str(track_model) not in ("", "."):
        from ..track.track_model_file import load_track_model

        load_track_model(track_model)


def external_crops_warning(clf) -> str | None:
    """The plain-words warning for a model trained on crops made elsewhere, or ``None``."""
    if not clf.external_crops:
        return None
    how = (clf.metadata.get("crop_origin") or {}).get("normalisation", "unknown normalisation")
    return EXTERNAL_CROPS_WARNING.format(how=how)


def no_data_warning(left_out: dict | None) -> str | None:
    """The plain-words note for cells left out because most of their pixels are NaN or infinite, or ``None``."""
    if not left_out or not left_out.get("cells"):
        return None
    frames = left_out.get("frames") or []
    shown = ", ".join(map(str, frames[:10])) + (f" and {len(frames) - 10} more" if len(frames) > 10 else "")
    return (f"{left_out['cells']} cell-frame(s) (in frame{'s' * (len(frames) > 1)} {shown}) have most of their pixels "
            "NaN or infinite in the image; they were left out of the tables (their tracks have a gap there) instead "
            "of being classified from a blank crop. A registration or background correction often leaves such "
            "borders; check how the image was made")


def ood_report(result: Result, clf) -> dict:
    """How unlike the model's training data this movie is
    (:func:`~napari_yeast_phenotypes.core.network.ood.movie_report`), with a plain-words ``warning`` when a large
    share of its cells is outside; for ``run.json``."""
    from ..network.ood import movie_report

    cells = result.cells
    if getattr(clf, "ood", None) is None or "ood_score" not in cells:
        return {"available": False, "warning": None,
                "why": "the model keeps no summary of its training data (trained before this version, or a bare "
                       "state dict), so whether this movie is like it cannot be said"}
    return movie_report(cells["ood_score"].to_numpy(), cells["track_id"].to_numpy(), summary=clf.ood)


def classify_movie(image, labels, model, config: ClassifyConfig | None = None, out=None, *,
                   overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                   class_names=None, trust: bool = False, title: str | None = None,
                   names: dict | None = None, track_model=None) -> ClassifyJob:
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
    track_model
        A track model file (``fit-track-model``, the Annotate dock) whose settings replace
        ``config.timeline``; checked against the model's classes, recorded in ``run.json``.
    """
    return run_to_end(classify_movie_iter(image, labels, model, config, out, overwrite=overwrite,
                                          class_names=class_names, trust=trust, title=title, names=names,
                                          track_model=track_model),
                      progress)


def classify_movie_iter(image, labels, model, config: ClassifyConfig | None = None, out=None, *,
                        overwrite: bool = False, class_names=None, trust: bool = False, title: str | None = None,
                        names: dict | None = None, track_model=None
                        ) -> Generator[tuple[int, int], None, ClassifyJob]:
    """:func:`classify_movie` as a generator of ``(frames_done, n_frames)`` (for a napari ``thread_worker``)."""
    from ..pipeline import analyse_iter

    config = config or ClassifyConfig()
    record = RunRecord("classify")
    inputs: dict = {}
    hashes = BackgroundHashes()  # the files' hashes for run.json: made while the movie is classified
    try:
        image = _as_input(image, "image", inputs, hashes)  # opened lazily: quick; a missing file is said at once
        labels = _as_input(labels, "labels", inputs, hashes)
        check_track_model_file(track_model)  # a file that is no track model: said before the network is loaded
        clf, model_path = load_model(model, class_names, trust)
        model_file = hashes.describe(model_path) if model_path is not None else None
        config, track_model_file = with_track_model(config, track_model, clf.class_names)
        config.timeline.check_classes(len(clf.class_names))  # a track model fitted for other classes: said at once
        folder = ResultFolder(out, overwrite) if out is not None else None
    except BaseException:
        hashes.cancel()
        raise
    if folder is not None:
        folder.__enter__()  # before the long work: an unusable --out is said at once
    try:
        # said once, in words, by whoever runs the job (the command line prints them, the dock shows
        # them, classify-many lists them per movie): not as Python warnings with a source line
        notes = []
        warning = external_crops_warning(clf)
        if warning:
            notes.append(warning)
        if track_model_file and track_model_file.get("fell_back"):
            notes.append(f"track model {track_model_file.get('name', track_model)}: {track_model_file['why']}")
        result = yield from _imports_ahead(analyse_iter(image, labels, clf, config), folder is not None)
        hashes.finish()
        blank = no_data_warning(result.cells.attrs.get("cells_without_data"))
        if blank:
            notes.append(blank)
        for key, arr in (("image", image), ("labels", labels)):
            if key not in inputs:
                inputs[key] = _describe_array(arr, (names or {}).get(key, key))
        ood = ood_report(result, clf)
        if ood.get("warning"):
            notes.append(f"{title or inputs['image'].get('name', 'the movie')}: {ood['warning']}")
        attrs = result.cells.attrs
        run = record.finish(
            config=config.to_dict(),
            model=model_fingerprint(model_path, clf.class_names, described=model_file),
            track_model=track_model_file,
            inputs=inputs,
            inference=attrs.get("inference", {}),
            relinked=bool(attrs.get("relinked", False)),
            cells_without_data=attrs.get("cells_without_data"),
            movie_stats=attrs.get("movie_stats"),
            crop_settings=clf.crop_settings.to_dict(),
            ood=ood,
            warnings=notes,
        )
        if folder is not None:
            _write_into(folder, result, run, title or str(inputs["image"].get("name", "")))
        return ClassifyJob(result, folder.out if folder else None, run, notes)
    finally:
        hashes.cancel()
        if folder is not None:
            folder.__exit__(*sys.exc_info())


def _import_plot_libraries() -> None:
    try:
        import lifelines  # noqa: F401
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401
    except Exception:  # noqa: BLE001 - then the import fails again, and is said, where summary.png is drawn
        pass


def _imports_ahead(work: Generator, wanted: bool) -> Generator:
    """``yield from work``, importing what drawing summary.png needs (matplotlib, lifelines: ~1.5 s on 2 cores)
    in a thread once the first frames are done, so that it is ready when the movie is; waited for at the end
    (no import runs in two threads at once)."""
    thread = None
    try:
        while True:
            try:
                value = next(work)
            except StopIteration as stop:
                return stop.value
            if wanted and thread is None and isinstance(value, tuple) and value[0] > 0:
                thread = threading.Thread(target=_import_plot_libraries, name="yeast-phenotypes imports", daemon=True)
                thread.start()
            yield value
    finally:
        work.close()
        if thread is not None:
            thread.join()


def _write_into(folder: ResultFolder, result: Result, run: dict, title: str) -> None:
    from ..results.export import write_tables
    from ..results.plots import save_summary

    try:
        write_tables(result.cells, result.tracks, folder.staging, result.class_names)
        save_summary(result.cells, result.tracks, folder.staging / "summary.png", result.class_names, title=title,
                     warning=(run.get("ood") or {}).get("warning"))
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
    run = {**RunRecord("classify").data, **(run or {}), "finished": utc_now()}
    with ResultFolder(out, overwrite) as folder:
        _write_into(folder, result, run, title)
    return Path(out)


__all__ = ["ClassifyJob", "classify_movie", "classify_movie_iter", "external_crops_warning", "load_model", "ood_report",
           "write_result"]
