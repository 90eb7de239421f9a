"""The manifest of a curated set: its columns, the fixed names (splits, marks, class names that can be
folder names), the identity of a cell-frame (movie by content, frame, label), and reading, checking
and writing ``manifest.csv`` (:class:`ManifestMixin`)."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import InputError
from ...files.atomic import atomic_write
from ...files.inside import open_inside
from ...files.tables import csv_text, restore_table

LEGACY_COLUMNS = ["crop_id", "split", "phenotype", "path", "experiment", "source", "frame", "label",
                  "track_id", "annotated_at", "annotator"]


#: added in version 2 of the manifest; an older manifest without them opens with them empty
NEW_COLUMNS = ["movie_id", "movie_path", "mark", "model", "model_phenotype", "conflict"]


MANIFEST_COLUMNS = LEGACY_COLUMNS + NEW_COLUMNS


_STR_COLUMNS = [c for c in MANIFEST_COLUMNS if c not in ("frame", "label", "track_id")]


SPLITS = ("train", "val", "test")


_SPLIT_ALIASES = {"validation": "val", "valid": "val", "training": "train", "testing": "test"}


SPLITS_HINT = "train, val (or validation) or test"


MARKS = ("unsure", "bad_segmentation")


MARK_FOLDER = "_marked"


#: below this many crops a class is reported as too few to learn from
MIN_PER_CLASS = 20


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(s)).strip("-.") or "x"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def normalise_split(value, where: str = "") -> str:
    """A split name from a user or a file as one of :data:`SPLITS` (case and ``validation`` forgiven).

    Raises
    ------
    InputError
        For any other name: a split becomes a folder, so only the fixed names are taken.
    """
    key = str(value).strip().lower()
    key = _SPLIT_ALIASES.get(key, key)
    if key not in SPLITS:
        raise InputError(f"{where}unknown split {value!r}; use {SPLITS_HINT}")
    return key


def normalise_mark(value) -> str:
    """``""`` for no mark, else one of :data:`MARKS` (``"bad segmentation"``, any case, accepted)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    key = re.sub(r"[\s-]+", "_", str(value).strip().lower())
    if key in ("", "none"):
        return ""
    if key not in MARKS:
        raise InputError(f"unknown mark {value!r}; use one of {', '.join(MARKS)}")
    return key


def check_class_names(names, where: str = "") -> tuple[str, ...]:
    """Class names of a curated set (they become folder names): the package's one rule,
    :func:`~napari_yeast_phenotypes.core.config.parse_class_names`."""
    from ...config import parse_class_names

    if isinstance(names, str):
        raise InputError(f"{where}class names must be a list of names, not the text {names[:80]!r}")
    return parse_class_names(list(names) if isinstance(names, tuple) else names,
                             f"{where}class names")


def movie_identity(image, labels) -> str:
    """A movie's identity by content: a hash of its (T, Y, X) image and labels (shape, dtype, values).

    The same movie read from another path, or as a napari layer, has the same identity; two movies
    with the same file names in different folders do not.
    """
    from ...files.fingerprint import array_sha256

    return identity_from_hashes(array_sha256(image), array_sha256(labels))


def identity_from_hashes(image_sha256: str, labels_sha256: str) -> str:
    """:func:`movie_identity` from the movie's (T, Y, X) arrays' SHA-256 (:func:`~.fingerprint.array_sha256`)."""
    return hashlib.sha256(f"{image_sha256}|{labels_sha256}".encode()).hexdigest()[:32]


