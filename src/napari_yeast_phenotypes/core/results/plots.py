"""Summary plots of a classified movie, shared by the CLI (summary.png) and the napari plot dock.

Each ``draw_*`` function draws into a matplotlib ``Axes`` it is given, so the napari dock can use
its own canvas; :func:`summary_figure` puts the three together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...phenotypes import CLASS_NAMES, class_colours


def raster_matrix(cells: pd.DataFrame, tracks: pd.DataFrame, class_names=CLASS_NAMES
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """(tracks x frames) matrix of class indices (-1 where a track is absent).

    Tracks are sorted by senescence frame (never-senescent last), then by first frame.
    """
    names = list(class_names)
    n_frames = int(cells["frame"].max()) + 1 if len(cells) else 0
    order = tracks.assign(_s=tracks["senescence_frame"].astype("Float64").fillna(np.inf))
    order = order.sort_values(["_s", "first_frame", "track_id"])["track_id"].to_numpy()
    row_of = {t: i for i, t in enumerate(order)}
    mat = np.full((len(order), n_frames), -1, dtype=np.int64)
    codes = pd.Categorical(cells["phenotype"], categories=names).codes
    mat[[row_of[t] for t in cells["track_id"]], cells["frame"].to_numpy()] = codes
    return mat, order, n_frames


def draw_raster(ax, cells, tracks, class_names=CLASS_NAMES, current_frame: int | None = None):
    """Phenotype of every track (rows, labelled by track id) over time (columns); returns the frame-marker line."""
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    mat, order, n_frames = raster_matrix(cells, tracks, class_names)
    cmap = ListedColormap([(1, 1, 1, 0)] + class_colours(class_names))
    ax.imshow(mat + 1, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=len(class_names),
              extent=(-0.5, n_frames - 0.5, len(mat) - 0.5, -0.5))
    # rows are sorted by senescence, so a row number means nothing to the user: tick the track ids
    ax.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True, min_n_ticks=1))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _track_tick(order, v)))
    ax.set_xlabel("frame")
    ax.set_ylabel("track id (sorted by senescence)")
    ax.set_title("Phenotype along each track")
    line = ax.axvline(current_frame if current_frame is not None else 0, color="k", lw=1,
                      visible=current_frame is not None)
    return line


def _track_tick(order: np.ndarray, row: float) -> str:
    """The track id shown at raster row ``row`` (empty between rows and outside them)."""
    i = int(round(row))
    return str(order[i]) if abs(row - i) < 1e-6 and 0 <= i < len(order) else ""


def class_fractions(cells: pd.DataFrame, class_names=CLASS_NAMES) -> pd.DataFrame:
    """Fraction of the cells present in each frame that show each class (frames x classes)."""
    ct = pd.crosstab(cells["frame"], pd.Categorical(cells["phenotype"], categories=list(class_names)),
                     dropna=False)
    return ct.div(ct.sum(axis=1).replace(0, 1), axis=0)


def draw_fractions(ax, cells, class_names=CLASS_NAMES, legend: bool = True):
    frac = class_fractions(cells, class_names)
    ax.stackplot(frac.index.to_numpy(), frac.to_numpy().T, colors=class_colours(class_names),
                 labels=list(class_names))
    ax.set_xlim(frac.index.min(), max(frac.index.max(), frac.index.min() + 1))
    ax.set_ylim(0, 1)
    ax.set_xlabel("frame")
    ax.set_ylabel("fraction of cells")
    ax.set_title("Class fractions over time")
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def draw_not_senescent(ax, cells, tracks):
    """The censored (Kaplan-Meier) estimate of cells staying non-senescent, with its 95 % band.

    Time runs from each track's first frame; a track that ends before senescence leaves the
    denominator there (ticks) instead of counting as not senescent ever after; tracks already
    senescent when first seen are left out. The estimate is lifelines' (see ``core.survival``).
    """
    from .survival import draw_km, kaplan_meier, km_table

    kmf = kaplan_meier(tracks) if len(tracks) else None
    if kmf is None:
        ax.text(0.5, 0.5, "no track to follow", ha="center", va="center", transform=ax.transAxes)
    else:
        draw_km(ax, km_table(kmf, "all"), colour="k")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("frames since first seen")
    ax.set_ylabel("fraction not senescent")
    ax.set_title("Not yet senescent (Kaplan-Meier)")


def summary_figure(cells, tracks, class_names=CLASS_NAMES, title: str | None = None):
    """The three panels in one figure (matplotlib ``Figure``; no pyplot state is touched); the title
    and class names drawn as written (see :mod:`.figures`)."""
    from matplotlib.figure import Figure

    from .figures import literal_text, make_literal

    with literal_text():
        fig = Figure(figsize=(13, 4.2), layout="constrained")
        axes = fig.subplots(1, 3, width_ratios=[1.2, 1.2, 1])
        draw_raster(axes[0], cells, tracks, class_names)
        draw_fractions(axes[1], cells, class_names)
        draw_not_senescent(axes[2], cells, tracks)
        if title:
            fig.suptitle(title)
        make_literal(fig)
    return fig


def save_summary(cells, tracks, path, class_names=CLASS_NAMES, title=None) -> None:
    """Write the summary figure to ``path`` atomically (PNG), drawn whole in memory first."""
    from .figures import save_png

    save_png(summary_figure(cells, tracks, class_names, title), path, dpi=110)
