"""CSV tables users keep: per cell per frame, and per track. Written atomically, by the package's one CSV
writer (:func:`~napari_yeast_phenotypes.core.files.tables.write_csv`: formulas neutralised)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ...phenotypes import CLASS_NAMES
from ..files.tables import write_csv
from .schema import OOD_COLUMN, cell_columns


def cells_for_export(cells: pd.DataFrame, class_names=CLASS_NAMES) -> pd.DataFrame:
    """The per-cell table in the documented column order (``annotated`` False, ``ood_score`` empty where absent)."""
    out = cells.copy()
    if "annotated" not in out:
        out["annotated"] = False
    if OOD_COLUMN not in out:
        out[OOD_COLUMN] = np.nan  # a model without a summary of its training data: empty in the CSV
    out = out[cell_columns(class_names)].sort_values(["frame", "label"], kind="stable")
    return out.reset_index(drop=True)


def write_tables(cells: pd.DataFrame, tracks: pd.DataFrame, out_dir: str | os.PathLike,
                 class_names=CLASS_NAMES) -> dict[str, Path]:
    """Write ``cells.csv`` and ``tracks.csv`` into ``out_dir``."""
    out_dir = Path(out_dir)
    return {
        "cells": write_csv(cells_for_export(cells, class_names), out_dir / "cells.csv"),
        "tracks": write_csv(tracks, out_dir / "tracks.csv"),
    }


__all__ = ["cells_for_export", "write_csv", "write_tables"]
