"""Annotation tables (``frame, label, phenotype`` [, ``split``, ``experiment``, ``mark``]) read and checked,
and the crops of the annotated cells of a movie made by the one crop function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ....phenotypes import CLASS_NAMES, class_index
from ...errors import InputError
from ..crops import CropSettings
from .manifest import SPLITS_HINT, movie_identity, normalise_mark, normalise_split


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


def _refuse_cells_without_data(image, labels, cells: pd.DataFrame) -> None:
    """Refuse annotated cells most of whose pixels are NaN or infinite: their crops would be blank, and a
    blank crop in the curated set would teach the model that a blank is their class."""
    from ..crops import MIN_FINITE_SHARE, finite_share

    if np.asarray(image[:0]).dtype.kind not in "fc":
        return
    bad = []
    for t, idx in cells.groupby("frame").indices.items():
        rows = cells.iloc[idx]
        share = finite_share(np.asarray(image[int(t)]), np.asarray(labels[int(t)]), rows)
        bad += [f"frame {int(t)} label {int(lab)}" for lab in rows["label"][share < MIN_FINITE_SHARE]]
    if bad:
        raise InputError(f"{len(bad)} annotated cell(s) have most of their pixels NaN or infinite in the image "
                         f"({', '.join(bad[:5])}{' and more' if len(bad) > 5 else ''}): their crops would be blank, "
                         "not the cell. Leave them out of the annotations, or fix the image")


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
        The movie's :class:`~napari_yeast_phenotypes.core.results.schema.MovieStats` (as at inference);
        computed from the movie when not given.
    table
        The movie's cell table (``frame, label, track_id, bbox_*``), built when not given.

    Raises
    ------
    InputError
        Frames outside the movie, or labels absent from their frame (listed).
    """
    from ..crops import movie_crops
    from ..tracking import build_cell_table

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
    _refuse_cells_without_data(image, labels, merged)
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
