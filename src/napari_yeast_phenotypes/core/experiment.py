"""An ageing experiment: many movies classified on Dask, into one folder with combined tables.

A SPEC names the movies: a CSV with one row per movie (``image``, ``labels``, an optional
``movie`` name and any other columns, e.g. ``strain``, ``condition``, ``position``) or a glob of
image files whose labels lie beside them. :func:`classify_many` runs
:func:`~napari_yeast_phenotypes.core.jobs.classify_movie` once per movie, each into its own result
folder, and writes for the whole run::

    OUT/movies/<movie>/   cells.csv, tracks.csv, summary.png, run.json   (one per movie)
    OUT/cells.csv         every movie's cells, with the SPEC's columns in front
    OUT/tracks.csv        every movie's tracks, likewise
    OUT/failures.csv      movie, image, labels, reason: the movies that could not be classified
    OUT/movies.csv        the SPEC as read, with each movie's status
    OUT/experiment.json   how the run was made (version, config, model, workers, counts)

It is resumable and idempotent: a movie whose folder is complete (its ``run.json`` and the
files it lists, unchanged) and was made with this run's config, model and inputs is skipped, so
a killed run restarted finishes only what is missing; the combined tables are rebuilt from the
movie folders at the end of every run, written whole or not at all, so they never hold a movie
twice. Movies made with another config or model are not replaced unless ``overwrite``.

Where it runs: a local Dask cluster by default, whose workers x torch threads fit the cores
(:func:`plan_local`), or an existing ``dask.distributed`` scheduler (``scheduler=ADDRESS``, e.g.
one started by dask-jobqueue on SLURM or PBS), or, with ``workers=0``, this process alone. Each
worker process loads the model once (a cache keyed by the model file's SHA-256) and reuses it
for every movie it classifies.
"""

from __future__ import annotations

import glob as _glob
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd

from .. import __version__
from .config import ClassifyConfig
from .fingerprint import file_sha256, model_fingerprint
from .io import InputError, atomic_write
from .jobs import LOCK_FILE, RESULT_FILES, RUN_FILE, WRITING_MARK, check_writable_dir, result_complete
from .locking import FileLock, LockHeld
from .schema import cell_columns, track_columns

MOVIES_DIR = "movies"
EXPERIMENT_FILE = "experiment.json"
EXPERIMENT_LOCK = ".yeast-phenotypes-experiment.lock"
COMBINED = ("cells.csv", "tracks.csv")
FAILURES_FILE = "failures.csv"
MOVIES_FILE = "movies.csv"
RESERVED = ("movie", "image", "labels")
#: torch threads per worker of a local cluster: two threads keep oneDNN's batches efficient
#: while the serial parts of a movie (tracking, crops, timelines) run in as many workers as fit
THREADS_PER_WORKER = 2
#: file names tried beside an image for its labels when a SPEC is a glob
LABEL_NAMES = ("labels{suffix}", "masks{suffix}", "{stem}_labels{suffix}", "{stem}_masks{suffix}",
               "{stem}_label{suffix}", "{stem}_mask{suffix}")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. a SLURM allocation), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------- the SPEC

@dataclass(frozen=True)
class MovieSpec:
    """One movie of an experiment: its name (also its folder's), files and the SPEC's other columns."""

    movie: str
    image: Path
    labels: Path
    meta: dict = field(default_factory=dict)


def _safe_name(name: str) -> str:
    safe = _SAFE.sub("_", str(name)).strip("._")
    return safe or "movie"


def _names_from_paths(paths: list[Path]) -> list[str]:
    """Movie names from image paths: their path below the common folder, without the suffix (and
    without the file name when every image has the same one, e.g. ``A/image.tif, B/image.tif``)."""
    if len(paths) == 1:
        return [paths[0].stem]
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    same_stem = len({p.name for p in resolved}) == 1
    names = []
    for p in resolved:
        rel = p.parent.relative_to(root) if same_stem else p.relative_to(root).with_suffix("")
        names.append("-".join(rel.parts) or p.stem)
    return names


def find_labels(image: Path, labels_name: str | None = None) -> Path | None:
    """The labels file beside ``image``: ``labels_name`` (a name or template with ``{stem}``,
    ``{suffix}``) or the first of :data:`LABEL_NAMES` that exists."""
    names = [labels_name] if labels_name else list(LABEL_NAMES)
    for pattern in names:
        cand = image.parent / pattern.format(stem=image.stem, suffix=image.suffix, name=image.name)
        if cand.exists() and cand.resolve() != image.resolve():
            return cand
    return None


