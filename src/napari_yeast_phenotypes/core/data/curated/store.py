"""The curated set (:class:`CuratedSet`): opening or creating one, its settings, and what it holds (counts,
warnings, the labels of a movie, the crops of a split). The layout and the guarantees: the package's docstring.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ....phenotypes import CLASS_NAMES
from ...errors import InputError
from ...files.atomic import atomic_write
from ...files.inside import path_inside, read_bytes_inside, read_text_inside, refuse_links, tree_inside
from ...files.jsonfile import loads_json
from ...files.locking import FileLock
from ..crops import CropSettings
from ..cropset import CropSet
from .history import Change, HistoryMixin
from .manifest import MANIFEST_COLUMNS, MARKS, MIN_PER_CLASS, ManifestMixin, check_class_names, normalise_split
from .writer import WriterMixin

LOCK_FILE = ".curated.lock"


#: the curated set format this version reads (``settings.json``'s ``format_version``; absent means 1)
SETTINGS_VERSION = 1


class CuratedSet(ManifestMixin, WriterMixin, HistoryMixin):
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
    read_only
        Open an existing set to read it only (:meth:`read`): no lock is taken and nothing is moved,
        so a set on a read-only disk, or one a writer holds, can be trained on. Its manifest is
        always whole (written atomically) and names only crops that exist (written first).

    Nothing outside ``root`` is read, written or moved: a symbolic link inside the set (a split or
    class folder, a crop, ``history.jsonl``, ``manifest.csv``) is refused when the set is opened.
    """

    def __init__(self, root, crop_settings: CropSettings | None = None, class_names=CLASS_NAMES,
                 lock_timeout: float = 60.0, *, read_only: bool = False):
        self.root = Path(root)
        self.class_names = check_class_names(class_names)
        self.read_only = read_only
        self._lock_timeout = lock_timeout
        self._sig = None
        self._index_of: tuple | None = None  # (manifest object, its cell_key -> row index), see _key_positions
        self._text_of: tuple | None = None  # (manifest object, the CSV text last written of it), see _save_manifest
        self._undo: list[Change] = []
        self._redo: list[Change] = []
        self.manifest = pd.DataFrame(columns=MANIFEST_COLUMNS)
        settings_file = self.root / "settings.json"
        if read_only:
            if not self.root.is_dir() or not (settings_file.exists() or settings_file.is_symlink()):
                raise InputError(f"{self.root} is not a curated set (no settings.json): give the folder that the "
                                 "Annotate dock or yeast-phenotypes curate writes into")
            self._refuse_links()
            self._read_settings(settings_file, crop_settings)
            self._refresh()
            return
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

    @classmethod
    def read(cls, root) -> CuratedSet:
        """An existing set opened to read only: no writers' lock wanted, nothing moved (see ``read_only``)."""
        return cls(root, read_only=True)

    # --- reading -----------------------------------------------------------------------------
    def _read_settings(self, settings_file: Path, crop_settings: CropSettings | None) -> None:
        try:
            saved = loads_json(read_text_inside(self.root, settings_file.name))
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise InputError(f"{settings_file} is not valid ({exc}); restore it from a backup") from exc
        except OSError as exc:
            raise InputError(f"cannot read {settings_file} ({exc.strerror})") from exc
        version = saved.get("format_version", 1)  # this version writes none: a set of format 1
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InputError(f"{settings_file}: its format_version is {version!r}, not a version number; the file "
                             "was changed or made by another program")
        if version > SETTINGS_VERSION:
            raise InputError(f"{settings_file} was written by a newer napari-yeast-phenotypes (curated set format "
                             f"{version}; this version reads up to {SETTINGS_VERSION}); update the package")
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
        if self.read_only:
            raise InputError(f"the curated set in {self.root} was opened to read only; open it as CuratedSet(root) "
                             "to change it")
        path_inside(self.root, LOCK_FILE)  # a lock file that is a link would be written through
        return FileLock(self.root / LOCK_FILE, timeout=self._lock_timeout, what="a curated-set writer")

    def _crop_files(self) -> list[str]:
        """The set's crop files (``<folder>/<folder>/<crop>.tif``), none through a symbolic link.

        Raises
        ------
        OutsideFolder
            For a link anywhere in the set (a split, a class folder, a crop, a file of the set, the
            folders crops are moved into): reading or moving through it would touch files elsewhere.
        """
        return [f for f in self._refuse_links() if f.endswith(".tif")]

    def _refuse_links(self) -> list[str]:
        """Refuse any symbolic link in the set (one walk of it); returns its files two folders down."""
        files, links = tree_inside(self.root, 2)
        links += [self.root / n for n in (LOCK_FILE, ".orphans", ".removed") if (self.root / n).is_symlink()]
        refuse_links(links, self.root)
        return files

    def _reconcile(self) -> None:
        """Move crop files that the manifest does not name into .orphans (never delete them)."""
        named = set(self.manifest["path"])
        for rel in self._crop_files():
            if rel not in named:
                dest = path_inside(self.root, f".orphans/{rel}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path_inside(self.root, rel), dest)

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

        split = normalise_split(split)
        rows = self.trainable()
        rows = rows[rows["split"] == split]
        if rows.empty:
            raise InputError(f"the curated set in {self.root} has no crops in split {split!r} "
                             f"(it has: {sorted(set(self.trainable()['split'])) or 'nothing'})")
        crops = np.stack([self._read_crop(p) for p in rows["path"]])[:, None]
        targets = np.array([self.class_names.index(c) for c in rows["phenotype"]], dtype=np.int64)
        # one cell = one track of one movie (legacy rows: of one experiment's file); no track: the crop alone
        tracks = np.where(rows["track_id"].to_numpy() >= 0,
                          (rows["movie_id"] + "|" + rows["experiment"] + "|" + rows["source"] + "|"
                           + rows["track_id"].astype(str)).to_numpy(dtype=object),
                          rows["crop_id"].to_numpy(dtype=object))
        out = CropSet(crops, targets, self.class_names, list(rows["path"]),
                      rows["experiment"].to_numpy(), origin={"kind": "curated", "set": str(self.root.resolve()),
                                                             "split": split}, tracks=tracks)
        out.check_finite(f"the {split} split of the curated set in {self.root} (files named from there)")
        return out

    def _read_crop(self, rel: str) -> np.ndarray:
        """One crop file of the set as (size, size) float32, in plain words when it cannot be."""
        import tifffile

        size = self.crop_settings.size
        path = self.root / rel
        try:
            arr = tifffile.imread(io.BytesIO(read_bytes_inside(self.root, rel)))
        except FileNotFoundError:
            raise InputError(f"the crop {path}, named in the set's manifest, is missing: was it moved or deleted by "
                             "hand? Put it back (from .orphans or .removed), or take its row out of manifest.csv"
                             ) from None
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"the crop {path} cannot be read ({type(exc).__name__}: {str(exc)[:120]}): the file is "
                             "damaged (cut short by an interrupted copy?). Restore it from a backup, or take its row "
                             "out of manifest.csv") from exc
        arr = np.squeeze(np.asarray(arr))
        if arr.shape != (size, size):
            raise InputError(f"the crop {path} is {'x'.join(map(str, arr.shape)) or 'a single value'}, not "
                             f"{size}x{size} like every crop of this set (its settings.json); it was changed or made "
                             "elsewhere. Restore it, or take its row out of manifest.csv")
        if arr.dtype.kind not in "fiu":
            raise InputError(f"the crop {path} holds {arr.dtype} values, not numbers; restore it")
        return arr.astype(np.float32)

