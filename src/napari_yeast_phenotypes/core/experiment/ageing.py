"""The ageing analysis of a classified experiment: senescence as survival per condition
(:func:`~napari_yeast_phenotypes.core.results.survival.senescence_survival`), tables and figure written whole.

Before anything is computed, the tables are checked to be the ones the user means: a
classify-many folder whose last run did not finish (its combined ``tracks.csv`` is the run
before's, or none) is refused; a combined table or a movie's table changed since classify-many
combined them is said; two movies of one experiment with the same image or labels (one movie
counted twice) are refused. The figure is drawn in memory before any file is written, so a
figure that cannot be drawn leaves no half-written analysis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from ... import __version__
from ..errors import InputError
from ..files.atomic import atomic_write
from ..files.fingerprint import file_sha256
from .combine import read_combined

AGEING_FILE = "ageing.json"


def _experiment(folder: Path) -> dict:
    try:
        exp = json.loads((folder / "experiment.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder / 'experiment.json'} cannot be read ({exc}); run classify-many into "
                         f"{folder} again to rebuild it") from None
    if not isinstance(exp, dict):
        raise InputError(f"{folder / 'experiment.json'} is not what classify-many writes; run classify-many into "
                         f"{folder} again to rebuild it")
    return exp


def check_experiment(folder: Path) -> list[str]:
    """Refuse the tables of a classify-many run that did not finish, or that count one movie twice; return
    what the user should know of tables changed since they were combined."""
    exp = _experiment(folder)
    if not exp.get("finished"):
        raise InputError(f"classify-many into {folder} did not finish (started {exp.get('started', '?')}; "
                         "interrupted?): its tracks.csv, if any, is from an earlier run. Run the same classify-many "
                         "command again to finish it (complete movies are skipped), then ageing")
    notes = []
    rec = (exp.get("tables") or {}).get("tracks.csv") if isinstance(exp.get("tables"), dict) else None
    if isinstance(rec, dict) and rec.get("sha256") and file_sha256(folder / "tracks.csv") != rec["sha256"]:
        notes.append(f"{folder / 'tracks.csv'} was changed after classify-many wrote it (edited by hand?); it is "
                     "analysed as it is now")
    movie_tables = exp.get("movie_tables") if isinstance(exp.get("movie_tables"), dict) else {}
    changed = []
    for movie, sha in movie_tables.items():
        path = folder / "movies" / str(movie) / "tracks.csv"
        try:
            if file_sha256(path) != sha:
                changed.append(str(movie))
        except OSError:
            changed.append(str(movie))
    if changed:
        notes.append(f"the tables of {len(changed)} movie(s) changed after classify-many combined them "
                     f"({', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}): the combined tracks.csv "
                     "does not hold them as they are now; run classify-many again to combine them anew")
    movies = _movies_of(folder) if not movie_tables else list(movie_tables)
    _check_distinct(folder, movies)
    notes.extend(_failed_movies(folder, exp))
    return notes


def _movies_table(folder: Path) -> pd.DataFrame | None:
    """``movies.csv`` of a classify-many folder as written (neutralised cells restored), or None."""
    from ..files.tables import read_user_csv, restore_table

    if (folder / "movies.csv").is_symlink():  # never read through a link
        return None
    try:
        table = restore_table(read_user_csv(folder / "movies.csv", "the movies table"))
    except InputError:
        return None
    return table if {"movie", "status"} <= set(table.columns) else None


def _movies_of(folder: Path) -> list[str]:
    """The movies whose tables the combined tracks.csv holds, for a folder whose experiment.json does not
    list them (written by an earlier version): the done and skipped rows of movies.csv, else every movie
    folder (real folders only, never through a link)."""
    table = _movies_table(folder)
    if table is not None:
        return [str(m) for m in table.loc[table["status"].isin(["done", "skipped"]), "movie"]]
    movies = folder / "movies"
    if not movies.is_dir() or movies.is_symlink():
        return []
    return sorted(p.name for p in movies.iterdir() if p.is_dir() and not p.is_symlink())


def _failed_movies(folder: Path, exp: dict) -> list[str]:
    """A note naming the movies that failed (they are in no table), with the values of their SPEC columns:
    a group whose every movie failed is then absent from the analysis, and the user is told why."""
    failed = exp.get("failed")
    if not isinstance(failed, int) or isinstance(failed, bool) or failed <= 0:
        return []
    table = _movies_table(folder)
    if table is None:
        return [(f"{failed} movie(s) failed in classify-many and are in no table (see {folder / 'failures.csv'}); "
                 "a group whose every movie failed is absent here")]
    rows = table[table["status"] == "failed"]
    cols = [c for c in (exp.get("spec_columns") or []) if isinstance(c, str) and c in rows.columns]
    said = []
    for _, row in rows.head(5).iterrows():
        values = ", ".join(f"{c} {row[c]!r}" for c in cols)
        said.append(f"{row['movie']}{f' ({values})' if values else ''}")
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return [(f"{len(rows)} movie(s) failed in classify-many and are in no table: {'; '.join(said)}{more} "
             f"(why: {folder / 'failures.csv'}); a group whose every movie failed is absent here. Mend them and "
             "run the same classify-many command again (done movies are skipped)")]


def _check_distinct(folder: Path, movies: list[str]) -> None:
    """Refuse an experiment whose movies' ``run.json`` record the same image or labels content twice."""
    seen: dict[tuple[str, str], str] = {}
    for movie in movies:
        try:
            inputs = json.loads((folder / "movies" / movie / "run.json").read_text()).get("inputs") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for key in ("image", "labels"):
            sha = (inputs.get(key) or {}).get("sha256") if isinstance(inputs.get(key), dict) else None
            if not sha:
                continue
            if (key, sha) in seen:
                raise InputError(f"the movies {seen[key, sha]} and {movie} of {folder} were classified from the same "
                                 f"{key} (the same content): their cells would be counted twice. Remove one of them "
                                 "from the SPEC and run classify-many again (the other movies are skipped)")
            seen[key, sha] = movie