def _unique(movies: list[MovieSpec]) -> list[MovieSpec]:
    seen: dict[str, MovieSpec] = {}
    for m in movies:
        if m.movie in seen:
            raise InputError(f"two movies of the SPEC get the name {m.movie!r} ({seen[m.movie].image} and {m.image}); "
                             "give each row its own name in a 'movie' column")
        seen[m.movie] = m
    return movies


def _spec_from_table(df: pd.DataFrame, base: Path, where: str) -> list[MovieSpec]:
    df = df.rename(columns=lambda c: str(c).strip())
    missing = [c for c in ("image", "labels") if c not in df.columns]
    if missing:
        raise InputError(f"{where} lacks the column(s) {', '.join(missing)}; a SPEC needs one row per movie "
                         "with 'image' and 'labels' (file names, relative to the SPEC's folder) and may have "
                         "'movie' (a name) and any other columns (strain, condition, position, ...)")
    if not len(df):
        raise InputError(f"{where} names no movie; add one row per movie")
    meta_cols = [c for c in df.columns if c not in RESERVED]
    images, labels = [], []
    for i, (img, lab) in enumerate(zip(df["image"].astype(str).str.strip(), df["labels"].astype(str).str.strip()),
                                   start=2):  # row 1 is the header
        if not img or not lab:
            raise InputError(f"{where}, row {i}: both 'image' and 'labels' are needed")
        images.append(Path(img) if Path(img).is_absolute() else base / img)
        labels.append(Path(lab) if Path(lab).is_absolute() else base / lab)
    if "movie" in df.columns and (df["movie"].astype(str).str.strip() != "").all():
        names = [_safe_name(n) for n in df["movie"].astype(str).str.strip()]
    else:
        names = [_safe_name(n) for n in _names_from_paths(images)]
    movies = [MovieSpec(n, img, lab, {c: df[c].iloc[k] for c in meta_cols})
              for k, (n, img, lab) in enumerate(zip(names, images, labels))]
    return _unique(movies)


def read_spec(spec, labels_name: str | None = None) -> list[MovieSpec]:
    """The movies of a SPEC.

    Parameters
    ----------
    spec
        A CSV file (one row per movie: ``image``, ``labels``, optional ``movie``, any other
        columns; relative paths are relative to the CSV's folder), a ``pandas.DataFrame`` of the
        same columns, a glob of image files (``"movies/*/image.tif"``) or a list of
        :class:`MovieSpec`.
    labels_name
        For a glob: the labels' file name beside each image, or a template such as
        ``"{stem}_masks{suffix}"`` (default: the first of :data:`LABEL_NAMES` found).
    """
    if isinstance(spec, (list, tuple)) and all(isinstance(m, MovieSpec) for m in spec):
        return _unique(list(spec))
    if isinstance(spec, pd.DataFrame):
        return _spec_from_table(spec.astype(str), Path.cwd(), "the SPEC table")
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise InputError(f"SPEC {path} not found; give a CSV (one row per movie) or a glob of image files")
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        return _spec_from_table(df, path.resolve().parent, str(path))
    matches = sorted(Path(p) for p in _glob.glob(text, recursive=True))
    files = [p for p in matches if p.is_file()]
    if not files:
        raise InputError(f"no file matches {text!r}; give a CSV SPEC or a glob of image files "
                         "(quote it so that the shell does not expand it)")
    pairs = {}
    for img in files:
        lab = find_labels(img, labels_name)
        if lab is not None:
            pairs[img.resolve()] = (img, lab)
    label_files = {lab.resolve() for _, lab in pairs.values()}
    pairs = {k: v for k, v in pairs.items() if k not in label_files}  # a glob that caught the labels too
    lonely = [str(p) for p in files if p.resolve() not in pairs and p.resolve() not in label_files]
    if lonely:
        tried = labels_name or ", ".join(LABEL_NAMES)
        raise InputError(f"no labels found beside {lonely[0]}" + (f" (and {len(lonely) - 1} more)" if len(lonely) > 1
                                                                   else "")
                         + f"; looked for {tried}. Name them with --labels-name, or use a CSV SPEC")
    imgs = [v[0] for v in pairs.values()]
    names = [_safe_name(n) for n in _names_from_paths(imgs)]
    return _unique([MovieSpec(n, img, lab, {}) for n, (img, lab) in zip(names, pairs.values())])


# ---------------------------------------------------------------------------- one movie's state

