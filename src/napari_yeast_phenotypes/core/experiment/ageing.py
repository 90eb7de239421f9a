"""The ageing analysis of a classified experiment: senescence as survival per condition
(:func:`~napari_yeast_phenotypes.core.results.survival.senescence_survival`), tables and figure written whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..files.atomic import atomic_write
from .combine import read_combined


def read_tracks(source) -> tuple[pd.DataFrame, Path]:
    """The tracks table of a classify-many folder, a classify folder, or a tracks.csv; and its folder."""
    path = Path(source)
    csv = path / "tracks.csv" if path.is_dir() else path
    if not csv.is_file():
        raise InputError(f"no tracks table at {csv}; give a folder written by classify-many or classify, "
                         "or a tracks.csv")
    if path.is_dir() and (path / "experiment.json").is_file():
        return read_combined(csv), path
    return pd.read_csv(csv), csv.parent


def run_ageing(source, by=None, out=None, *, frame_interval: float = 1.0, time_unit: str | None = None,
               alpha: float = 0.05, overwrite: bool = False) -> tuple:
    """``yeast-phenotypes ageing``: the survival tables and ``ageing.png`` of an experiment's tracks.

    Parameters
    ----------
    source
        A classify-many folder (its combined ``tracks.csv``), a classify folder or a ``tracks.csv``.
    by
        Column(s) to compare by (a comma-separated string or a list); ``None``: one group.
    out
        Folder for the tables and the figure (default ``<source folder>/ageing``); earlier
        results there are replaced only with ``overwrite``.

    Returns
    -------
    (SurvivalResult, list of the files written)
    """
    from ..files.atomic import prepare_output_dir
    from ..results.export import write_csv
    from ..results.survival import ageing_figure, senescence_survival

    if isinstance(by, str):
        by = [b.strip() for b in by.split(",") if b.strip()] or None
    tracks, folder = read_tracks(source)
    res = senescence_survival(tracks, by, frame_interval=frame_interval, time_unit=time_unit, alpha=alpha)
    if not res.groups:
        raise InputError("no track can be followed: every track is empty or senescent when first seen")
    names = [*res.tables(), "ageing.png"]
    out = prepare_output_dir(out or folder / "ageing", names, overwrite)
    written = [write_csv(df, out / name) for name, df in res.tables().items()]
    fig = ageing_figure(res, title=f"Time to senescence ({len(res.tracks)} tracks)")
    with atomic_write(out / "ageing.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    return res, [*written, out / "ageing.png"]


__all__ = ["read_tracks", "run_ageing"]
