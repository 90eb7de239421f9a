"""The longest stall of a Qt event loop while a napari ``thread_worker`` classifies a movie."""

from __future__ import annotations

import os
import time

import numpy as np

from napari_yeast_phenotypes.core.simulate import simulate_movie

from .common import Context, log, random_classifier, run_child


def child(args: dict) -> dict:
    """In a fresh process: a Qt event loop with a 10 ms timer while a thread_worker classifies."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from napari.qt.threading import thread_worker
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_yeast_phenotypes.core.pipeline import analyse_iter

    n_frames, size, cells = args["frames"], args["size"], args["cells"]
    app = QApplication.instance() or QApplication([])
    movie = simulate_movie(n_frames, size, cells, seed=0)
    clf = random_classifier()
    gaps, last, state = [], [None], {}

    def tick():
        now = time.perf_counter()
        if last[0] is not None:
            gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setTimerType(Qt.PreciseTimer)
    timer.setInterval(10)
    timer.timeout.connect(tick)

    # the idle loop first, for reference
    timer.start()
    QTimer.singleShot(500, app.quit)
    app.exec_()
    idle = list(gaps)
    gaps.clear()
    last[0] = None

    worker = thread_worker(analyse_iter, start_thread=False)(movie.image, movie.labels, clf)
    worker.returned.connect(lambda r: state.update(cells=len(r.cells)))
    worker.errored.connect(lambda e: state.update(error=repr(e)))
    worker.finished.connect(lambda: QTimer.singleShot(50, app.quit))
    t0 = time.perf_counter()
    worker.start()
    app.exec_()
    dt = time.perf_counter() - t0
    timer.stop()
    g = np.asarray(gaps) * 1e3
    return {"max_gap_ms": float(g.max()), "p99_gap_ms": float(np.percentile(g, 99)),
            "mean_gap_ms": float(g.mean()), "ticks": int(g.size),
            "idle_max_gap_ms": float(np.max(idle) * 1e3) if idle else None,
            "seconds": dt, "crops": state.get("cells"), "error": state.get("error"),
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


def run(ctx: Context) -> dict:
    log("event-loop stall under a napari thread_worker (subprocess) ...")
    st = event_loop_stall(*ctx.sizes["stall"])
    if "skipped" in st:
        ctx.notes.append("event loop: " + st["skipped"])
    return {"event_loop": st, "max_event_loop_stall_ms": st.get("max_gap_ms")}
