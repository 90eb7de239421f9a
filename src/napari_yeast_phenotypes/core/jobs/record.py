"""What every job records of itself: the ``run.json`` record (package and library versions, the job's
config, its inputs with their sizes and hashes, when it started and finished), and the inputs described.

A classified movie keeps its record in its result folder (``OUT/run.json``); a trained model beside
the checkpoint (``model.run.json`` for ``model.pt``, :func:`record_path`) as well as in it; the
cross-validation and learning-curve figures and a fitted track model inside their JSON file, under
``"run"``; ``curate`` in the curated set's ``runs/`` folder.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ... import __version__
from ..data.movies import read_array
from ..files.atomic import atomic_write
from ..files.fingerprint import array_sha256, describe_file

PACKAGE = "napari-yeast-phenotypes"
_LIBRARIES = ("numpy", "pandas", "torch", "torchvision", "scipy")


def utc_now() -> str:
    """The time now, in UTC, to the second (ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    """Python, the platform and the versions of the libraries the numbers depend on (read from the installed
    packages' metadata: nothing is imported)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform(terse=True)}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class RunRecord:
    """The record of one job, started when made: ``finish()`` returns it whole as a plain dict.

    Parameters
    ----------
    job
        Its name (``classify``, ``train``, ``crossval``, ``learning-curve``, ``curate``, ``fit-track-model``...).
    config
        Its config object (anything with ``to_dict``) or a plain dict.
    fields
        Anything else known at the start (inputs, model...).
    """

    def __init__(self, job: str, config=None, **fields):
        self._t0 = time.perf_counter()
        cfg = config.to_dict() if hasattr(config, "to_dict") else config
        self.data = {"package": PACKAGE, "version": __version__, "job": job, "config": cfg,
                     "versions": versions(), **fields, "started": utc_now()}

    def finish(self, **fields) -> dict:
        """The record with ``fields`` added, the end time and the seconds it took."""
        return {**self.data, **fields, "finished": utc_now(), "seconds": round(time.perf_counter() - self._t0, 3)}


def record_path(output) -> Path:
    """Where the record of a job whose output is the file ``output`` goes: ``model.pt`` -> ``model.run.json``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.run.json")


def write_record(path, record: dict) -> Path:
    """Write ``record`` as JSON at ``path``, whole or not at all."""
    with atomic_write(path) as fh:
        json.dump(record, fh, indent=2, default=str)
    return Path(path)


class BackgroundHashes:
    """SHA-256 of files computed in a thread while the job works, not before its first frame.

    hashlib lets other threads run while it hashes, so on a machine with a core to spare the hashes
    of a movie's files (hundreds of MB) and of the model cost the job nothing; :meth:`finish` waits
    for them and puts each into the description it belongs to.
    """

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="yeast-phenotypes hashes")
        self._pending: list = []

    def describe(self, path) -> dict:
        """:func:`describe_file` of ``path``, its ``sha256`` filled in by :meth:`finish`."""
        from ..files.fingerprint import file_sha256

        p = Path(path)
        out = {"name": p.name, "path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": None}
        self._pending.append((out, self._pool.submit(file_sha256, p)))
        return out

    def finish(self) -> None:
        for out, future in self._pending:
            out["sha256"] = future.result()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def cancel(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _as_input(x, name: str, inputs: dict, hashes: BackgroundHashes | None = None):
    """An array from an array or a file name; the file's description goes into ``inputs`` (its hash later, by
    ``hashes``, when given)."""
    if isinstance(x, (str, os.PathLike)):
        arr = read_array(x, lazy=True)
        inputs[name] = hashes.describe(x) if hashes is not None else describe_file(x)
        inputs[name].update(shape=list(arr.shape), dtype=str(arr.dtype))
        return arr
    return x


def _describe_array(arr, name: str) -> dict:
    return {"name": name, "shape": [int(s) for s in arr.shape], "dtype": str(arr.dtype), "sha256": array_sha256(arr)}


__all__ = ["BackgroundHashes", "RunRecord", "record_path", "utc_now", "versions", "write_record"]
