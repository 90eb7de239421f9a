"""Batched inference over a movie, streamed by chunks of frames.

Only one chunk of frames, its crops and one batch of activations are in memory at a time, so a
lazy (dask or memory-mapped) movie of any length is classified in bounded memory.
"""

from __future__ import annotations

from typing import Callable, Generator, Iterator

import numpy as np
import pandas as pd
import torch

from .crops import extract_crops, movie_stats
from .io import InputError, as_movie
from .model import Classifier
from .timeline import prob_columns
from .tracking import Tracker, labels_look_tracked


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
    return dev


def predict_crops(model: torch.nn.Module, crops: np.ndarray, batch_size: int = 64,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """Class probabilities (N, C) for crops (N, 1, S, S), in batches under ``inference_mode``."""
    device = select_device(device)
    model.eval().to(device)
    out = []
    with torch.inference_mode():
        for a in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[a:a + batch_size])).to(device)
            out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
    n_classes = getattr(getattr(model, "fc", None), "out_features", 0)
    return np.concatenate(out) if out else np.zeros((0, n_classes), np.float32)


def iter_chunks(n_frames: int, chunk_frames: int) -> Iterator[range]:
    for a in range(0, n_frames, chunk_frames):
        yield range(a, min(n_frames, a + chunk_frames))


def classify_iter(image, labels, clf: Classifier, *, relink: bool | str = "auto", channel: int | None = None,
                  chunk_frames: int = 8, batch_size: int = 64, device: str = "auto",
                  ) -> Generator[tuple[int, int], None, pd.DataFrame]:
    """Classify every cell in every frame; yields ``(frames_done, n_frames)``, returns the table.

    The returned table is the cell table (``frame, label, track_id, y, x, area, bbox_*``) with
    one ``p_<class>`` column per class of ``clf``. Use it with ``yield from`` or
    :func:`run_to_end`; a napari ``thread_worker`` passes the yields to a progress bar.
    """
    image, labels = as_movie(image, labels, channel=channel)
    n = image.shape[0]
    if relink == "auto":
        relink = not labels_look_tracked(labels)
    stats = movie_stats(image, labels, clf.crop_settings)
    dev = select_device(device)
    clf.model.eval().to(dev)
    tracker = Tracker(relink=bool(relink))
    tables = []
    yield 0, n
    for frames in iter_chunks(n, chunk_frames):
        chunk_tables, chunk_crops = [], []
        for t in frames:
            lab = np.asarray(labels[t])
            tab = tracker.update(lab, t)
            if len(tab):
                chunk_tables.append(tab)
                chunk_crops.append(extract_crops(np.asarray(image[t]), lab, tab, clf.crop_settings, stats))
        if chunk_tables:
            tab = pd.concat(chunk_tables, ignore_index=True)
            probs = predict_crops(clf.model, np.concatenate(chunk_crops), batch_size, dev)
            tab[prob_columns(clf.class_names)] = probs
            tables.append(tab)
        yield frames.stop, n
    if not tables:
        raise InputError("the labels hold no cells in any frame, so there is nothing to classify")
    table = pd.concat(tables, ignore_index=True)
    table.attrs["relinked"] = bool(relink)
    table.attrs["movie_stats"] = stats.to_dict()
    return table


def run_to_end(gen: Generator, progress: Callable[[int, int], None] | None = None):
    """Drive a progress generator to its end and return its return value."""
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)


__all__ = ["classify_iter", "predict_crops", "run_to_end", "select_device"]
