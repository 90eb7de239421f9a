"""CSV tables: the one writer of every table the package writes, and the readers of the tables it reads.

**Formulas neutralised.** A spreadsheet runs a cell that begins with ``=``, ``+``, ``-`` or ``@``
(or a tab or carriage return before one) as a formula, so a condition, a movie name or a class
name such as ``=HYPERLINK(...)`` taken from a SPEC would become live in the user's spreadsheet.
Following OWASP's advice on CSV injection, :func:`write_csv` writes such a text value with one
leading apostrophe (``'=HYPERLINK(...)``), which spreadsheets show as text. Numbers stay numbers:
``-1.5`` or ``+3e-2``, as numbers or as text, are written as they are. To keep the rule
invertible, a text value that itself begins with an apostrophe gets one more.

The package reads its own tables back (the combined tables for ``ageing``, the curated set's
manifest, a result's ``cells.csv``) through :func:`read_own_csv` / :func:`restore_table`, which
take the apostrophe off again: every value comes back exactly as it was given. (A hand-made
table's value ``'abc`` is left as it is: only apostrophes the writer adds are taken off.)

**Tables from users** (a SPEC, a tracks table given to ``ageing``) are read by
:func:`read_user_csv`: UTF-8 (with or without the byte-order mark Excel writes), every value as
text exactly as written (``NA``, ``None`` and empty cells stay what they are), and whatever cannot
be read is said in one plain line.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .atomic import atomic_write

#: the first characters that make a spreadsheet read a cell as a formula (OWASP: CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


_MARK = "'"


_TRIGGERS = (*FORMULA_START, _MARK)


_NUMBER = re.compile(r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)\Z", re.IGNORECASE)


def neutralise(value):
    """A table cell as the writer puts it in a CSV: text that a spreadsheet would run as a formula gets a
    leading apostrophe (so does text that begins with one); numbers and other values are unchanged."""
    if not isinstance(value, str) or not value:
        return value
    first = value[0]
    if first == _MARK or (first in FORMULA_START and not _NUMBER.match(value)):
        return _MARK + value
    return value


def restore(value):
    """The inverse of :func:`neutralise`: ``restore(neutralise(v)) == v`` for every value."""
    if isinstance(value, str) and value[:1] == _MARK and neutralise(value[1:]) != value[1:]:
        return value[1:]
    return value


def _candidates(s: pd.Series) -> pd.Series | None:
    """The cells of a column that may need a change (text starting with a trigger), or None."""
    if isinstance(s.dtype, pd.CategoricalDtype) or not (s.dtype == object or pd.api.types.is_string_dtype(s)):
        return None
    first = s.str[:1]
    hit = first.isin(_TRIGGERS).to_numpy(dtype=bool)
    return hit if hit.any() else None


def _map_table(df: pd.DataFrame, fn, columns=None) -> pd.DataFrame:
    out = None
    names = [fn(str(c)) if isinstance(c, str) else c for c in df.columns]
    if names != list(df.columns):
        out = df.copy()
        out.columns = names
    for i, c in enumerate(df.columns):
        if columns is not None and c not in columns:
            continue
        s = df.iloc[:, i]
        if isinstance(s.dtype, pd.CategoricalDtype):
            cats = [fn(v) for v in s.cat.categories]
            if cats != list(s.cat.categories) and len(set(cats)) == len(cats):
                out = df.copy() if out is None else out
                out.isetitem(i, s.cat.rename_categories(cats))
            continue
        hit = _candidates(s)
        if hit is None:
            continue
        out = df.copy() if out is None else out
        values = s.to_numpy(dtype=object).copy()
        values[hit] = [fn(v) for v in values[hit]]
        out.isetitem(i, pd.Series(values, index=s.index, name=s.name, dtype=s.dtype))
    return df if out is None else out


def neutralise_table(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as the writer puts it in a CSV: :func:`neutralise` on every text cell and column name."""
    return _map_table(df, neutralise)


def restore_table(df: pd.DataFrame, columns=None) -> pd.DataFrame:
    """A table read from one of the package's CSVs, with :func:`neutralise` undone (column names and
    text cells; only ``columns`` when given)."""
    return _map_table(df, restore, columns)


def _holds_cr(df: pd.DataFrame) -> bool:
    """Whether a text cell or a column name holds a carriage return."""
    if any(isinstance(c, str) and "\r" in c for c in df.columns):
        return True
    for i in range(df.shape[1]):
        s = df.iloc[:, i]
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = pd.Series(s.cat.categories.astype(object))
        if (s.dtype == object or pd.api.types.is_string_dtype(s)) and s.str.contains("\r", regex=False).any():
            return True
    return False


