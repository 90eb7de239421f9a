"""The whole flow in one call: movie -> cell table -> crops -> probabilities -> timelines."""

from __future__ import annotations

from typing import Generator

from .model import Classifier
from .predict import classify_iter, run_to_end
from .timeline import Result, TimelineSettings, add_timeline, track_summary

__all__ = ["Result", "analyse", "analyse_iter"]


def analyse_iter(image, labels, clf: Classifier, *, timeline: TimelineSettings = TimelineSettings(),
                 **kwargs) -> Generator[tuple[int, int], None, Result]:
    """Like :func:`analyse`, as a generator of ``(frames_done, n_frames)`` that returns the result."""
    table = yield from classify_iter(image, labels, clf, **kwargs)
    cells = add_timeline(table, clf.class_names, timeline)
    cells.attrs.update(table.attrs)
    return Result(cells, track_summary(cells, clf.class_names), tuple(clf.class_names))


def analyse(image, labels, clf: Classifier, progress=None, **kwargs) -> Result:
    """Classify every cell of a movie and summarise each track.

    Parameters
    ----------
    image, labels
        (T, Y, X) or (Y, X) arrays; numpy, dask or memory-mapped.
    clf
        A loaded classifier (:func:`napari_yeast_phenotypes.core.model.load_classifier`).
    progress
        Optional ``callback(frames_done, n_frames)``.
    **kwargs
        Passed to :func:`napari_yeast_phenotypes.core.predict.classify_iter` (``relink``,
        ``channel``, ``chunk_frames``, ``batch_size``, ``device``).
    """
    return run_to_end(analyse_iter(image, labels, clf, **kwargs), progress)
