"""The network's features of every cell-frame of a movie: computed once, cached on disk.

The live head (:mod:`.live_head`) and the out-of-distribution score (:mod:`.ood`) need, for every
cell-frame of the open movie, the penultimate-layer features of the network (the 2048 numbers
``fc`` receives, after the global average pool). They come from the very crops the movie is
classified with (:func:`~.crops.extract_crops` with the movie's :func:`~.crops.movie_stats` and the
model's crop settings) and from the same fp32 forward pass as classification
(:meth:`~.cpu_inference.InferenceForward.with_features`), so a head applied to them gives what the
network with that head as ``fc`` gives.

The features do not depend on ``fc``: the cache is keyed by the *backbone* (every weight but
``fc``'s, :func:`backbone_fingerprint`), the movie's content (:func:`~.curated.movie_identity`),
the crop settings and the movie statistics. A live head saved as a checkpoint (a new ``fc`` on the
same backbone) therefore finds the cache of the model it came from.

The cache is one ``.npz`` per key in ``<cache_dir>/features/`` (plain arrays, never pickle; written
atomically): the cell keys (``frame``, ``label``) of every row, the features (N, 2048) float32 and
the crops' descriptors for the OOD score (:func:`~.ood.crop_descriptors`, (N, m) float32). A file
that cannot be read, or whose arrays do not fit together, is computed again. 40,000 cell-frames
take about 330 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..files.atomic import atomic_write

FEATURES_VERSION = 1
CACHE_SUBDIR = "features"
_ARRAYS = ("frame", "label", "features", "descriptors")
_fingerprints: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def backbone_fingerprint(model) -> str:
    """SHA-256 (hex, 32 digits) of every parameter and buffer of ``model`` except ``fc``'s.

    Two models with the same backbone (one the other with a new ``fc``: a live head) have the same
    fingerprint; any change of a backbone weight changes it. Kept per model object while its
    weights do not change (hashing ResNet50's 94 MB takes about 0.2 s).
    """
    import torch

    state = model.state_dict(keep_vars=True)
    version = tuple((k, id(v), v._version) for k, v in state.items() if not k.startswith("fc."))
    cached = _fingerprints.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    h = hashlib.sha256()
    for k in sorted(state):
        if k.startswith("fc."):
            continue
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{tuple(t.shape)}|{t.dtype}|".encode())
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.numpy().tobytes())
    digest = h.hexdigest()[:32]
    _fingerprints[model] = (version, digest)
    return digest


def _cell_index(frames, labels) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([np.asarray(frames, dtype=np.int64), np.asarray(labels, dtype=np.int64)])


@dataclass
class MovieFeatures:
    """Features of every cell-frame of one movie, row ``i`` being the cell ``label[i]`` in ``frame[i]``.

    Attributes
    ----------
    frame, label
        (N,) int64 cell keys; rows are ordered by frame, then label.
    features
        (N, D) float32: what the network's ``fc`` receives for each cell's crop.
    descriptors
        (N, m) float32: the crops' statistics for the OOD score (:func:`~.ood.crop_descriptors`).
    key
        The cache key (:func:`features_key`); ``""`` when not cached.
    meta
        Plain values: the backbone fingerprint, movie id, crop settings, movie statistics, seconds.
    """

    frame: np.ndarray
    label: np.ndarray
    features: np.ndarray
    descriptors: np.ndarray
    key: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.frame)
        if not (len(self.label) == len(self.features) == len(self.descriptors) == n) or self.features.ndim != 2:
            raise InputError("movie features: the cell keys, features and descriptors have different lengths")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def index(self, frames, labels) -> np.ndarray:
        """Row of each ``(frame, label)`` pair, ``-1`` where the movie has no such cell (exact match)."""
        own = getattr(self, "_own_index", None)
        if own is None:
            own = self._own_index = _cell_index(self.frame, self.label)
        return np.asarray(own.get_indexer(_cell_index(frames, labels)), dtype=np.int64)

    def rows_of(self, cells: pd.DataFrame) -> np.ndarray:
        """Rows of the cells of a table with ``frame`` and ``label`` (a Result's ``cells``), in its order.

        Raises
        ------
        InputError
            When a cell of the table is not in these features (another movie, or other masks).
        """
        rows = self.index(cells["frame"].to_numpy(), cells["label"].to_numpy())
        if (rows < 0).any():
            i = int(np.flatnonzero(rows < 0)[0])
            raise InputError(
                f"cell {int(cells['label'].iloc[i])} of frame {int(cells['frame'].iloc[i])} has no features: the "
                f"features were computed for another movie or other masks ({(rows < 0).sum()} cells missing)")
        return rows

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the arrays and ``meta`` (as JSON text) to one ``.npz``, atomically."""
        path = Path(path)
        arrays = {k: np.ascontiguousarray(getattr(self, k)) for k in _ARRAYS}
        meta = json.dumps({**self.meta, "key": self.key, "version": FEATURES_VERSION}, default=str)
        with atomic_write(path, "wb") as fh:
            np.savez(fh, meta=np.array(meta), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> MovieFeatures:
        """Read :meth:`save`'s file (no pickle); :class:`InputError` when it is not one."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if int(meta.get("version", 0)) != FEATURES_VERSION:
                    raise ValueError(f"features version {meta.get('version')}, not {FEATURES_VERSION}")
                arrays = {k: z[k] for k in _ARRAYS}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a readable features file ({exc})") from exc
        key = str(meta.pop("key", ""))
        meta.pop("version", None)
        return cls(arrays["frame"].astype(np.int64), arrays["label"].astype(np.int64),
                   arrays["features"].astype(np.float32, copy=False),
                   arrays["descriptors"].astype(np.float32, copy=False), key, meta)


def features_key(backbone: str, movie_id: str, crop_settings, stats) -> str:
    """The cache key: backbone fingerprint, movie identity, crop settings, movie statistics, versions."""
    from ..data.descriptors import DESCRIPTORS_VERSION

    settings = crop_settings.to_dict() if hasattr(crop_settings, "to_dict") else dict(crop_settings)
    st = stats.to_dict() if hasattr(stats, "to_dict") else dict(stats)
    text = json.dumps({"features": FEATURES_VERSION, "descriptors": DESCRIPTORS_VERSION, "backbone": backbone,
                       "movie": movie_id, "crops": settings, "stats": {k: repr(float(v)) for k, v in st.items()}},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cache_path(key: str, folder: str | os.PathLike | None = None) -> Path:
    """Where the features of ``key`` are cached (``<cache_dir>/features/<key>.npz`` by default)."""
    from ..files.paths import cache_dir

    return Path(folder if folder is not None else cache_dir() / CACHE_SUBDIR) / f"{key}.npz"


def crop_features(model, crops: np.ndarray, batch_size: int = 128, device="cpu", fast_path: bool = True
                  ) -> np.ndarray:
    """(N, D) float32 features of crops (N, 1, S, S): the input of ``fc``, fp32, eval mode.

    The forward pass is :func:`~.cpu_inference.inference_forward`'s fp32 copy (checked against the
    plain model on the first batch), the one that classification uses in fp32; with
    ``fast_path=False`` the plain model (the same numbers up to float rounding; no copy to build,
    which a few dozen crops do not repay).
    """
    import torch

    from .cpu_inference import inference_forward
    from .device import select_device

    device = select_device(device)
    model.eval().to(device)
    crops = np.asarray(crops, dtype=np.float32)
    if len(crops) == 0:
        return np.zeros((0, model.fc.in_features), np.float32)
    sample = torch.from_numpy(np.ascontiguousarray(crops[:batch_size])).to(device)
    forward = inference_forward(model, device, sample, build=True, precision="fp32", fast_path=fast_path)
    out = []
    with torch.inference_mode():
        for a in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[a:a + batch_size])).to(device)
            out.append(forward.with_features(x)[1].float().cpu().numpy())
    return np.concatenate(out)


def movie_features(image, labels, clf, *, stats=None, movie_id: str | None = None, cache: bool = True,
                   cache_folder: str | os.PathLike | None = None, batch_size: int = 128, device="cpu",
                   channel: int | None = None, fast_path: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> MovieFeatures:
    """The features of every cell-frame of a movie, from the cache when there.

    Parameters
    ----------
    image, labels
        The movie, (T, Y, X) (numpy, dask or memory maps), as classified.
    clf
        A :class:`~.model.Classifier` (its ``model`` and ``crop_settings`` are used).
    stats
        The movie's :class:`~.schema.MovieStats` (``run.json``'s ``movie_stats``); computed when ``None``.
    movie_id
        The movie's content identity (:func:`~.curated.movie_identity`), computed when ``None``
        (hashing a movie reads it once: about 0.1 s per 100 MB).
    cache
        Read and write ``<cache_dir>/features`` (or ``cache_folder``).
    progress
        ``callback(frames_done, n_frames)`` while computing.

    Returns
    -------
    MovieFeatures
        One row per cell-frame, ordered by frame then label. Cost when not cached: one fp32 forward
        pass of every crop (about 2-4 ms a crop on 2 cores), the crops made once.
    """
    import time

    from ..data.crops import extract_crops, movie_stats
    from ..data.curated.manifest import movie_identity
    from ..data.descriptors import crop_descriptors
    from ..data.movies import as_movie
    from ..data.tracking import measure_frame

    image, labels = as_movie(image, labels, channel=channel)
    settings = clf.crop_settings
    stats = stats if stats is not None else movie_stats(image, labels, settings)
    if hasattr(stats, "keys") and not hasattr(stats, "to_dict"):
        from ..results.schema import MovieStats

        stats = MovieStats.from_dict(stats)
    movie_id = movie_id or movie_identity(image, labels)
    backbone = backbone_fingerprint(clf.model)
    key = features_key(backbone, movie_id, settings, stats)
    path = cache_path(key, cache_folder)
    if cache and path.exists():
        try:
            found = MovieFeatures.load(path)
            if found.key == key:
                return found
        except InputError:
            pass  # a damaged or older file: computed again below
    t0 = time.perf_counter()
    n = image.shape[0]
    frames, labs, feats, descs = [], [], [], []
    pending: list[np.ndarray] = []

    def flush():
        crops = np.concatenate(pending)
        pending.clear()
        feats.append(crop_features(clf.model, crops, batch_size, device, fast_path))
        descs.append(crop_descriptors(crops).astype(np.float32))

    for t in range(n):
        lab = np.asarray(labels[t])
        cells = measure_frame(lab, t)
        if len(cells):
            pending.append(extract_crops(np.asarray(image[t]), lab, cells, settings, stats))
            frames.append(cells["frame"].to_numpy(np.int64))
            labs.append(cells["label"].to_numpy(np.int64))
            if sum(len(c) for c in pending) >= 8 * batch_size:  # full batches; a bounded number of crops held
                flush()
        if progress is not None:
            progress(t + 1, n)
    if pending:
        flush()
    if not frames:
        raise InputError("the labels hold no cells in any frame, so there are no features to compute")
    meta = {"backbone": backbone, "movie_id": movie_id, "crop_settings": settings.to_dict(),
            "movie_stats": stats.to_dict(), "seconds": round(time.perf_counter() - t0, 3)}
    out = MovieFeatures(np.concatenate(frames), np.concatenate(labs), np.concatenate(feats), np.concatenate(descs),
                        key, meta)
    if cache:
        out.save(path)
    return out


__all__ = ["FEATURES_VERSION", "MovieFeatures", "backbone_fingerprint", "cache_path", "crop_features",
           "features_key", "movie_features"]
