"""Plugins > Classify phenotypes: pick an image, its labels and a model; run; see and export the result.

The dock only translates: layers -> the core's classify job
(:func:`~napari_yeast_phenotypes.core.jobs.classify.classify_movie_iter`) in a ``thread_worker`` ->
overlays (:mod:`._layers`), plots (:mod:`._plots`) and CSV files (the core's writer). It tells the
session state (:mod:`._state`) what it opened and listens to it: another dock choosing a model or a
track model, or asking for the movie to be classified again, is heard here. torch is imported
inside the worker, never when napari loads the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from magicgui.widgets import ComboBox, FileEdit
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.data.movies import as_movie
from ..core.errors import InputError
from ..core.results.folder import RESULT_FILES, RUN_FILE
from ._classify_settings import ClassifySettings, DisplayOptions
from ._dock import StatusLine, fit_dock_title, run_job
from ._layers import RESULT_KEY, SENESCENCE_LAYER, SenescenceLabels, movie_axis_labels, result_layers
from ._legend import Legend
from ._safe_torch import import_torch_core
from ._settings import NO_MODEL_HINT, default_model, remember_model
from ._state import OpenResult, state_of
from ._writer import export_result

PLOTS_DOCK_NAME = "Phenotype plots"


@dataclass
class Failed:
    """What the worker returns instead of a result when the input cannot be used."""

    message: str


def classify_job(image, labels, model_path, names: dict | None = None, track_model=None, config=None):
    """Generator run by the worker: the core's classification job; returns a ``ClassifyJob`` (or :class:`Failed`).

    Yields ``(frames_done, n_frames)``. ``track_model``: a track model file (``None``: the built-in
    transition rates), which the job checks against the model's classes. A user's mistake (a bad
    model or track model file, labels that do not fit) comes back as :class:`Failed` with the
    core's message, so it is shown as a message and not as a traceback; anything else is a bug
    and propagates to ``worker.errored``.
    """
    n_frames = 1 if labels.ndim == 2 else labels.shape[0]
    yield 0, n_frames
    try:
        import_torch_core()
        from ..core.jobs.classify import classify_movie_iter

        job = yield from classify_movie_iter(image, labels, model_path, config, names=names, track_model=track_model)
    except InputError as exc:
        return Failed(str(exc))
    return job


def _layer_array(layer: Layer):
    """The full-resolution data of a layer (level 0 of a multiscale one)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def _file_value(edit: FileEdit) -> Path | None:
    value = edit.value
    return None if value is None or str(value) in ("", ".") else Path(str(value))


