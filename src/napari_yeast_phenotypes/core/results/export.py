"""CSV tables users keep: per cell per frame, and per track. Written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ...phenotypes import CLASS_NAMES
from ..files.atomic import atomic_write
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


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a CSV whole or not at all."""
    path = Path(path)
    with atomic_write(path, "w", newline="") as fh:
        df.to_csv(fh, index=False, float_format="%.6g")
    return path


def write_tables(cells: pd.DataFrame, tracks: pd.DataFrame, out_dir: str | os.PathLike,
                 class_names=CLASS_NAMES) -> dict[str, Path]:
    """Write ``cells.csv`` and ``tracks.csv`` into ``out_dir``."""
    out_dir = Path(out_dir)
    return {
        "cells": write_csv(cells_for_export(cells, class_names), out_dir / "cells.csv"),
        "tracks": write_csv(tracks, out_dir / "tracks.csv"),
    }
