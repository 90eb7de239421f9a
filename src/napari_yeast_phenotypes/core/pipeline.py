"""The movie pipeline: movie -> cell table -> crops -> probabilities -> timelines, streamed by chunks.

Only one chunk of frames, its crops and one batch of activations are in memory at a time, so a
lazy (dask or memory-mapped) movie of any length is classified in bounded memory; the pages of a
memory-mapped movie are released after each chunk, so its resident memory stays flat too.
How a movie is classified (relinking, channel, chunk size, batch size, device, precision) is one
:class:`~napari_yeast_phenotypes.core.config.ClassifyConfig`.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Generator, Iterator

import numpy as np
import pandas as pd

from .config import ClassifyConfig
from .data.crops import extract_crops, movie_stats
from .data.movies import as_movie
from .data.tracking import Tracker, labels_look_tracked
from .errors import InputError
from .network.device import select_device
from .network.model import Classifier
from .network.predict import BatchStream
from .progress import run_to_end
from .results.schema import Result, prob_columns
from .track.timeline import add_timeline, track_summary


def iter_chunks(n_frames: int, chunk_frames: int) -> Iterator[range]:
    """Consecutive ranges of at most ``chunk_frames`` frames covering ``0..n_frames-1``."""
    for a in range(0, n_frames, chunk_frames):
        yield range(a, min(n_frames, a + chunk_frames))


def _release_mapped_pages(*arrays) -> None:
    """Let go of the pages of memory-mapped inputs that this process has read so far.

    Reading a memory-mapped movie maps its pages into the process: its resident memory would grow
    to the file's size over a long movie, although those pages are only the kernel's file cache.
    Dropping them after each chunk keeps the resident memory flat; frames read again (none are)
    would simply come back from the cache. Only shared mappings (modes ``r``, ``r+``, ``w+``) are
    released; a copy-on-write one (``c``) may hold changes made in memory and is left alone.
    """
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None:
        return
    for arr in arrays:
        mm = getattr(arr, "_mmap", None)  # np.memmap and its views share their mmap object
        if isinstance(mm, mmap.mmap) and getattr(arr, "mode", None) in ("r", "r+", "w+"):
            try:
                mm.madvise(advice)
            except (OSError, ValueError):
                pass


def classify_iter(image, labels, clf: Classifier, config: ClassifyConfig | None = None,
                  ) -> Generator[tuple[int, int], None, pd.DataFrame]:
    """Classify every cell in every frame; yields ``(frames_done, n_frames)``, returns the table.

    The returned table is the cell table (``frame, label, track_id, y, x, area, bbox_*``) with
    one ``p_<class>`` column per class of ``clf`` and, when the checkpoint has a summary of its
    training data, ``ood_score`` (:mod:`~napari_yeast_phenotypes.core.network.ood`);
    ``table.attrs["inference"]`` says which inference path and precision were used. Use it with ``yield from`` or
    :func:`run_to_end`; a napari ``thread_worker`` passes the yields to a progress bar.

    ``config`` (:class:`~napari_yeast_phenotypes.core.config.ClassifyConfig`) says how: its
    ``batch_size`` is the network's batch (128 is measured best or within noise of it on CPUs in
    fp32 and bf16; ``benchmarks/run.py`` prints the sweep); ``chunk_frames`` frames are read at a
    time, so memory does not grow with the movie's length.
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
    chunk_frames = config.chunk_frames
    tables = []
    checked = [0, 0]  # probability arrays and rows of stream.done already checked
    yield 0, n
    for frames in iter_chunks(n, chunk_frames):
        # one read per chunk: a lazy (dask, zarr) source computes 2 arrays instead of 2 per frame
        image_chunk = np.asarray(image[frames.start:frames.stop])
        labels_chunk = np.asarray(labels[frames.start:frames.stop])
        chunk_tables = []
        for i, t in enumerate(frames):
            tab = tracker.update(labels_chunk[i], t)
            if len(tab):
                chunk_tables.append(tab)
                stream.add(extract_crops(image_chunk[i], labels_chunk[i], tab, clf.crop_settings, stats))
        if chunk_tables:  # one table per chunk: a frame's small table costs more than its rows
            tables.append(pd.concat(chunk_tables, ignore_index=True))
        del image_chunk, labels_chunk
        _release_mapped_pages(image, labels)
        _check_finite_outputs(stream.done, checked, tables)  # at once, not after the whole movie
        yield frames.stop, n
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
    if stream.forward is not None:
        table.attrs["inference"] = stream.forward.describe()
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
        A loaded classifier (:func:`napari_yeast_phenotypes.core.network.model.load_classifier`).
    config
        How to classify (:class:`~napari_yeast_phenotypes.core.config.ClassifyConfig`).
    progress
        Optional ``callback(frames_done, n_frames)``.
    """
    return run_to_end(analyse_iter(image, labels, clf, config), progress)


__all__ = ["Result", "analyse", "analyse_iter", "classify_iter", "iter_chunks"]
