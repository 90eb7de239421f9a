"""The experiment's combined tables: every movie's cells and tracks with the SPEC's columns in front,
rebuilt from the movie folders and written whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..files.atomic import atomic_write
from .spec import MOVIES_DIR, MovieSpec

COMBINED = ("cells.csv", "tracks.csv")


FAILURES_FILE = "failures.csv"


MOVIES_FILE = "movies.csv"


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


__all__ = ["combine_tables", "read_combined"]
