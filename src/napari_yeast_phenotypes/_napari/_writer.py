"""npe2 writer: a phenotypes layer -> a result folder, as the CLI writes it.

``cells.csv``, ``tracks.csv``, ``summary.png`` and ``run.json`` (how the result was made), through
the core's :func:`~napari_yeast_phenotypes.core.jobs.classify.write_result`: all together or none.

In napari: select the "phenotypes" layer, File > Save Selected Layers..., choose this plugin's
"cells.csv + tracks.csv (folder)" writer and type a folder name without an extension.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._layers import RESULT_KEY, RUN_KEY


def result_from_meta(meta: dict):
    """The classification result a layer carries in its metadata, or ``None``."""
    return (meta or {}).get("metadata", {}).get(RESULT_KEY)


def export_result(result, out_dir: str | os.PathLike, run: dict | None = None) -> list[str]:
    """Write the result folder into ``out_dir`` (created if needed; earlier results there are replaced)."""
    from ..core.errors import InputError
    from ..core.jobs.classify import write_result
    from ..core.results.folder import RESULT_FILES, RUN_FILE

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder name (without an extension) for the result files")
    try:
        title = (run or {}).get("inputs", {}).get("image", {}).get("name", "")
        write_result(result, out, run, overwrite=True, title=title)
    except InputError as exc:  # napari shows a ValueError's message to the user
        raise ValueError(str(exc)) from exc
    return [str(out / n) for n in (*RESULT_FILES, RUN_FILE)]


def write_phenotype_tables(path: str, data, meta: dict) -> list[str]:
    """Single-layer npe2 writer (``napari_get_writer`` style): returns the paths written.

    Raises
    ------
    ValueError
        If the layer is not a phenotypes layer made by "Classify phenotypes" (napari shows the
        message).
    """
    result = result_from_meta(meta)
    run = (meta or {}).get("metadata", {}).get(RUN_KEY)
    if result is None:
        raise ValueError(
            "this labels layer holds no phenotype result: save the 'phenotypes' layer made by "
            "Plugins > Classify phenotypes (or use its Export button)"
        )
    return export_result(result, path, run)
