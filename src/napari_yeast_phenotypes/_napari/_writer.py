"""npe2 writer: a phenotypes layer -> ``cells.csv`` and ``tracks.csv`` in a folder, as the CLI writes them.

In napari: select the "phenotypes" layer, File > Save Selected Layers..., choose this plugin's
"cells.csv + tracks.csv (folder)" writer and type a folder name without an extension.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._layers import RESULT_KEY


def result_from_meta(meta: dict):
    """The classification result a layer carries in its metadata, or ``None``."""
    return (meta or {}).get("metadata", {}).get(RESULT_KEY)


def export_result(result, out_dir: str | os.PathLike) -> list[str]:
    """Write the result's tables into ``out_dir`` (created if needed) with the core's writer."""
    from ..core.export import write_tables

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder name (without an extension) for the two CSV files")
    out.mkdir(parents=True, exist_ok=True)
    paths = write_tables(result.cells, result.tracks, out, result.class_names)
    return [str(paths["cells"]), str(paths["tracks"])]


def write_phenotype_tables(path: str, data, meta: dict) -> list[str]:
    """Single-layer npe2 writer (``napari_get_writer`` style): returns the paths written.

    Raises
    ------
    ValueError
        If the layer is not a phenotypes layer made by "Classify phenotypes" (napari shows the
        message).
    """
    result = result_from_meta(meta)
    if result is None:
        raise ValueError(
            "this labels layer holds no phenotype result: save the 'phenotypes' layer made by "
            "Plugins > Classify phenotypes (or use its Export button)"
        )
    return export_result(result, path)
