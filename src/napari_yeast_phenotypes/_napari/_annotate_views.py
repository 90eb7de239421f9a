"""Small views of the Annotate dock: the cell in its surroundings and as the model saw it, probability bars, a
filmstrip along a track, a class gallery, the class buttons.

Each view only shows what it is given and says what was clicked (Qt signals); the dock decides.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtGui import QColor, QIcon, QImage, QPainter, QPixmap
from qtpy.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.results.plots import class_colours

MARK_COLOURS = {"unsure": "#ffffff", "bad_segmentation": "#000000"}
MARK_TEXT = {"unsure": "?", "bad_segmentation": "✗"}


def hex_colour(rgba) -> str:
    return "#" + "".join(f"{round(255 * v):02x}" for v in rgba[:3])


def crop_pixmap(crop: np.ndarray, side: int) -> QPixmap:
    """A crop (values about 0..1, as the model sees them) as a grey pixmap of ``side`` pixels."""
    g = np.ascontiguousarray(np.clip(np.nan_to_num(crop) * 255.0, 0, 255).astype(np.uint8))
    h, w = g.shape
    img = QImage(g.data, w, h, w, QImage.Format_Grayscale8).copy()  # copy: g is freed after return
    return QPixmap.fromImage(img).scaled(side, side, Qt.KeepAspectRatio, Qt.FastTransformation)


def framed_pixmap(crop: np.ndarray, side: int, colour: str, mark: str = "", thick: bool = False) -> QPixmap:
    """A crop framed in its class colour; a person's label gets a thick frame, a mark its sign."""
    pm = QPixmap(side, side)
    pm.fill(QColor(colour))
    border = 5 if thick else 2
    painter = QPainter(pm)
    painter.drawPixmap(border, border, crop_pixmap(crop, side - 2 * border))
    if mark:
        painter.setPen(QColor("#ff4040"))
        painter.drawText(pm.rect().adjusted(0, 0, -4, -2), Qt.AlignRight | Qt.AlignBottom, MARK_TEXT.get(mark, "?"))
    painter.end()
    return pm


class CropView(QLabel):
    """The selected cell-frame's crop, enlarged, exactly as the model saw it."""

    SIDE = 128

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFixedSize(self.SIDE, self.SIDE)
        self.setAlignment(Qt.AlignCenter)
        self.setStyleSheet("background: #202020; color: #999;")
        self.crop: np.ndarray | None = None
        self.clear_crop()

    def clear_crop(self) -> None:
        self.crop = None
        self.setPixmap(QPixmap())
        self.setText("click a cell")

    def show_crop(self, crop: np.ndarray) -> None:
        self.crop = np.asarray(crop)
        self.setPixmap(crop_pixmap(self.crop, self.SIDE))


def outlined_pixmap(patch: np.ndarray, outline: np.ndarray, side: int, colour: str = "#00e0e0") -> QPixmap:
    """A raw patch (0..1) in grey, the outline (drawn just outside the cell) in ``colour``, scaled to ``side``."""
    g = np.clip(np.nan_to_num(patch) * 255.0, 0, 255).astype(np.uint8)
    rgb = np.repeat(g[..., None], 3, axis=2)
    c = QColor(colour)
    rgb[outline] = (c.red(), c.green(), c.blue())
    rgb = np.ascontiguousarray(rgb)
    h, w = g.shape
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy()
    return QPixmap.fromImage(img).scaled(side, side, Qt.KeepAspectRatio, Qt.FastTransformation)


class SurroundingsView(QLabel):
    """The selected cell in its raw surroundings (about three cells wide, the movie's one contrast), its mask
    outlined just outside it: what a person needs to decide a label (neighbours, a focus on the edge)."""

    SIDE = 128

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFixedSize(self.SIDE, self.SIDE)
        self.setAlignment(Qt.AlignCenter)
        self.setStyleSheet("background: #202020; color: #999;")
        self.setToolTip("the cell in its surroundings, raw intensities on the movie's contrast; cyan: its mask's "
                        "outline, just outside it")
        self.patch: np.ndarray | None = None
        self.clear()

    def clear(self) -> None:
        self.patch = None
        self.setPixmap(QPixmap())
        self.setText("")

    def show_patch(self, patch: np.ndarray, outline: np.ndarray) -> None:
        self.patch = np.asarray(patch)
        self.setPixmap(outlined_pixmap(self.patch, np.asarray(outline, bool), self.SIDE))