def _text_columns(df: pd.DataFrame, float_format: str) -> list[list] | None:
    """Each column as the texts pandas' ``to_csv(index=False, float_format=...)`` writes for it, or ``None``
    when a column is of a kind left to pandas (categories, dates, extension types, objects other than text)."""
    cols = []
    for i in range(df.shape[1]):
        col = df.iloc[:, i]
        kind = col.dtype.kind if isinstance(col.dtype, np.dtype) else None
        if kind == "b":
            cols.append(["True" if v else "False" for v in col.tolist()])
        elif kind in ("i", "u"):
            cols.append(list(map(str, col.tolist())))
        elif kind == "f":
            cols.append([float_format % v if v == v else "" for v in col.to_numpy(np.float64).tolist()])
        elif kind == "O" and pd.api.types.infer_dtype(col, skipna=False) in ("string", "empty"):
            cols.append(col.tolist())
        else:
            return None
    return cols


def csv_text(df: pd.DataFrame, header: bool = True, float_format: str | None = "%.6g") -> str:
    """The CSV text of ``df`` exactly as :func:`write_csv` writes it (formulas neutralised).

    Lines end in ``\n``; a table with a carriage return inside a value gets ``\r\n`` instead, the
    only way Python's CSV writer quotes such a value (with ``\n`` it would cut the row in two).

    The text is pandas' ``to_csv`` byte for byte; tables of numbers, booleans and text (the cell and
    track tables) are formatted here and written by the csv module, 2.2x faster than pandas (a cell
    table of 40,000 cell-frames: 0.41 instead of 0.92 s on 2 cores); other tables by pandas itself.
    """
    safe = neutralise_table(df)
    end = "\r\n" if _holds_cr(safe) else "\n"
    cols = _text_columns(safe, float_format) if float_format is not None and safe.shape[1] else None
    if cols is None:
        return safe.to_csv(index=False, header=header, float_format=float_format, lineterminator=end)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=end)
    if header:
        writer.writerow([str(c) for c in safe.columns])
    writer.writerows(zip(*cols))
    return buf.getvalue()


def write_csv(table: pd.DataFrame | Iterable[pd.DataFrame], path: str | os.PathLike,
              float_format: str | None = "%.6g") -> Path:
    """Write a CSV whole or not at all, with formulas neutralised (see the module's notes).

    ``table`` is a DataFrame, or DataFrames written one after the other (the first one's header
    only; e.g. one movie at a time), so that a large table need not be held in memory whole.
    Every CSV the package writes goes through here.
    """
    path = Path(path)
    parts = [table] if isinstance(table, pd.DataFrame) else table
    with atomic_write(path, "w", newline="") as fh:
        header = True
        for part in parts:
            fh.write(csv_text(part, header=header, float_format=float_format))
            header = False
    return path


def read_own_csv(path: str | os.PathLike, **kwargs) -> pd.DataFrame:
    """A CSV written by :func:`write_csv`, read with ``pandas.read_csv(**kwargs)`` and its values restored."""
    return restore_table(pd.read_csv(path, **kwargs))


def read_user_csv(path: str | os.PathLike, what: str = "the table") -> pd.DataFrame:
    """A user's CSV, every value as text exactly as written (no ``NA``/``None``/empty turned into NaN).

    Refused in one plain line (:class:`InputError`): a missing or empty file, text that is not
    UTF-8 (e.g. saved as "CSV" in a Windows code page), rows of more fields than the header, a
    header with a repeated or a blank name over values. Columns without a name and without any
    value (the trailing comma some spreadsheets write) are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputError(f"{what} {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save it as "
                         "UTF-8 (in Excel: 'CSV UTF-8'; in LibreOffice: character set Unicode (UTF-8))") from None
    if not text.strip():
        raise InputError(f"{what} {path} is empty; it needs a header line and one row per entry")
    if "\x00" in text:
        raise InputError(f"{what} {path} holds NUL bytes: it is not a text CSV (an Excel workbook? save it as CSV)")
    try:
        rows = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, ValueError) as exc:
        detail = str(exc).strip().replace("Error tokenizing data. C error: ", "")
        raise InputError(f"{what} {path} cannot be read as CSV ({detail}); quote values that hold commas") from None
    header = [str(h).strip() for h in rows.iloc[0]]
    df = rows.iloc[1:].fillna("")
    keep = []
    for j, name in enumerate(header):
        if not name:
            if df[j].astype(str).str.strip().ne("").any():
                raise InputError(f"{what} {path}: column {j + 1} holds values but has no name in the header; "
                                 "name it")
            continue
        keep.append(j)
    names = [header[j] for j in keep]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{what} {path} names the column(s) {', '.join(map(repr, dupes))} twice; give each column "
                         "its own name")
    out = df[keep].copy()
    out.columns = names
    return out.reset_index(drop=True)


__all__ = ["FORMULA_START", "csv_text", "neutralise", "neutralise_table", "read_own_csv", "read_user_csv",
           "restore", "restore_table", "write_csv"]