def _plain(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def cell_key(row) -> tuple:
    """The identity of a manifest row's cell-frame: (movie, frame, label).

    Rows written before movies had content identities (no ``movie_id``) are keyed by their
    experiment and source name, as they were then.
    """
    movie = row["movie_id"] or f"path:{row['experiment']}|{row['source']}"
    return (movie, int(row["frame"]), int(row["label"]))


def _movie_keys(df: pd.DataFrame) -> np.ndarray:
    """:func:`cell_key`'s movie part for every row of a manifest, at once."""
    out = df["movie_id"].to_numpy(dtype=object).copy()
    old = np.flatnonzero(out == "")
    if old.size:
        exp, src = df["experiment"].to_numpy(dtype=object), df["source"].to_numpy(dtype=object)
        out[old] = [f"path:{exp[i]}|{src[i]}" for i in old]
    return out


def _key_index(df: pd.DataFrame) -> dict:
    """``cell_key -> row position`` for a whole manifest (vectorised: the manifest may be long)."""
    return dict(zip(zip(_movie_keys(df), df["frame"].astype(int).tolist(), df["label"].astype(int).tolist()),
                    range(len(df))))


def _record(df: pd.DataFrame, i: int) -> dict:
    return {k: _plain(v) for k, v in zip(df.columns, df.iloc[i].tolist())}


def _legacy_key(row) -> tuple:
    return (f"path:{row['experiment']}|{row['source']}", int(row["frame"]), int(row["label"]))


def _track_key(row) -> tuple | None:
    track = int(row["track_id"])
    return None if track < 0 else (row["movie_id"] or f"path:{row['experiment']}|{row['source']}", track)


def _same_state(row: dict | None, want: dict | None) -> bool:
    if row is None or want is None:
        return row is None and want is None
    return all(str(row[c]) == str(want[c]) for c in ("phenotype", "mark", "split", "path"))


def _describe(key: tuple) -> str:
    movie = key[0] if str(key[0]).startswith("path:") else f"movie {str(key[0])[:8]}"
    return f"{movie} frame {key[1]} label {key[2]}"


class ManifestMixin:
    """The manifest of a :class:`~.store.CuratedSet`: read (checked row by row), kept in step with other
    writers, written whole, and its cells found by key."""

    def _signature(self):
        try:
            st = os.stat(self.root / "manifest.csv")
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        """Read the manifest again if another writer (or process) has replaced it since."""
        sig = self._signature()
        if sig != self._sig or sig is None:
            self.manifest = self._read_manifest()
            self._sig = sig

    def reload(self):
        """See what other writers have written since (the manifest is re-read when it changed)."""
        self._refresh()
        return self

    def _read_manifest(self) -> pd.DataFrame:
        path = self.root / "manifest.csv"
        if not os.path.lexists(path):
            return pd.DataFrame({c: pd.Series(dtype=object if c in _STR_COLUMNS else np.int64)
                                 for c in MANIFEST_COLUMNS})
        try:
            with open_inside(self.root, "manifest.csv") as fh:  # never through a link
                df = pd.read_csv(fh, dtype=dict.fromkeys(_STR_COLUMNS, str), keep_default_na=False)
            df = restore_table(df)  # what the writer neutralised for spreadsheets, as it was given
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{path} cannot be read ({exc}); restore it from a backup") from exc
        missing = [c for c in LEGACY_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(f"{path} lacks columns {missing}; it is not a curated-set manifest")
        for c in NEW_COLUMNS:  # a manifest written before these columns existed
            if c not in df.columns:
                df[c] = ""
        df = df[MANIFEST_COLUMNS].copy()
        for c in ("frame", "label", "track_id"):
            try:
                df[c] = pd.to_numeric(df[c], errors="raise").astype(np.int64)
            except (ValueError, TypeError) as exc:
                raise InputError(f"{path}: column {c} must hold whole numbers ({exc}); was it edited by hand?") \
                    from exc
        self._check_rows(df, path)
        return df.reset_index(drop=True)

    def _check_rows(self, df: pd.DataFrame, path: Path) -> None:
        """Every row names a crop inside the set, under the folder its split, class or mark says."""
        problems = []
        classes = set(self.class_names)
        for i, r in enumerate(df.itertuples(index=False)):
            if not _SAFE_ID.match(r.crop_id):
                problems.append(f"row {i + 2}: crop id {r.crop_id!r}")
            elif not _SAFE_ID.match(r.split) or r.split.startswith("_"):
                problems.append(f"row {i + 2}: split {r.split!r}")
            elif r.mark and r.mark not in MARKS:
                problems.append(f"row {i + 2}: mark {r.mark!r}")
            elif not r.mark and r.phenotype not in classes:
                problems.append(f"row {i + 2}: phenotype {r.phenotype!r}")
            elif r.path != self._path_for(r.split, r.phenotype, r.mark, r.crop_id):
                problems.append(f"row {i + 2}: path {r.path!r}")
            if len(problems) >= 5:
                break
        if problems:
            raise InputError(f"{path} holds rows that do not fit the set ({'; '.join(problems)}); was it edited "
                             f"by hand? Class names: {', '.join(self.class_names)}; marks: {', '.join(MARKS)}")
        dupes = df["crop_id"][df["crop_id"].duplicated()]
        if len(dupes):
            raise InputError(f"{path} names the crops {sorted(set(dupes))[:5]} twice; was it edited by hand?")

    @staticmethod
    def _path_for(split: str, phenotype: str, mark: str, crop_id: str) -> str:
        return f"{MARK_FOLDER}/{mark}/{crop_id}.tif" if mark else f"{split}/{phenotype}/{crop_id}.tif"

    # --- writing -----------------------------------------------------------------------------
    def _save_manifest(self, df: pd.DataFrame, index: dict | None = None, appended_to: pd.DataFrame | None = None
                       ) -> None:
        """Write ``df`` as the manifest (atomically, whole), and keep what saves the next write work.

        ``appended_to``: the manifest ``df`` was made from by adding rows at its end, nothing else
        changed. The text written for that manifest is then reused and only the new rows are
        turned into CSV (turning 5,000 rows into CSV took 45-50 ms per label). The file is the
        same as writing ``df`` whole would give: the new rows are formatted from ``df`` itself. Text that a
        spreadsheet would run as a formula is neutralised (:mod:`~napari_yeast_phenotypes.core.files.tables`)
        and restored when the manifest is read.
        """
        cached = self._text_of
        if appended_to is not None and cached is not None and cached[0] is appended_to:
            text = cached[1] + csv_text(df.iloc[len(appended_to):], header=False, float_format=None)
        else:
            text = csv_text(df, float_format=None)
        with atomic_write(self.root / "manifest.csv", "w", newline="") as fh:
            fh.write(text)
        self.manifest = df
        self._sig = self._signature()
        self._index_of = (df, index) if index is not None else None
        self._text_of = (df, text)

    def _key_positions(self) -> dict:
        """``cell_key -> row position`` of the manifest now (kept while it is the same object: building
        it anew took 30-35 ms per label with 5,000 rows). Call under the lock, after :meth:`_refresh`."""
        if self._index_of is None or self._index_of[0] is not self.manifest:
            self._index_of = (self.manifest, _key_index(self.manifest))
        return self._index_of[1]

    def _row_dict(self, i: int) -> dict:
        return {k: _plain(v) for k, v in self.manifest.loc[i].to_dict().items()}

    def _index(self, crop_id: str) -> int:
        hit = np.flatnonzero(self.manifest["crop_id"].to_numpy() == crop_id)
        if not hit.size:
            raise InputError(f"no crop {crop_id!r} in the curated set {self.root}")
        return int(hit[0])

    def _key_of(self, crop_id: str) -> tuple:
        self._refresh()
        return cell_key(self.manifest.loc[self._index(crop_id)])
