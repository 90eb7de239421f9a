"""The Classify dock's sub-widgets: how to classify (a :class:`~napari_yeast_phenotypes.core.config.ClassifyConfig`,
widgets <-> config both ways) and how to draw the result (cells filled, or contours where cells touch).

The widgets hold no science: :meth:`ClassifySettings.config` is the config the command line builds from
its options, and :meth:`ClassifySettings.set_config` shows one (a round trip gives the same config).
"""

from __future__ import annotations

import numpy as np
from psygnal import Signal
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.config import PRECISIONS, RELINK_CHOICES, ClassifyConfig
from ..phenotypes import OVERLAY_OPACITY

DEVICES = ("auto", "cpu", "cuda", "mps")
DRAW_MODES = ("auto", "filled", "contours")
#: share of a frame's cells that touch another cell from which "auto" draws contours
DENSE_SHARE = 0.3
CONTOUR_WIDTH = 2


class Collapsible(QWidget):
    """A titled section whose content shows or hides with a click on its title."""

    def __init__(self, title: str, expanded: bool = False, parent=None):
        super().__init__(parent)
        self.button = QToolButton()
        self.button.setText(title)
        self.button.setCheckable(True)
        self.button.setChecked(expanded)
        self.button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.button.setStyleSheet("QToolButton { border: none; }")
        self.content = QWidget()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.button)
        layout.addWidget(self.content)
        self.button.toggled.connect(self._toggle)
        self._toggle(expanded)

    def _toggle(self, on: bool) -> None:
        self.button.setArrowType(Qt.DownArrow if on else Qt.RightArrow)
        self.content.setVisible(on)


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


class ClassifySettings(Collapsible):
    """Device, precision, batch size, frames read at a time and relinking, as a :class:`ClassifyConfig`."""

    def __init__(self, parent=None):
        super().__init__("classification settings", False, parent)
        d = ClassifyConfig()
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setEditable(True)  # cuda:1 and the like
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.batch = _spin(0, 65536, 0)
        self.batch.setSpecialValueText("auto (the device's)")  # 0 stands for None: 128 on a CPU, 4096 on a GPU
        self.workers = _spin(-1, 64, -1)
        self.workers.setSpecialValueText("auto (the device's)")  # -1 stands for None
        self.chunk = _spin(1, 100000, d.chunk_frames)
        self.relink = QComboBox()
        self.relink.addItems(RELINK_CHOICES)
        self.fast_path = QCheckBox("inference copy (BatchNorm folded; oneDNN on a CPU, channels-last on a GPU)")
        for w, tip in ((self.device, "auto: CUDA, then MPS, then the CPU"),
                       (self.precision, ("auto: bf16 where the device computes in it natively, after a check "
                                        "against fp32 on the movie's first batch")),
                       (self.batch, "crops per forward pass (auto: 128 on a CPU, 4096 on a CUDA GPU)"),
                       (self.workers, ("what makes the cell tables and crops of the next frames while the network "
                                       "runs: 0 nothing, 1 a thread, N processes; the results are the same")),
                       (self.chunk, "frames read at a time: memory does not grow with the movie's length"),
                       (self.relink, "relink label ids across frames by overlap (auto: when they look untracked)")):
            w.setToolTip(tip)
        form = QFormLayout(self.content)
        form.setContentsMargins(12, 0, 0, 0)
        form.addRow("device", self.device)
        form.addRow("precision", self.precision)
        form.addRow("batch size", self.batch)
        form.addRow("crop workers", self.workers)
        form.addRow("frames at a time", self.chunk)
        form.addRow("relink ids", self.relink)
        form.addRow("", self.fast_path)
        self.set_config(d)

    def config(self) -> ClassifyConfig:
        """The config the widgets describe (checked: a bad device name is an ``InputError``)."""
        return ClassifyConfig(relink=self.relink.currentText(), chunk_frames=self.chunk.value(),
                              batch_size=self.batch.value() or None,
                              crop_workers=self.workers.value() if self.workers.value() >= 0 else None,
                              device=self.device.currentText().strip(),
                              precision=self.precision.currentText(), fast_path=self.fast_path.isChecked())

    def set_config(self, config: ClassifyConfig) -> None:
        """Show ``config`` (its track model settings are the track model file's, not shown here)."""
        self.relink.setCurrentText(config.relink)
        self.chunk.setValue(config.chunk_frames)
        self.batch.setValue(config.batch_size or 0)
        self.workers.setValue(-1 if config.crop_workers is None else config.crop_workers)
        self.device.setCurrentText(config.device)
        self.precision.setCurrentText(config.precision)
        self.fast_path.setChecked(config.fast_path)


def touching_share(frame: np.ndarray) -> float:
    """Share of the cells of a label frame that touch another cell (4-neighbours): how dense the colony is."""
    lab = np.asarray(frame)
    ids = np.unique(lab)
    ids = ids[ids > 0]
    if ids.size == 0:
        return 0.0
    touching = []
    for a, b in ((lab[1:, :], lab[:-1, :]), (lab[:, 1:], lab[:, :-1])):
        edge = (a != b) & (a > 0) & (b > 0)
        touching += [a[edge], b[edge]]
    return float(np.unique(np.concatenate(touching)).size / ids.size)


class DisplayOptions(QWidget):
    """How the phenotypes overlay draws cells: filled in their class colour, or as contours in it, so that the
    signal under them stays visible where cells touch (``auto``: contours for dense colonies)."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.mode = QComboBox()
        self.mode.addItems(DRAW_MODES)
        self.mode.setToolTip("filled: cells painted in their class colour; contours: only their outline, the "
                             "signal visible inside (where cells touch, filled cells of one class merge into one "
                             "blob); auto: contours when many cells touch")
        self.said = QLabel("")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("cells drawn"))
        row.addWidget(self.mode, 1)
        row.addWidget(self.said)
        self.mode.currentTextChanged.connect(lambda _t: self.changed.emit())

    def contours_for(self, layer) -> bool:
        """Whether ``layer`` (the phenotypes overlay) is drawn as contours in the chosen mode."""
        mode = self.mode.currentText()
        if mode != "auto":
            return mode == "contours"
        labels = getattr(layer.data, "labels", None)
        first = np.asarray(labels[0]) if labels is not None else np.asarray(layer.data)
        return touching_share(first) >= DENSE_SHARE

    def apply(self, layer) -> None:
        """Draw ``layer`` filled or as contours."""
        contours = self.contours_for(layer)
        layer.contour = CONTOUR_WIDTH if contours else 0
        layer.opacity = 1.0 if contours else OVERLAY_OPACITY
        self.said.setText("(contours)" if contours and self.mode.currentText() == "auto" else "")


__all__ = ["ClassifySettings", "Collapsible", "DisplayOptions", "touching_share"]
