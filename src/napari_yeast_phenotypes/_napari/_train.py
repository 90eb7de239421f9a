"""Plugins > Train phenotype model: retrain on the curated set, see honest figures, use the new model.

The dock fills a :class:`~napari_yeast_phenotypes.core.config.TrainConfig` from its widgets and
runs the core's :func:`~napari_yeast_phenotypes.core.network.train.train_iter` in a ``thread_worker``:
per-batch progress goes to the progress bar, per-epoch figures to the live curves. The curves and
the report are drawn (matplotlib, Agg) in the worker thread and only shown here as pictures: drawing
them on the UI thread stalled napari's event loop for 0.7-0.9 s per epoch on a 2-core machine
(``benchmarks/run.py --only stall``). Cancel asks
the generator to stop after the batch it is on; the best epoch so far is calibrated, judged and
saved as usual. At the end the report (per-class figures, confusion matrices, reliability
diagram) is drawn beside the previous model's figures on the same crops. "Use this model"
hands the new checkpoint to the Classify dock, which re-classifies the open movie; an Annotate
dock that was annotating starts again on the new result, so its queue of cells to check follows
the new model. torch is imported inside the worker, never when napari loads the plugin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.config import AUGMENTATIONS, CLASS_WEIGHTING, SCHEDULES, TRAINABLE_PRESETS, TrainConfig
from ..core.errors import InputError
from ._dock import StatusLine, dock_of
from ._safe_torch import import_torch_core
from ._settings import default_model, load_settings, remember_model, save_settings

BASE_CHOICES = ("imagenet", "none", "the current model (fine-tune)", "a local file")
AUGMENT_LABELS = {"flips": "flips", "rot90": "90° turns", "affine": "small affine",
                  "intensity": "brightness/contrast", "noise": "noise"}


@dataclass
class Failed:
    """What the worker returns instead of a model when the input cannot be used."""

    message: str


def load_training_data(set_folder, val_folder: str = ""):
    """The curated set's train split, validation data (another folder, or the set's val split) and
    test split (if any), and the crop settings; raises :class:`InputError` in plain words."""
    from ..core.data.curated.store import CuratedSet
    from ..core.jobs.training import load_crop_folder

    folder = Path(str(set_folder))
    if not str(set_folder).strip() or not (folder / "settings.json").exists():
        raise InputError(f"{set_folder or 'no folder'} is not a curated set (no settings.json): choose the folder the "
                         "Annotate dock (or yeast-phenotypes curate) writes into")
    cs = CuratedSet.read(folder)
    splits = set(cs.trainable()["split"])
    train = cs.load_split("train")
    if val_folder:
        val, settings = load_crop_folder(val_folder, cs.class_names)
        if settings != cs.crop_settings:
            raise InputError(f"{val_folder} holds crops made with other crop settings than the curated set")
    else:
        val = cs.load_split("val") if "val" in splits else None
    test = cs.load_split("test") if "test" in splits else None
    return train, val, test, cs.crop_settings


def render(fig: Figure) -> np.ndarray:
    """Draw ``fig`` with Agg (in whichever thread calls this) and return its (H, W, 4) RGBA picture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def render_curves(fig: Figure, history: list[dict]) -> np.ndarray:
    """The live curves (loss; validation accuracy and macro-F1 per epoch) drawn into ``fig``, as a picture."""
    from ..core.network.evaluation import draw_history

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
    from ..core.network.evaluation import report_figure

    ev = clf.evaluation
    rep = dict(ev["record"])
    rep["reliability"] = {"before": ev["before"], "after": ev["after"], "targets": ev["targets"]}
    w, h = fig.get_size_inches()
    report_figure(rep, clf.class_names, rep.get("previous"), fig=fig, ncols=4 if w > 2.5 * h else 2)
    return render(fig)


def _with_curves(gen, fig: Figure | None):
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