def read_tracks(source) -> tuple[pd.DataFrame, Path, list[str]]:
    """The tracks table of a classify-many folder, a classify folder, or a tracks.csv; its folder; and
    what the user should know of it (see :func:`check_experiment`).

    Values are read as written: ``NA``, ``None`` and empty cells of the grouping columns stay three
    different values (nothing turns into ``nan``).
    """
    from ..files.tables import read_user_csv, restore_table
    from ..results.folder import RUN_FILE, result_complete

    path = Path(source)
    csv = path / "tracks.csv" if path.is_dir() else path
    if not csv.is_file():
        raise InputError(f"no tracks table at {csv}; give a folder written by classify-many or classify, "
                         "or a tracks.csv")
    notes: list[str] = []
    folder = csv.parent
    if (folder / "experiment.json").is_file() and csv.name == "tracks.csv":
        if path.is_dir():
            notes = check_experiment(folder)
        else:
            exp = _experiment(folder)
            if not exp.get("finished"):
                notes.append(f"classify-many into {folder} did not finish: {csv} is from an earlier run")
        return read_combined(csv), folder, notes
    if (folder / RUN_FILE).is_file() and csv.name == "tracks.csv" and not result_complete(folder):
        raise InputError(f"{folder} is not a complete result folder (its files are not the ones its run.json "
                         "lists: changed since, or an interrupted write); classify the movie into it again")
    # a tracks.csv of this package (its neutralised cells restored) or a table made elsewhere, read as written
    return restore_table(read_user_csv(csv, "the tracks table")), folder, notes


def run_ageing(source, by=None, out=None, *, frame_interval: float = 1.0, time_unit: str | None = None,
               alpha: float = 0.05, overwrite: bool = False, pairs: bool = False,
               progress: Callable[[int, int], None] | None = None) -> tuple:
    """``yeast-phenotypes ageing``: the survival tables, ``ageing.json`` and ``ageing.png`` of an experiment's tracks.

    Parameters
    ----------
    source
        A classify-many folder (its combined ``tracks.csv``), a classify folder or a ``tracks.csv``.
    by
        Column(s) to compare by (a comma-separated string or a list); ``None``: one group.
    out
        Folder for the tables and the figure (default ``<source folder>/ageing``); earlier
        results there are replaced only with ``overwrite``.
    pairs
        Also test every pair of groups (Holm-adjusted); by default one log-rank test of all groups.
    progress
        ``callback(done, total)``: groups estimated, then pairs tested.

    Returns
    -------
    (SurvivalResult, list of the files written); the result's ``notes`` say what was left out and why.
    """
    from ..files.atomic import prepare_output_dir
    from ..files.tables import write_csv
    from ..results.figures import png_bytes
    from ..results.survival import senescence_survival
    from ..results.survival_figure import ageing_figure

    if isinstance(by, str):
        if not by.strip() or not [b for b in by.split(",") if b.strip()]:
            raise InputError(f"--by {by!r} names no column: give one or more of the tracks table's columns, "
                             "comma-separated (e.g. condition or strain,condition), or leave --by out for one group")
        by = [b.strip() for b in by.split(",") if b.strip()]
    tracks, folder, notes = read_tracks(source)
    res = senescence_survival(tracks, by, frame_interval=frame_interval, time_unit=time_unit, alpha=alpha,
                              pairs=pairs, progress=progress)
    res.notes[:0] = notes
    if not res.groups:
        left = "; ".join(res.notes) or "the table holds no track"
        raise InputError(f"no track can be followed ({left})")
    names = [*res.tables(), AGEING_FILE, "ageing.png"]
    out = Path(out or folder / "ageing")
    if out.exists():
        prepare_output_dir(out, names, overwrite)  # a file there, or earlier results: said before the figure
    picture = png_bytes(ageing_figure(res, title=f"Time to senescence ({len(res.tracks)} tracks)"))  # before any file
    out = prepare_output_dir(out, names, overwrite)
    written = [write_csv(df, out / name) for name, df in res.tables().items()]
    with atomic_write(out / AGEING_FILE) as fh:
        json.dump({"package": "napari-yeast-phenotypes", "version": __version__, "job": "ageing",
                   "source": str(Path(source).resolve()), "frame_interval": frame_interval, **res.summary()},
                  fh, indent=2, default=str)
    with atomic_write(out / "ageing.png", "wb") as fh:
        fh.write(picture)
    return res, [*written, out / AGEING_FILE, out / "ageing.png"]


__all__ = ["check_experiment", "read_tracks", "run_ageing"]
