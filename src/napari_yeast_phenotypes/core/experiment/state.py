"""Where an experiment's movies stand: the content of their inputs (SHA-256, each file hashed once in a
run), a SPEC that lists one movie twice refused (:func:`check_distinct_movies`), whether a movie's folder is
complete and made with this run's settings, model and inputs (:func:`movie_state`), and what a killed writer
left in a folder (:func:`clean_leftovers`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import InputError
from ..files.fingerprint import file_sha256
from ..files.inside import path_inside
from ..results.folder import RESULT_FILES, RUN_FILE, WRITING_MARK, read_run, result_complete
from .combine import COMBINED, FAILURES_FILE, MOVIES_FILE
from .spec import MovieSpec

EXPERIMENT_FILE = "experiment.json"


def _json_round(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def content_sha256(path: Path, hashes: dict | None = None) -> str:
    """SHA-256 of a file's bytes. ``hashes`` caches them within one run, keyed by the file's path, size,
    inode and modification and change times, so that a file read twice in a run is hashed once; a
    file changed in between has another key (its change time moves with any write) and is hashed
    again. Across runs nothing is cached: a rerun hashes every input it trusts."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns)
    if hashes is not None and key in hashes:
        return hashes[key]
    digest = file_sha256(path)
    if hashes is not None:
        hashes[key] = digest
    return digest


def _same_input(recorded: dict, path: Path, hashes: dict | None = None) -> bool:
    """Whether ``run.json``'s record of an input is this file's content. A file of another size is
    another file at once; a file of the same size is compared by SHA-256 (a movie replaced at the
    same path by a re-segmentation of the same size is another movie), wherever it lies."""
    try:
        size = path.stat().st_size
        if recorded.get("bytes") != size or not recorded.get("sha256"):
            return False
        return recorded["sha256"] == content_sha256(path, hashes)
    except OSError:
        return False


def movie_state(folder, config: dict, model_fp: str, movie: MovieSpec, hashes: dict | None = None
                ) -> tuple[str, str]:
    """``("complete", "")``, ``("stale", why)`` or ``("todo", "")`` for one movie's result folder.

    Complete: :func:`~napari_yeast_phenotypes.core.results.folder.result_complete` holds and its
    ``run.json`` records this run's config (``to_dict``), model fingerprint and input files (their
    content: SHA-256, see :func:`_same_input`).
    """
    folder = Path(folder)
    if not _reached_without_links(folder) or not result_complete(folder):
        return "todo", ""
    try:
        run = read_run(folder)
    except (OSError, ValueError):
        return "todo", ""
    if not isinstance(run, dict):
        return "todo", ""
    if _json_round(run.get("config") or {}) != _json_round(config):
        return "stale", "made with other classify settings"
    if (run.get("model") or {}).get("fingerprint") != model_fp:
        return "stale", "made with another model"
    inputs = run.get("inputs") or {}
    for key, path in (("image", movie.image), ("labels", movie.labels)):
        if not _same_input(inputs.get(key) or {}, Path(path), hashes):
            return "stale", f"made from another {key} file (other content)"
    return "complete", ""


_SAMPLE = 1 << 20


def _quick_print(path: Path) -> tuple:
    """Size and the hash of three 1 MiB samples (start, middle, end): equal for equal files; files that
    differ almost always differ here, so only files equal here need a full hash to tell."""
    import hashlib

    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for at in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
            fh.seek(at)
            h.update(fh.read(_SAMPLE))
    return size, h.hexdigest()


def check_distinct_movies(movies: list[MovieSpec], hashes: dict | None = None) -> None:
    """Refuse a SPEC that lists one movie twice (under two names, two paths, or a copy): its cells would be
    classified and counted twice. Two movies are one when their images, or their labels, have the
    same content (SHA-256; only files that agree in size and in samples are hashed whole)."""
    for key in ("image", "labels"):
        groups: dict[tuple, list[MovieSpec]] = {}
        for m in movies:
            path = Path(getattr(m, key))
            try:
                groups.setdefault(_quick_print(path), []).append(m)
            except OSError:
                continue  # a missing file fails its movie, said in failures.csv
        for group in groups.values():
            if len(group) < 2:
                continue
            same: dict[str, MovieSpec] = {}
            for m in group:
                path = Path(getattr(m, key))
                try:
                    digest = content_sha256(path, hashes)
                except OSError:
                    continue
                if digest in same:
                    first = same[digest]
                    raise InputError(
                        f"the movies {first.movie} and {m.movie} have the same {key} ({getattr(first, key)} and "
                        f"{path}: the same content); a movie listed twice would be classified and counted "
                        "twice in the statistics. List each movie once (to compare two segmentations of "
                        "one movie, run classify-many once for each)")
                same[digest] = m


def _reached_without_links(movie_folder: Path) -> bool:
    """Whether ``<out>/movies/<movie>`` is reached from the experiment folder without a symbolic link."""
    try:
        path_inside(movie_folder.parent.parent, f"{movie_folder.parent.name}/{movie_folder.name}")
    except InputError:
        return False
    return True


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


__all__ = ["clean_leftovers", "movie_state"]