class ClassifyWidget(StatusLine, QWidget):
    """The classify dock.

    Parameters
    ----------
    napari_viewer
        The viewer (npe2 passes it by this name).
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = state_of(napari_viewer)
        self.result = None  # the last Result, also in the overlays' metadata[RESULT_KEY]
        self.run_info: dict = {}  # how it was made (run.json), also in the overlays' metadata[RUN_KEY]
        self.overlays: list[Layer] = []  # phenotypes (labels), tracks (movies only), senescence (points)
        self.plots = None
        self.senescence_labels: SenescenceLabels | None = None
        self._worker = None
        self._job = None  # (labels array, labels layer, image layer) of the run in progress

        self.image_choice = ComboBox(choices=self._image_layers, nullable=False)
        self.labels_choice = ComboBox(choices=self._labels_layers, nullable=False)
        self.model_choice = FileEdit(mode="r", filter="Model files (*.pt *.pth *.ckpt);;All files (*)")
        self.track_model_choice = FileEdit(mode="r", filter="Track models (*.json);;All files (*)")
        self.track_model_choice.native.setToolTip(
            "A track model fitted on your labels (yeast-phenotypes fit-track-model, or the Annotate dock's "
            "\"Fit track model\"); empty: the built-in transition rates")
        self.image_choice.native.setToolTip("Single-channel fluorescence image: (T, Y, X) movie or one (Y, X) frame")
        self.labels_choice.native.setToolTip("Instance labels of that image (0 = background), same shape")
        self.model_choice.native.setToolTip("A checkpoint saved by yeast-phenotypes train/demo, the Train dock or the "
                                            "Annotate dock's live model, or a bare ResNet50 state dict; remembered")
        self.settings = ClassifySettings()
        self.display = DisplayOptions()

        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Classify every cell in every frame (runs in the background)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("Write cells.csv and tracks.csv (as the command line does) into a folder")
        self.export_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m frames")
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.legend = Legend()

        self._build_layout()
        # what this dock shows follows the session; what the user picks here goes to the session
        if self.state.model is None:
            self.state.set_model(default_model())
        self._show_model(self.state.model)
        self._show_track_model(self.state.track_model)
        self.model_choice.changed.connect(lambda v: self.state.set_model(_file_value(self.model_choice)))
        self.track_model_choice.changed.connect(
            lambda v: self.state.set_track_model(_file_value(self.track_model_choice)))
        self.state.model_changed.connect(self._show_model)
        self.state.track_model_changed.connect(self._show_track_model)
        self.state.classify_requested.connect(self._classify_again)
        self.state.result_updated.connect(self._result_updated)
        self.display.changed.connect(self._apply_display)
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(lambda: self.export())
        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                   napari_viewer.layers.events.moved):
            ev.connect(self.reset_choices)
        if self.state.model is None or not self.state.model.is_file():
            self.set_status(NO_MODEL_HINT)

    # ------------------------------------------------------------------ layout and choices
    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("image", self.image_choice.native)
        form.addRow("labels", self.labels_choice.native)
        form.addRow("model", self.model_choice.native)
        form.addRow("track model", self.track_model_choice.native)
        buttons = QHBoxLayout()
        for b in (self.run_button, self.cancel_button, self.export_button):
            buttons.addWidget(b)
        legend_box = QGroupBox("Phenotypes")
        QVBoxLayout(legend_box).addWidget(self.legend)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.settings)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.display)
        layout.addWidget(legend_box)
        layout.addStretch(1)

    def _image_layers(self, _widget=None) -> list:
        return [(lay.name, lay) for lay in self.viewer.layers if isinstance(lay, Image)]

    def _labels_layers(self, _widget=None) -> list:
        # our own overlays are labels too, but classifying them makes no sense
        return [(lay.name, lay) for lay in self.viewer.layers
                if isinstance(lay, Labels) and RESULT_KEY not in lay.metadata]

    def reset_choices(self, event=None) -> None:
        """Refresh the layer lists (napari calls this too when layers change)."""
        self.image_choice.reset_choices()
        self.labels_choice.reset_choices()

    def _show_model(self, path) -> None:
        if _file_value(self.model_choice) != path:
            self.model_choice.value = path if path is not None else ""

    def _show_track_model(self, path) -> None:
        if _file_value(self.track_model_choice) != path:
            self.track_model_choice.value = path if path is not None else ""

    # ------------------------------------------------------------------ running
    def track_model(self) -> Path | None:
        """The chosen track model file (checked to be one), or ``None`` for the built-in rates."""
        from ..core.jobs.classify import check_track_model_file

        path = _file_value(self.track_model_choice)
        check_track_model_file(path)  # a file that is no track model is said at once, not after loading the network
        return path

    def checked_inputs(self):
        """The chosen (image, labels, model path), checked; raises :class:`InputError` with a message."""
        image_layer, labels_layer = self.image_choice.value, self.labels_choice.value
        if image_layer is None or labels_layer is None:
            raise InputError("choose an image layer and a labels layer (File > Open Sample > "
                             "Synthetic yeast time-lapse gives both)")
        if getattr(image_layer, "rgb", False):
            raise InputError(f"the image layer {image_layer.name!r} is RGB; choose the single-channel "
                             "fluorescence image of the reporter")
        image, labels = _layer_array(image_layer), _layer_array(labels_layer)
        as_movie(image, labels)  # validates shapes and dtypes; the worker gets the layers' own arrays
        model = _file_value(self.model_choice)
        if model is None:
            raise InputError(NO_MODEL_HINT)
        if not model.is_file():
            raise InputError(f"model file not found: {model}. {NO_MODEL_HINT}")
        return image, labels, model

    def run(self, sync: bool = False):
        """Classify the chosen layers; in a worker thread, or in this thread with ``sync=True`` (tests).

        Returns the started worker (``None`` when synchronous or when the input was refused).
        """
        if self._worker is not None:
            return self._worker
        try:
            image, labels, model = self.checked_inputs()
            track_model = self.track_model()
            config = self.settings.config()
        except InputError as exc:
            self._error(str(exc))
            return None
        remember_model(model)
        self._job = (labels, self.labels_choice.value, self.image_choice.value)
        names = {"image": self.image_choice.value.name, "labels": self.labels_choice.value.name}
        self._set_running(True)
        self.set_status(f"loading {model.name} and classifying"
                        + (f" (track model {track_model.name})" if track_model else "") + "…")
        self._worker = run_job(classify_job, (image, labels, model, names, track_model, config),
                               on_yield=self._on_progress, on_return=self._on_returned, on_error=self._on_errored,
                               on_finish=self._on_finished, on_abort=self._on_aborted, sync=sync)
        return self._worker

    def _classify_again(self, sync: bool = False) -> None:
        """Another dock asked for the open movie to be classified again (e.g. with a new model)."""
        opened = self.state.open
        if opened is not None:
            self.reset_choices()
            if opened.image_layer is not None and opened.image_layer in self.viewer.layers:
                self.image_choice.value = opened.image_layer
            if opened.labels_layer is not None and opened.labels_layer in self.viewer.layers:
                self.labels_choice.value = opened.labels_layer
        self.run(sync=sync)

    def cancel(self) -> None:
        """Ask the running worker to stop after the frames it is on."""
        if self._worker is not None:
            self._worker.quit()
            self.cancel_button.setEnabled(False)
            self.set_status("cancelling after the current frames…")

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.export_button.setEnabled(not running and self.result is not None)
        if running:
            self.progress.setValue(0)

    def _on_progress(self, value) -> None:
        done, total = value
        self.progress.setMaximum(max(int(total), 1))
        self.progress.setValue(int(done))

    def _on_returned(self, value) -> None:
        if isinstance(value, Failed):
            self._error(value.message)
            return
        labels, labels_layer, image_layer = self._job
        for warning in value.warnings:
            show_warning(warning)
        self.show_result(value.result, labels, labels_layer, run=value.run, image_layer=image_layer)

    def _on_errored(self, exc: Exception) -> None:
        # napari's worker already reports the traceback of an unexpected error; say it here too
        self.set_status(f"classification failed: {type(exc).__name__}: {exc}", error=True)

    def _on_aborted(self) -> None:
        self.set_status("cancelled; nothing was changed")

    def _on_finished(self) -> None:
        self._worker = None
        self._job = None
        self._set_running(False)

    # ------------------------------------------------------------------ results
    def show_result(self, result, labels, labels_layer=None, run: dict | None = None, image_layer=None) -> None:
        """Replace the overlays, the legend and the plots with ``result`` (``run``: how it was made), and tell
        the session. ``image_layer``: the image classified (default: the one chosen in the dock)."""
        if image_layer is None:
            image_layer = self.image_choice.value
        self.result, self.run_info = result, dict(run or {})
        if self.senescence_labels is not None:
            self.senescence_labels.disconnect()
            self.senescence_labels = None
        for old in self.overlays:  # replace what the last run added, whatever the user renamed it to
            if old in self.viewer.layers:
                self.viewer.layers.remove(old)
        kwargs = {"run": self.run_info}
        if labels_layer is not None:
            axes = movie_axis_labels(labels_layer.axis_labels, labels_layer.ndim)
            self._name_axes(axes, labels_layer, image_layer)
            kwargs |= {"scale": labels_layer.scale, "translate": labels_layer.translate,
                       "axis_labels": axes, "source": labels_layer.name}
        self.overlays = [self.viewer.add_layer(Layer.create(data, meta, kind))
                         for data, meta, kind in result_layers(result, labels, **kwargs)]
        self._apply_display()
        self.viewer.layers.selection.active = self.overlays[0]
        senescence = next((lay for lay in self.overlays if lay.name == SENESCENCE_LAYER), None)
        if senescence is not None:
            self.senescence_labels = SenescenceLabels(self.viewer, self.overlays[0], senescence)
        if labels_layer is not None:
            labels_layer.visible = False  # its own label colours would tint the class colours
        self.legend.set_classes(result.class_names)
        self._show_plots(result)
        self._say_result(result)
        self.export_button.setEnabled(True)
        self.state.set_result(OpenResult(result, self.run_info, labels, labels_layer, image_layer, self.overlays[0]))

    def _say_result(self, result) -> None:
        tr = result.tracks
        n_sen = int(tr["senescence_frame"].notna().sum())
        relinked = ""
        if result.cells.attrs.get("relinked"):
            relinked = " (ids were not tracked: cells were relinked by overlap)"
        ood = self.run_info.get("ood") or {}
        unlike = ""
        if ood.get("available"):
            # said beside the counts: a movie unlike the training data makes every figure above doubtful
            unlike = (f" {ood['share_outside']:.0%} of the cells are unlike the training data (ood_score above 1)"
                      + (": its calls cannot be trusted." if ood.get("warning") else "."))
        self.set_status(f"{len(result.cells)} cell-frames in {len(tr)} tracks; {n_sen} tracks become "
                        f"senescent{relinked}.{unlike} Hover a cell to see its track, phenotype and confidence.",
                        error=bool(ood.get("warning")))

    def _result_updated(self, rows=None) -> None:
        """The open result changed in place (labels, re-smoothing, a live update): the plots follow."""
        if self.result is not None and self.plots is not None and self.overlays:
            self.plots.show_result(self.result, self.overlays[0], run=self.run_info)
        if self.result is not None and rows is None:
            self._say_result(self.result)  # the share of cells unlike the training data may have changed

    def _apply_display(self) -> None:
        """Filled cells or contours (dense colonies), on the phenotypes overlay."""
        if self.overlays:
            self.display.apply(self.overlays[0])

    def _name_axes(self, axes, labels_layer, image_layer) -> None:
        """Give the classified layers (and the image, if it has napari's default names) ``axes``."""
        for layer in (labels_layer, image_layer):
            if layer is not None and layer.ndim == len(axes) and tuple(layer.axis_labels) != tuple(axes) \
                    and movie_axis_labels(layer.axis_labels, layer.ndim) == tuple(axes):
                layer.axis_labels = axes

    def _show_plots(self, result) -> None:
        from ._plots import PhenotypePlots

        if self.plots is None:
            self.plots = PhenotypePlots(self.viewer)
        if self.plots.parent() is None:  # new, or its dock was closed (napari keeps the widget): dock it
            self.viewer.window.add_dock_widget(self.plots, name=PLOTS_DOCK_NAME, area="bottom")
            # the new dock takes height from the canvas once Qt has laid it out: fit the view then,
            # or cells at the top and bottom are cut off
            QTimer.singleShot(0, self.viewer.reset_view)
        self.plots.show_result(result, self.overlays[0], run=self.run_info)

    def showEvent(self, event) -> None:
        """Once docked, make the dock wide enough for its whole title (napari cuts it otherwise)."""
        super().showEvent(event)
        fit_dock_title(self)

    def export(self, out_dir=None) -> list[str]:
        """Write the result folder (``cells.csv``, ``tracks.csv``, ``summary.png``, ``run.json``) of the last
        result; asks for a folder when none is given."""
        if self.result is None:
            self._error("nothing to export yet: press Run first")
            return []
        if out_dir is None:
            out_dir = QFileDialog.getExistingDirectory(self, "Folder for cells.csv, tracks.csv, summary.png, run.json")
            if not out_dir:
                return []
            existing = [n for n in (*RESULT_FILES, RUN_FILE) if (Path(out_dir) / n).exists()]
            if existing and QMessageBox.question(
                self, "Replace files?", f"{out_dir} already holds {' and '.join(existing)}. Replace them?"
            ) != QMessageBox.Yes:
                return []
        try:
            paths = export_result(self.result, out_dir, self.run_info)
        except (OSError, ValueError) as exc:
            self._error(f"could not export to {out_dir}: {exc}")
            return []
        self.set_status(f"wrote {', '.join(Path(p).name for p in paths)} into {out_dir}")
        show_info(f"wrote {', '.join(Path(p).name for p in paths)} into {out_dir}")
        return paths


__all__ = ["ClassifyWidget", "Failed", "classify_job"]
