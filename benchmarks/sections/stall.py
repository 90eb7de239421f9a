"""The longest stall of a Qt event loop while a napari ``thread_worker`` classifies a movie, and while
the Train dock trains in its thread worker (its live curves and end-of-training report drawn as in
the viewer)."""

from __future__ import annotations

import os
import time

import numpy as np

from napari_yeast_phenotypes.core.data.simulate import simulate_movie

from .common import Context, log, random_classifier, run_child


def _ticker(app, times: list | None = None):
    """A 10 ms precise timer recording the gaps between its ticks (``gaps``, seconds; the time of each
    tick in ``times`` too, when given), and the gaps of half a second of the idle loop, for reference."""
    from qtpy.QtCore import Qt, QTimer

    gaps, last = [], [None]

    def tick():
        now = time.perf_counter()
        if last[0] is not None:
            gaps.append(now - last[0])
            if times is not None:
                times.append(now)
        last[0] = now

    timer = QTimer()
    timer.setTimerType(Qt.PreciseTimer)
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    QTimer.singleShot(500, app.quit)
    app.exec_()
    idle = list(gaps)
    gaps.clear()
    last[0] = None
    return timer, gaps, idle


def _gap_figures(gaps, idle) -> dict:
    g = np.asarray(gaps) * 1e3
    return {"max_gap_ms": float(g.max()), "p99_gap_ms": float(np.percentile(g, 99)),
            "mean_gap_ms": float(g.mean()), "ticks": int(g.size),
            "idle_max_gap_ms": float(np.max(idle) * 1e3) if idle else None}


def train_child(args: dict) -> dict:
    """In a fresh process: the Train dock (offscreen, shown) training a random-weight model on a tiny
    simulated curated set in its thread worker, a 10 ms timer measuring the event loop's stalls.

    The figures are those of training (from the first batch to the report drawn); ``import_phase``
    has those of the start, while the worker imports torch (once per napari session).
    """
    import shutil
    import tempfile
    import types
    from pathlib import Path

    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    tmp = Path(tempfile.mkdtemp(prefix="stall-train-"))
    os.environ["NAPARI_YEAST_PHENOTYPES_CONFIG_DIR"] = str(tmp / "config")  # the user's settings are not touched
    from napari_yeast_phenotypes._napari._train import TrainWidget
    from napari_yeast_phenotypes.core.data.crops import CropSettings
    from napari_yeast_phenotypes.core.data.curated import CuratedSet, crops_for_annotations

    n_frames, size, cells, epochs, batch = (args[k] for k in ("frames", "size", "cells", "epochs", "batch"))
    app = QApplication.instance() or QApplication([])
    movie = simulate_movie(n_frames, size, cells, seed=0)
    truth = movie.truth.copy()
    truth["split"] = np.where(truth["label"] % 3 == 0, "val", "train")  # whole tracks on one side
    cs = CuratedSet(tmp / "set", CropSettings())
    crops, rows = crops_for_annotations(movie.image, movie.labels, truth, cs.crop_settings, source="image.tif",
                                        experiment="sim")
    cs.add(crops, rows, annotator="truth")
    n_train, n_val = len(cs.load_split("train")), len(cs.load_split("val"))

    viewer = types.SimpleNamespace(window=types.SimpleNamespace(dock_widgets={}))  # no Classify dock to ask
    widget = TrainWidget(viewer)
    widget.resize(600, 900)
    widget.show()
    widget.set_edit.setText(str(tmp / "set"))
    widget.val_edit.setText("")
    widget.base_choice.setCurrentText("none")
    widget.trainable_choice.setCurrentText(args.get("trainable", "conv1,fc"))
    widget.epochs_spin.setValue(epochs)
    widget.batch_spin.setValue(batch)
    widget.out_edit.setText(str(tmp / "model.pt"))

    times: list[float] = []
    timer, gaps, idle = _ticker(app, times)
    times.clear()
    t0 = time.perf_counter()
    worker = widget.start()
    if worker is None:
        return {"error": widget.status.text()}
    state = {}
    worker.errored.connect(lambda e: state.update(error=repr(e)))
    # torch is imported in the worker (as the plugin does: never when napari starts); the first batch
    # marks the end of that import, which holds the GIL in long C calls
    worker.yielded.connect(lambda p: state.setdefault("first_batch", time.perf_counter()) if "step" in p else None)
    worker.finished.connect(lambda: QTimer.singleShot(300, app.quit))
    app.exec_()
    dt = time.perf_counter() - t0
    timer.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    t_first = state.get("first_batch", float("inf"))
    training = [g for g, t in zip(gaps, times) if t - g >= t_first]  # gaps that began after the first batch
    before = [g for g, t in zip(gaps, times) if t - g < t_first]
    return {**_gap_figures(training or gaps, idle), "seconds": dt, "error": state.get("error"),
            "import_phase": {**_gap_figures(before, idle), "seconds": t_first - t0} if before else None,
            "train_crops": n_train, "val_crops": n_val,
            "epochs": epochs, "batch": batch, "trainable": args.get("trainable", "conv1,fc"),
            "epochs_drawn": len(widget._history), "report_drawn": bool(widget.report_fig.axes),
            "status": widget.status.text()}


