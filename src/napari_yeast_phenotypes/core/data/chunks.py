"""The cell tables and crops of a movie, chunk by chunk of frames, made ahead of the network.

The movie pipeline (:mod:`napari_yeast_phenotypes.core.pipeline`) takes chunks of frames, each with its
cell table (:class:`~.tracking.Tracker`) and its crops (:func:`~.crops.extract_crops`), from
:func:`prepared_chunks`, which makes them in one of three ways, with the same results:

- ``workers=0``: in the caller's thread, when it asks for the next chunk (between the network's batches);
- ``workers=1``: in one background thread, up to :data:`AHEAD` chunks ahead, while the caller runs the
  network (numpy and the network release the GIL for most of their work);
- ``workers=N>=2``: in N worker processes (spawned: they import numpy, pandas and scipy, never torch),
  one chunk each at a time; a background thread reads the frames, hands them over in shared memory (a
  file in ``/dev/shm``), and passes the results on in the movie's order.

What needs the previous frame (relinking by overlap) is split so that chunks can be made apart: a
worker measures its frames and matches each with the frame before (:meth:`Tracker.match`; for its
first frame it is given the previous chunk's last labels), and the track ids are then assigned in
order, in this process (:meth:`Tracker.assign`), as :meth:`Tracker.update` does frame by frame.
Memory is bounded: at most ``workers`` chunks in the workers and :data:`AHEAD` made ones waiting; with
``workers=0`` a chunk's crops are made when the network asks for them, ``crop_cells`` cells at a time, so
memory follows that group, not a frame's number of cells.

A cell most of whose pixels are NaN or infinite in the image is not data: it keeps its track id (the
tracker follows it) but is left out of the chunk's tables and crops, and counted in ``Chunk.no_data``.
"""

from __future__ import annotations

import mmap
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from .crops import MIN_FINITE_SHARE, CropSettings, extract_crops, finite_share
from .tracking import Tracker, measure_frame

#: made chunks that may wait for the network (besides the ones in the workers)
AHEAD = 2


@dataclass
class Chunk:
    """One chunk of frames made ready: per frame with cells, its cell table (track ids given) and crops."""

    frames: range
    tables: list[pd.DataFrame] = field(default_factory=list)
    #: the crops of the tables' cells in their order, by groups of at most ``crop_cells`` cells; made ahead
    #: (arrays) or, in the caller's thread, when asked (callables that return them)
    crops: list = field(default_factory=list)
    #: (frame, cells) left out because most of their pixels are NaN or infinite in the image (not data)
    no_data: list[tuple[int, int]] = field(default_factory=list)


def iter_chunks(n_frames: int, chunk_frames: int, first: int = 1) -> Iterator[range]:
    """Consecutive ranges covering ``0..n_frames-1``: ``first`` frame(s), then at most ``chunk_frames`` at a time.

    The first chunk is one frame so that the progress moves as soon as the model is ready (the first frame's crops
    made, its full batches classified): a whole first chunk of 8 frames of 134 cells took 6.7 s on 2 cores before
    anything was said. The network sees the same batches whatever the chunks (the stream keeps them full; a frame
    of fewer cells than a batch waits for the next), so the calls do not change.
    """
    a = 0
    while a < n_frames:
        b = min(n_frames, a + (max(1, min(first, chunk_frames)) if a == 0 else chunk_frames))
        yield range(a, b)
        a = b


