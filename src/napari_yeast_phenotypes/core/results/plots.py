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


#: up to this many tracks, every raster row is labelled with its track id
LABEL_EVERY_ROW = 120


def draw_raster(ax, cells, tracks, class_names=CLASS_NAMES, current_frame: int | None = None):
    """Phenotype of every track (rows) over time (columns); returns the frame-marker line.

    Every track can be found: up to :data:`LABEL_EVERY_ROW` tracks the rows are sorted by
    senescence frame, beyond that they are in track-id order. Rows are labelled with their track
    ids, every one where the axes are tall enough and every few rows otherwise
    (:func:`row_locator`: labels never overlap, in a short dock or a tall figure alike). White is
    "no cell": the track was not there in that frame.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import FuncFormatter

    mat, order, n_frames = raster_matrix(cells, tracks, class_names)
    many = len(order) > LABEL_EVERY_ROW
    if many:  # too many rows to name each: in track-id order, so a track is found by its id
        by_id = np.argsort(order, kind="stable")
        mat, order = mat[by_id], order[by_id]
    cmap = ListedColormap([(1, 1, 1, 1)] + class_colours(class_names))
    ax.imshow(mat + 1, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=len(class_names),
              extent=(-0.5, n_frames - 0.5, len(mat) - 0.5, -0.5))
    fontsize = 6.0 if many else float(np.clip(220 / max(len(order), 1), 5.0, 8.0))
    ax.tick_params(axis="y", labelsize=fontsize)
    ax.yaxis.set_major_locator(row_locator(len(order), fontsize))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _track_tick(order, v)))
    ax.set_ylabel("track id (in order)" if many else "track id (by senescence)")
    ax.set_xlabel("frame")
    ax.set_title("Phenotype along each track (white: no cell)")
    line = ax.axvline(current_frame if current_frame is not None else 0, color="k", lw=1,
                      visible=current_frame is not None)
    return line


#: steps between labelled rows when not every row has room: round numbers, so the labels do not dance on a resize
ROW_STEPS = (1, 2, 3, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000)


def row_locator(n_rows: int, fontsize: float):
    """Ticks on whole raster rows: every row where the axes have room for its label, else every k-th.

    The room is measured when the figure is drawn (the axes' height in pixels over the rows in
    view), so a dock made shorter or a zoom gets fewer or more labels, never overlapping ones.
    (A function, so that matplotlib is imported only when a figure is drawn.)
    """
    from matplotlib.ticker import Locator

    class _RowLocator(Locator):
        def __call__(self):
            vmin, vmax = self.axis.get_view_interval()
            return self.tick_values(vmin, vmax)

        def tick_values(self, vmin, vmax):
            lo, hi = sorted((vmin, vmax))
            first, last = max(0, int(np.ceil(lo))), min(n_rows - 1, int(np.floor(hi)))
            if last < first:
                return np.array([], dtype=float)
            step = 1
            axes = getattr(self.axis, "axes", None)
            if axes is not None and axes.figure is not None:
                height = axes.get_window_extent().height  # pixels
                row_px = height / max(hi - lo, 1e-9)
                label_px = 1.3 * fontsize * axes.figure.dpi / 72
                need = max(1, int(np.ceil(label_px / max(row_px, 1e-9))))
                step = next((s for s in ROW_STEPS if s >= need), need)
            start = int(np.ceil(first / step) * step)
            return np.arange(start, last + 1, step, dtype=float)

    return _RowLocator()


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


def not_senescent_curve(tracks: pd.DataFrame, alpha: float = 0.05):
    """The Kaplan-Meier estimate of cells not yet senescent over the movie's frames (lifelines), or ``None``.

    Each track is at risk from its first frame (delayed entry: a cell first seen at frame 30 says
    nothing about frames before), until its first Senescent frame (an event) or its last frame
    (censored: it left, was washed out, or the movie ended). Tracks already Senescent when first
    seen are left out. The time axis is the movie's frame, as in the other panels.
    """
    from lifelines import KaplanMeierFitter

    first = tracks["first_frame"].to_numpy(dtype=float)
    last = tracks["last_frame"].to_numpy(dtype=float)
    sen = pd.to_numeric(tracks["senescence_frame"], errors="coerce").to_numpy(dtype=float)
    event = np.isfinite(sen)
    keep = ~(event & (sen <= first))
    if not keep.any():
        return None
    end = np.where(event, sen, last)[keep]
    return KaplanMeierFitter(alpha=alpha).fit(end, event[keep], entry=first[keep] - 0.5, label="all")


def at_risk(tracks: pd.DataFrame, frames) -> np.ndarray:
    """Tracks at risk at each of ``frames``: seen by then, and watched and not senescent before it (a track that
    becomes senescent at a frame was at risk there, as in the Kaplan-Meier risk set)."""
    first = tracks["first_frame"].to_numpy(dtype=float)
    last = tracks["last_frame"].to_numpy(dtype=float)
    sen = pd.to_numeric(tracks["senescence_frame"], errors="coerce").to_numpy(dtype=float)
    end = np.where(np.isfinite(sen), sen, last)
    keep = ~(np.isfinite(sen) & (sen <= first))
    f = np.asarray(frames, dtype=float)[:, None]
    return ((first[keep] <= f) & (f <= end[keep])).sum(axis=1)


def draw_not_senescent(ax, cells, tracks):
    """The censored (Kaplan-Meier) estimate of cells not yet senescent over the movie's frames, with its 95 %
    band, censoring ticks and the numbers at risk under the axis."""
    from .survival_figure import draw_km
    from .survival_stats import km_table

    kmf = not_senescent_curve(tracks) if len(tracks) else None
    if kmf is None:
        ax.text(0.5, 0.5, "no track to follow", ha="center", va="center", transform=ax.transAxes)
    else:
        draw_km(ax, km_table(kmf, "all"), colour="k")
    n_frames = int(cells["frame"].max()) + 1 if cells is not None and len(cells) else \
        int(tracks["last_frame"].max()) + 1 if len(tracks) else 1
    ax.set_xlim(-0.5, max(n_frames - 0.5, 0.5))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("frame", labelpad=1)
    ax.set_ylabel("fraction not senescent")
    ax.set_title("Not yet senescent (Kaplan-Meier)")
    if len(tracks):
        ticks = [t for t in ax.get_xticks() if -0.5 <= t <= n_frames - 0.5]
        counts = at_risk(tracks, ticks)
        below = (0, -34)  # points under the axis: under the tick labels and the axis label
        ax.annotate("at risk", (0, 0), xycoords="axes fraction", xytext=(below[0] - 4, below[1]),
                    textcoords="offset points", ha="right", va="top", fontsize=7)
        for t, n in zip(ticks, counts):
            ax.annotate(str(int(n)), (t, 0), xycoords=("data", "axes fraction"), xytext=below,
                        textcoords="offset points", ha="center", va="top", fontsize=7)


WARNING_COLOUR = "#c0392b"


def draw_warning(fig, text: str | None) -> None:
    """Write ``text`` under the panels of ``fig`` in red, in words (a figure that cannot be trusted says so on
    itself); the layout keeps room for it."""
    if not text:
        return
    import textwrap

    fig.supxlabel("\n".join(textwrap.wrap("CANNOT BE TRUSTED: " + text, 150)), color=WARNING_COLOUR, fontsize=9,
                  fontweight="bold", parse_math=False,
                  bbox={"facecolor": "#fdecea", "edgecolor": WARNING_COLOUR, "boxstyle": "round,pad=0.4"})


def summary_figure(cells, tracks, class_names=CLASS_NAMES, title: str | None = None, warning: str | None = None):
    """The three panels in one figure (matplotlib ``Figure``; no pyplot state is touched); the title and class
    names drawn as written (see :mod:`.figures`).

    ``warning``: a plain-words warning drawn on the figure itself (e.g. most cells are unlike the
    model's training data), so that the figure cannot travel without it.
    """
    from matplotlib.figure import Figure

    from .figures import literal_text, make_literal

    with literal_text():
        fig = Figure(figsize=(13, 4.6 + (0.5 if warning else 0)), layout="constrained")
        axes = fig.subplots(1, 3, width_ratios=[1.2, 1.2, 1])
        draw_raster(axes[0], cells, tracks, class_names)
        draw_fractions(axes[1], cells, class_names)
        draw_not_senescent(axes[2], cells, tracks)
        if title:
            fig.suptitle(title)
        draw_warning(fig, warning)
        make_literal(fig)
    return fig


def save_summary(cells, tracks, path, class_names=CLASS_NAMES, title=None, warning: str | None = None) -> None:
    """Write the summary figure to ``path`` atomically (PNG), drawn whole in memory first; ``warning`` is drawn
    on it."""
    from .figures import save_png

    save_png(summary_figure(cells, tracks, class_names, title, warning), path, dpi=110)
