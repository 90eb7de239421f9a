"""The classify-many job: every movie of a SPEC classified (on Dask or in this process) into its own result
folder, resumably; see the package's docstring for the folder it writes. What a worker runs for one movie is
in :mod:`.worker`; where the movies' folders stand, in :mod:`.state`."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ... import __version__
from ..config import ClassifyConfig
from ..errors import InputError
from ..files.atomic import atomic_write, check_writable_dir
from ..files.fingerprint import describe_file, file_sha256, model_fingerprint
from ..files.locking import FileLock
from ..files.tables import write_csv
from ..jobs.classify import check_track_model_file, with_track_model
from ..results.folder import RUN_FILE
from ..results.schema import cell_columns, track_columns
from .cluster import _wants_gpu, check_scheduler, connect, local_cluster, plan_local, threads_per_worker
from .combine import COMBINED, FAILURES_FILE, MOVIES_FILE, combine_tables, read_combined
from .spec import MOVIES_DIR, MovieSpec, read_spec
from .state import EXPERIMENT_FILE, _json_round, check_distinct_movies, clean_leftovers, movie_state
from .worker import cached_model, run_movie

EXPERIMENT_LOCK = ".yeast-phenotypes-experiment.lock"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ExperimentResult:
    """What :func:`classify_many` returns.

    Attributes
    ----------
    out
        The experiment folder.
    movies
        One row per movie of the SPEC: ``movie``, the SPEC's columns, ``image``, ``labels``,
        ``status`` (``done``, ``skipped``: complete from an earlier run, ``failed``), ``reason``,
        ``seconds``, ``folder``.
    tracks
        The combined tracks table (``OUT/tracks.csv``).
    failures
        ``movie, image, labels, reason`` of the movies that could not be classified.
    notes
        What the user should know of how the SPEC was read (a movie named after its image where
        the SPEC gave no name, a name changed to name a folder).
    """

    out: Path
    movies: pd.DataFrame
    tracks: pd.DataFrame
    failures: pd.DataFrame
    run: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _cells: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def cells(self) -> pd.DataFrame:
        """The combined cells table (``OUT/cells.csv``), read on first use: it can be large."""
        if self._cells is None:
            self._cells = read_combined(self.out / "cells.csv")
        return self._cells

    def counts(self) -> dict[str, int]:
        return {s: int((self.movies["status"] == s).sum()) for s in ("done", "skipped", "failed")}


def _experiment_lock(out: Path):
    return FileLock(out / EXPERIMENT_LOCK, timeout=0, what="yeast-phenotypes classify-many")


def classify_many(spec, model, out, config: ClassifyConfig | None = None, *, scheduler: str | None = None,
                  client=None, workers: int | None = None, torch_threads: int | None = None,
                  overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                  class_names=None, trust: bool = False, labels_name: str | None = None,
                  lock_wait_s: float = 3600.0, track_model=None, checking: Callable[[int, int], None] | None = None
                  ) -> ExperimentResult:
    """Classify every movie of a SPEC, each into ``out/movies/<movie>``, and combine the tables.

    Parameters
    ----------
    spec
        A CSV, a table, a glob or a list of :class:`MovieSpec` (see :func:`read_spec`).
    model
        The checkpoint file (every worker loads it once).
    out
        The experiment folder (see the module's notes for what it holds).
    config
        How each movie is classified (:class:`~napari_yeast_phenotypes.core.config.ClassifyConfig`).
    scheduler
        Address of a running ``dask.distributed`` scheduler (or its scheduler file); ``None``
        starts a local cluster of ``workers`` x ``torch_threads`` (see :func:`plan_local`).
    client
        An existing ``dask.distributed.Client`` to use (a notebook's); it is left open.
    workers
        Workers of the local cluster; ``0`` runs every movie in this process, without Dask.
    torch_threads
        Torch threads per worker (default: the worker's CPUs shared among its task slots).
    overwrite
        Redo movies whose folders hold results made with another config, model or input.
    progress
        ``callback(movies_finished, n_movies)``, skipped movies included.
    checking
        ``callback(movies_checked, n_movies)`` while the folders of earlier runs are checked (a
        finished movie is skipped only when its inputs' content, SHA-256, is the one it was made from).
    labels_name
        For a glob SPEC: the labels' file name beside each image (see :func:`find_labels`).
    track_model
        A track model file whose settings replace ``config.timeline`` for every movie (checked
        against the model's classes before any movie).

    Returns
    -------
    ExperimentResult
    """
    config = config or ClassifyConfig()
    _check_counts(workers, torch_threads)
    if workers is not None and (scheduler is not None or client is not None):
        raise InputError("--workers sets the size of a local cluster; with a scheduler (or a client) its own "
                         "workers are used: leave out --workers")
    check_scheduler(scheduler)
    movies = read_spec(spec, labels_name)
    notes = [m.note for m in movies if m.note]
    meta_cols = list(dict.fromkeys(c for m in movies for c in m.meta))
    out = check_writable_dir(out)
    model_path = Path(model)
    check_track_model_file(track_model)  # a file that is no track model: said before the model is loaded
    if not model_path.is_file():
        raise InputError(f"model file not found: {model_path}")
    hashes: dict = {}  # SHA-256 of the inputs, each file hashed once in this run
    check_distinct_movies(movies, hashes)
    # a bad model is said once, before any movie; the cache serves the movies run in this process
    clf = cached_model(model_path, file_sha256(model_path), class_names, trust)
    config, _ = with_track_model(config, track_model, clf.class_names)
    config.timeline.check_classes(len(clf.class_names))  # a track model of other classes: said before any movie
    names = {"cells.csv": cell_columns(clf.class_names), "tracks.csv": track_columns(clf.class_names)}
    clash = sorted(set(meta_cols) & (set(names["cells.csv"]) | set(names["tracks.csv"])))
    if clash:
        raise InputError(f"the SPEC's column(s) {', '.join(clash)} have the names of result columns; rename them")
    fp = model_fingerprint(model_path, clf.class_names)
    del clf
    cfg = _json_round(config.to_dict())
    started, t0 = _now(), time.perf_counter()
    with _experiment_lock(out):
        clean_leftovers(out)
        if not (out / EXPERIMENT_FILE).exists() and not overwrite:
            foreign = [n for n in (*COMBINED, RUN_FILE) if (out / n).exists()]
            if foreign:
                raise InputError(f"{out} holds results that classify-many did not write ({', '.join(foreign)}); "
                                 "choose another --out, or pass --overwrite to replace them")
        states = {}
        for i, m in enumerate(movies):  # a finished movie is trusted only after its inputs' content is checked
            states[m.movie] = movie_state(out / MOVIES_DIR / m.movie, cfg, fp["fingerprint"], m, hashes)
            if checking is not None:
                checking(i + 1, len(movies))
        stale = [(m, why) for m, (s, why) in states.items() if s == "stale"]
        if stale and not overwrite:
            first, why = stale[0]
            raise InputError(f"{len(stale)} movie folder(s) in {out / MOVIES_DIR} hold results {why} "
                             f"(e.g. {first}); choose another --out, or pass --overwrite to classify them again")
        todo = [m for m in movies if states[m.movie][0] != "complete"]
        with atomic_write(out / EXPERIMENT_FILE) as fh:  # marks the folder as this command's, from the start
            json.dump({"package": "napari-yeast-phenotypes", "version": __version__, "job": "classify-many",
                       "config": cfg, "model": fp, "movies": len(movies), "started": started, "finished": None},
                      fh, indent=2, default=str)
        results = {m.movie: {"movie": m.movie, "status": "skipped", "reason": "", "seconds": 0.0}
                   for m in movies if states[m.movie][0] == "complete"}
        how = _run_all(todo, len(movies), len(results), out, model_path, fp, cfg, class_names, trust, overwrite,
                       scheduler, client, workers, torch_threads, progress, lock_wait_s, config.device, results)
        return _finish(out, movies, meta_cols, names, results, fp, cfg, how, started, t0, notes)


def _check_counts(workers, torch_threads) -> None:
    """Workers and torch threads as a user gives them: whole numbers, workers from 0, threads from 1."""
    for name, value, least in (("workers", workers, 0), ("torch threads", torch_threads, 1)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise InputError(f"{name} must be a whole number of at least {least}, not {value!r}"
                             + (" (0 workers: every movie in this process)" if name == "workers" else ""))


def _task(m: MovieSpec, out: Path, model_path: Path, fp: dict, cfg: dict, class_names, trust: bool,
          overwrite: bool, torch_threads: int | None, lock_wait_s: float) -> dict:
    return {"movie": m.movie, "image": str(m.image), "labels": str(m.labels),
            "folder": str(out / MOVIES_DIR / m.movie), "model": str(model_path.resolve()),
            "model_sha256": fp["sha256"], "model_fingerprint": fp["fingerprint"],
            "class_names": list(class_names) if class_names else None, "trust": trust, "config": cfg,
            "overwrite": overwrite, "torch_threads": torch_threads, "lock_wait_s": lock_wait_s}


def _run_all(todo, n_total, n_done, out, model_path, fp, cfg, class_names, trust, overwrite, scheduler, client,
             workers, torch_threads, progress, lock_wait_s, device, results) -> dict:
    """Run the movies still to do (in this process, on a local cluster or on a given scheduler)."""
    def tick():
        if progress is not None:
            progress(len(results), n_total)

    tick()
    how: dict = {"movies_to_do": len(todo)}
    if not todo:
        return how
    if workers == 0 and scheduler is None and client is None:
        how.update(scheduler="in-process", workers=1, torch_threads=torch_threads)
        for m in todo:
            results[m.movie] = run_movie(_task(m, out, model_path, fp, cfg, class_names, trust, overwrite,
                                               torch_threads, lock_wait_s))
            tick()
        return how
    own = client is None
    if client is None and scheduler is not None:
        client = connect(scheduler)
        how["scheduler"] = str(scheduler)
    elif client is None:
        workers, torch_threads = plan_local(len(todo), gpu=_wants_gpu(device), workers=workers,
                                            torch_threads=torch_threads)
        client = local_cluster(workers, torch_threads)
        how.update(scheduler="local", workers=workers, torch_threads=torch_threads)
    else:
        how["scheduler"] = str(getattr(client, "scheduler", "client"))
    try:
        from dask.distributed import as_completed

        per_worker = threads_per_worker(client) if torch_threads is None else None
        futures = {}
        for m in todo:
            task = _task(m, out, model_path, fp, cfg, class_names, trust, overwrite, torch_threads, lock_wait_s)
            task["threads_per_worker"] = per_worker
            fut = client.submit(run_movie, task, key=f"classify-movie-{m.movie}-{os.getpid()}-{time.monotonic_ns()}",
                                retries=0)
            futures[fut] = m.movie
        for fut in as_completed(futures):
            name = futures[fut]
            try:
                results[name] = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker fails its movie, not the run
                results[name] = {"movie": name, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                                 "seconds": 0.0}
            tick()
        how.setdefault("workers", len(client.scheduler_info().get("workers", {})))
    finally:
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None and how.get("scheduler") == "local":
                cluster.close()
    return how


def _finish(out: Path, movies: list[MovieSpec], meta_cols, names, results, fp, cfg, how, started, t0, notes
            ) -> ExperimentResult:
    rows = []
    notes = list(notes)
    for m in movies:
        r = results.get(m.movie, {})
        # what classify said of a movie (out of the training data, cells without data...), said once, naming it
        notes += [w if w.startswith(f"{m.movie}:") else f"{m.movie}: {w}" for w in r.get("warnings") or []]
        rows.append({"movie": m.movie, **{c: m.meta.get(c, "") for c in meta_cols}, "image": str(m.image),
                     "labels": str(m.labels), "status": r.get("status", "failed"), "reason": r.get("reason", ""),
                     "seconds": r.get("seconds", 0.0), "folder": str(Path(MOVIES_DIR) / m.movie)})
    table = pd.DataFrame(rows, columns=["movie", *meta_cols, "image", "labels", "status", "reason", "seconds",
                                        "folder"])
    complete = [m for m in movies if results.get(m.movie, {}).get("status") in ("done", "skipped")]
    combine_tables(out, complete, meta_cols, names)
    failures = table.loc[table["status"] == "failed", ["movie", "image", "labels", "reason"]].reset_index(drop=True)
    write_csv(failures, out / FAILURES_FILE, float_format=None)
    write_csv(table, out / MOVIES_FILE, float_format=None)
    run = {"package": "napari-yeast-phenotypes", "version": __version__, "job": "classify-many",
           "config": cfg, "model": fp, "movies": len(movies),
           "done": int((table["status"] == "done").sum()), "skipped": int((table["status"] == "skipped").sum()),
           "failed": int(len(failures)), "started": started, "finished": _now(),
           "seconds": round(time.perf_counter() - t0, 3), "run": how, "spec_columns": meta_cols, "notes": notes,
           # what ageing checks that the combined table it reads is this run's, made of these movies' tables
           "tables": {"tracks.csv": describe_file(out / "tracks.csv")},
           "movie_tables": {m.movie: file_sha256(out / MOVIES_DIR / m.movie / "tracks.csv") for m in complete}}
    with atomic_write(out / EXPERIMENT_FILE) as fh:
        json.dump(run, fh, indent=2, default=str)
    return ExperimentResult(out, table, read_combined(out / "tracks.csv"), failures, run, notes=notes)


def movies_bar(desc: str = "movies") -> Callable[[int, int], None]:
    """A tqdm bar over movies, driven by ``(finished, total)`` callbacks (skipped movies count)."""
    from ..progress import frames_bar

    return frames_bar(desc, unit="movie")


__all__ = ["ExperimentResult", "classify_many", "movies_bar"]
