"""The tables that travel through the package: their columns, probability names and class codes.

One module owns the schema; everything else imports it. No torch, no napari.

- the cell table: one row per (frame, label) (:data:`CELL_TABLE_COLUMNS`), which classification
  extends with one ``p_<class>`` column per class (:func:`prob_columns`), the per-frame and the
  smoothed phenotype and the confidence, and ``ood_score`` (:data:`OOD_COLUMN`);
- ``cells.csv`` (:func:`cell_columns`) and ``tracks.csv`` (:func:`track_columns`);
- :class:`Result` (the cells and tracks tables of one classified movie) and :class:`MovieStats`
  (what the crops of one movie are normalised by).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

from ...phenotypes import CLASS_NAMES

#: the cell table built from the labels (bbox end exclusive)
CELL_TABLE_COLUMNS = ["frame", "label", "track_id", "y", "x", "area", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"]
#: the first columns of cells.csv, before the probabilities
CELL_BASE_COLUMNS = ["track_id", "frame", "label", "y", "x", "area", "phenotype", "phenotype_raw", "confidence"]
TRACK_BASE_COLUMNS = ["track_id", "first_frame", "last_frame", "n_frames", "dominant_phenotype", "senescence_frame"]
PROB_PREFIX = "p_"


def prob_columns(class_names=CLASS_NAMES) -> list[str]:
    """The probability column of each class, in class order: ``p_<class>``."""
    return [f"{PROB_PREFIX}{c}" for c in class_names]


#: the last column of cells.csv: how unlike the model's training crops the cell's crop is (above 1:
#: unlike them; empty when the model keeps no summary of its training data; core/ood.py)
OOD_COLUMN = "ood_score"


def cell_columns(class_names=CLASS_NAMES) -> list[str]:
    """Column order of ``cells.csv``."""
    return CELL_BASE_COLUMNS + prob_columns(class_names) + ["annotated", OOD_COLUMN]


def track_columns(class_names=CLASS_NAMES) -> list[str]:
    """Column order of ``tracks.csv``."""
    return TRACK_BASE_COLUMNS + [f"frames_{c}" for c in class_names] + ["transitions"]


def class_codes(phenotypes, class_names=CLASS_NAMES) -> np.ndarray:
    """Index of each phenotype name in ``class_names`` (-1 for names not in it), as int64."""
    return np.asarray(pd.Categorical(phenotypes, categories=list(class_names)).codes, dtype=np.int64)


@dataclass
class Result:
    """Per-cell (one row per frame and cell) and per-track tables of one classified movie."""

    cells: pd.DataFrame
    tracks: pd.DataFrame
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class MovieStats:
    """What crops of one movie are normalised by: intensity range and typical cell size."""

    low: float
    high: float
    cell_side: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MovieStats:
        """Read back what :meth:`to_dict` wrote (e.g. from ``run.json``)."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in (d or {})]
        if missing:
            raise ValueError(f"movie statistics lack {missing}")
        return cls(*(float(d[n]) for n in names))
