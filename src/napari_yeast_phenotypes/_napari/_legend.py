"""The class legend of the classify dock: a coloured swatch, the code and the name of each class."""

from __future__ import annotations

from qtpy.QtWidgets import QGridLayout, QLabel, QWidget

from ..phenotypes import CLASS_NAMES, CODES, PHENOTYPES, class_colours


def _hex(rgba) -> str:
    return "#" + "".join(f"{round(255 * v):02x}" for v in rgba[:3])


class Legend(QWidget):
    """Eight swatches in two columns; :meth:`set_classes` follows a model's own class names."""

    COLUMNS = 2

    def __init__(self, class_names=CLASS_NAMES, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(6)
        self._grid.setVerticalSpacing(3)
        self.entries: list[tuple[str, str]] = []  # (name, hex colour), for tests and tooltips
        self.set_classes(class_names)

    def set_classes(self, class_names) -> None:
        while self._grid.count():
            item = self._grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        descriptions = {p.name: p.description for p in PHENOTYPES}
        self.entries = []
        rows = (len(class_names) + self.COLUMNS - 1) // self.COLUMNS
        for i, (name, rgba) in enumerate(zip(class_names, class_colours(class_names))):
            colour = _hex(rgba)
            self.entries.append((name, colour))
            swatch = QLabel()
            swatch.setFixedSize(14, 14)
            swatch.setStyleSheet(f"background-color: {colour}; border: 1px solid #202020; border-radius: 2px;")
            code = CODES.get(name, "")
            text = QLabel(f"{name} ({code})" if code else name)
            tip = descriptions.get(name, "")
            for w in (swatch, text):
                w.setToolTip(tip)
            row, col = i % rows, 2 * (i // rows)
            self._grid.addWidget(swatch, row, col)
            self._grid.addWidget(text, row, col + 1)
        self._grid.setColumnStretch(1, 1)
        self._grid.setColumnStretch(3, 1)
