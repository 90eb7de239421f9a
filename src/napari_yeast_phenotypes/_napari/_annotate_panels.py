"""The Annotate dock's parts: where to annotate (setup), the selected cell (cell panel), the class gallery, the
counts of the curated set, the track model and the live model. Each part shows what it is given and says
what was asked (Qt signals); the dock (:mod:`._annotate`) decides.
"""

from __future__ import annotations

import getpass

from magicgui.widgets import ComboBox
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ._annotate_views import ClassButtons, CropView, Filmstrip, Gallery, ProbabilityBars, SurroundingsView
from ._dock import ERROR_STYLE


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _label(text: str = "", wrap: bool = True, selectable: bool = False) -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(wrap)
    if selectable:
        lab.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return lab


class AnnotateSetup(QWidget):
    """Which classified movie, which image, which curated set, and the provenance of the labels."""

    choose_set = Signal()

    def __init__(self, result_layers, image_layers, saved: dict, parent=None):
        super().__init__(parent)
        self.layer_choice = ComboBox(choices=result_layers, nullable=True)
        self.image_choice = ComboBox(choices=image_layers, nullable=True)
        self.set_edit = QLineEdit(saved.get("curated_set", ""))
        self.set_edit.setPlaceholderText("folder of the curated set (new or existing)")
        self.set_button = QPushButton("Choose…")
        self.split_choice = QComboBox()
        self.split_choice.addItems(["train", "val"])
        self.split_choice.setCurrentText(saved.get("annotate_split", "train"))
        self.split_choice.setToolTip("split of tracks new to the set; a track already in the set stays in its split")
        self.annotator_edit = QLineEdit(saved.get("annotator") or _user())
        self.experiment_edit = QLineEdit("")
        self.experiment_edit.setPlaceholderText("experiment name (provenance)")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("phenotypes", self.layer_choice.native)
        form.addRow("image", self.image_choice.native)
        row = QHBoxLayout()
        row.addWidget(self.set_edit, 1)
        row.addWidget(self.set_button)
        form.addRow("curated set", row)
        form.addRow("new tracks to", self.split_choice)
        form.addRow("annotator", self.annotator_edit)
        form.addRow("experiment", self.experiment_edit)
        self.set_button.clicked.connect(self._choose)

    def _choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Curated set folder (an existing set, or an empty folder)")
        if folder:
            self.set_edit.setText(folder)


class CellPanel(QWidget):
    """The selected cell-frame: in its surroundings and as the model saw it, what the network and the track model
    say, and the filmstrip along its track."""

    def __init__(self, class_names, parent=None):
        super().__init__(parent)
        self.surroundings = SurroundingsView()
        self.crop_view = CropView()
        self.crop_view.setToolTip("the 40x40 crop exactly as the model sees it")
        self.cell_info = _label()
        self.bars = ProbabilityBars(class_names)
        self.filmstrip = Filmstrip()
        views = QHBoxLayout()
        for title, view in (("surroundings", self.surroundings), ("as the model sees it", self.crop_view)):
            col = QVBoxLayout()
            cap = QLabel(title)
            cap.setStyleSheet("color: #aaaaaa; font-size: 10px;")
            col.addWidget(cap)
            col.addWidget(view)
            views.addLayout(col)
        views.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(views)
        layout.addWidget(self.cell_info)
        layout.addWidget(self.bars)
        layout.addWidget(self.filmstrip)

    def clear(self) -> None:
        self.surroundings.clear()
        self.crop_view.clear_crop()
        self.cell_info.setText("")


class GalleryBox(QGroupBox):
    """The cells called one class, least confident first."""

    def __init__(self, class_names, parent=None):
        super().__init__("Gallery of one class (least confident first)", parent)
        self.gallery_class = QComboBox()
        self.gallery_class.addItems(list(class_names))
        self.gallery = Gallery()
        layout = QVBoxLayout(self)
        layout.addWidget(self.gallery_class)
        layout.addWidget(self.gallery)


