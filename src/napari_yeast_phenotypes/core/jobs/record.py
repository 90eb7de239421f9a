"""What every job records of itself: ``run.json`` (package and library versions, the job's config, its
inputs with their sizes and hashes, when it ran), and the inputs described."""

from __future__ import annotations

import os

from ..data.movies import read_array
from ..files.fingerprint import array_sha256, describe_file


def _as_input(x, name: str, inputs: dict):
    """An array from an array or a file name; the file's description goes into ``inputs``."""
    if isinstance(x, (str, os.PathLike)):
        arr = read_array(x, lazy=True)
        inputs[name] = describe_file(x)
        inputs[name].update(shape=list(arr.shape), dtype=str(arr.dtype))
        return arr
    return x


def _describe_array(arr, name: str) -> dict:
    return {"name": name, "shape": [int(s) for s in arr.shape], "dtype": str(arr.dtype), "sha256": array_sha256(arr)}
