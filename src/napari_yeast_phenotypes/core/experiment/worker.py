"""One movie of an experiment, as a Dask worker (or this process) classifies it: :func:`run_movie`, with the
model loaded once per process and model (:func:`cached_model`)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ..config import ClassifyConfig
from ..errors import InputError
from ..files.fingerprint import file_sha256
from ..files.inside import path_inside
from ..files.locking import FileLock, LockHeld
from ..results.folder import LOCK_FILE
from .cluster import _torch_threads_here
from .spec import MovieSpec
from .state import clean_leftovers, movie_state

_models: dict[tuple, object] = {}


_models_lock = threading.Lock()


_loads = [0]


def model_loads() -> int:
    """How many times this process has loaded a model for :func:`classify_many` (once per model)."""
    return _loads[0]


def cached_model(path, sha256: str, class_names=None, trust: bool = False):
    """The classifier in ``path``, loaded once per process and model (keyed by the file's SHA-256).

    The file is checked against ``sha256`` when it is loaded, so a model replaced while the
    experiment runs is refused instead of mixing two models in one experiment.
    """
    from ..network.checkpoint import load_classifier

    key = (sha256, tuple(class_names) if class_names else None, bool(trust))
    with _models_lock:
        clf = _models.get(key)
        if clf is None:
            if file_sha256(path) != sha256:
                raise InputError(f"the model file {path} changed while the experiment ran; restart it")
            clf = load_classifier(path, class_names, trust=trust)
            clf.source_path = Path(path)  # so that run.json records the file (see jobs.load_model)
            _models.clear()  # one model per experiment: an earlier one would only hold memory
            _models[key] = clf
            _loads[0] += 1
        return clf


def _wait_and_tidy(folder: Path, wait_s: float) -> None:
    """Wait until no one writes into ``folder`` (e.g. a killed run's task still running on a
    cluster), then remove what a killed writer left there."""
    if not folder.exists():
        return
    with FileLock(folder / LOCK_FILE, timeout=wait_s, what="yeast-phenotypes classify-many"):
        clean_leftovers(folder)


def run_movie(task: dict) -> dict:
    """Classify one movie of an experiment into its folder (the unit a Dask worker runs).

    ``task`` holds plain values only (it travels to the worker): ``movie``, ``image``,
    ``labels``, ``folder``, ``model``, ``model_sha256``, ``class_names``, ``trust``, ``config``
    (``ClassifyConfig.to_dict()``), ``model_fingerprint``, ``overwrite``, ``torch_threads``,
    ``lock_wait_s``. Returns ``{"movie", "status": done|skipped|failed, "reason", "seconds", ...}``;
    a movie's error is returned as its reason, never raised, so one bad movie stops no other.
    """
    import torch

    from ..jobs.classify import classify_movie

    t0 = time.perf_counter()
    out = {"movie": task["movie"], "status": "failed", "reason": "", "seconds": 0.0,
           "pid": os.getpid(), "torch_threads": None}
    threads = task.get("torch_threads") or _torch_threads_here(task.get("threads_per_worker"))
    if threads:
        torch.set_num_threads(int(threads))
    out["torch_threads"] = torch.get_num_threads()
    folder = Path(task["folder"])
    movie = MovieSpec(task["movie"], Path(task["image"]), Path(task["labels"]))
    try:
        # a link in movies/ would send this movie's results (and the tidying of leftovers) elsewhere
        path_inside(folder.parent.parent, f"{folder.parent.name}/{folder.name}")
        config = ClassifyConfig.from_dict(task["config"])
        for _ in range(5):  # a killed run's task may still hold the folder: wait, then look again
            _wait_and_tidy(folder, task.get("lock_wait_s", 3600.0))
            state, why = movie_state(folder, task["config"], task["model_fingerprint"], movie)
            if state == "complete":
                out["status"] = "skipped"
                break
            if state == "stale" and not task["overwrite"]:
                raise InputError(f"{folder} holds results {why}; pass --overwrite to replace them")
            clf = cached_model(task["model"], task["model_sha256"], task.get("class_names"), task.get("trust", False))
            try:
                job = classify_movie(movie.image, movie.labels, clf, config, folder, overwrite=task["overwrite"],
                                     title=movie.movie)
            except LockHeld:
                continue
            out.update(status="done", warnings=list(job.warnings))
            break
        else:
            raise InputError(f"{folder} stayed in use by another writer; run again when it has finished")
    except InputError as exc:
        out["reason"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - any error of one movie is that movie's failure, said in its row
        out["reason"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


__all__ = ["model_loads", "run_movie"]
