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
from .data.crops import MIN_FINITE_SHARE, extract_crops, finite_share, movie_stats
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
    time (fewer when frames are huge: at most :data:`CHUNK_PIXELS` pixels), so memory does not grow
    with the movie's length, and crops are made :data:`CROP_CELLS` cells at a time, so it does not
    grow with a frame's number of cells either.

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
    tables = []
    no_data: list[tuple[int, int]] = []  # (frame, cells) left out: most of their pixels NaN or infinite
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
                keep = finite_share(image_chunk[i], labels_chunk[i], tab) >= MIN_FINITE_SHARE
                if not keep.all():  # not data: a blank crop would be classified as if it were the cell
                    no_data.append((t, int((~keep).sum())))
                    tab = tab[keep].reset_index(drop=True)
            if len(tab):
                chunk_tables.append(tab)
                # crops by groups of cells: memory follows the group, not the frame's number of cells
                for a in range(0, len(tab), CROP_CELLS):
                    stream.add(extract_crops(image_chunk[i], labels_chunk[i], tab.iloc[a:a + CROP_CELLS],
                                             clf.crop_settings, stats))
        if chunk_tables:  # one table per chunk: a frame's small table costs more than its rows
            tables.append(pd.concat(chunk_tables, ignore_index=True))
        del image_chunk, labels_chunk
        _release_mapped_pages(image, labels)
        _check_finite_outputs(stream.done, checked, tables)  # at once, not after the whole movie
        yield frames.stop, n
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
