"""The plot dock: phenotype raster, class fractions and cells not yet senescent (Kaplan-Meier), with a
frame marker on the two panels whose axis is the movie's frames.

The panels are drawn by the core's plotting functions (the same as the CLI's ``summary.png``);
this dock only hosts them on a Qt canvas and moves a vertical line with napari's time slider.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from ..core.results.figures import make_literal
from ..core.results.plots import draw_fractions, draw_not_senescent, draw_raster, draw_warning


class PhenotypePlots(QWidget):
    """Three panels of a classification result that follow the viewer's current frame.

    Parameters
    ----------
    viewer
        The napari viewer whose time slider moves the frame marker.
    """

    def __init__(self, viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.figure = Figure(figsize=(10, 2.6), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.canvas.setMinimumHeight(220)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.frame_lines: list = []
        self.frame: int | None = None
        self._layer = None
        self._n_frames = 0
        self.warning: str | None = None
        viewer.dims.events.current_step.connect(self._on_step)

    def show_result(self, result, layer=None, run: dict | None = None) -> None:
        """Draw the panels of ``result``; ``layer`` (the phenotypes layer) maps the slider to frames; ``run``
        (how it was made): a warning it holds (most cells unlike the training data) is drawn on the figure."""
        self._layer = layer
        cells, tracks, names = result.cells, result.tracks, result.class_names
        self._n_frames = int(cells["frame"].max()) + 1 if len(cells) else 0
        self.figure.clear()
        self.warning = ((run or {}).get("ood") or {}).get("warning")
        raster, fractions, alive = self.figure.subplots(1, 3, width_ratios=[1.3, 1.3, 1])
        frame = self.current_frame()
        marker = frame if frame is not None else 0
        self.frame_lines = [draw_raster(raster, cells, tracks, names, current_frame=marker)]
        draw_fractions(fractions, cells, names, legend=False)
        draw_not_senescent(alive, cells, tracks)
        # the senescence panel counts time from each track's first frame, not movie frames: no marker there
        self.frame_lines.append(fractions.axvline(marker, color="k", lw=1, ls="--"))
        for ax in (raster, fractions, alive):
            ax.title.set_fontsize(10)
            ax.xaxis.label.set_fontsize(9)
            ax.yaxis.label.set_fontsize(9)
            ax.tick_params(labelsize=8)
        draw_warning(self.figure, self.warning)
        make_literal(self.figure)  # class names drawn as written, never as mathtext
        self.frame = marker
        self.canvas.draw_idle()

    def current_frame(self) -> int | None:
        """The frame of the result shown at the viewer's current position (``None`` without a movie)."""
        if self._layer is None or self._layer.ndim < 3:
            return None
        t = float(self._layer.world_to_data(np.asarray(self.viewer.dims.point))[0])
        return int(np.clip(round(t), 0, max(self._n_frames - 1, 0)))

    def set_frame(self, frame: int) -> None:
        """Move the frame marker of every panel to ``frame``."""
        self.frame = int(frame)
        for line in self.frame_lines:
            line.set_xdata([self.frame, self.frame])
            line.set_visible(True)
        self.canvas.draw_idle()

    def _on_step(self, event=None) -> None:
        frame = self.current_frame()
        if frame is not None and self.frame_lines and frame != self.frame:
            self.set_frame(frame)