class ProbabilityBars(QWidget):
    """One row per class: the network's probability (thin grey bar) and the track model's (thick bar in the
    class colour); classes the live model has no labels of yet are greyed and say so."""

    ROW = 17
    HEADER = 16

    def __init__(self, class_names, parent=None):
        super().__init__(parent)
        self.class_names = list(class_names)
        self.colours = [hex_colour(c) for c in class_colours(self.class_names)]
        self.raw = np.zeros(len(self.class_names))
        self.smooth = np.zeros(len(self.class_names))
        self.user = ""
        self.network_name = "network"
        self.unlabelled: set[str] = set()
        self.setMinimumHeight(self.ROW * len(self.class_names) + 4 + self.HEADER)
        self.setMinimumWidth(200)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setToolTip("thin bar: the network's probability for this frame; thick bar: the track model's, "
                        "with the labels given so far")

    def set_values(self, raw, smooth, user: str = "", network_name: str | None = None,
                   unlabelled=None) -> None:
        """``raw``: the network's (or live model's, named ``network_name``) probabilities; ``smooth``: the
        track model's; ``unlabelled``: classes with no label yet (a live model cannot call them)."""
        self.raw, self.smooth, self.user = np.asarray(raw, float), np.asarray(smooth, float), user
        if network_name is not None:
            self.network_name = network_name
        if unlabelled is not None:
            self.unlabelled = set(unlabelled)
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(240, self.ROW * len(self.class_names) + 4 + self.HEADER)

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        label_w, num_w = 118, 80
        bar_w = max(self.width() - label_w - num_w, 20)
        text = self.palette().text().color()
        p.setPen(text)
        p.drawText(0, 0, self.width(), self.HEADER, Qt.AlignVCenter | Qt.AlignLeft,
                   f"thin grey: {self.network_name} (this frame)   thick: track model (with your labels)")
        for i, name in enumerate(self.class_names):
            y = 2 + self.HEADER + i * self.ROW
            grey = name in self.unlabelled
            p.setPen(QColor("#ff6b6b") if name == self.user else (QColor("#777777") if grey else text))
            key = f"{i + 1} {name}" if i < 9 else name
            p.drawText(0, y, label_w - 4, self.ROW, Qt.AlignVCenter | Qt.AlignLeft, key)
            if grey:
                p.drawText(label_w, y, bar_w + num_w, self.ROW, Qt.AlignVCenter | Qt.AlignLeft, "not labelled yet")
                continue
            p.fillRect(label_w, y + 2, int(bar_w * self.smooth[i]), self.ROW - 8, QColor(self.colours[i]))
            p.fillRect(label_w, y + self.ROW - 5, int(bar_w * self.raw[i]), 3, QColor("#dddddd"))
            p.setPen(self.palette().text().color())
            p.drawText(label_w + bar_w + 4, y, num_w, self.ROW, Qt.AlignVCenter | Qt.AlignLeft,
                       f"{self.raw[i]:.2f}/{self.smooth[i]:.2f}")
        p.end()


class _Thumbs(QWidget):
    """Clickable crop thumbnails (the filmstrip's and the gallery's); ``clicked`` gives the row."""

    clicked = Signal(int)

    def __init__(self, columns: int | None, side: int, parent=None):
        super().__init__(parent)
        self.columns, self.side = columns, side
        self._layout = QGridLayout(self)
        self._layout.setContentsMargins(2, 2, 2, 2)
        self._layout.setSpacing(3)
        self.buttons: list[QToolButton] = []
        self.rows: list[int] = []

    def set_items(self, items) -> None:
        """``items``: (row, pixmap, caption, tooltip, highlighted)."""
        for b in self.buttons:
            self._layout.removeWidget(b)
            b.hide()  # at once: deleteLater waits for the event loop, and many selections may come before it
            b.deleteLater()
        self.buttons, self.rows = [], []
        for i, (row, pm, caption, tip, current) in enumerate(items):
            b = QToolButton()
            b.setIcon(QIcon(pm))
            b.setIconSize(QSize(self.side, self.side))
            b.setToolButtonStyle(Qt.ToolButtonTextUnderIcon)
            b.setText(caption)
            b.setToolTip(tip)
            b.setAutoRaise(True)
            if current:
                b.setStyleSheet("QToolButton { background: #5a5a5a; border: 1px solid white; }")
            b.clicked.connect(lambda _=False, r=row: self.clicked.emit(int(r)))
            r, c = (0, i) if self.columns is None else divmod(i, self.columns)
            self._layout.addWidget(b, r, c)
            self.buttons.append(b)
            self.rows.append(int(row))


