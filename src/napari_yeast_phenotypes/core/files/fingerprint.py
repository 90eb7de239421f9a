"""Content fingerprints: what a file or a movie *is*, whatever it is called or wherever it lies.

``run.json`` records the hashes of a run's inputs, outputs and model; the curated set identifies
a movie by its content, keeping its path only as provenance. SHA-256 throughout, read in blocks
(a movie of gigabytes is never held in memory for it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

_BLOCK = 1 << 22


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def array_sha256(arr, frames_per_block: int = 8) -> str:
    """SHA-256 of an array's shape, dtype and values (C order), read a few frames at a time.

    Works on numpy arrays, memory maps and dask arrays alike; two arrays with equal values, shape
    and dtype have the same digest wherever they come from.
    """
    h = hashlib.sha256()
    shape = tuple(int(s) for s in arr.shape)
    h.update(repr((shape, np.dtype(arr.dtype).str)).encode())
    if len(shape) == 0:
        h.update(np.ascontiguousarray(np.asarray(arr)).tobytes())
        return h.hexdigest()
    for a in range(0, shape[0], frames_per_block):
        h.update(np.ascontiguousarray(np.asarray(arr[a:a + frames_per_block])).tobytes())
    return h.hexdigest()


def describe_file(path: str | os.PathLike) -> dict:
    """Name, absolute path, size and SHA-256 of an input or output file."""
    p = Path(path)
    return {"name": p.name, "path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": file_sha256(p)}


def model_fingerprint(path: str | os.PathLike | None, class_names, described: dict | None = None) -> dict:
    """What identifies a model: its file's SHA-256 (when it came from a file) and its class names.

    ``described``: the file's :func:`describe_file`, where it is already known (hashed while a job ran)."""
    names = [str(c) for c in class_names]
    out = {"class_names": names}
    if described is not None:
        out.update(described)
    elif path is not None:
        out.update(describe_file(path))
    h = hashlib.sha256((out.get("sha256", "") + "|" + ",".join(names)).encode())
    out["fingerprint"] = h.hexdigest()[:16]
    return out


__all__ = ["array_sha256", "describe_file", "file_sha256", "model_fingerprint"]
