"""Plugins > Train phenotype model: retrain on the curated set, see honest figures, use the new model.

The dock fills a :class:`~napari_yeast_phenotypes.core.config.TrainConfig` from its settings
(:mod:`._train_settings`) and runs the core's training job
(:func:`~napari_yeast_phenotypes.core.jobs.training.train_model_iter`) in a ``thread_worker``:
per-batch progress goes to the progress bar, per-epoch figures to the live curves, which are drawn in
the worker (:mod:`._train_figures`). Cancel asks the job to stop after the batch it is on; the best
epoch so far is calibrated, judged and saved as usual. At the end the report (per-class figures,
confusion matrices, reliability diagram) is drawn beside the previous model's figures on the same
crops, every figure with its 95% interval, and a verdict in words from a paired bootstrap of the
difference: the new model is better, worse, or "cannot tell with N crops". "Use this model" makes the
new checkpoint the session's model and asks for the open movie to be classified again (the Classify
dock hears it, and an Annotate dock that was annotating follows the new result); it is the dock's
default action only when the new model is better: when it is worse or not shown better, a warning
line says so and the button waits for "use it anyway" to be ticked. torch is imported inside the
worker, never when napari loads the plugin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from napari.utils.notifications import show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.config import TrainConfig
from ..core.errors import InputError
from ..core.network.intervals import fmt_ci
from ._dock import StatusLine, open_dock, run_job
from ._safe_torch import import_torch_core
from ._settings import default_model, load_settings, remember_model, save_settings
from ._state import state_of
from ._train_figures import FigureView, render_crossval, render_report, with_curves
from ._train_settings import TrainSettings

WARNING_STYLE = "color: #ffb347;"


@dataclass
class Failed:
    """What the worker returns instead of a model when the input cannot be used."""

    message: str


def train_job(set_folder, val_folder, config: TrainConfig, out, previous, should_stop, curves: Figure | None = None,
              report: Figure | None = None):
    """Generator run by the worker: the core's training job on the curated set; yields its progress dicts,
    returns a ``Classifier`` or :class:`Failed`.

    ``curves`` and ``report``: figures drawn here, in the worker, whose pictures go out with the
    progress (``curves_image`` with each epoch, ``report_image`` at the end).
    """
    yield {"status": "reading the curated set"}
    try:
        import_torch_core()
        from ..core.jobs.training import train_model_iter, training_data

        data = training_data(curated=set_folder, val=val_folder or None)
        yield {"status": f"training on {len(data.train)} crops"}
        clf = yield from with_curves(train_model_iter(data, config, out, overwrite=True, should_stop=should_stop,
                                                      previous=previous), curves)
    except InputError as exc:
        return Failed(str(exc))
    if report is not None:
        yield {"status": "drawing the report", "report_image": render_report(report, clf)}
    return clf


def crossval_job(set_folder, config: TrainConfig, k: int, by: str, report: Figure | None = None):
    """Generator run by the worker: the core's cross-validation job on every labelled crop of the curated set
    (grouped folds, a random split beside them)."""
    yield {"status": "reading the curated set"}
    try:
        import_torch_core()
        from ..core.jobs.training import crossvalidate

        res = crossvalidate(folds=k, config=config, by=by, curated=set_folder)
    except InputError as exc:
        return Failed(str(exc))
    if report is not None:
        yield {"status": "drawing the figure", "report_image": render_crossval(report, res)}
    return res


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


class TrainWidget(StatusLine, QWidget):
    """The training dock (see the module docstring)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = state_of(napari_viewer)
        self.classifier = None  # the last trained Classifier
        self.model_path: Path | None = None
        self.crossval_result: dict | None = None
        self._worker = None
        self._stop = False
        self._history: list[dict] = []
        self._t_last = 0.0

        self.set_edit = QLineEdit(str(self.state.curated_set or load_settings().get("curated_set", "")))
        self.set_edit.setPlaceholderText("curated set folder (its train split trains)")
        self.set_button = QPushButton("Choose…")
        self.val_edit = QLineEdit("")
        self.val_edit.setPlaceholderText("empty: the set's val split (none: a part of train is held out)")
        self.settings = TrainSettings()
        self.out_edit = QLineEdit("")
        self.out_edit.setPlaceholderText("checkpoint to write (default: <set>/models/model-<time>.pt)")

        self.train_button = QPushButton("Train")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("stop after the current batch; the best epoch so far is kept")
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("re-classify the open movie with the new model; the annotation queue follows")
        self.use_button.setEnabled(False)
        self.use_button.setAutoDefault(False)
        # when the new model is not shown better than the current one, using it is a choice made on purpose
        self.use_anyway = QCheckBox("use it anyway")
        self.use_anyway.setToolTip("the new model is not shown better than the current one on the same crops; "
                                   "tick to use it all the same")
        self.use_anyway.setVisible(False)
        self.use_anyway.toggled.connect(lambda _on: self._enable_use())
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.verdict.setVisible(False)
        self._verdict: str | None = None  # better / worse / cannot tell / None (no previous model)
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
        self.set_edit.editingFinished.connect(lambda: self.state.set_curated_set(self.set_edit.text()))
        self.state.curated_set_changed.connect(self._show_curated_set)
        self.train_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(lambda: self.use_model())
        self.crossval_button.clicked.connect(lambda: self.start_crossval())

    # the settings' widgets, by the names the dock has always had
    base_choice = property(lambda self: self.settings.base_choice)
    base_file = property(lambda self: self.settings.base_file)
    trainable_choice = property(lambda self: self.settings.trainable_choice)
    augment_boxes = property(lambda self: self.settings.augment_boxes)
    epochs_spin = property(lambda self: self.settings.epochs_spin)
    batch_spin = property(lambda self: self.settings.batch_spin)
    lr_spin = property(lambda self: self.settings.lr_spin)

    def _build_layout(self) -> None:
        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.set_edit, 1)
        row.addWidget(self.set_button)
        form.addRow("curated set", row)
        form.addRow("validation", self.val_edit)
        form.addRow("save as", self.out_edit)
        buttons = QHBoxLayout()
        for b in (self.train_button, self.cancel_button, self.use_button, self.use_anyway):
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
        s_layout.addWidget(self.settings)
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
        layout.addWidget(self.verdict)
        layout.addWidget(self.tabs, 1)

    def _choose_set(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Curated set folder")
        if folder:
            self.set_edit.setText(folder)
            self.state.set_curated_set(folder)

    def _show_curated_set(self, path) -> None:
        if path is not None and self.set_edit.text().strip() != str(path):
            self.set_edit.setText(str(path))

    # ------------------------------------------------------------------ config
    def previous_model(self) -> Path | None:
        """The model in use now (the session's, else the remembered one)."""
        model = self.state.model
        return model if model is not None and model.is_file() else default_model()

    def config(self) -> TrainConfig:
        """The :class:`TrainConfig` the widgets describe (raises :class:`InputError`)."""
        return self.settings.config(self.previous_model())

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
        self.state.set_curated_set(self.set_edit.text().strip())
        self._stop = False
        self._history = []
        self.model_path = out
        self._show_verdict(None, None)
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
        self._worker = run_job(job, args, on_yield=self._on_progress, on_return=on_returned,
                               on_error=lambda exc: self.set_status(f"failed: {type(exc).__name__}: {exc}",
                                                                    error=True),
                               on_finish=self._on_finished, sync=sync)
        return self._worker

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
            if "fold" in p:  # small data: folds of whole tracks choose when to stop
                self.progress.setMaximum(p["folds"])
                self.progress.setValue(p["fold"] - 1)
                self.progress.setFormat(f"choosing when to stop: fold {p['fold']}/{p['folds']}, "
                                        f"step {p['step']}/{p['steps']}")
            else:
                self.progress.setFormat(f"epoch {p['epoch']}/{p['epochs']}, batch {p['step']}/{p['steps']}")

    def _on_trained(self, value) -> None:
        if isinstance(value, Failed):
            self._error(value.message)
            return
        self.classifier = value
        meta = value.metadata
        rep = meta["report"]
        self.set_status(f"saved {self.model_path} (best epoch {meta['best_epoch']}; {meta['stopped']})")
        show_info(f"training done: {self.model_path}")
        self.summary.setText(report_text(rep, meta.get("calibration") or {}))
        comparison = rep.get("comparison")
        self._show_verdict(comparison["verdict"] if comparison else None, verdict_text(rep))

    def _show_verdict(self, verdict: str | None, text: str | None) -> None:
        """The verdict line, and what "Use this model" is: the default action only when the new model is better;
        when it is worse or not shown better, it waits for "use it anyway"."""
        self._verdict = verdict
        self.verdict.setVisible(bool(text))
        self.verdict.setText(text or "")
        self.verdict.setStyleSheet("" if verdict in ("better", None) else WARNING_STYLE)
        self.use_anyway.setChecked(False)
        self.use_anyway.setVisible(verdict in ("worse", "cannot tell"))
        self.use_button.setDefault(verdict == "better")
        self.use_button.setText("Use this model" if verdict in ("better", None) else "Use this model…")
        self._enable_use()

    def _use_needs_confirmation(self) -> bool:
        return self._verdict in ("worse", "cannot tell") and not self.use_anyway.isChecked()

    def _enable_use(self) -> None:
        ready = self.model_path is not None and self.classifier is not None and self._worker is None
        self.use_button.setEnabled(bool(ready) and not self._use_needs_confirmation())

    def _on_crossval(self, value) -> None:
        if isinstance(value, Failed):
            self._error(value.message)
            return
        self.crossval_result = value  # its figure came drawn from the worker
        g, r = value["summary"], (value.get("random") or {}).get("summary")
        p = value["pooled"]
        ci = p.get("ci") or {}
        text = (f"{value['k']}-fold cross-validation by {value['by']}: macro-F1 {g['macro_f1']['mean']:.3f} ± "
                f"{g['macro_f1']['sd'] or 0:.3f}, accuracy {g['accuracy']['mean']:.3f} (mean ± sd over folds); "
                f"pooled out-of-fold calls on {p['n']} crops: accuracy {fmt_ci(p['accuracy'], ci.get('accuracy'))}, "
                f"macro-F1 {fmt_ci(p['macro_f1'], ci.get('macro_f1'))} (95% intervals, {ci.get('method', '')})")
        if r:
            text += f"; a random split would have claimed macro-F1 {r['macro_f1']['mean']:.3f}"
        self.summary.setText(" ".join([text, *value["notes"]]))
        self.set_status("cross-validation done")

    def _on_finished(self) -> None:
        self._worker = None
        self.progress.setMaximum(max(self.progress.maximum(), 1))
        self._set_running(False)
        self._enable_use()

    # ------------------------------------------------------------------ using the model
    def use_model(self, sync: bool = False) -> None:
        """Make the new checkpoint the session's model and ask for the open movie to be classified again with it
        (the Classify dock does it, opened if it is not; an Annotate dock that was annotating follows).
        ``sync``: classified in this thread (tests)."""
        if self.model_path is None or not self.model_path.is_file():
            self._error("no new model yet: press Train first")
            return
        if self._use_needs_confirmation():
            self._error(f"the new model is {'worse than' if self._verdict == 'worse' else 'not shown better than'} "
                        "the current one on the same crops; tick 'use it anyway' to use it all the same")
            return
        open_dock(self.viewer, "ClassifyWidget", "Classify phenotypes")
        remember_model(self.model_path)
        self.state.set_model(self.model_path)
        self.set_status(f"re-classifying with {self.model_path.name}…")
        self.state.request_classify(sync)


def verdict_text(rep: dict) -> str:
    """The verdict in words: the new model against the previous one on the same crops (or that there was none)."""
    comparison = rep.get("comparison")
    if not comparison:
        return ("No previous model was judged on these crops: nothing to compare with." if not rep.get("previous")
                else "")
    v, words = comparison["verdict"], comparison["words"]
    if v == "better":
        return f"The new model is {words}: use it."
    if v == "worse":
        return f"The new model is {words}: keep the current one."
    return (f"Against the current model: {words}. The current model stays in use unless you tick "
            "'use it anyway'; label more cells (whole tracks) to tell them apart.")


def report_text(rep: dict, cal: dict) -> str:
    """The report in words: what the figures are on, the figures with their 95% intervals, the verdict,
    calibration, classes with too few crops."""
    m = rep["metrics"]
    ci = m.get("ci") or {}
    text = [f"Figures on {rep['on']}" + (" (OPTIMISTIC)" if rep["optimistic"] else "") + ":",
            f"accuracy {fmt_ci(m['accuracy'], ci.get('accuracy'))}, "
            f"macro-F1 {fmt_ci(m['macro_f1'], ci.get('macro_f1'))}"
            + (f" (95% intervals, {ci['method']})." if ci else ".")]
    if ci.get("note"):
        text.append(f"Note: {ci['note']}.")
    if rep.get("previous"):
        p = rep["previous"]
        pci = p.get("ci") or {}
        text.append(f"Previous model on the same crops: accuracy {fmt_ci(p['accuracy'], pci.get('accuracy'))}, "
                    f"macro-F1 {fmt_ci(p['macro_f1'], pci.get('macro_f1'))}.")
    if rep.get("comparison"):
        text.append(verdict_text(rep))
    if cal.get("fitted_on"):
        text.append(f"Calibration: temperature {cal['temperature']:.2f}; expected calibration error "
                    f"{rep['ece_before']:.3f} before, {rep['ece_after']:.3f} after.")
    if rep.get("few_classes"):
        text.append(f"Too few crops for a meaningful figure: {', '.join(rep['few_classes'])}.")
    return " ".join(text + [f"Note: {n}" for n in rep.get("notes", [])])


__all__ = ["Failed", "TrainWidget", "crossval_job", "report_text", "train_job", "verdict_text"]
