"""The curated set on disk: crops a person vouched for, browsable and ImageFolder compatible.

Layout::

    <root>/settings.json                 crop settings every crop of the set was made with
    <root>/manifest.csv                  one row per crop, with provenance (the source of truth)
    <root>/history.jsonl                 the operations, newest last, for undo
    <root>/<split>/<class>/<crop_id>.tif the crops (float32, 40x40, normalised per movie)

Safety: every file is written to a temporary name and renamed into place; crops are written
before the manifest that names them, and a file is deleted only after the manifest stops naming
it. A crash at any moment leaves a valid manifest; files it does not name are moved to
``<root>/.orphans`` when the set is next opened, never deleted.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..phenotypes import CLASS_NAMES, class_index
from .crops import CropSettings
from .cropset import CropSet
from .io import InputError, atomic_write

MANIFEST_COLUMNS = ["crop_id", "split", "phenotype", "path", "experiment", "source", "frame", "label",
                    "track_id", "annotated_at", "annotator"]
SPLITS_HINT = "train, val or test"


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(s)).strip("-") or "x"


def _write_tif(path: Path, crop: np.ndarray) -> None:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(crop, dtype=np.float32))
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())


class CuratedSet:
    """A curated crop set in a folder (see the module docstring for the layout)."""

    def __init__(self, root, crop_settings: CropSettings | None = None, class_names=CLASS_NAMES):
        self.root = Path(root)
        self.class_names = tuple(class_names)
        settings_file = self.root / "settings.json"
        if settings_file.exists():
            try:
                saved = json.loads(settings_file.read_text())
            except json.JSONDecodeError as exc:
                raise InputError(f"{settings_file} is not valid JSON ({exc}); restore it from a backup") from exc
            stored = CropSettings.from_dict(saved.get("crop_settings"))
            if crop_settings is not None and crop_settings != stored:
                raise InputError(
                    f"the curated set in {self.root} was made with other crop settings ({stored}); "
                    f"crops made with {crop_settings} cannot join it. Use a new folder."
                )
            self.crop_settings = stored
            self.class_names = tuple(saved.get("class_names", self.class_names))
        else:
            if self.root.exists() and any(p for p in self.root.iterdir() if not p.name.startswith(".")):
                raise InputError(f"{self.root} is not empty and holds no curated set (no settings.json); "
                                 "choose an empty or new folder")
            self.crop_settings = crop_settings or CropSettings()
            self.root.mkdir(parents=True, exist_ok=True)
            with atomic_write(settings_file) as fh:
                json.dump({"crop_settings": self.crop_settings.to_dict(),
                           "class_names": list(self.class_names)}, fh, indent=2)
        self.manifest = self._read_manifest()
        self._reconcile()

    # --- reading -----------------------------------------------------------------------------
    def _read_manifest(self) -> pd.DataFrame:
        path = self.root / "manifest.csv"
        if not path.exists():
            return pd.DataFrame(columns=MANIFEST_COLUMNS)
        try:
            df = pd.read_csv(path, dtype={"crop_id": str, "split": str, "phenotype": str, "path": str,
                                          "experiment": str, "source": str, "annotator": str},
                             keep_default_na=False)
        except Exception as exc:
            raise InputError(f"{path} cannot be read ({exc}); restore it from a backup") from exc
        missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(f"{path} lacks columns {missing}; it is not a curated-set manifest")
        return df[MANIFEST_COLUMNS]

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

    def counts(self) -> pd.DataFrame:
        """Crops per split and class."""
        return self.manifest.groupby(["split", "phenotype"]).size().unstack(fill_value=0)

    def load_split(self, split: str) -> CropSet:
        """The crops of one split as a :class:`CropSet` (groups = experiment, for cross-validation)."""
        import tifffile

        rows = self.manifest[self.manifest["split"] == split]
        if rows.empty:
            raise InputError(f"the curated set in {self.root} has no crops in split {split!r} "
                             f"(it has: {sorted(set(self.manifest['split'])) or 'nothing'})")
        crops = np.stack([tifffile.imread(self.root / p) for p in rows["path"]])[:, None].astype(np.float32)
        targets = np.array([self.class_names.index(c) for c in rows["phenotype"]], dtype=np.int64)
        return CropSet(crops, targets, self.class_names, list(rows["path"]), rows["experiment"].to_numpy(),
                       origin={"kind": "curated", "set": str(self.root.resolve()), "split": split})

    # --- writing -----------------------------------------------------------------------------
    def _save_manifest(self) -> None:
        with atomic_write(self.root / "manifest.csv", "w", newline="") as fh:
            self.manifest.to_csv(fh, index=False)

    def _log(self, op: dict) -> None:
        with open(self.root / "history.jsonl", "a") as fh:
            fh.write(json.dumps(op) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def add(self, crops: np.ndarray, rows: pd.DataFrame, annotator: str = "") -> tuple[int, int]:
        """Add crops with their provenance rows; cells already in the set are skipped.

        ``rows`` needs ``phenotype, split, experiment, source, frame, label`` and may have
        ``track_id``. Returns ``(added, skipped)``.
        """
        if len(crops) != len(rows):
            raise ValueError("one row per crop is needed")
        have = set(zip(self.manifest["experiment"], self.manifest["source"],
                       self.manifest["frame"].astype(int), self.manifest["label"].astype(int)))
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        new, added_ids = [], []
        for crop, (_, r) in zip(crops, rows.iterrows()):
            key = (str(r["experiment"]), str(r["source"]), int(r["frame"]), int(r["label"]))
            if key in have:
                continue
            have.add(key)
            phen = self.class_names[class_index(r["phenotype"], self.class_names)]
            split = _safe(r.get("split", "train") or "train")
            crop_id = _safe(f"{key[0]}_{Path(key[1]).stem}_t{key[2]:05d}_l{key[3]}")
            rel = f"{split}/{phen}/{crop_id}.tif"
            _write_tif(self.root / rel, np.asarray(crop).reshape(crop.shape[-2:]))
            track = r.get("track_id", -1)
            new.append({"crop_id": crop_id, "split": split, "phenotype": phen, "path": rel,
                        "experiment": key[0], "source": key[1], "frame": key[2], "label": key[3],
                        "track_id": int(track) if pd.notna(track) else -1, "annotated_at": now,
                        "annotator": annotator})
            added_ids.append(crop_id)
        if new:
            self.manifest = pd.concat([self.manifest, pd.DataFrame(new, columns=MANIFEST_COLUMNS)],
                                      ignore_index=True)
            self._save_manifest()
            self._log({"op": "add", "crop_ids": added_ids, "at": now})
        return len(new), len(crops) - len(new)

    def relabel(self, crop_id: str, phenotype: str, _log: bool = True) -> None:
        """Move one crop to another class (copy, then manifest, then remove the old file)."""
        i = self._index(crop_id)
        phen = self.class_names[class_index(phenotype, self.class_names)]
        old_rel = self.manifest.at[i, "path"]
        old_phen = self.manifest.at[i, "phenotype"]
        if old_phen == phen:
            return
        new_rel = f"{self.manifest.at[i, 'split']}/{phen}/{crop_id}.tif"
        (self.root / new_rel).parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{new_rel}.tmp"
        shutil.copy2(self.root / old_rel, tmp)
        os.replace(tmp, self.root / new_rel)
        self.manifest.loc[i, ["phenotype", "path"]] = [phen, new_rel]
        self._save_manifest()
        os.unlink(self.root / old_rel)
        if _log:
            self._log({"op": "relabel", "crop_id": crop_id, "from": old_phen, "to": phen})

    def remove(self, crop_id: str) -> None:
        """Take a crop out of the set; its file goes to ``.removed`` so undo can bring it back."""
        i = self._index(crop_id)
        row = self.manifest.loc[i].to_dict()
        self.manifest = self.manifest.drop(index=i).reset_index(drop=True)
        self._save_manifest()
        dest = self.root / ".removed" / row["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root / row["path"], dest)
        self._log({"op": "remove", "row": {k: (int(v) if isinstance(v, np.integer) else v) for k, v in row.items()}})

    def undo(self) -> str | None:
        """Undo the last add, relabel or remove; returns what was undone, or None if nothing."""
        hist = self.root / "history.jsonl"
        lines = hist.read_text().splitlines() if hist.exists() else []
        if not lines:
            return None
        op = json.loads(lines[-1])
        if op["op"] == "relabel":
            self.relabel(op["crop_id"], op["from"], _log=False)
        elif op["op"] == "remove":
            row = op["row"]
            src = self.root / ".removed" / row["path"]
            os.replace(src, self.root / row["path"])
            self.manifest = pd.concat([self.manifest, pd.DataFrame([row], columns=MANIFEST_COLUMNS)],
                                      ignore_index=True)
            self._save_manifest()
        elif op["op"] == "add":
            gone = set(op["crop_ids"])
            paths = self.manifest.loc[self.manifest["crop_id"].isin(gone), "path"].tolist()
            self.manifest = self.manifest[~self.manifest["crop_id"].isin(gone)].reset_index(drop=True)
            self._save_manifest()
            for rel in paths:
                dest = self.root / ".removed" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.root / rel, dest)
        with atomic_write(hist) as fh:
            fh.write("".join(line + "\n" for line in lines[:-1]))
        return op["op"]

    def _index(self, crop_id: str) -> int:
        hit = np.flatnonzero(self.manifest["crop_id"].to_numpy() == crop_id)
        if not hit.size:
            raise InputError(f"no crop {crop_id!r} in the curated set {self.root}")
        return int(hit[0])


def read_annotations(path, class_names=CLASS_NAMES) -> pd.DataFrame:
    """Read an annotation table (``frame, label, phenotype`` [, ``split``, ``experiment``])."""
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
                         "(and optionally split, experiment)")
    for c in ("frame", "label"):
        if not pd.api.types.is_integer_dtype(df[c]):
            raise InputError(f"{path}: column {c} must hold whole numbers")
    bad = sorted({p for p in df["phenotype"].astype(str) if not _is_class(p, class_names)})
    if bad:
        raise InputError(f"{path}: unknown phenotypes {bad}; valid names: {', '.join(class_names)}")
    df = df.copy()
    df["phenotype"] = [class_names[class_index(p, class_names)] for p in df["phenotype"].astype(str)]
    if "split" not in df:
        df["split"] = "train"
    df["split"] = df["split"].fillna("train").astype(str)
    return df


def _is_class(name: str, class_names) -> bool:
    try:
        class_index(name, class_names)
    except ValueError:
        return False
    return True


def crops_for_annotations(image, labels, annotations: pd.DataFrame, settings: CropSettings, source: str,
                          experiment: str = "") -> tuple[np.ndarray, pd.DataFrame]:
    """Crops of the annotated cells of one movie, through the one crop function.

    ``image``/``labels`` are (T, Y, X); ``annotations`` has ``frame, label, phenotype`` and
    optional ``split``/``experiment`` (a per-row experiment wins over ``experiment``).

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
    table = build_cell_table(labels, relink="auto")
    merged = annotations.merge(table, on=["frame", "label"], how="left", indicator=True)
    missing = merged[merged["_merge"] == "left_only"]
    if len(missing):
        pairs = ", ".join(f"frame {f} label {lab}" for f, lab in zip(missing["frame"], missing["label"]))
        raise InputError(f"{len(missing)} annotated cells are not in the labels ({pairs[:300]}); check that "
                         "the annotations belong to this movie")
    crops = movie_crops(image, labels, merged, settings)
    rows = merged[["frame", "label", "track_id", "phenotype", "split"]].copy()
    if "experiment" in merged and merged["experiment"].notna().all():
        rows["experiment"] = merged["experiment"].astype(str).to_numpy()
    else:
        rows["experiment"] = experiment
    rows["source"] = source
    return crops, rows