def measure_chunk(image: np.ndarray, labels: np.ndarray, start: int, settings: CropSettings, stats,
                  relink: bool, min_iou: float = 0.2, prev_labels: np.ndarray | None = None,
                  crop_cells: int = 4096, lazy: bool = False) -> list[tuple]:
    """Per frame of a chunk (``image``, ``labels``: (t, Y, X), first frame ``start``): its cell table (track ids
    not yet given), the match of each cell with the frame before (relinking; ``prev_labels`` is the frame
    before the chunk, ``None`` at the movie's start), which cells are data (``None``: all of them; else a
    boolean mask, see the module notes) and the crops of those, by groups of ``crop_cells`` cells (``lazy``:
    callables that make them). Needs nothing of other chunks, so chunks are made apart (in workers)."""
    local = Tracker(relink=relink, min_iou=min_iou)
    if relink and prev_labels is not None:
        prev = np.asarray(prev_labels)
        local.follow(measure_frame(prev, start - 1), prev)
    out = []
    for i in range(labels.shape[0]):
        lab = np.asarray(labels[i])
        table = measure_frame(lab, start + i)
        match = local.match(table, lab)
        local.follow(table, lab)  # the next frame is matched with this one; track ids are the caller's to give
        keep, cells = None, table
        if len(table):
            share = finite_share(image[i], lab, table)
            if (share < MIN_FINITE_SHARE).any():  # not data: a blank crop would be classified as if it were the cell
                keep = share >= MIN_FINITE_SHARE
                cells = table[keep].reset_index(drop=True)
        groups = [cells.iloc[a:a + crop_cells] for a in range(0, len(cells), crop_cells)]
        make = [partial(extract_crops, image[i], lab, g, settings, stats) for g in groups]
        crops = make if lazy else [m() for m in make]
        out.append((table, match, keep, crops))
    return out


def release_mapped_pages(*arrays) -> None:
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


def _read(image, labels, frames: range) -> tuple[np.ndarray, np.ndarray]:
    """One read per chunk: a lazy (dask, zarr) source computes 2 arrays instead of 2 per frame."""
    img = np.asarray(image[frames.start:frames.stop])
    lab = np.asarray(labels[frames.start:frames.stop])
    release_mapped_pages(image, labels)
    return img, lab


def _inline(image, labels, chunk_frames: int, settings, stats, tracker: Tracker, crop_cells: int = 4096,
            lazy: bool = False) -> Iterator[Chunk]:
    prev = None
    for frames in iter_chunks(labels.shape[0], chunk_frames):
        img, lab = _read(image, labels, frames)
        yield _assign(frames, measure_chunk(img, lab, frames.start, settings, stats, tracker.relink, tracker.min_iou,
                                            prev, crop_cells, lazy), tracker)
        prev = lab[-1] if tracker.relink else None


def _assign(frames: range, measured, tracker: Tracker) -> Chunk:
    chunk = Chunk(frames)
    for t, (table, match, keep, crops) in zip(frames, measured):
        tracker.assign(table, match)  # every cell, so that its track goes on where it is data again
        if keep is not None:
            chunk.no_data.append((t, int((~keep).sum())))
            table = table[keep].reset_index(drop=True)
        if len(table):
            chunk.tables.append(table)
            chunk.crops.extend(crops)
    return chunk


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


_DONE = object()


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _to_shared(arrays: list[np.ndarray]) -> tuple[str, list[tuple]]:
    """Copy ``arrays`` into one file in shared memory; returns its path and each array's (offset, shape, dtype)."""
    fd, path = tempfile.mkstemp(prefix="nyp-frames-", dir=_shm_dir())
    os.close(fd)
    specs, offset = [], 0
    for a in arrays:
        specs.append((offset, a.shape, a.dtype.str))
        offset += -(-a.nbytes // 64) * 64
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=(max(offset, 1),))
    for a, (off, shape, dtype) in zip(arrays, specs):
        np.ndarray(shape, dtype, buffer=mm, offset=off)[...] = a
    del mm
    return path, specs


def _worker_init() -> None:
    # one thread of BLAS per worker: the workers are the parallelism (set before numpy's first use here)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"