class Filmstrip(QScrollArea):
    """Crops of the selected cell along its track, framed in their class colours; click to go there."""

    clicked = Signal(int)
    SIDE = 44

    def __init__(self, parent=None):
        super().__init__(parent)
        self.thumbs = _Thumbs(None, self.SIDE)
        self.thumbs.clicked.connect(self.clicked)
        self.setWidget(self.thumbs)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setFixedHeight(self.SIDE + 48)

    def set_items(self, items, current_index: int | None = None) -> None:
        self.thumbs.set_items(items)
        self._current = current_index
        self._scroll()

    def _scroll(self) -> None:
        """Bring the current frame to the middle (again after a resize: the dock may not be laid out yet)."""
        if getattr(self, "_current", None) is None or not self.thumbs.buttons:
            return
        self.thumbs.layout().activate()  # lay the new thumbnails out now, to scroll to one
        self.thumbs.adjustSize()
        button = self.thumbs.buttons[self._current]
        bar = self.horizontalScrollBar()
        bar.setRange(0, max(0, self.thumbs.width() - self.viewport().width()))
        bar.setValue(button.geometry().center().x() - self.viewport().width() // 2)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._scroll()


class Gallery(QWidget):
    """Crops of the cells the model put in one class, least confident first; click one to go there."""

    clicked = Signal(int)
    SIDE = 48
    COLUMNS = 5

    def __init__(self, parent=None):
        super().__init__(parent)
        self.thumbs = _Thumbs(self.COLUMNS, self.SIDE)
        self.thumbs.clicked.connect(self.clicked)
        scroll = QScrollArea()
        scroll.setWidget(self.thumbs)
        scroll.setWidgetResizable(True)
        scroll.setMinimumHeight(2 * (self.SIDE + 30))
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(scroll)

    def set_items(self, items, caption: str) -> None:
        self.caption.setText(caption)
        self.thumbs.set_items(items)


class ClassButtons(QWidget):
    """One button per class (with its key), Clear, Unsure and Bad segmentation."""

    chosen = Signal(str)

    def __init__(self, class_names, parent=None):
        super().__init__(parent)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(3)
        self.buttons: dict[str, QToolButton] = {}
        for i, (name, rgba) in enumerate(zip(class_names, class_colours(class_names))):
            b = self._button(f"{i + 1} {name}" if i < 9 else name, name,
                             f"label the selected cell-frame {name} (key {i + 1}; Shift+{i + 1}: this frame to "
                             f"the next label of the track{', or to its end' if name == 'Senescent' else ''})")
            b.setStyleSheet(f"QToolButton {{ border-left: 6px solid {hex_colour(rgba)}; padding: 2px 4px; }}")
            grid.addWidget(b, i // 2, i % 2)
        row = (len(class_names) + 1) // 2
        extras = QHBoxLayout()
        for text, value, tip in (("0 Clear", "", "take the label off the selected cell-frame (key 0)"),
                                 ("U Unsure", "unsure", "mark: kept and shown, never trained on (key U)"),
                                 ("D Bad mask", "bad_segmentation",
                                  "mark: the mask is wrong; kept and shown, never trained on (key D)")):
            extras.addWidget(self._button(text, value, tip))
        grid.addLayout(extras, row, 0, 1, 2)

    def _button(self, text: str, value: str, tip: str) -> QToolButton:
        b = QToolButton()
        b.setText(text)
        b.setToolTip(tip)
        b.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        b.clicked.connect(lambda _=False, v=value: self.chosen.emit(v))
        self.buttons[value] = b
        return b
