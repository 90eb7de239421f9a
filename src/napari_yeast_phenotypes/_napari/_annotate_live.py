"""The Annotate dock's live model: switched on, the network's features of every cell-frame are computed once (in
a worker; cached on disk), then after every label a head is refitted on the curated labels and the whole movie
re-predicted, smoothed and recoloured (:class:`~napari_yeast_phenotypes.core.track.live.LiveSession`). When the
labels settle, the cells' ``ood_score`` follows the labelled cells. "Save live model…" writes an ordinary
checkpoint, which becomes the session's model.
"""

from __future__ import annotations

import time
from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog

from ..core.errors import InputError
from ._dock import run_job
from ._layers import RUN_KEY
from ._safe_torch import import_torch_core

#: seconds without a new label before the cells' ood_score is computed again
OOD_SETTLE_MS = 2000


def start_job(session, model_path):
    """Generator run by the worker: the base model, the movie's features and the live session."""
    yield 0, 1
    import_torch_core()
    from ..core.jobs.classify import load_model
    from ..core.track.live import LiveSession

    base, _ = load_model(model_path)
    return LiveSession.start(session, base)


class LiveController:
    """Drives the live model for the Annotate dock ``dock`` (its ``live_box``, ``session``, ``repaint``...)."""

    def __init__(self, dock) -> None:
        self.dock = dock
        self.live = None
        self._worker = None
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.refresh_ood)
        box = dock.live_box
        box.live.toggled.connect(lambda on: self.start() if on else self.stop())
        box.save_button.clicked.connect(lambda: self.save())
        box.save_button.setEnabled(False)

    def model_path(self) -> Path | None:
        """The model that classified the open movie (its features are the live model's)."""
        run = (self.dock.layer.metadata.get(RUN_KEY) or {}) if self.dock.layer is not None else {}
        path = (run.get("model") or {}).get("path") or self.dock.state.model
        return Path(path) if path and Path(path).is_file() else None

    def start(self, sync: bool = False):
        """Compute (or read) the movie's features in a worker, then fit the head on the labels so far."""
        d = self.dock
        if d.session is None:
            d.live_box.live.setChecked(False)
            d.set_status("press Start annotating first: the live model learns from this movie's labels")
            return None
        path = self.model_path()
        if path is None:
            d.live_box.live.setChecked(False)
            d._error("the live model needs the model file that classified this movie; classify it again with "
                     "a model file (Classify dock)")
            return None
        d.live_box.report.setText("computing the network's features of every cell-frame (once per movie: then "
                                  "cached)…")
        self._worker = run_job(start_job, (d.session, path), on_yield=lambda _v: None, on_return=self._started,
                               on_error=lambda exc: d._error(f"the live model failed: {type(exc).__name__}: {exc}"),
                               on_finish=self._finished, sync=sync)
        return self._worker

    def _started(self, live) -> None:
        if self.dock.session is None or live.session is not self.dock.session:
            return  # annotating stopped meanwhile
        self.live = live
        self.dock.live_box.save_button.setEnabled(True)
        self.after_label()

    def _finished(self) -> None:
        self._worker = None

    def stop(self) -> None:
        """Keep the calls as they are; labels no longer refit the head."""
        self.live = None
        self._timer.stop()
        self.dock.live_box.save_button.setEnabled(False)
        if self.dock.live_box.live.isChecked():
            self.dock.live_box.live.setChecked(False)
        self.dock.live_box.report.setText("")

    def after_label(self):
        """Refit, re-predict and recolour the whole movie (call after every change of the labels); the Outcome."""
        d = self.dock
        if self.live is None or d.session is None:
            return None
        t0 = time.perf_counter()
        try:
            out = self.live.update()
        except InputError as exc:
            d._error(str(exc))
            return None
        if self.live.last is not None:
            d.repaint(out.rows)
            d.refresh_features()
            self._timer.start(OOD_SETTLE_MS)
            d.state.result_changed_in_place(None)
        missing = ", ".join(self.live.not_labelled)
        d.live_box.report.setText(out.message + (f" (key press to recoloured movie: {time.perf_counter() - t0:.2f} s)"
                                                 if self.live.last is not None else "")
                                  + (f". Not labelled yet (never called): {missing}." if missing else ""))
        return out

    def refresh_ood(self) -> None:
        """The cells' ood_score under the live model's own summary of the labelled cells."""
        if self.live is None or self.dock.session is None:
            return
        if self.live.refresh_ood() is not None:
            self.dock.refresh_features()
            open_result = self.dock.state.open
            if open_result is not None and self.live.ood_report is not None:
                # the Classify dock's status and the plot dock's banner follow the live model's own summary
                open_result.run["ood"] = self.live.ood_report
                self.dock.state.result_changed_in_place(None)

    def save(self, path=None) -> Path | None:
        """Save the live model as a checkpoint (asks where unless given); it becomes the session's model."""
        from ..core.network.checkpoint import save_checkpoint

        d = self.dock
        if self.live is None:
            d._error("no live model yet: switch it on and label cells of at least two classes")
            return None
        if path is None:
            default = Path(d.session.curated.root) / "models" / f"live-{time.strftime('%Y%m%d-%H%M%S')}.pt"
            path, _ = QFileDialog.getSaveFileName(d, "Save the live model", str(default), "Model files (*.pt)")
            if not path:
                return None
        try:
            clf = self.live.classifier()
            path = save_checkpoint(Path(path), clf)
        except (InputError, OSError) as exc:
            d._error(f"could not save the live model: {exc}")
            return None
        d.state.set_model(path)
        d.set_status(f"saved the live model as {path} (classes {', '.join(clf.class_names)}); the Classify dock "
                     "now uses it, as can yeast-phenotypes classify --model")
        return path


__all__ = ["LiveController"]