def _measure_shared(path: str, specs: list[tuple], start: int, settings: CropSettings, stats, relink: bool,
                    min_iou: float, crop_cells: int):
    """:func:`measure_chunk` of frames in a shared-memory file (in a worker process)."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    arrays = [np.ndarray(shape, dtype, buffer=mm, offset=off) for off, shape, dtype in specs]
    prev = arrays[2] if len(arrays) > 2 else None
    return measure_chunk(arrays[0], arrays[1], start, settings, stats, relink, min_iou, prev, crop_cells)


class _Ahead:
    """Chunks made by a background thread (itself, or through worker processes), handed over in order."""

    def __init__(self, image, labels, chunk_frames: int, settings, stats, tracker: Tracker, workers: int,
                 crop_cells: int):
        self.queue: queue.Queue = queue.Queue(maxsize=AHEAD)
        self.stop = threading.Event()
        self.pool = None
        if workers >= 2:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_worker_init)
        self.args = (image, labels, chunk_frames, settings, stats, tracker, crop_cells, workers)
        self.files: set[str] = set()
        self.thread = threading.Thread(target=self._run, name="yeast-phenotypes chunks", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            made = self._pooled() if self.pool is not None else _inline(*self.args[:7])
            for chunk in made:
                if not self._put(chunk):
                    return
            self._put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Failed(exc))

    def _pooled(self) -> Iterator[Chunk]:
        image, labels, chunk_frames, settings, stats, tracker, crop_cells, workers = self.args
        pending: list = []
        prev = None
        chunks = iter_chunks(labels.shape[0], chunk_frames)
        while True:
            while len(pending) < workers and not self.stop.is_set():
                frames = next(chunks, None)
                if frames is None:
                    break
                img, lab = _read(image, labels, frames)
                path, specs = _to_shared([img, lab] + ([prev] if prev is not None else []))
                self.files.add(path)
                future = self.pool.submit(_measure_shared, path, specs, frames.start, settings, stats,
                                          tracker.relink, tracker.min_iou, crop_cells)
                pending.append((frames, future, path))
                prev = np.array(lab[-1]) if tracker.relink else None
                del img, lab
            if not pending or self.stop.is_set():
                return
            frames, future, path = pending.pop(0)
            try:
                measured = future.result()
            finally:
                self._remove(path)
            yield _assign(frames, measured, tracker)

    def _remove(self, path: str) -> None:
        self.files.discard(path)
        try:
            os.unlink(path)
        except OSError:
            pass

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item

    def close(self) -> None:
        self.stop.set()
        while self.thread.is_alive():
            try:  # make room for a put the thread may be blocked in
                self.queue.get(timeout=0.05)
            except queue.Empty:
                pass
            self.thread.join(timeout=0.05)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        for path in list(self.files):
            self._remove(path)


class PreparedChunks:
    """Iterate over the :class:`Chunk` s of a movie, made as ``workers`` says (see the module notes); ``close()``
    (or leaving a ``with`` block) stops the thread and the workers and removes what they left. A process
    that may not start processes (a daemon, such as a Dask worker) makes them in a thread instead:
    :attr:`workers` says what was used."""

    def __init__(self, image, labels, chunk_frames: int, settings: CropSettings, stats, tracker: Tracker,
                 workers: int = 0, crop_cells: int = 4096):
        self.workers = int(workers)
        if self.workers >= 2:
            import multiprocessing

            if multiprocessing.current_process().daemon:  # e.g. a Dask worker: it may not start processes
                self.workers = 1
        if self.workers <= 0:
            self._made = _inline(image, labels, chunk_frames, settings, stats, tracker, crop_cells, lazy=True)
            self._ahead = None
        else:
            self._ahead = _Ahead(image, labels, chunk_frames, settings, stats, tracker, self.workers, crop_cells)
            self._made = iter(self._ahead)

    def __iter__(self) -> Iterator[Chunk]:
        return self._made

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()

    def __enter__(self) -> PreparedChunks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity where the system says it, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


__all__ = ["AHEAD", "Chunk", "PreparedChunks", "cpu_count", "iter_chunks", "measure_chunk", "release_mapped_pages"]