class TrackModelBox(QGroupBox):
    """Fit the track model on this movie's labels, and smooth every track again with it."""

    def __init__(self, parent=None):
        super().__init__("Track model", parent)
        self.fit_button = QPushButton("Fit track model from my labels")
        self.fit_button.setToolTip("fit the per-track model (transition rates, calibration, how the network errs) on "
                                   "this movie's labels; saved as track_model.json in the curated set")
        self.resmooth_button = QPushButton("Re-smooth with it")
        self.resmooth_button.setToolTip("smooth every track again with the fitted track model; the Classify dock "
                                        "then classifies with it")
        self.report = _label(selectable=True)
        row = QHBoxLayout()
        row.addWidget(self.fit_button)
        row.addWidget(self.resmooth_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.report)


class LiveBox(QGroupBox):
    """The live model: a head refitted on the curated labels after every label, the whole movie re-predicted."""

    def __init__(self, parent=None):
        super().__init__("Live model", parent)
        self.live = QCheckBox("update the whole movie after every label")
        self.live.setToolTip("the network's features of every cell are computed once; after each label a head is "
                             "refitted on the curated labels and the whole movie is re-predicted and smoothed again "
                             "(about a second). It calls only the classes you have labelled.")
        self.save_button = QPushButton("Save live model…")
        self.save_button.setToolTip("save the live model as an ordinary checkpoint (classify and classify-many use "
                                    "it); the full fine-tune stays in the Train dock")
        self.report = _label(selectable=True)
        row = QHBoxLayout()
        row.addWidget(self.live, 1)
        row.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.report)


class NavBar(QWidget):
    """Back, next cell to check, undo, redo."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.prev_button, self.next_button = QPushButton("◀ Back"), QPushButton("Next to check ▶")
        self.undo_button, self.redo_button = QPushButton("Undo"), QPushButton("Redo")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for b, tip in ((self.prev_button, "the cell to check shown before (Shift+N)"),
                       (self.next_button, "the next cell to check, and why (N)"),
                       (self.undo_button, "undo the last label (Ctrl+Z)"), (self.redo_button, "redo (Ctrl+Shift+Z)")):
            b.setToolTip(tip)
            row.addWidget(b)


class CountsView(QWidget):
    """Crops per class and split of the curated set, the marks, and its warnings: always in sight."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.counts = QLabel("")
        self.counts.setTextFormat(Qt.RichText)
        self.warnings = _label()
        self.warnings.setStyleSheet(ERROR_STYLE)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.counts)
        layout.addWidget(self.warnings)

    def show_set(self, cs) -> None:
        from ..core.data.curated.manifest import MIN_PER_CLASS
        from ..phenotypes import CODES

        counts = cs.counts()
        names = list(cs.class_names)
        totals = {c: int(counts[c].sum()) if c in counts else 0 for c in names}
        few = lambda n: "color:#ff6b6b" if n < MIN_PER_CLASS else ""
        head = "".join(f"<th title='{c}' style='{few(totals[c])}'>&nbsp;{CODES.get(c, c[:2])}&nbsp;</th>"
                       for c in names)
        rows = "".join(f"<tr><td>{sp}</td>" + "".join(f"<td align='center'>&nbsp;{int(counts.loc[sp, c])}&nbsp;</td>"
                                                        for c in names) + "</tr>" for sp in counts.index)
        marks = cs.mark_counts()
        self.counts.setText(f"<table cellspacing='0'><tr><th align='left'>crops</th>{head}</tr>{rows}</table>"
                            f"unsure {marks['unsure']}, bad segmentation {marks['bad_segmentation']} "
                            "(kept, not trained on)")
        self.counts.setToolTip(", ".join(f"{CODES.get(c, c)} = {c}" for c in names))
        self.warnings.setText("\n".join(cs.warnings()))


__all__ = ["AnnotateSetup", "CellPanel", "ClassButtons", "CountsView", "GalleryBox", "LiveBox", "NavBar",
           "TrackModelBox"]