def child(args: dict) -> dict:
    """In a fresh process: a Qt event loop with a 10 ms timer while a thread_worker classifies (or,
    with ``mode: train``, while the Train dock trains: :func:`train_child`)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if args.get("mode") == "train":
        return train_child(args)
    from napari.qt.threading import thread_worker
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_yeast_phenotypes.core.pipeline import analyse_iter

    n_frames, size, cells = args["frames"], args["size"], args["cells"]
    app = QApplication.instance() or QApplication([])
    movie = simulate_movie(n_frames, size, cells, seed=0)
    clf = random_classifier()
    state = {}
    timer, gaps, idle = _ticker(app)  # the idle loop first, for reference

    worker = thread_worker(analyse_iter, start_thread=False)(movie.image, movie.labels, clf)
    worker.returned.connect(lambda r: state.update(cells=len(r.cells)))
    worker.errored.connect(lambda e: state.update(error=repr(e)))
    worker.finished.connect(lambda: QTimer.singleShot(50, app.quit))
    t0 = time.perf_counter()
    worker.start()
    app.exec_()
    dt = time.perf_counter() - t0
    timer.stop()
    return {**_gap_figures(gaps, idle), "seconds": dt, "crops": state.get("cells"), "error": state.get("error"),
            "movie": [n_frames, size, cells]}


def event_loop_stall(n_frames: int, size: int, cells: int) -> dict:
    try:
        import napari.qt.threading  # noqa: F401
        import qtpy.QtWidgets  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - no napari/Qt: skip with a note
        return {"skipped": f"napari/Qt not importable: {exc}"}
    env = {"QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    try:
        return run_child("stall", {"frames": n_frames, "size": size, "cells": cells}, env=env)
    except RuntimeError as exc:
        return {"skipped": str(exc)}


def training_stall(n_frames: int, size: int, cells: int, epochs: int, batch: int) -> dict:
    try:
        import napari.qt.threading  # noqa: F401
        import qtpy.QtWidgets  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - no napari/Qt: skip with a note
        return {"skipped": f"napari/Qt not importable: {exc}"}
    env = {"QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    args = {"mode": "train", "frames": n_frames, "size": size, "cells": cells, "epochs": epochs, "batch": batch}
    try:
        return run_child("stall", args, env=env)
    except RuntimeError as exc:
        return {"skipped": str(exc)}


def run(ctx: Context) -> dict:
    log("event-loop stall under a napari thread_worker (subprocess) ...")
    st = event_loop_stall(*ctx.sizes["stall"])
    if "skipped" in st:
        ctx.notes.append("event loop: " + st["skipped"])
    log("event-loop stall while the Train dock trains (subprocess) ...")
    tr = training_stall(*ctx.sizes["stall_train"])
    if "skipped" in tr:
        ctx.notes.append("event loop while training: " + tr["skipped"])
    return {"event_loop": st, "max_event_loop_stall_ms": st.get("max_gap_ms"), "event_loop_training": tr,
            "max_event_loop_stall_training_ms": tr.get("max_gap_ms")}
