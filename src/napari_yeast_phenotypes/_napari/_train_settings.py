"""The Train dock's settings: a :class:`~napari_yeast_phenotypes.core.config.TrainConfig`, widgets <-> config both ways.

:meth:`TrainSettings.config` is the config the command line builds from its options (the base weights
"the current model" resolved to its file by the dock); :meth:`TrainSettings.set_config` shows a config;
a round trip gives the same config (tested). The widgets hold no science.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.config import (
    AUGMENTATIONS,
    CLASS_WEIGHTING,
    RECIPES,
    SCHEDULES,
    SMALL_DATA,
    SMALL_DATA_MIN_STEPS,
    SMALL_DATA_PER_CLASS,
    TRAINABLE_PRESETS,
    TrainConfig,
    recipe_config,
)
from ..core.errors import InputError

IMAGENET, NONE, CURRENT, LOCAL = "imagenet", "none", "the current model (fine-tune)", "a local file"
BASE_CHOICES = (IMAGENET, NONE, CURRENT, LOCAL)
AUGMENT_LABELS = {"flips": "flips", "rot90": "90° turns", "affine": "small affine", "blur": "blur",
                  "intensity": "brightness/contrast", "microscope": "another microscope", "noise": "noise"}
AUGMENT_TIPS = {"blur": "Gaussian blur up to 1 pixel, as another objective or focus gives",
                "microscope": "gain x0.6-1.65, gamma 0.7-1.4, offset: what another microscope or exposure does to "
                              "a crop",
                "intensity": "mild gain and offset (the study's)"}
#: what choosing a recipe keeps of the settings shown (the rest is the recipe's)
KEPT_BY_RECIPE = ("base_weights", "trainable", "epochs", "batch_size", "lr", "schedule", "class_weighting", "patience",
                  "calibrate", "small_data", "seed", "holdout", "device")


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


class TrainSettings(QWidget):
    """Base weights, trainable layers, augmentations, epochs, batch, learning rate and schedule, class
    weighting, early stopping, calibration and the small-data adaptation of one training."""

    def __init__(self, parent=None):
        super().__init__(parent)
        d = TrainConfig()
        self.base_choice = QComboBox()
        self.base_choice.addItems(BASE_CHOICES)
        self.base_file = QLineEdit("")
        self.base_file.setPlaceholderText("ResNet50 state dict or checkpoint (.pt/.pth)")
        self.trainable_choice = QComboBox()
        self.trainable_choice.addItems(TRAINABLE_PRESETS)
        self.trainable_choice.setEditable(True)  # any comma-separated list of layers
        self.recipe_choice = QComboBox()
        self.recipe_choice.addItems(list(RECIPES))
        self.recipe_choice.setToolTip("study: the original study's recipe; robust: weights averaged along the run "
                                      "and crops as if from another microscope (blur, gain/gamma, noise), measured "
                                      "steadier over seeds on the demo (docs/training.md). Sets the augmentations "
                                      "below; the other settings stay")
        self.augment_boxes = {a: QCheckBox(AUGMENT_LABELS[a]) for a in AUGMENTATIONS}
        for a, tip in AUGMENT_TIPS.items():
            self.augment_boxes[a].setToolTip(tip)
        self.batch_spin = _spin(2, 4096, d.batch_size)
        self.epochs_spin = _spin(1, 1000, d.epochs)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.schedule_choice = QComboBox()
        self.schedule_choice.addItems(SCHEDULES)
        self.weighting_choice = QComboBox()
        self.weighting_choice.addItems(CLASS_WEIGHTING)
        self.patience_spin = _spin(0, 1000, d.patience)
        self.patience_spin.setToolTip("stop when the validation macro-F1 has not improved for this many epochs "
                                      "(0: never)")
        self.calibrate_box = QCheckBox("temperature scaling")
        self.small_data_choice = QComboBox()
        self.small_data_choice.addItems(SMALL_DATA)
        self.small_data_choice.setToolTip(
            f"auto: with under {SMALL_DATA_PER_CLASS} labelled crops in a class, train for at least "
            f"{SMALL_DATA_MIN_STEPS} steps whatever the batch size, on class-balanced batches, and (without a "
            "validation set) stop where folds of whole tracks of the training crops say; off: as set here")
        self._hidden = TrainConfig()  # what the config holds that no widget shows (seed, holdout...)

        form = QFormLayout()
        form.addRow("recipe", self.recipe_choice)
        form.addRow("base weights", self.base_choice)
        form.addRow("", self.base_file)
        form.addRow("trainable", self.trainable_choice)
        numbers = QHBoxLayout()
        for label, w in (("epochs", self.epochs_spin), ("batch", self.batch_spin)):
            numbers.addWidget(QLabel(label))
            numbers.addWidget(w, 1)
        form.addRow("", numbers)
        rate = QHBoxLayout()
        rate.addWidget(self.lr_spin, 1)
        rate.addWidget(QLabel("schedule"))
        rate.addWidget(self.schedule_choice, 1)
        form.addRow("learning rate", rate)
        form.addRow("class weighting", self.weighting_choice)
        form.addRow("early stop after", self.patience_spin)
        form.addRow("calibration", self.calibrate_box)
        form.addRow("small data", self.small_data_choice)
        aug = QGroupBox("augmentation (training crops only)")
        grid = QGridLayout(aug)  # seven boxes: two rows in a narrow dock
        for i, box in enumerate(self.augment_boxes.values()):
            grid.addWidget(box, i // 4, i % 4)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(aug)
        self.base_choice.currentTextChanged.connect(lambda t: self.base_file.setEnabled(t == LOCAL))
        self.set_config(d)
        self.recipe_choice.currentTextChanged.connect(self._choose_recipe)

    def _choose_recipe(self, name: str) -> None:
        """Show the recipe ``name``: its settings, with those of :data:`KEPT_BY_RECIPE` as they are shown now."""
        if name == self._hidden.recipe:
            return
        try:
            shown = self.config().to_dict()
        except InputError:  # a base weights file not chosen yet: keep what was set before
            shown = self._hidden.to_dict()
        base_widgets = (self.base_choice.currentText(), self.base_file.text())
        self.set_config(recipe_config(name, **{k: shown[k] for k in KEPT_BY_RECIPE}))
        self.base_choice.setCurrentText(base_widgets[0])  # "the current model" stays that choice
        self.base_file.setText(base_widgets[1])

    def config(self, current_model: Path | None = None) -> TrainConfig:
        """The :class:`TrainConfig` the widgets describe (raises :class:`InputError`).

        ``current_model``: the file "the current model (fine-tune)" stands for.
        """
        base = self.base_choice.currentText()
        if base == LOCAL:
            base = self.base_file.text().strip()
            if not base or not Path(base).is_file():
                raise InputError(f"base weights file not found: {base or '(none given)'}; choose a ResNet50 state "
                                 "dict or a checkpoint")
        elif base == CURRENT:
            if current_model is None:
                raise InputError("there is no current model to fine-tune: choose one in the Classify dock")
            base = str(current_model)
        augment = ",".join(a for a, box in self.augment_boxes.items() if box.isChecked()) or "none"
        return TrainConfig(**{**self._hidden.to_dict(),
                              "epochs": self.epochs_spin.value(), "batch_size": self.batch_spin.value(),
                              "lr": float(self.lr_spin.value()), "base_weights": base,
                              "trainable": self.trainable_choice.currentText().strip(), "augment": augment,
                              "schedule": self.schedule_choice.currentText(),
                              "class_weighting": self.weighting_choice.currentText(),
                              "patience": self.patience_spin.value(), "calibrate": self.calibrate_box.isChecked(),
                              "small_data": self.small_data_choice.currentText(),
                              "recipe": self.recipe_choice.currentText()})

    def set_config(self, config: TrainConfig, current_model: Path | None = None) -> None:
        """Show ``config``; base weights that are ``current_model``'s file show as "the current model"."""
        self._hidden = config
        self.recipe_choice.blockSignals(True)
        self.recipe_choice.setCurrentText(config.recipe)
        self.recipe_choice.blockSignals(False)
        base = str(config.base_weights)
        if base in (IMAGENET, NONE):
            self.base_choice.setCurrentText(base)
        elif current_model is not None and Path(base) == Path(current_model):
            self.base_choice.setCurrentText(CURRENT)
        else:
            self.base_choice.setCurrentText(LOCAL)
            self.base_file.setText(base)
        self.base_file.setEnabled(self.base_choice.currentText() == LOCAL)
        self.trainable_choice.setCurrentText(config.trainable)
        for a, box in self.augment_boxes.items():
            box.setChecked(a in config.augmentations)
        self.epochs_spin.setValue(config.epochs)
        self.batch_spin.setValue(config.batch_size)
        self.lr_spin.setValue(config.lr)
        self.schedule_choice.setCurrentText(config.schedule)
        self.weighting_choice.setCurrentText(config.class_weighting)
        self.patience_spin.setValue(config.patience)
        self.calibrate_box.setChecked(config.calibrate)
        self.small_data_choice.setCurrentText(config.small_data)


__all__ = ["BASE_CHOICES", "CURRENT", "LOCAL", "TrainSettings"]