def train_job(set_folder, val_folder, config: TrainConfig, out, previous, should_stop, curves: Figure | None = None,
              report: Figure | None = None):
    """Generator run by the worker; yields the core's progress dicts, returns a ``Classifier`` or :class:`Failed`.

    ``curves`` and ``report``: figures drawn here, in the worker, whose pictures go out with the
    progress (``curves_image`` with each epoch, ``report_image`` at the end).
    """
    yield {"status": "reading the curated set"}
    try:
        import_torch_core()
        from ..core.jobs.classify import load_model
        from ..core.network.train import train_iter

        train, val, test, settings = load_training_data(set_folder, val_folder)
        prev = None
        if previous is not None and Path(str(previous)).is_file():
            try:
                prev = load_model(previous)[0]
            except InputError:
                prev = None  # a previous model that cannot be read is only not compared
        yield {"status": f"training on {len(train)} crops"}
        clf = yield from _with_curves(train_iter(train, val, config, settings, out, should_stop, test=test,
                                                 previous=prev), curves)
    except InputError as exc:
        return Failed(str(exc))
    if report is not None:
        yield {"status": "drawing the report", "report_image": render_report(report, clf)}
    return clf


def crossval_job(set_folder, config: TrainConfig, k: int, by: str, report: Figure | None = None):
    """Generator run by the worker: grouped cross-validation of the train (+ val) split, random split beside."""
    yield {"status": "reading the curated set"}
    try:
        import_torch_core()
        import numpy as np

        from ..core.data.cropset import CropSet
        from ..core.network.crossval import crossval

        train, val, _test, settings = load_training_data(set_folder)
        data = train
        if val is not None:  # cross-validation pools every labelled crop
            data = CropSet(np.concatenate([train.crops, val.crops]), np.concatenate([train.targets, val.targets]),
                           train.class_names, train.paths + val.paths,
                           np.concatenate([train.groups, val.groups]), origin=train.origin,
                           tracks=np.concatenate([train.tracks, val.tracks]))
        progress = []
        res = crossval(data, k, config, settings, progress=progress.append, by=by)
    except InputError as exc:
        return Failed(str(exc))
    if report is not None:
        yield {"status": "drawing the figure", "report_image": render_crossval(report, res)}
    return res


def render_crossval(fig: Figure, res: dict) -> np.ndarray:
    """Per-class F1 of the grouped folds beside the random split's, drawn into ``fig``, as a picture."""
    from ..core.network.evaluation import draw_crossval

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


