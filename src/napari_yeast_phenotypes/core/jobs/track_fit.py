"""The fit-track-model job: the track model of a classified result folder, fitted on a person's labels
(the curated set's rows of that movie, or a CSV) or by EM without labels."""

from __future__ import annotations

from pathlib import Path

from ..config import parse_class_names
from ..data.movies import read_array
from ..errors import InputError
from ..files.atomic import check_writable_file
from ..files.fingerprint import file_sha256
from ..files.inside import open_inside
from ..files.tables import read_own_csv
from ..results.folder import RUN_FILE, read_run, result_complete
from ..track.track_model import MIN_LABELLED_TRACKS
from .record import RunRecord


def read_result_folder(result_dir) -> tuple:
    """The cell table (``cells.csv``), ``run.json`` and class names of a complete result folder.

    Raises
    ------
    InputError
        Not a folder, or not a complete result (no ``run.json``, a file changed since it was
        written, an interrupted write), or a table without the probability columns.
    """

    from ..results.schema import prob_columns

    folder = Path(result_dir)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give the result folder of a classified movie (what "
                         "yeast-phenotypes classify wrote with --out, or the Classify dock exported)")
    if not result_complete(folder):
        why = ("its run.json is a symbolic link, and nothing is read through one" if (folder / RUN_FILE).is_symlink()
               else "it has no run.json" if not (folder / RUN_FILE).exists() else
               "its files are not the ones its run.json lists (changed since, an interrupted write, or names that "
               "are not plain files of the folder)")
        raise InputError(f"{folder} is not a complete result folder ({why}); classify the movie into it again")
    run = read_run(folder)
    if "cells.csv" not in (run.get("outputs") or {}):
        raise InputError(f"{folder} holds no cells.csv of a classified movie (is it a classify-many folder? give "
                         "one of its movies/<movie> folders)")
    with open_inside(folder, "cells.csv") as fh:  # never through a link
        cells = read_own_csv(fh)
    names = (run.get("model") or {}).get("class_names") or [c[2:] for c in cells.columns if c.startswith("p_")]
    names = parse_class_names(names, f"{folder / RUN_FILE}: the model's class names")
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
    from ..data.curated.manifest import identity_from_hashes, movie_identity

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
        from ..data.movies import as_movie

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
    from ..data.curated.annotations import read_annotations
    from ..data.curated.store import CuratedSet

    if labels is not None:
        ann = read_annotations(labels, tuple(class_names))  # unknown classes refused, naming the valid ones
        ann = ann[ann["mark"] == ""]
        return ann[["frame", "label", "phenotype"]].reset_index(drop=True), f"{labels}"
    root = Path(curated)
    if not (root / "settings.json").is_file():
        raise InputError(f"{root} is not a curated set (no settings.json): give the folder that the Annotate dock "
                         "or yeast-phenotypes curate writes into")
    cs = CuratedSet.read(root)
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
    from ..track.track_estimates import fit_em
    from ..track.track_model import TrackModelFit, fit_on_labels
    from ..track.track_model_file import save_track_model

    record = RunRecord("fit-track-model", {"validation_fraction": validation_fraction, "seed": seed,
                                           "min_tracks": min_tracks, "em": bool(em)},
                       inputs={"result": str(result_dir), "curated": curated and str(curated),
                               "labels": labels and str(labels)})
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
        fit = fit_on_labels(cells, truth, names, source=source, min_tracks=min_tracks,
                            validation_fraction=validation_fraction, seed=seed)
    fit.report["fitted_on"] = {"result": str(Path(result_dir).resolve()), "labels": source,
                               "movie": ((run.get("inputs") or {}).get("image") or {}).get("name"),
                               "model": (run.get("model") or {}).get("fingerprint")}
    if out is not None:
        save_track_model(out, fit, run=record.finish(fitted_on=fit.report["fitted_on"]))
    return fit


__all__ = ["fit_track_model_job", "labels_of_result", "read_result_folder", "result_movie_id"]
