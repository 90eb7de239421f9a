"""The curated set on disk: crops a person vouched for, browsable and ImageFolder compatible.

Layout::

    <root>/settings.json                   crop settings and class names of the whole set
    <root>/manifest.csv                    one row per cell-frame, with provenance (the source of truth)
    <root>/history.jsonl                   every change, newest last (an append-only record)
    <root>/<split>/<class>/<crop_id>.tif   the crops (float32, 40x40, normalised per movie)
    <root>/_marked/<mark>/<crop_id>.tif    cells marked "unsure" or "bad_segmentation": kept, not trained on
    <root>/.curated.lock                   the writers' lock (never deleted)

Identity. A cell-frame is ``(movie_id, frame, label)``; ``movie_id`` is a hash of the movie's
image and labels (:func:`movie_identity`), so two movies that happen to share a folder and file
name are still two movies, and the same movie opened from another path is still the same one.
The path, the experiment name and who annotated are provenance. Crop ids are made from the
movie id, frame and label (plus a readable experiment prefix), so they are unique by construction.
All frames of one track go to one split (the first label of a track decides), so frames of one
cell never land on both sides of a train/validation split.

Safety. Writers (the viewer's Annotate dock, ``yeast-phenotypes curate``, two viewers on one set)
serialise on a file lock (:class:`~napari_yeast_phenotypes.core.locking.FileLock`: works across
processes and on network file systems with locking) and read the manifest again under the lock
before each change, so no writer loses another's rows. Every file is written to a temporary name
and renamed into place; new crops are written before the manifest that names them, old ones are
moved away only after it stops naming them. A crash at any moment leaves a valid manifest; files
it does not name are moved to ``<root>/.orphans`` when the set is next opened, removed crops go to
``<root>/.removed``: nothing is deleted.

Undo and redo belong to the :class:`CuratedSet` object that made the change (one viewer session,
one command): undoing never reverts another writer's work, and a change that another writer has
since overwritten is not undone (the message says so).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..phenotypes import CLASS_NAMES, class_index
from .crops import CropSettings
from .cropset import CropSet
from .io import InputError, atomic_write
from .locking import FileLock

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
LOCK_FILE = ".curated.lock"
#: below this many crops a class is reported as too few to learn from
MIN_PER_CLASS = 20
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*$")
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
    """Class names that can be folder names: unique, non-empty, no path separators or dots first."""
    names = tuple(str(n) for n in names)
    bad = [n for n in names if not _SAFE_NAME.match(n) or n.startswith(MARK_FOLDER)]
    if bad:
        raise InputError(f"{where}class names {bad} cannot be folder names (letters, digits, space, . _ + - only, "
                         "not starting with a dot)")
    lowered = [n.lower() for n in names]
    dupes = sorted({n for n in names if lowered.count(n.lower()) > 1})
    if dupes:
        raise InputError(f"{where}class names {dupes} appear twice (names are matched without case)")
    if not names:
        raise InputError(f"{where}no class names")
    return names


def movie_identity(image, labels) -> str:
    """A movie's identity by content: a hash of its (T, Y, X) image and labels (shape, dtype, values).

    The same movie read from another path, or as a napari layer, has the same identity; two movies
    with the same file names in different folders do not.
    """
    from .fingerprint import array_sha256

    return identity_from_hashes(array_sha256(image), array_sha256(labels))


def identity_from_hashes(image_sha256: str, labels_sha256: str) -> str:
    """:func:`movie_identity` from the movie's (T, Y, X) arrays' SHA-256 (:func:`~.fingerprint.array_sha256`)."""
    return hashlib.sha256(f"{image_sha256}|{labels_sha256}".encode()).hexdigest()[:32]


def _write_tif(path: Path, crop: np.ndarray) -> None:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(crop, dtype=np.float32))
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())


def _copy_into_place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dest)


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


@dataclass
class AddReport:
    """What :meth:`CuratedSet.add` did with each row it was given."""

    added: int = 0
    already: int = 0  # the same cell-frame with the same label was in the set
    relabelled: int = 0
    #: one line per cell-frame whose labels disagree (the set's or within the rows given)
    conflicts: list[str] = field(default_factory=list)
    #: rows that went to the split their track already has, not the one asked for
    split_kept: int = 0

    @property
    def skipped(self) -> int:
        return self.already

    def lines(self, where: str = "") -> list[str]:
        """The report in plain words, one line per fact."""
        out = [f"added {self.added} crops" + (f" to {where}" if where else "")
               + (f", {self.already} already there with the same label" if self.already else "")
               + (f", relabelled {self.relabelled}" if self.relabelled else "")]
        if self.split_kept:
            out.append(f"note: {self.split_kept} crops went to the split their track already has, so frames of one "
                       "cell never land on both sides")
        if self.conflicts:
            out.append(f"warning: {len(self.conflicts)} conflicting labels (nothing was changed for these cells):")
            out += [f"  {c}" for c in self.conflicts[:20]]
            if len(self.conflicts) > 20:
                out.append(f"  ... and {len(self.conflicts) - 20} more")
        return out


@dataclass
class Change:
    """One change of the set, as undo and redo need it: each cell's row before and after (None: absent)."""

    kind: str
    keys: list[tuple]
    before: list[dict | None]
    after: list[dict | None]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


