"""Writing a curated set: crops in with their provenance (:meth:`WriterMixin.add`), relabelled, moved
between folders and out, files first and the manifest after, under the writers' lock."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ....phenotypes import class_index
from ...errors import InputError
from ...files.atomic import atomic_write
from ..cropset import CROP_VALUE_LIMIT
from .history import Change
from .manifest import (
    MANIFEST_COLUMNS,
    _describe,
    _legacy_key,
    _movie_keys,
    _now,
    _plain,
    _record,
    _safe,
    _track_key,
    cell_key,
    normalise_mark,
    normalise_split,
)


def _write_tif(path: Path, crop: np.ndarray) -> None:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(crop, dtype=np.float32), photometric="minisblack")
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())


def _copy_into_place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _check_crops(crops: np.ndarray, rows: pd.DataFrame, size: int) -> None:
    """Refuse crops of another size than the set's, or holding NaN or infinity (naming their cells)."""
    if len(crops) == 0:
        return
    if crops.ndim not in (3, 4) or crops.shape[-2:] != (size, size) or (crops.ndim == 4 and crops.shape[1] != 1):
        raise InputError(f"crops of shape {crops.shape[1:]} cannot join a set of {size}x{size} crops; make them with "
                         "the set's crop settings")
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~(np.abs(crops.reshape(len(crops), -1)) <= CROP_VALUE_LIMIT).all(axis=1))
    if bad.size:
        r = rows.iloc[int(bad[0])]
        first = f"frame {r.get('frame', '?')} label {r.get('label', '?')}"
        raise InputError(f"{bad.size} of the {len(crops)} crops hold NaN or infinite pixels (e.g. {first}; or "
                         f"absurdly large ones, beyond +-{CROP_VALUE_LIMIT:g}); a crop must be numbers of a "
                         "fluorescence image, so none was added")


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


class WriterMixin:
    """The one way crops enter, move within and leave a :class:`~.store.CuratedSet`: files first, then the
    manifest, then old files moved away, all under the writers' lock."""

    def _new_crop_id(self, experiment: str, movie_id: str, frame: int, label: int, taken: set) -> str:
        base = f"{_safe(experiment)[:24]}_{hashlib.sha256(movie_id.encode()).hexdigest()[:12]}_t{frame:05d}_l{label}"
        crop_id, n = base, 1
        while crop_id in taken:  # only a hand-made legacy id could look like this; never reuse one
            n += 1
            crop_id = f"{base}-{n}"
        return crop_id

    def _apply(self, keys: list[tuple], targets: list[dict | None], crops: dict | None = None,
               index: dict | None = None, log: tuple | None = None) -> None:
        """Bring each cell of ``keys`` to its target row (None: out of the set), files first.

        Order (what a kill at any moment leaves): new and moved files are written first (a kill
        leaves orphans, set aside on the next open); then the change's record is appended to
        ``history.jsonl`` (``log``: the arguments of :meth:`_log`); then the manifest (the change
        happens); then the old files are moved away (a kill leaves orphans again). If the manifest
        cannot be written (a full disk), the record is taken back: the change and its record agree,
        and the error says nothing was changed. Called under the lock.
        """
        crops = crops or {}
        written: list[Path] = []  # files this change put in place: taken away again if the change fails
        try:
            after_moves = self._apply_rows(keys, targets, crops, index, log, written)
        except Exception:
            # a full disk, a failed record: no crop of a change that did not happen stays. (An interrupt may
            # come after the manifest is replaced: its files stay, and any orphans are set aside on the next open.)
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        for old, to in after_moves:
            src = self.root / old
            if not src.exists():
                continue
            if to is None:
                os.unlink(src)
            else:
                (self.root / to).parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, self.root / to)

    def _apply_rows(self, keys, targets, crops, index, log, written: list) -> list:
        """:meth:`_apply` up to the manifest written: files in place (each listed in ``written``), the record,
        the manifest; returns the old files to move away then, as (path, where to or None)."""
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
                    written.append(dest)
                    after_moves.append((cur["path"], None))
                if not changed:  # the text kept for this manifest no longer says what it holds
                    self._text_of, changed = None, True
                df.loc[i, list(target)] = [target[c] for c in target]
            else:
                if key in crops:
                    written.append(dest)  # before writing: a write cut short by a full disk leaves a part
                    _write_tif(dest, np.asarray(crops[key]).reshape(crops[key].shape[-2:]))
                else:  # back from .removed (undo of a removal, redo of an addition)
                    src = self.root / ".removed" / f"{target['crop_id']}.tif"
                    if not src.exists():
                        raise InputError(f"the crop {target['crop_id']} is no longer in {self.root / '.removed'}; "
                                         "it cannot be brought back")
                    written.append(dest)
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
        logged = self._log(*log) if log is not None else None
        try:
            self._save_manifest(df, index_after, appended_to=self.manifest if not (drop or changed) else None)
        except BaseException as exc:
            if logged is not None:
                self._unlog(logged)
            if isinstance(exc, InputError) and log is not None:
                raise InputError(f"{exc}; nothing was changed") from exc
            raise
        written.clear()  # the change happened: its files stay
        return after_moves

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
        _check_crops(np.asarray(crops), rows, self.crop_settings.size)
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
                change = Change("add", keys, before, after)
                self._apply(keys, after, new_crops, index, log=(change, annotator, {"model": model}))
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
            change = Change("relabel", [key], [cur], [target])
            self._apply([key], [target], log=(change, annotator))
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
            change = Change("remove", keys, before, [None] * len(keys))
            self._apply(keys, [None] * len(keys), log=(change, annotator))
            self._push(change)
        return len(keys)
