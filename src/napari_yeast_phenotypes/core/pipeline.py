"""The movie pipeline: movie -> cell table -> crops -> probabilities -> timelines, streamed by chunks.

Only one chunk of frames, its crops and one batch of activations are in memory at a time, so a
lazy (dask or memory-mapped) movie of any length is classified in bounded memory; the pages of a
memory-mapped movie are released after each chunk, so its resident memory stays flat too.
How a movie is classified (relinking, channel, chunk size, batch size, device, precision) is one
:class:`~napari_yeast_phenotypes.core.config.ClassifyConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np
import pandas as pd

from .config import ClassifyConfig
from .data.chunks import PreparedChunks, cpu_count, iter_chunks, release_mapped_pages
from .data.crops import movie_stats
from .data.movies import as_movie
from .data.tracking import Tracker, labels_look_tracked
from .errors import InputError
from .network.device import select_device
from .network.model import Classifier
from .network.predict import BatchStream
from .progress import run_to_end
from .results.schema import Result, prob_columns
from .track.timeline import add_timeline, track_summary

#: pixels of a chunk of frames read at once (the image's and the labels'): 64 M, e.g. 16 frames of
#: 2048 x 2048; a larger frame is read alone
CHUNK_PIXELS = 1 << 26

#: cells whose crops are made at once (40 x 40 float32: 26 MB), whatever a frame's number of cells
CROP_CELLS = 4096


def crop_workers_for(device_type: str, n_cpus: int) -> int:
    """What makes the cell tables and crops ahead of the network by default (``ClassifyConfig.crop_workers``).

    On a CPU the network itself uses every core and the crops are ~5 % of the work: they are made between
    batches (0) on up to 4 cores; from 5 cores on, one thread makes them while the network runs (1), so
    that they do not wait for each other. On a GPU the crops are most of what the CPU does: one process per
    core left over beside the one feeding the GPU (up to 8), or a thread where there is one core only.
    """
    if device_type == "cuda":
        spare = min(8, n_cpus - 1)
        return spare if spare >= 2 else 1
    return 0 if n_cpus <= 4 else 1


def classify_iter(image, labels, clf: Classifier, config: ClassifyConfig | None = None,
                  ) -> Generator[tuple[int, int], None, pd.DataFrame]:
    """Classify every cell in every frame; yields ``(frames_done, n_frames)``, returns the table.

    The returned table is the cell table (``frame, label, track_id, y, x, area, bbox_*``) with
    one ``p_<class>`` column per class of ``clf`` and, when the checkpoint has a summary of its
    training data, ``ood_score`` (:mod:`~napari_yeast_phenotypes.core.network.ood`);
    ``table.attrs["inference"]`` says which inference path and precision were used. Use it with ``yield from`` or
    :func:`run_to_end`; a napari ``thread_worker`` passes the yields to a progress bar.

    ``config`` (:class:`~napari_yeast_phenotypes.core.config.ClassifyConfig`) says how: its
    ``batch_size`` is the network's batch (by default the device's: 128 on CPUs, measured best or
    within noise of it in fp32 and bf16, ``benchmarks/run.py`` prints the sweep); ``chunk_frames``
    frames are read at a time after the first frame, which is read alone so that the progress moves
    at once (fewer when frames are huge: at most :data:`CHUNK_PIXELS` pixels), so
    memory does not grow with the movie's length, and crops are made :data:`CROP_CELLS` cells at a
    time, so it does not grow with a frame's number of cells either; ``crop_workers`` say what makes
    the cell tables and crops of the next chunks while the network runs
    (:mod:`~napari_yeast_phenotypes.core.data.chunks`; the results are the same).

    A cell most of whose pixels are NaN or infinite in the image (a registration's blank border,
    say) is not data: it is left out of the table (its track has a gap there), and
    ``table.attrs["cells_without_data"]`` counts such cells and lists their frames.
    """
    config = config or ClassifyConfig()
    image, labels = as_movie(image, labels, channel=config.channel)
    n = image.shape[0]
    relink = config.relink_mode
    if relink == "auto":
        relink = not labels_look_tracked(labels)
    stats = movie_stats(image, labels, clf.crop_settings)
    dev = select_device(config.device)
    clf.model.eval().to(dev)
    tracker = Tracker(relink=bool(relink))
    # the out-of-distribution score comes from the same forward pass (the features fc receives)
    ood = getattr(clf, "ood", None)
    stream = BatchStream(clf.model, config.batch_size, dev, config.precision, config.fast_path,
                         score=ood.score if ood is not None else None)
    # frames read at a time: the configured number, fewer where frames are huge (memory follows the
    # chunk's pixels: a 20,000 x 20,000 frame is read alone)
    chunk_frames = max(1, min(config.chunk_frames, CHUNK_PIXELS // max(1, image.shape[1] * image.shape[2])))
    workers = config.crop_workers if config.crop_workers is not None else crop_workers_for(dev.type, cpu_count())
    tables = []
    no_data: list[tuple[int, int]] = []  # (frame, cells) left out: most of their pixels NaN or infinite
    checked = [0, 0]  # probability arrays and rows of stream.done already checked
    yield 0, n
    with PreparedChunks(image, labels, chunk_frames, clf.crop_settings, stats, tracker, workers,
                        CROP_CELLS) as chunks:
        workers = chunks.workers
        for chunk in chunks:
            for crops in chunk.crops:  # by groups of cells: memory follows the group, not the frame's cells
                stream.add(crops() if callable(crops) else crops)
            if chunk.tables:  # one table per chunk: a frame's small table costs more than its rows
                tables.append(pd.concat(chunk.tables, ignore_index=True))
            no_data += chunk.no_data
            stop = chunk.frames.stop
            del chunk
            _check_finite_outputs(stream.done, checked, tables)  # at once, not after the whole movie
            yield stop, n
    if not tables and no_data:
        raise InputError(f"every cell has most of its pixels NaN or infinite in the image "
                         f"({sum(c for _, c in no_data)} cell-frames), so there is nothing to classify; check how the "
                         "image was made or exported")
    if not tables:
        raise InputError("the labels hold no cells in any frame, so there is nothing to classify")
    probs = stream.finish()
    _check_finite_outputs(stream.done, checked, tables)
    table = pd.concat(tables, ignore_index=True)
    table[prob_columns(clf.class_names)] = probs
    if ood is not None:
        table["ood_score"] = np.concatenate(stream.scores).astype(np.float64)
    table.attrs["relinked"] = bool(relink)
    table.attrs["relink_forced"] = config.relink == "yes"
    table.attrs["movie_stats"] = stats.to_dict()
    table.attrs["cells_without_data"] = {"cells": sum(c for _, c in no_data), "frames": [t for t, _ in no_data]}
    if stream.forward is not None:
        table.attrs["inference"] = {**stream.describe(), "crop_workers": workers}
    return table


def _check_finite_outputs(done: list[np.ndarray], checked: list[int], tables: list[pd.DataFrame]) -> None:
    """Refuse probabilities that are not finite numbers, naming the frames of their cells.

    ``done`` are the probability arrays computed so far, in the order of the rows of ``tables``;
    ``checked`` (arrays, rows) is advanced past what has been checked.
    """
    rows = checked[1]
    bad = []
    for probs in done[checked[0]:]:
        bad.extend(rows + np.flatnonzero(~np.isfinite(probs).all(axis=1)))
        rows += len(probs)
    checked[:] = [len(done), rows]
    if not bad:
        return
    frames = np.unique(np.concatenate([t["frame"].to_numpy() for t in tables])[np.asarray(bad)])
    shown = ", ".join(str(int(f)) for f in frames[:10]) + (f" and {len(frames) - 10} more" if len(frames) > 10 else "")
    raise InputError(
        f"the model computed NaN or infinite probabilities for {len(bad)} cells (frame{'s' * (len(frames) > 1)} "
        f"{shown}), so it cannot say what they are; its weights or its arithmetic overflow on these crops. "
        "Use another checkpoint (one whose training did not diverge), or try --precision fp32 --no-fast-path"
    )


def analyse_iter(image, labels, clf: Classifier, config: ClassifyConfig | None = None,
                 ) -> Generator[tuple[int, int], None, Result]:
    """Like :func:`analyse`, as a generator of ``(frames_done, n_frames)`` that returns the result."""
    config = config or ClassifyConfig()
    table = yield from classify_iter(image, labels, clf, config)
    cells = add_timeline(table, clf.class_names, config.timeline)
    cells.attrs.update(table.attrs)
    return Result(cells, track_summary(cells, clf.class_names), tuple(clf.class_names))


def analyse(image, labels, clf: Classifier, config: ClassifyConfig | None = None,
            progress: Callable[[int, int], None] | None = None) -> Result:
    """Classify every cell of a movie and summarise each track.

    Parameters
    ----------
    image, labels
        (T, Y, X) or (Y, X) arrays; numpy, dask or memory-mapped.
    clf
        A loaded classifier (:func:`napari_yeast_phenotypes.core.network.checkpoint.load_classifier`).
    config
        How to classify (:class:`~napari_yeast_phenotypes.core.config.ClassifyConfig`).
    progress
        Optional ``callback(frames_done, n_frames)``.
    """
    return run_to_end(analyse_iter(image, labels, clf, config), progress)


# the names this module has always offered
_release_mapped_pages = release_mapped_pages

__all__ = ["Result", "analyse", "analyse_iter", "classify_iter", "crop_workers_for", "iter_chunks"]
