"""What the docks have in common: their status line (red for errors, errors also as a napari notification),
running a job generator in a worker thread (or in the caller's thread, for tests), and a dock wide enough
for its title.

Every dock's errors go through :func:`show_error` of this module, so a test watches one place.
"""

from __future__ import annotations

from collections.abc import Callable

from napari.utils.notifications import show_error as _napari_show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QDockWidget, QLabel

from . import PLUGIN

ERROR_STYLE = "color: #ff6b6b;"


def show_error(message: str) -> None:
    """A user's mistake as a napari notification (tests replace this function to collect them)."""
    _napari_show_error(message)


class StatusLine:
    """A mixin for the docks: :meth:`set_status` on their ``status`` label, :meth:`_error` for a user's mistake."""

    def set_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(ERROR_STYLE if error else "")

    def _error(self, message: str) -> None:
        self.set_status(message, error=True)
        show_error(message)


def run_job(job: Callable, args: tuple, *, on_yield: Callable, on_return: Callable, on_error: Callable,
            on_finish: Callable, on_abort: Callable | None = None, sync: bool = False):
    """Run the generator function ``job(*args)``: in a napari ``thread_worker``, or here with ``sync=True``.

    Yields go to ``on_yield`` (in the UI thread), the return value to ``on_return``, an unexpected
    exception to ``on_error``, and ``on_finish`` comes last whatever happened. Returns the started
    worker, or ``None`` when run synchronously (an exception is then raised again after the handlers).
    """
    if sync:
        gen = job(*args)
        try:
            while True:
                on_yield(next(gen))
        except StopIteration as stop:
            on_return(stop.value)
        except Exception as exc:
            on_error(exc)
            raise
        finally:
            on_finish()
        return None
    from napari.qt.threading import create_worker

    worker = create_worker(job, *args, _start_thread=False, _ignore_errors=True)
    worker.yielded.connect(on_yield)
    worker.returned.connect(on_return)
    worker.errored.connect(on_error)
    if on_abort is not None:
        worker.aborted.connect(on_abort)
    worker.finished.connect(on_finish)
    worker.start()
    return worker


def fit_dock_title(widget) -> None:
    """Once ``widget`` is docked, make its dock wide enough for the whole title (napari cuts it otherwise)."""
    QTimer.singleShot(0, lambda: _fit_title(widget))  # after the dock's title bar is laid out


def _fit_title(widget) -> None:
    dock = widget.parent()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parent()
    if dock is None:
        return
    title, bar = dock.windowTitle(), dock.titleBarWidget()
    labels = [w for w in bar.findChildren(QLabel) if w.text() == title] if bar is not None else []
    if labels:  # napari's title bar: buttons left of the title, which has its own font
        needed = labels[0].x() + labels[0].sizeHint().width() + 8
    else:
        needed = widget.fontMetrics().horizontalAdvance(title) + 80
    # on the dock itself: napari puts the widget in a scroll area, which would only scroll
    if dock.minimumWidth() < needed:
        dock.setMinimumWidth(needed)


def dock_of(viewer, class_name: str):
    """The docked widget of class ``class_name`` in ``viewer``, or ``None``: only to know whether a dock is open
    (docks share state through :mod:`._state`, never each other's widgets)."""
    for w in viewer.window.dock_widgets.values():
        if type(w).__name__ == class_name:
            return w
    return None


def open_dock(viewer, class_name: str, title: str):
    """The plugin's dock ``title``, docked now if it is not open yet."""
    found = dock_of(viewer, class_name)
    if found is None:
        _, found = viewer.window.add_plugin_dock_widget(PLUGIN, title)
    return found


__all__ = ["ERROR_STYLE", "StatusLine", "dock_of", "fit_dock_title", "open_dock", "run_job", "show_error"]
