"""The Train dock's figures: live curves, the end-of-training report and the cross-validation, drawn with Agg in
the worker thread and shown in the dock as pictures (drawing them on the UI thread stalled napari's event
loop for 0.7-0.9 s per epoch on a 2-core machine: ``benchmarks/run.py --only stall``).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy


def render(fig: Figure) -> np.ndarray:
    """Draw ``fig`` with Agg (in whichever thread calls this) and return its (H, W, 4) RGBA picture; class
    names and every other text drawn as written (no mathtext: see ``core.results.figures``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ..core.results.figures import literal_text, make_literal

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    with literal_text():
        make_literal(fig)
        canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def render_curves(fig: Figure, history: list[dict]) -> np.ndarray:
    """The live curves (loss; validation accuracy and macro-F1 per epoch) drawn into ``fig``, as a picture."""
    from ..core.network.evaluation_figures import draw_history

    fig.clear()
    ax_loss, ax_score = fig.subplots(1, 2)
    draw_history(ax_loss, ax_score, history)
    for ax in (ax_loss, ax_score):
        ax.tick_params(labelsize=7)
    return render(fig)


def render_report(fig: Figure, clf) -> np.ndarray:
    """The end-of-training figure (confusion, F1 per class beside the previous model's, reliability), as a picture.

    Four panels in a row when ``fig`` is wide, else a 2 x 2 grid (a dock is narrow: in one row the
    confusion matrices' numbers were too small to read).
    """
    from ..core.network.evaluation_figures import report_figure

    ev = clf.evaluation
    rep = dict(ev["record"])
    rep["reliability"] = {"before": ev["before"], "after": ev["after"], "targets": ev["targets"]}
    w, h = fig.get_size_inches()
    report_figure(rep, clf.class_names, rep.get("previous"), fig=fig, ncols=4 if w > 2.5 * h else 2)
    return render(fig)


def with_curves(gen, fig: Figure | None):
    """Pass on a training generator's progress, adding to each epoch's the curves drawn so far (a picture)."""
    history = []
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if fig is not None and p.get("done_epoch"):
            history.append(p)
            p = {**p, "curves_image": render_curves(fig, history)}
        yield p


def render_crossval(fig: Figure, res: dict) -> np.ndarray:
    """Per-class F1 of the grouped folds beside the random split's, drawn into ``fig``, as a picture."""
    from ..core.network.evaluation_figures import draw_crossval

    fig.clear()
    ax = fig.subplots(1, 1)
    draw_crossval(ax, res, res.get("random"), list(res["summary"]["f1"]))
    return render(fig)


class FigureView(QLabel):
    """A figure's picture (drawn elsewhere, see :func:`render`), scaled to the space it has."""

    def __init__(self, min_height: int) -> None:
        super().__init__()
        self._pixmap: QPixmap | None = None
        self.setMinimumHeight(min_height)
        self.setAlignment(Qt.AlignCenter)
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Ignored)  # the picture follows the dock, not the reverse

    def set_image(self, rgba: np.ndarray) -> None:
        rgba = np.ascontiguousarray(rgba)
        h, w = rgba.shape[:2]
        self._pixmap = QPixmap.fromImage(QImage(rgba.data, w, h, 4 * w, QImage.Format_RGBA8888).copy())
        self._rescale()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is not None:
            self.setPixmap(self._pixmap.scaled(self.width(), self.height(), Qt.KeepAspectRatio,
                                               Qt.SmoothTransformation))


__all__ = ["FigureView", "render", "render_crossval", "render_curves", "render_report", "with_curves"]