class CuratedSet:
    """A curated crop set in a folder (see the module docstring for the layout and the guarantees).

    Parameters
    ----------
    root
        The folder (created if it does not exist).
    crop_settings
        Settings of the crops that will join; a set made with other settings refuses them.
    class_names
        Classes of a new set (an existing set keeps its own).
    lock_timeout
        Seconds to wait for another writer before giving up with a message.
    """

    def __init__(self, root, crop_settings: CropSettings | None = None, class_names=CLASS_NAMES,
                 lock_timeout: float = 60.0):
        self.root = Path(root)
        self.class_names = check_class_names(class_names)
        self._lock_timeout = lock_timeout
        self._sig = None
        self._index_of: tuple | None = None  # (manifest object, its cell_key -> row index), see _key_positions
        self._text_of: tuple | None = None  # (manifest object, the CSV text last written of it), see _save_manifest
        self._undo: list[Change] = []
        self._redo: list[Change] = []
        self.manifest = pd.DataFrame(columns=MANIFEST_COLUMNS)
        settings_file = self.root / "settings.json"
        if not settings_file.exists():
            if self.root.exists() and not self.root.is_dir():
                raise InputError(f"{self.root} is a file; choose a folder for the curated set")
            if self.root.exists() and any(p for p in self.root.iterdir() if not p.name.startswith(".")):
                raise InputError(f"{self.root} is not empty and holds no curated set (no settings.json); "
                                 "choose an empty or new folder")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"cannot create the curated set folder {self.root} ({exc.strerror})") from exc
        with self._lock():
            if settings_file.exists():  # read under the lock: another writer may just have made it
                self._read_settings(settings_file, crop_settings)
            else:
                self.crop_settings = crop_settings or CropSettings()
                with atomic_write(settings_file) as fh:
                    json.dump({"crop_settings": self.crop_settings.to_dict(),
                               "class_names": list(self.class_names)}, fh, indent=2)
            self._refresh()
            self._reconcile()

    # --- reading -----------------------------------------------------------------------------
    def _read_settings(self, settings_file: Path, crop_settings: CropSettings | None) -> None:
        try:
            saved = json.loads(settings_file.read_text())
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise InputError(f"{settings_file} is not valid ({exc}); restore it from a backup") from exc
        stored = CropSettings.from_dict(saved.get("crop_settings"))
        if crop_settings is not None and crop_settings != stored:
            raise InputError(
                f"the curated set in {self.root} was made with other crop settings ({stored}); "
                f"crops made with {crop_settings} cannot join it. Use a new folder."
            )
        self.crop_settings = stored
        names = saved.get("class_names", list(self.class_names))
        if not isinstance(names, list):
            raise InputError(f"{settings_file}: class_names must be a list of names")
        self.class_names = check_class_names(names, f"{settings_file}: ")

    def _lock(self) -> FileLock:
        return FileLock(self.root / LOCK_FILE, timeout=self._lock_timeout, what="a curated-set writer")

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

    def reload(self) -> CuratedSet:
        """See what other writers have written since (the manifest is re-read when it changed)."""
        self._refresh()
        return self

    def _read_manifest(self) -> pd.DataFrame:
        path = self.root / "manifest.csv"
        if not path.exists():
            return pd.DataFrame({c: pd.Series(dtype=object if c in _STR_COLUMNS else np.int64)
                                 for c in MANIFEST_COLUMNS})
        try:
            df = pd.read_csv(path, dtype=dict.fromkeys(_STR_COLUMNS, str), keep_default_na=False)
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

    def _reconcile(self) -> None:
        """Move crop files that the manifest does not name into .orphans (never delete them)."""
        named = set(self.manifest["path"])
        for p in self.root.glob("*/*/*.tif"):
            rel = p.relative_to(self.root).as_posix()
            if rel not in named:
                dest = self.root / ".orphans" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(p, dest)

    def __len__(self) -> int:
        return len(self.manifest)

    def trainable(self) -> pd.DataFrame:
        """Rows that training uses: labelled with a class, not marked."""
        return self.manifest[self.manifest["mark"] == ""]

    def counts(self) -> pd.DataFrame:
        """Crops per split (rows) and class (columns), marked crops left out."""
        t = self.trainable()
        if t.empty:
            return pd.DataFrame(0, index=pd.Index([], name="split"), columns=list(self.class_names))
        out = t.groupby(["split", "phenotype"]).size().unstack(fill_value=0)
        return out.reindex(columns=list(self.class_names), fill_value=0)

    def mark_counts(self) -> dict[str, int]:
        """Crops per mark (``unsure``, ``bad_segmentation``)."""
        return {m: int((self.manifest["mark"] == m).sum()) for m in MARKS}

    def conflicts(self) -> pd.DataFrame:
        """Rows of cell-frames whose labels disagreed (``conflict`` says the other label and by whom)."""
        return self.manifest[self.manifest["conflict"] != ""]

    def warnings(self, min_per_class: int = MIN_PER_CLASS) -> list[str]:
        """Plain-words warnings: classes with too few crops to learn from, conflicting labels."""
        out = []
        per_class = self.trainable()["phenotype"].value_counts()
        few = [f"{c} ({int(per_class.get(c, 0))})" for c in self.class_names if per_class.get(c, 0) < min_per_class]
        if few:
            out.append(f"fewer than {min_per_class} crops: {', '.join(few)}")
        n_conf = len(self.conflicts())
        if n_conf:
            out.append(f"{n_conf} cell-frames have conflicting labels (see the manifest's conflict column)")
        return out

    def labels_of_movie(self, movie_id: str) -> pd.DataFrame:
        """This movie's rows (its cell-frames labelled so far, by anyone)."""
        return self.manifest[self.manifest["movie_id"] == movie_id]

    def track_split(self, movie_id: str, track_id: int) -> str | None:
        """The split a track of a movie already has in the set, or ``None``."""
        m = self.manifest
        hit = m["split"][(m["movie_id"] == movie_id) & (m["track_id"] == int(track_id))]
        return str(hit.iloc[0]) if len(hit) else None

    def load_split(self, split: str) -> CropSet:
        """The crops of one split as a :class:`CropSet` (groups = experiment, tracks = movie and track).

        Marked crops (unsure, bad segmentation) are left out.
        """
        import tifffile

        split = normalise_split(split)
        rows = self.trainable()
        rows = rows[rows["split"] == split]
        if rows.empty:
            raise InputError(f"the curated set in {self.root} has no crops in split {split!r} "
                             f"(it has: {sorted(set(self.trainable()['split'])) or 'nothing'})")
        crops = np.stack([tifffile.imread(self.root / p) for p in rows["path"]])[:, None].astype(np.float32)
        targets = np.array([self.class_names.index(c) for c in rows["phenotype"]], dtype=np.int64)
        # one cell = one track of one movie (legacy rows: of one experiment's file); no track: the crop alone
        tracks = np.where(rows["track_id"].to_numpy() >= 0,
                          (rows["movie_id"] + "|" + rows["experiment"] + "|" + rows["source"] + "|"
                           + rows["track_id"].astype(str)).to_numpy(dtype=object),
                          rows["crop_id"].to_numpy(dtype=object))
        return CropSet(crops, targets, self.class_names, list(rows["path"]), rows["experiment"].to_numpy(),
                       origin={"kind": "curated", "set": str(self.root.resolve()), "split": split}, tracks=tracks)

    # --- writing -----------------------------------------------------------------------------
    def _save_manifest(self, df: pd.DataFrame, index: dict | None = None, appended_to: pd.DataFrame | None = None
                       ) -> None:
        """Write ``df`` as the manifest (atomically, whole), and keep what saves the next write work.

        ``appended_to``: the manifest ``df`` was made from by adding rows at its end, nothing else
        changed. The text written for that manifest is then reused and only the new rows are
        turned into CSV (turning 5,000 rows into CSV took 45-50 ms per label). The file is the
        same as ``df.to_csv`` would write: the new rows are formatted from ``df`` itself.
        """
        cached = self._text_of
        if appended_to is not None and cached is not None and cached[0] is appended_to:
            text = cached[1] + df.iloc[len(appended_to):].to_csv(index=False, header=False, lineterminator="\n")
        else:
            text = df.to_csv(index=False, lineterminator="\n")
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

    def _log(self, change: Change, annotator: str, extra: dict | None = None) -> None:
        rec = {"op": change.kind, "id": change.id, "at": _now(), "annotator": annotator,
               "cells": [list(k) for k in change.keys], "before": change.before, "after": change.after,
               **(extra or {})}
        with open(self.root / "history.jsonl", "a") as fh:
            fh.write(json.dumps(rec, default=_plain) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _row_dict(self, i: int) -> dict:
        return {k: _plain(v) for k, v in self.manifest.loc[i].to_dict().items()}

    def _new_crop_id(self, experiment: str, movie_id: str, frame: int, label: int, taken: set) -> str:
        base = f"{_safe(experiment)[:24]}_{hashlib.sha256(movie_id.encode()).hexdigest()[:12]}_t{frame:05d}_l{label}"
        crop_id, n = base, 1
        while crop_id in taken:  # only a hand-made legacy id could look like this; never reuse one
            n += 1
            crop_id = f"{base}-{n}"
        return crop_id

    def _apply(self, keys: list[tuple], targets: list[dict | None], crops: dict | None = None,
               index: dict | None = None) -> None:
        """Bring each cell of ``keys`` to its target row (None: out of the set), files first.

        Order (what a kill at any moment leaves): new and moved files are written first (a kill
        leaves orphans, set aside on the next open); then the manifest (the change happens);
        then the old files are moved away (a kill leaves orphans again). Called under the lock.
        """
        crops = crops or {}
        df = self.manifest
        index = self._key_positions() if index is None else index
        drop, after_moves, rows_new, changed = [], [], [], False
        for key, target in zip(keys, targets):
            i = index.get(key)
            cur = _record(df, i) if i is not None else None
            if target is None:
                if cur is not None:
                    drop.append(i)
                    after_moves.append((cur["path"], f".removed/{cur['crop_id']}.tif"))
                continue
            dest = self.root / target["path"]
            if cur is not None:
                if cur["path"] != target["path"]:
                    _copy_into_place(self.root / cur["path"], dest)
                    after_moves.append((cur["path"], None))
                if not changed:  # the text kept for this manifest no longer says what it holds
                    self._text_of, changed = None, True
                df.loc[i, list(target)] = [target[c] for c in target]
            else:
                if key in crops:
                    _write_tif(dest, np.asarray(crops[key]).reshape(crops[key].shape[-2:]))
                else:  # back from .removed (undo of a removal, redo of an addition)
                    src = self.root / ".removed" / f"{target['crop_id']}.tif"
                    if not src.exists():
                        raise InputError(f"the crop {target['crop_id']} is no longer in {self.root / '.removed'}; "
                                         "it cannot be brought back")
                    _copy_into_place(src, dest)
                rows_new.append(target)
        n_before = len(df)
        if drop:
            df = df.drop(index=drop)
        if rows_new:
            df = pd.concat([df, pd.DataFrame(rows_new, columns=MANIFEST_COLUMNS)], ignore_index=True)
        df = df.reset_index(drop=True)
        for c in ("frame", "label", "track_id"):
            df[c] = df[c].astype(np.int64)
        # the index after the change, without rebuilding it, when rows were only changed or added
        # (rows changed in place keep their keys); after a removal it is built again when needed
        index_after = None
        if not drop:
            index_after = dict(index)
            index_after.update({cell_key(t): n_before + j for j, t in enumerate(rows_new)})
        self._save_manifest(df, index_after, appended_to=self.manifest if not (drop or changed) else None)
        for old, to in after_moves:
            src = self.root / old
            if not src.exists():
                continue
            if to is None:
                os.unlink(src)
            else:
                (self.root / to).parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, self.root / to)

    def add(self, crops: np.ndarray, rows: pd.DataFrame, annotator: str = "", *, replace: bool = False,
            model: str = "") -> AddReport:
        """Add crops with their provenance rows (the one way crops enter the set).

        Parameters
        ----------
        crops
            (N, 1, S, S) or (N, S, S), made by the package's crop function with this set's settings.
        rows
            One per crop: ``frame, label, phenotype, split, experiment, source`` and, where known,
            ``movie_id`` (content identity; without it the cell is known by experiment and source,
            as in older sets), ``movie_path``, ``track_id``, ``mark``, ``model_phenotype``.
        annotator
            Who labelled these cells.
        replace
            What to do with a cell-frame the set already has with another label: ``False`` (an
            import from a file) keeps the set's label and reports a conflict; ``True`` (a person
            relabelling in the viewer) takes the new label, and records a conflict when the
            earlier label was another person's.
        model
            Fingerprint of the model whose calls were corrected, for provenance.

        Returns
        -------
        AddReport
            Counts and conflicts; a change worth undoing is also on this object's undo stack.
        """
        if len(crops) != len(rows):
            raise ValueError("one row per crop is needed")
        report = AddReport()
        norm = self._normalise_rows(rows)
        # two rows of one cell-frame that disagree are a conflict of the input itself: neither is taken
        label_of = norm["phenotype"] + "|" + norm["mark"]
        records = norm.to_dict("records")
        keyed = [cell_key(r) for r in records]
        given: dict[tuple, set] = {}
        for k, lab in zip(keyed, label_of):
            given.setdefault(k, set()).add(lab.strip("|"))
        torn = np.array([len(given[k]) > 1 for k in keyed], dtype=bool)
        for k in sorted({k for k, t in zip(keyed, torn) if t}, key=str):
            report.conflicts.append(f"{_describe(k)}: the rows given say {' and '.join(sorted(given[k]))}; "
                                    "none was taken")
        now = _now()
        with self._lock():
            self._refresh()
            df = self.manifest
            index = self._key_positions()
            old = np.flatnonzero(df["movie_id"].to_numpy(dtype=object) == "")
            legacy = {_legacy_key(_record(df, i)): int(i) for i in old}
            track_split = {}
            movies, tracks, splits = _movie_keys(df), df["track_id"].to_numpy(), df["split"].to_numpy(dtype=object)
            for m, t, sp in zip(movies[::-1], tracks[::-1], splits[::-1]):  # the first row of a track wins
                if t >= 0:
                    track_split[(m, int(t))] = sp
            taken = set(df["crop_id"])
            keys, before, after, new_crops, seen = [], [], [], {}, set()
            for j, r in enumerate(records):
                if torn[j]:
                    continue
                key = cell_key(r)
                if key in seen:
                    report.already += 1  # the same row twice
                    continue
                seen.add(key)
                i = index.get(key)
                if i is None and r["movie_id"]:
                    i = legacy.get(_legacy_key(r))  # the same cell, curated before movies had identities
                    if i is not None:
                        key = cell_key(_record(df, i))
                cur = _record(df, i) if i is not None else None
                tk = _track_key(r)
                split = r["split"]
                if tk is not None and track_split.get(tk, split) != split:
                    split = track_split[tk]
                    report.split_kept += 1
                if tk is not None:
                    track_split.setdefault(tk, split)
                if cur is not None:
                    if (cur["phenotype"], cur["mark"]) == (r["phenotype"], r["mark"]):
                        report.already += 1
                        continue
                    theirs = cur["mark"] or cur["phenotype"]
                    if not replace:
                        report.conflicts.append(f"{_describe(key)}: the set says {theirs} "
                                                f"({cur['annotator'] or 'unknown'}), the new label says "
                                                f"{r['mark'] or r['phenotype']}; kept {theirs}")
                        if not cur["conflict"]:
                            target = dict(cur, conflict=f"{r['mark'] or r['phenotype']} by {annotator or 'unknown'}")
                            keys.append(key)
                            before.append({k: _plain(v) for k, v in cur.items()})
                            after.append({k: _plain(v) for k, v in target.items()})
                        continue
                    other = cur["annotator"] and annotator and cur["annotator"] != annotator
                    target = dict(cur, phenotype=r["phenotype"], mark=r["mark"], annotator=annotator,
                                  annotated_at=now, model=model or cur["model"],
                                  conflict=f"{theirs} by {cur['annotator']}" if other else cur["conflict"])
                    target["split"] = cur["split"]
                    target["path"] = self._path_for(target["split"], target["phenotype"], target["mark"],
                                                    target["crop_id"])
                    report.relabelled += 1
                else:
                    crop_id = self._new_crop_id(r["experiment"], key[0], key[1], key[2], taken)
                    taken.add(crop_id)
                    target = {"crop_id": crop_id, "split": split, "phenotype": r["phenotype"],
                              "path": self._path_for(split, r["phenotype"], r["mark"], crop_id),
                              "experiment": r["experiment"], "source": r["source"], "frame": key[1],
                              "label": key[2], "track_id": int(r["track_id"]), "annotated_at": now,
                              "annotator": annotator, "movie_id": r["movie_id"], "movie_path": r["movie_path"],
                              "mark": r["mark"], "model": model, "model_phenotype": r["model_phenotype"],
                              "conflict": ""}
                    new_crops[key] = crops[j]
                    report.added += 1
                keys.append(key)
                before.append(None if cur is None else {k: _plain(v) for k, v in cur.items()})
                after.append({k: _plain(v) for k, v in target.items()})
            if keys:
                self._apply(keys, after, new_crops, index)
                change = Change("add", keys, before, after)
                self._log(change, annotator, {"model": model})
                self._push(change)
        return report

    def _normalise_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Rows with every column :meth:`add` needs, names checked against the fixed sets."""
        n = len(rows)

        def col(name, default):
            if name not in rows:
                return [default] * n
            return [default if (v is None or (isinstance(v, float) and np.isnan(v))) else v for v in rows[name]]

        out = {"frame": np.asarray(col("frame", -1), dtype=np.int64),
               "label": np.asarray(col("label", -1), dtype=np.int64),
               "track_id": np.asarray(col("track_id", -1), dtype=np.int64),
               "mark": [normalise_mark(m) for m in col("mark", "")]}
        known = {}
        phen = []
        for p, m in zip(col("phenotype", ""), out["mark"]):
            if m:
                phen.append("")
                continue
            if p not in known:
                try:
                    known[p] = self.class_names[class_index(p, self.class_names)]
                except ValueError as exc:
                    raise InputError(str(exc)) from exc
            phen.append(known[p])
        out["phenotype"] = phen
        splits = {}
        out["split"] = [splits.setdefault(s, normalise_split(s or "train")) for s in col("split", "train")]
        for name in ("experiment", "source", "movie_id", "movie_path", "model_phenotype"):
            out[name] = [str(v) for v in col(name, "")]
        return pd.DataFrame(out)

    def remove(self, crop_id: str) -> None:
        """Take a crop out of the set; its file goes to ``.removed`` so undo can bring it back."""
        self.remove_cells([self._key_of(crop_id)])

    def relabel(self, crop_id: str, phenotype: str, annotator: str = "") -> None:
        """Move one crop to another class (the file moves to the class's folder)."""
        with self._lock():
            self._refresh()
            i = self._index(crop_id)
            cur = self._row_dict(i)
            phen = self.class_names[class_index(phenotype, self.class_names)]
            if (cur["phenotype"], cur["mark"]) == (phen, ""):
                return
            target = dict(cur, phenotype=phen, mark="", annotated_at=_now(), annotator=annotator or cur["annotator"])
            target["path"] = self._path_for(target["split"], phen, "", crop_id)
            key = cell_key(cur)
            self._apply([key], [target])
            change = Change("relabel", [key], [cur], [target])
            self._log(change, annotator)
            self._push(change)

    def remove_cells(self, keys: list[tuple], annotator: str = "") -> int:
        """Take the cell-frames ``keys`` ((movie_id, frame, label)) out of the set; returns how many were in it."""
        with self._lock():
            self._refresh()
            index = self._key_positions()
            keys = [k for k in dict.fromkeys(keys) if k in index]
            if not keys:
                return 0
            before = [_record(self.manifest, index[k]) for k in keys]
            self._apply(keys, [None] * len(keys))
            change = Change("remove", keys, before, [None] * len(keys))
            self._log(change, annotator)
            self._push(change)
        return len(keys)

    def _push(self, change: Change) -> None:
        self._undo.append(change)
        self._redo.clear()

    def _step(self, change: Change, forward: bool) -> None:
        want_now, target = (change.before, change.after) if forward else (change.after, change.before)
        with self._lock():
            self._refresh()
            index = self._key_positions()
            have = {k: _record(self.manifest, index[k]) for k in change.keys if k in index}
            moved = [k for k, w in zip(change.keys, want_now) if not _same_state(have.get(k), w)]
            if moved:
                raise InputError(f"{len(moved)} of the cells this would change were changed since by another "
                                 f"writer (e.g. {_describe(moved[0])}); nothing was changed")
            self._apply(change.keys, target)
            self._log(Change("redo" if forward else "undo", change.keys, want_now, target, id=change.id), "")

    def undo(self) -> str | None:
        """Undo this object's last change; returns its kind (``add``, ``relabel``, ``remove``) or None."""
        if not self._undo:
            return None
        change = self._undo[-1]
        self._step(change, forward=False)
        self._redo.append(self._undo.pop())
        return change.kind

    def redo(self) -> str | None:
        """Redo the last undone change; returns its kind or None."""
        if not self._redo:
            return None
        change = self._redo[-1]
        self._step(change, forward=True)
        self._undo.append(self._redo.pop())
        return change.kind

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def _index(self, crop_id: str) -> int:
        hit = np.flatnonzero(self.manifest["crop_id"].to_numpy() == crop_id)
        if not hit.size:
            raise InputError(f"no crop {crop_id!r} in the curated set {self.root}")
        return int(hit[0])

    def _key_of(self, crop_id: str) -> tuple:
        self._refresh()
        return cell_key(self.manifest.loc[self._index(crop_id)])


def _same_state(row: dict | None, want: dict | None) -> bool:
    if row is None or want is None:
        return row is None and want is None
    return all(str(row[c]) == str(want[c]) for c in ("phenotype", "mark", "split", "path"))


def _describe(key: tuple) -> str:
    movie = key[0] if str(key[0]).startswith("path:") else f"movie {str(key[0])[:8]}"
    return f"{movie} frame {key[1]} label {key[2]}"


def read_annotations(path, class_names=CLASS_NAMES) -> pd.DataFrame:
    """Read an annotation table (``frame, label, phenotype`` [, ``split``, ``experiment``, ``mark``]).

    Class names, splits and marks are checked against their fixed sets (case forgiven): a value
    from a file never becomes a folder name of its own. Rows repeated exactly are read once; rows
    of one cell-frame that disagree are kept, for :meth:`CuratedSet.add` to report.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"annotation file not found: {path}")
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise InputError(f"could not read {path} as CSV: {exc}") from exc
    missing = [c for c in ("frame", "label", "phenotype") if c not in df.columns]
    if missing:
        raise InputError(f"{path} lacks the columns {missing}; it needs frame, label, phenotype "
                         "(and optionally split, experiment, mark)")
    for c in ("frame", "label"):
        if not pd.api.types.is_integer_dtype(df[c]):
            raise InputError(f"{path}: column {c} must hold whole numbers")
    df = df.copy()
    if "mark" in df:
        try:
            df["mark"] = [normalise_mark(m) for m in df["mark"]]
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc
    else:
        df["mark"] = ""
    need_class = df["mark"] == ""
    bad = sorted({p for p in df.loc[need_class, "phenotype"].astype(str) if not _is_class(p, class_names)})
    if bad:
        raise InputError(f"{path}: unknown phenotypes {bad}; valid names: {', '.join(class_names)}")
    df["phenotype"] = [class_names[class_index(p, class_names)] if not m else ""
                       for p, m in zip(df["phenotype"].astype(str), df["mark"])]
    if "split" not in df:
        df["split"] = "train"
    df["split"] = df["split"].fillna("train").astype(str)
    bad = sorted({s for s in df["split"] if not _is_split(s)})
    if bad:
        raise InputError(f"{path}: unknown splits {bad}; use {SPLITS_HINT}")
    df["split"] = [normalise_split(s) for s in df["split"]]
    if "experiment" in df:
        # a missing value is that row's missing value, not a reason to drop the column
        df["experiment"] = [("" if pd.isna(v) else str(v)) for v in df["experiment"]]
    return df.drop_duplicates().reset_index(drop=True)


def _is_class(name: str, class_names) -> bool:
    try:
        class_index(name, class_names)
    except ValueError:
        return False
    return True


def _is_split(name: str) -> bool:
    try:
        normalise_split(name)
    except InputError:
        return False
    return True


def crops_for_annotations(image, labels, annotations: pd.DataFrame, settings: CropSettings, source: str,
                          experiment: str = "", *, movie_id: str | None = None, movie_path: str = "",
                          stats=None, table: pd.DataFrame | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Crops of the annotated cells of one movie, through the one crop function.

    ``image``/``labels`` are (T, Y, X); ``annotations`` has ``frame, label, phenotype`` and
    optional ``split``/``experiment``/``mark`` (a per-row experiment wins over ``experiment``,
    a row without one gets ``experiment``).

    Parameters
    ----------
    movie_id
        The movie's content identity (:func:`movie_identity`), computed when not given.
    stats
        The movie's :class:`~napari_yeast_phenotypes.core.schema.MovieStats` (as at inference);
        computed from the movie when not given.
    table
        The movie's cell table (``frame, label, track_id, bbox_*``), built when not given.

    Raises
    ------
    InputError
        Frames outside the movie, or labels absent from their frame (listed).
    """
    from .crops import movie_crops
    from .tracking import build_cell_table

    n = labels.shape[0]
    bad_frames = sorted(set(annotations["frame"][(annotations["frame"] < 0) | (annotations["frame"] >= n)]))
    if bad_frames:
        raise InputError(f"annotations name frames {bad_frames[:10]} but the movie has frames 0..{n - 1}")
    if table is None:
        table = build_cell_table(labels, relink="auto")
    table_cols = [c for c in table.columns if c not in annotations.columns or c in ("frame", "label")]
    merged = annotations.merge(table[table_cols], on=["frame", "label"], how="left", indicator=True)
    missing = merged[merged["_merge"] == "left_only"]
    if len(missing):
        pairs = ", ".join(f"frame {f} label {lab}" for f, lab in zip(missing["frame"], missing["label"]))
        raise InputError(f"{len(missing)} annotated cells are not in the labels ({pairs[:300]}); check that "
                         "the annotations belong to this movie")
    crops = movie_crops(image, labels, merged, settings, stats)
    keep = [c for c in ("frame", "label", "track_id", "phenotype", "split", "mark", "model_phenotype")
            if c in merged]
    rows = merged[keep].copy()
    if "split" not in rows:
        rows["split"] = "train"
    if "experiment" in merged:
        rows["experiment"] = [str(v) if isinstance(v, str) and v else experiment for v in merged["experiment"]]
    else:
        rows["experiment"] = experiment
    rows["source"] = source
    rows["movie_id"] = movie_id if movie_id is not None else movie_identity(image, labels)
    rows["movie_path"] = movie_path
    return crops, rows