class TrainWidget(StatusLine, QWidget):
    """The training dock (see the module docstring)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.classifier = None  # the last trained Classifier
        self.model_path: Path | None = None
        self.crossval_result: dict | None = None
        self._worker = None
        self._stop = False
        self._history: list[dict] = []
        self._t_last = 0.0
        saved = load_settings()
        d = TrainConfig()

        self.set_edit = QLineEdit(saved.get("curated_set", ""))
        self.set_edit.setPlaceholderText("curated set folder (its train split trains)")
        self.set_button = QPushButton("Choose…")
        self.val_edit = QLineEdit("")
        self.val_edit.setPlaceholderText("empty: the set's val split (none: a part of train is held out)")
        self.base_choice = QComboBox()
        self.base_choice.addItems(BASE_CHOICES)
        self.base_choice.setCurrentText(d.base_weights if d.base_weights in BASE_CHOICES else "imagenet")
        self.base_file = QLineEdit("")
        self.base_file.setPlaceholderText("ResNet50 state dict or checkpoint (.pt/.pth)")
        self.trainable_choice = QComboBox()
        self.trainable_choice.addItems(TRAINABLE_PRESETS)
        self.trainable_choice.setCurrentText(d.trainable)
        self.augment_boxes = {a: QCheckBox(AUGMENT_LABELS[a]) for a in AUGMENTATIONS}
        for a, box in self.augment_boxes.items():
            box.setChecked(a in d.augmentations)
        self.batch_spin = _spin(2, 4096, d.batch_size)
        self.epochs_spin = _spin(1, 1000, d.epochs)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(d.lr)
        self.schedule_choice = QComboBox()
        self.schedule_choice.addItems(SCHEDULES)
        self.weighting_choice = QComboBox()
        self.weighting_choice.addItems(CLASS_WEIGHTING)
        self.patience_spin = _spin(0, 1000, d.patience)
        self.patience_spin.setToolTip("stop when the validation macro-F1 has not improved for this many epochs "
                                      "(0: never)")
        self.calibrate_box = QCheckBox("temperature scaling")
        self.calibrate_box.setChecked(d.calibrate)
        self.out_edit = QLineEdit("")
        self.out_edit.setPlaceholderText("checkpoint to write (default: <set>/models/model-<time>.pt)")

        self.train_button = QPushButton("Train")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("stop after the current batch; the best epoch so far is kept")
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("re-classify the open movie with the new model (Classify dock); the "
                                   "annotation queue follows")
        self.use_button.setEnabled(False)
        self.folds_spin = _spin(2, 50, 5)
        self.by_choice = QComboBox()
        self.by_choice.addItems(["auto", "experiment", "track"])
        self.crossval_button = QPushButton("Cross-validate")
        self.progress = QProgressBar()
        self.progress.setValue(0)
        self.status = QLabel("Choose the curated set, then Train.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)

        # drawn in the worker (only while it runs), shown here as pictures
        self.curves = Figure(figsize=(5, 2.2), dpi=100, layout="constrained")
        self.curves_view = FigureView(150)
        self.report_fig = Figure(figsize=(6, 5), dpi=100, layout="constrained")
        self.report_view = FigureView(300)
        self.tabs = QTabWidget()

        self._build_layout()
        self.set_button.clicked.connect(self._choose_set)
        self.train_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(lambda: self.use_model())
        self.crossval_button.clicked.connect(lambda: self.start_crossval())
        self.base_choice.currentTextChanged.connect(lambda t: self.base_file.setEnabled(t == "a local file"))
        self.base_file.setEnabled(False)

    def _build_layout(self) -> None:
        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.set_edit, 1)
        row.addWidget(self.set_button)
        form.addRow("curated set", row)
        form.addRow("validation", self.val_edit)
        form.addRow("base weights", self.base_choice)
        form.addRow("", self.base_file)
        form.addRow("trainable", self.trainable_choice)
        aug = QGroupBox("augmentation (training crops only)")
        grid = QHBoxLayout(aug)
        for box in self.augment_boxes.values():
            grid.addWidget(box)
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
        form.addRow("save as", self.out_edit)
        buttons = QHBoxLayout()
        for b in (self.train_button, self.cancel_button, self.use_button):
            buttons.addWidget(b)
        cv = QHBoxLayout()
        cv.addWidget(self.crossval_button)
        cv.addWidget(QLabel("folds"))
        cv.addWidget(self.folds_spin)
        cv.addWidget(QLabel("by"))
        cv.addWidget(self.by_choice)
        # settings and results take turns in the space below the buttons: in one column the
        # report had too little height to be read on a 1000-pixel-high screen
        settings = QWidget()
        s_layout = QVBoxLayout(settings)
        s_layout.addLayout(form)
        s_layout.addWidget(aug)
        s_layout.addStretch(1)
        results = QWidget()
        r_layout = QVBoxLayout(results)
        r_layout.addWidget(self.curves_view, 1)
        r_layout.addWidget(self.summary)
        r_layout.addWidget(self.report_view, 3)
        self.tabs.addTab(settings, "settings")
        self.tabs.addTab(results, "results")
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addLayout(cv)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.tabs, 1)

    def _choose_set(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Curated set folder")
        if folder:
            self.set_edit.setText(folder)

    def _notify_error(self, message: str) -> None:
        show_error(message)  # this module's, so that a test can watch this dock's messages

    # ------------------------------------------------------------------ config
    def previous_model(self) -> Path | None:
        """The model in use now (the Classify dock's, else the remembered one)."""
        classify = dock_of(self.viewer, "ClassifyWidget")
        if classify is not None and classify.model_choice.value is not None:
            p = Path(str(classify.model_choice.value))
            if p.is_file():
                return p
        return default_model()

    def config(self) -> TrainConfig:
        """The :class:`TrainConfig` the widgets describe (raises :class:`InputError`)."""
        base = self.base_choice.currentText()
        if base == "a local file":
            base = self.base_file.text().strip()
            if not base or not Path(base).is_file():
                raise InputError(f"base weights file not found: {base or '(none given)'}; choose a ResNet50 state "
                                 "dict or a checkpoint")
        elif base.startswith("the current model"):
            prev = self.previous_model()
            if prev is None:
                raise InputError("there is no current model to fine-tune: choose one in the Classify dock")
            base = str(prev)
        augment = ",".join(a for a, box in self.augment_boxes.items() if box.isChecked()) or "none"
        return TrainConfig(epochs=self.epochs_spin.value(), batch_size=self.batch_spin.value(),
                           lr=float(self.lr_spin.value()), base_weights=base,
                           trainable=self.trainable_choice.currentText(), augment=augment,
                           schedule=self.schedule_choice.currentText(),
                           class_weighting=self.weighting_choice.currentText(),
                           patience=self.patience_spin.value(), calibrate=self.calibrate_box.isChecked())

    def _out_path(self) -> Path:
        text = self.out_edit.text().strip()
        if text:
            return Path(text)
        return Path(self.set_edit.text().strip()) / "models" / f"model-{time.strftime('%Y%m%d-%H%M%S')}.pt"

    # ------------------------------------------------------------------ running
    def start(self, sync: bool = False):
        """Train in a worker thread (or in this thread with ``sync=True``, for tests); returns the worker."""
        if self._worker is not None:
            return self._worker
        try:
            config = self.config()
            out = self._out_path()
            out.parent.mkdir(parents=True, exist_ok=True)
        except (InputError, OSError) as exc:
            self._error(str(exc))
            return None
        save_settings(curated_set=self.set_edit.text().strip())
        self._stop = False
        self._history = []
        self.model_path = out
        self.use_button.setEnabled(False)
        args = (self.set_edit.text().strip(), self.val_edit.text().strip(), config, out, self.previous_model(),
                lambda: self._stop, self.curves, self.report_fig)
        self.progress.setMaximum(config.epochs)
        self.progress.setValue(0)
        return self._launch(train_job, args, self._on_trained, sync)

    def start_crossval(self, sync: bool = False):
        """Cross-validate (grouped folds, random split beside) in a worker thread."""
        if self._worker is not None:
            return self._worker
        try:
            config = self.config()
        except InputError as exc:
            self._error(str(exc))
            return None
        self._stop = False
        self._history = []
        args = (self.set_edit.text().strip(), config, self.folds_spin.value(), self.by_choice.currentText(),
                self.report_fig)
        self.progress.setMaximum(0)  # busy: folds report no per-epoch figures here
        worker = self._launch(crossval_job, args, self._on_crossval, sync)
        self.cancel_button.setEnabled(False)  # folds run to the end (each is a short training)
        return worker

    def _fit_figures(self) -> None:
        """Size the figures to their views now, in the UI thread: the worker then draws them at that size."""
        for fig, view in ((self.curves, self.curves_view), (self.report_fig, self.report_view)):
            w, h = view.width(), view.height()
            if w > 100 and h > 50:  # laid out (a dock that was never shown keeps the default size)
                fig.set_size_inches(w / fig.dpi, h / fig.dpi)

    def _launch(self, job, args, on_returned, sync: bool):
        self.tabs.setCurrentIndex(1)  # the results: live curves, then the report
        self.tabs.currentWidget().layout().activate()  # its views get their size now, before the worker draws
        self._fit_figures()
        self._set_running(True)
        if sync:
            gen = job(*args)
            try:
                while True:
                    self._on_progress(next(gen))
            except StopIteration as stop:
                on_returned(stop.value)
            finally:
                self._on_finished()
            return None
        from napari.qt.threading import create_worker

        worker = create_worker(job, *args, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(on_returned)
        worker.errored.connect(lambda exc: self.set_status(f"failed: {type(exc).__name__}: {exc}", error=True))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop after the current batch; the best epoch so far is calibrated and kept."""
        self._stop = True
        self.cancel_button.setEnabled(False)
        self.set_status("cancelling after the current batch; the best epoch so far is kept…")

    def _set_running(self, running: bool) -> None:
        self.train_button.setEnabled(not running)
        self.crossval_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _on_progress(self, p: dict) -> None:
        if "report_image" in p:
            self.report_view.set_image(p["report_image"])
        if "status" in p:
            self.set_status(p["status"])
            return
        if p.get("done_epoch"):
            self._history.append(p)
            self.progress.setMaximum(p["epochs"])
            self.progress.setValue(p["epoch"])
            msg = f"epoch {p['epoch']}/{p['epochs']}: train loss {p['train_loss']:.3f}"
            if "val_macro_f1" in p:
                msg += f", validation macro-F1 {p['val_macro_f1']:.3f} (best epoch {p['best_epoch']})"
            self.set_status(msg)
            if "curves_image" in p:
                self.curves_view.set_image(p["curves_image"])
        elif "step" in p and time.perf_counter() - self._t_last > 0.5:  # repaint at most twice a second
            self._t_last = time.perf_counter()
            self.progress.setFormat(f"epoch {p['epoch']}/{p['epochs']}, batch {p['step']}/{p['steps']}")

    def _on_trained(self, value) -> None:
        if isinstance(value, Failed):
            self._error(value.message)
            return
        self.classifier = value
        meta = value.metadata
        rep = meta["report"]
        self.use_button.setEnabled(True)
        self.set_status(f"saved {self.model_path} (best epoch {meta['best_epoch']}; {meta['stopped']})")
        show_info(f"training done: {self.model_path}")
        self.summary.setText(report_text(rep, meta.get("calibration") or {}))

    def _on_crossval(self, value) -> None:
        if isinstance(value, Failed):
            self._error(value.message)
            return
        self.crossval_result = value  # its figure came drawn from the worker
        g, r = value["summary"], (value.get("random") or {}).get("summary")
        text = (f"{value['k']}-fold cross-validation by {value['by']}: macro-F1 {g['macro_f1']['mean']:.3f} ± "
                f"{g['macro_f1']['sd'] or 0:.3f}, accuracy {g['accuracy']['mean']:.3f}")
        if r:
            text += f"; a random split would have claimed macro-F1 {r['macro_f1']['mean']:.3f}"
        self.summary.setText(" ".join([text, *value["notes"]]))
        self.set_status("cross-validation done")

    def _on_finished(self) -> None:
        self._worker = None
        self.progress.setMaximum(max(self.progress.maximum(), 1))
        self._set_running(False)

    # ------------------------------------------------------------------ using the model
    def use_model(self, sync: bool = False):
        """Re-classify the open movie with the new checkpoint through the Classify dock."""
        if self.model_path is None or not self.model_path.is_file():
            self._error("no new model yet: press Train first")
            return None
        classify = dock_of(self.viewer, "ClassifyWidget")
        if classify is None:
            _, classify = self.viewer.window.add_plugin_dock_widget("napari-yeast-phenotypes", "Classify phenotypes")
        annotate = dock_of(self.viewer, "AnnotateWidget")
        was_annotating = annotate is not None and annotate.session is not None
        classify.model_choice.value = self.model_path
        remember_model(self.model_path)

        def after():
            if was_annotating and annotate.session is None:
                annotate.reset_choices()
                annotate.start()  # the queue of cells to check now follows the new model

        worker = classify.run(sync=sync)
        if worker is not None:
            worker.finished.connect(after)
        elif sync:
            after()
        self.set_status(f"re-classifying with {self.model_path.name}…" if worker else
                        f"classified with {self.model_path.name}")
        return worker


def report_text(rep: dict, cal: dict) -> str:
    """The report in words: what the figures are on, the figures, calibration, classes with too few crops."""
    m = rep["metrics"]
    text = [f"Figures on {rep['on']}" + (" (OPTIMISTIC)" if rep["optimistic"] else "") + ":",
            f"accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}."]
    if rep.get("previous"):
        p = rep["previous"]
        text.append(f"Previous model on the same crops: accuracy {p['accuracy']:.3f}, macro-F1 {p['macro_f1']:.3f}.")
    if cal.get("fitted_on"):
        text.append(f"Calibration: temperature {cal['temperature']:.2f}; expected calibration error "
                    f"{rep['ece_before']:.3f} before, {rep['ece_after']:.3f} after.")
    if rep.get("few_classes"):
        text.append(f"Too few crops for a meaningful figure: {', '.join(rep['few_classes'])}.")
    return " ".join(text + [f"Note: {n}" for n in rep.get("notes", [])])


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s
