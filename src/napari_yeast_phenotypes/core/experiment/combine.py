"""The experiment's combined tables: every movie's cells and tracks with the SPEC's columns in front,
rebuilt from the movie folders and written whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..files.tables import read_own_csv, restore_table, write_csv
from .spec import MOVIES_DIR, MovieSpec

COMBINED = ("cells.csv", "tracks.csv")


FAILURES_FILE = "failures.csv"


MOVIES_FILE = "movies.csv"


def read_combined(path) -> pd.DataFrame:
    """A combined table as written by :func:`classify_many` (the SPEC's columns kept as text, every value as
    it was given: see :mod:`~napari_yeast_phenotypes.core.files.tables`)."""
    path = Path(path)
    head = pd.read_csv(path, nrows=0).columns
    meta = dict.fromkeys(head[:list(head).index("track_id")], str) if "track_id" in head else {}
    df = read_own_csv(path, dtype=meta, keep_default_na=False, na_values={c: [""] for c in head if c not in meta})
    if "senescence_frame" in df:
        df["senescence_frame"] = df["senescence_frame"].astype("Int64")
    return df


#: the columns of the per-movie tables that hold text (all others hold numbers)
_TEXT_COLUMNS = ("phenotype", "phenotype_raw", "dominant_phenotype", "transitions", "annotated")


def combine_tables(out: Path, movies: list[MovieSpec], meta_cols: list[str], names: dict[str, list[str]]) -> None:
    """Write ``OUT/cells.csv`` and ``OUT/tracks.csv``: the complete movies' tables one after the
    other, each row with its movie's name and SPEC columns in front. The per-movie files are
    copied as text (numbers never re-formatted), one movie in memory at a time, and each combined
    file is written whole or not at all, by the package's one CSV writer."""
    for table in COMBINED:
        header = ["movie", *meta_cols, *names[table]]
        write_csv(_movie_parts(out, movies, meta_cols, names[table], table, header), out / table, float_format=None)


def _movie_parts(out: Path, movies: list[MovieSpec], meta_cols: list[str], columns: list[str], table: str,
                 header: list[str]):
    yield pd.DataFrame(columns=header)
    for m in movies:
        path = out / MOVIES_DIR / m.movie / table
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        if list(restore_table(df.iloc[:0]).columns) != columns:
            raise InputError(f"{path} has other columns than the other movies (another model's classes?); classify "
                             "it again with --overwrite")
        df = restore_table(df, [c for c in df.columns if c in _TEXT_COLUMNS])  # the writer neutralises it again
        df.columns = columns
        front = pd.DataFrame({"movie": m.movie, **{c: str(m.meta.get(c, "")) for c in meta_cols}}, index=df.index)
        yield pd.concat([front, df], axis=1)


__all__ = ["combine_tables", "read_combined"]