def _json_round(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def _same_input(recorded: dict, path: Path) -> bool:
    """Whether ``run.json``'s record of an input is this file: same path and size, or, when the
    folder was moved, same size and content."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if recorded.get("bytes") != size:
        return False
    if recorded.get("path") == str(path.resolve()):
        return True
    return recorded.get("sha256") == file_sha256(path)


def movie_state(folder, config: dict, model_fp: str, movie: MovieSpec) -> tuple[str, str]:
    """``("complete", "")``, ``("stale", why)`` or ``("todo", "")`` for one movie's result folder.

    Complete: :func:`~napari_yeast_phenotypes.core.jobs.result_complete` holds and its
    ``run.json`` records this run's config (``to_dict``), model fingerprint and input files.
    """
    folder = Path(folder)
    if not result_complete(folder):
        return "todo", ""
    try:
        run = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return "todo", ""
    if _json_round(run.get("config") or {}) != _json_round(config):
        return "stale", "made with other classify settings"
    if (run.get("model") or {}).get("fingerprint") != model_fp:
        return "stale", "made with another model"
    inputs = run.get("inputs") or {}
    for key, path in (("image", movie.image), ("labels", movie.labels)):
        if not _same_input(inputs.get(key) or {}, Path(path)):
            return "stale", f"made from another {key} file"
    return "complete", ""


def clean_leftovers(folder: Path) -> None:
    """Remove what a killed writer of this package left in ``folder``: staging folders and the
    temporary files of atomic writes (``.<name>.<random>.tmp``) of the files it writes.

    Only call it while holding the folder's lock: then no live writer owns them.
    """
    if not folder.is_dir():
        return
    ours = (*RESULT_FILES, RUN_FILE, WRITING_MARK, *COMBINED, FAILURES_FILE, MOVIES_FILE, EXPERIMENT_FILE)
    prefixes = tuple(f".{name}." for name in ours)
    for p in folder.iterdir():
        if p.name.startswith(".staging-") and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(prefixes) and p.name.endswith(".tmp") and p.is_file():
            try:
                p.unlink()
            except OSError:
                pass


# ---------------------------------------------------------------------------- the worker side

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
    from .model import load_classifier

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


def _torch_threads_here(per_worker: dict | None = None) -> int | None:
    """Torch threads for a task on a worker we did not start: the CPUs of its host shared by all
    the task slots of the workers on that host (``per_worker``, worked out by the client, see
    :func:`threads_per_worker`), or, for a worker that joined later, by its own slots."""
    try:
        from dask.distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError, AttributeError):
        return None
    if per_worker and worker.address in per_worker:
        return per_worker[worker.address]
    return max(1, usable_cpus() // max(1, worker.state.nthreads))


def threads_per_worker(client) -> dict[str, int]:
    """Torch threads per task for each worker of a cluster: on each host, the CPUs a worker may
    use divided by the task slots of all the workers on that host, so that together they never
    oversubscribe the host's cores."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}) if _takes_n_workers(client) \
        else client.scheduler_info().get("workers", {})
    cpus = client.run(usable_cpus)
    slots: dict[str, int] = {}
    for info in workers.values():
        slots[info.get("host", "")] = slots.get(info.get("host", ""), 0) + int(info.get("nthreads", 1))
    return {addr: max(1, int(cpus.get(addr, 1)) // max(1, slots.get(info.get("host", ""), 1)))
            for addr, info in workers.items()}


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


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

    from .jobs import classify_movie

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


# ---------------------------------------------------------------------------- where it runs

def plan_local(n_movies: int, cpus: int | None = None, gpu: bool = False, workers: int | None = None,
               torch_threads: int | None = None) -> tuple[int, int]:
    """Workers and torch threads per worker of a local cluster, so that together they fill the
    CPUs without oversubscribing them: ``workers x torch_threads <= cpus``.

    On a GPU one worker feeds it (more would only compete for its memory); on CPUs each worker
    gets :data:`THREADS_PER_WORKER` threads, and no more workers than movies are started.
    """
    cpus = cpus or usable_cpus()
    if workers is None:
        workers = 1 if gpu else max(1, cpus // THREADS_PER_WORKER)
    workers = max(1, min(int(workers), max(1, n_movies)))
    if torch_threads is None:
        torch_threads = max(1, cpus // workers)
    return workers, int(torch_threads)


def _wants_gpu(device: str) -> bool:
    if device.startswith("cuda") or device == "mps":
        return True
    if device != "auto":
        return False
    import torch

    return bool(torch.cuda.is_available())


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def local_cluster(workers: int, torch_threads: int):
    """A ``dask.distributed`` client on a new local cluster of ``workers`` processes of one task
    slot each (a movie at a time), which import this very copy of the package."""
    import logging

    from dask.distributed import Client, LocalCluster

    path = os.pathsep.join([_package_root(), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env = {"PYTHONPATH": path, "OMP_NUM_THREADS": str(torch_threads), "MKL_NUM_THREADS": str(torch_threads)}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           env=env, silence_logs=logging.ERROR)
    return Client(cluster)


def connect(scheduler: str, timeout: float = 30.0):
    """A client of an existing ``dask.distributed`` scheduler (``tcp://host:8786``, a scheduler file)."""
    from dask.distributed import Client

    try:
        if str(scheduler).endswith(".json") and Path(scheduler).is_file():
            return Client(scheduler_file=str(scheduler), timeout=timeout)
        return Client(scheduler, timeout=timeout)
    except OSError as exc:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start it first, or leave out "
                         "--scheduler to run on a local cluster") from exc


# ---------------------------------------------------------------------------- the experiment

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
    """

    out: Path
    movies: pd.DataFrame
    tracks: pd.DataFrame
    failures: pd.DataFrame
    run: dict = field(default_factory=dict)
    _cells: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def cells(self) -> pd.DataFrame:
        """The combined cells table (``OUT/cells.csv``), read on first use: it can be large."""
        if self._cells is None:
            self._cells = read_combined(self.out / "cells.csv")
        return self._cells

    def counts(self) -> dict[str, int]:
        return {s: int((self.movies["status"] == s).sum()) for s in ("done", "skipped", "failed")}


def read_combined(path) -> pd.DataFrame:
    """A combined table as written by :func:`classify_many` (the SPEC's columns kept as text)."""
    path = Path(path)
    head = pd.read_csv(path, nrows=0).columns
    meta = dict.fromkeys(head[:list(head).index("track_id")], str) if "track_id" in head else {}
    df = pd.read_csv(path, dtype=meta, keep_default_na=False, na_values={c: [""] for c in head if c not in meta})
    if "senescence_frame" in df:
        df["senescence_frame"] = df["senescence_frame"].astype("Int64")
    return df


def _write_table(df: pd.DataFrame, path: Path) -> None:
    with atomic_write(path, "w", newline="") as fh:
        df.to_csv(fh, index=False)


def combine_tables(out: Path, movies: list[MovieSpec], meta_cols: list[str], names: dict[str, list[str]]) -> None:
    """Write ``OUT/cells.csv`` and ``OUT/tracks.csv``: the complete movies' tables one after the
    other, each row with its movie's name and SPEC columns in front. The per-movie files are
    copied as text (never re-formatted), one movie in memory at a time, and each combined file
    is written whole or not at all."""
    for table in COMBINED:
        with atomic_write(out / table, "w", newline="") as fh:
            header = ["movie", *meta_cols, *names[table]]
            pd.DataFrame(columns=header).to_csv(fh, index=False)
            for m in movies:
                df = pd.read_csv(out / MOVIES_DIR / m.movie / table, dtype=str, keep_default_na=False)
                if list(df.columns) != names[table]:
                    raise InputError(f"{out / MOVIES_DIR / m.movie / table} has other columns than the other movies "
                                     "(another model's classes?); classify it again with --overwrite")
                front = pd.DataFrame({"movie": m.movie, **{c: str(m.meta.get(c, "")) for c in meta_cols}},
                                     index=df.index)
                pd.concat([front, df], axis=1).to_csv(fh, index=False, header=False)


def _experiment_lock(out: Path):
    return FileLock(out / EXPERIMENT_LOCK, timeout=0, what="yeast-phenotypes classify-many")


def classify_many(spec, model, out, config: ClassifyConfig | None = None, *, scheduler: str | None = None,
                  client=None, workers: int | None = None, torch_threads: int | None = None,
                  overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                  class_names=None, trust: bool = False, labels_name: str | None = None,
                  lock_wait_s: float = 3600.0) -> ExperimentResult:
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
    labels_name
        For a glob SPEC: the labels' file name beside each image (see :func:`find_labels`).

    Returns
    -------
    ExperimentResult
    """
    config = config or ClassifyConfig()
    movies = read_spec(spec, labels_name)
    meta_cols = list(dict.fromkeys(c for m in movies for c in m.meta))
    out = check_writable_dir(out)
    model_path = Path(model)
    if not model_path.is_file():
        raise InputError(f"model file not found: {model_path}")
    # a bad model is said once, before any movie; the cache serves the movies run in this process
    clf = cached_model(model_path, file_sha256(model_path), class_names, trust)
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
        states = {m.movie: movie_state(out / MOVIES_DIR / m.movie, cfg, fp["fingerprint"], m) for m in movies}
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
        return _finish(out, movies, meta_cols, names, results, fp, cfg, how, started, t0)


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


def _finish(out: Path, movies: list[MovieSpec], meta_cols, names, results, fp, cfg, how, started, t0
            ) -> ExperimentResult:
    rows = []
    for m in movies:
        r = results.get(m.movie, {})
        rows.append({"movie": m.movie, **{c: m.meta.get(c, "") for c in meta_cols}, "image": str(m.image),
                     "labels": str(m.labels), "status": r.get("status", "failed"), "reason": r.get("reason", ""),
                     "seconds": r.get("seconds", 0.0), "folder": str(Path(MOVIES_DIR) / m.movie)})
    table = pd.DataFrame(rows, columns=["movie", *meta_cols, "image", "labels", "status", "reason", "seconds",
                                        "folder"])
    complete = [m for m in movies if results.get(m.movie, {}).get("status") in ("done", "skipped")]
    combine_tables(out, complete, meta_cols, names)
    failures = table.loc[table["status"] == "failed", ["movie", "image", "labels", "reason"]].reset_index(drop=True)
    _write_table(failures, out / FAILURES_FILE)
    _write_table(table, out / MOVIES_FILE)
    run = {"package": "napari-yeast-phenotypes", "version": __version__, "job": "classify-many",
           "config": cfg, "model": fp, "movies": len(movies),
           "done": int((table["status"] == "done").sum()), "skipped": int((table["status"] == "skipped").sum()),
           "failed": int(len(failures)), "started": started, "finished": _now(),
           "seconds": round(time.perf_counter() - t0, 3), "run": how, "spec_columns": meta_cols}
    with atomic_write(out / EXPERIMENT_FILE) as fh:
        json.dump(run, fh, indent=2, default=str)
    return ExperimentResult(out, table, read_combined(out / "tracks.csv"), failures, run)


def movies_bar(desc: str = "movies") -> Callable[[int, int], None]:
    """A tqdm bar over movies, driven by ``(finished, total)`` callbacks (skipped movies count)."""
    from .progress import frames_bar

    return frames_bar(desc, unit="movie")


# ---------------------------------------------------------------------------- the ageing job

def read_tracks(source) -> tuple[pd.DataFrame, Path]:
    """The tracks table of a classify-many folder, a classify folder, or a tracks.csv; and its folder."""
    path = Path(source)
    csv = path / "tracks.csv" if path.is_dir() else path
    if not csv.is_file():
        raise InputError(f"no tracks table at {csv}; give a folder written by classify-many or classify, "
                         "or a tracks.csv")
    if path.is_dir() and (path / "experiment.json").is_file():
        return read_combined(csv), path
    return pd.read_csv(csv), csv.parent


def run_ageing(source, by=None, out=None, *, frame_interval: float = 1.0, time_unit: str | None = None,
               alpha: float = 0.05, overwrite: bool = False) -> tuple:
    """``yeast-phenotypes ageing``: the survival tables and ``ageing.png`` of an experiment's tracks.

    Parameters
    ----------
    source
        A classify-many folder (its combined ``tracks.csv``), a classify folder or a ``tracks.csv``.
    by
        Column(s) to compare by (a comma-separated string or a list); ``None``: one group.
    out
        Folder for the tables and the figure (default ``<source folder>/ageing``); earlier
        results there are replaced only with ``overwrite``.

    Returns
    -------
    (SurvivalResult, list of the files written)
    """
    from .export import write_csv
    from .io import prepare_output_dir
    from .survival import ageing_figure, senescence_survival

    if isinstance(by, str):
        by = [b.strip() for b in by.split(",") if b.strip()] or None
    tracks, folder = read_tracks(source)
    res = senescence_survival(tracks, by, frame_interval=frame_interval, time_unit=time_unit, alpha=alpha)
    if not res.groups:
        raise InputError("no track can be followed: every track is empty or senescent when first seen")
    names = [*res.tables(), "ageing.png"]
    out = prepare_output_dir(out or folder / "ageing", names, overwrite)
    written = [write_csv(df, out / name) for name, df in res.tables().items()]
    fig = ageing_figure(res, title=f"Time to senescence ({len(res.tracks)} tracks)")
    with atomic_write(out / "ageing.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    return res, [*written, out / "ageing.png"]


__all__ = ["ExperimentResult", "MovieSpec", "classify_many", "clean_leftovers", "combine_tables", "connect",
           "find_labels", "local_cluster", "model_loads", "movie_state", "movies_bar", "plan_local", "read_combined",
           "read_spec", "read_tracks", "run_ageing", "run_movie", "usable_cpus"]
