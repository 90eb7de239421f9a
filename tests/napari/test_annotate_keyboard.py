"""Shift+1..8 in the Annotate dock from a keyboard: a Qt key event, and a real X key press (xdotool).

The dock binds Shift+digit as window shortcuts; the other tests only emit the QShortcut's signal.
Here the key goes the way a user's does: through Qt's key handling (QTest) and, where ``xdotool``
is installed, through the X server (XTEST) as a US keyboard sends it: Shift with the key "2" gives
the keysym ``at``, not ``2``; Qt's xcb keyboard still matches it to the shortcut Shift+2 (it
tries the key's unshifted symbol with the modifiers held).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication
from test_annotate import _annotating, _long_track


def _fill_ready(make_napari_viewer, result_movie, folder):
    """A started dock, a label 5 frames on along a long track, and the cell 5 frames before it selected."""
    viewer, widget, result = _annotating(make_napari_viewer, result_movie, folder)
    cells = result.cells
    rows = cells[cells["track_id"] == _long_track(result)].sort_values("frame").index.to_numpy()
    widget.select(int(rows[6]))
    widget.apply("Circular")
    widget.select(int(rows[1]))
    return viewer, widget, rows


def _focused_canvas(viewer, qtbot):
    """The canvas with the keyboard focus in the active window, as after a user clicked a cell."""
    window = viewer.window._qt_window
    window.show()
    window.raise_()
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)  # window shortcuts need it
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    return canvas


def _filled(widget, rows) -> bool:
    return [widget.session.user.get(int(r)) for r in rows[1:7]] == ["Aggregate"] * 5 + ["Circular"]


def test_shift_2_as_a_qt_key_event_fills(make_napari_viewer, result_movie, tmp_path, qtbot):
    viewer, widget, rows = _fill_ready(make_napari_viewer, result_movie, tmp_path / "set")
    canvas = _focused_canvas(viewer, qtbot)
    QTest.keyClick(canvas, Qt.Key_2, Qt.ShiftModifier)  # the key as Qt names it: 2 with Shift
    assert _filled(widget, rows)


def test_a_digit_typed_on_the_canvas_labels_the_cell(make_napari_viewer, result_movie, tmp_path, qtbot):
    # through napari's own key handler (vispy's key event): it reads each bound function's __name__,
    # which the dock's partials lacked (AttributeError, the key did nothing)
    viewer, widget, rows = _fill_ready(make_napari_viewer, result_movie, tmp_path / "set")
    QTest.keyClick(_focused_canvas(viewer, qtbot), Qt.Key_2)
    assert widget.session.user.get(int(rows[1])) == "Aggregate" and int(rows[2]) not in widget.session.user


@pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool is not installed (apt-get install xdotool)")
def test_shift_2_pressed_on_the_x_keyboard_fills(make_napari_viewer, result_movie, tmp_path, qtbot):
    if QApplication.platformName() != "xcb":
        pytest.skip("needs the xcb platform (an X server)")
    viewer, widget, rows = _fill_ready(make_napari_viewer, result_movie, tmp_path / "set")
    _focused_canvas(viewer, qtbot)
    wid = str(int(viewer.window._qt_window.winId()))
    subprocess.run(["xdotool", "windowfocus", "--sync", wid], check=True, timeout=10)
    subprocess.run(["xdotool", "key", "--clearmodifiers", "shift+2"], check=True, timeout=10)
    qtbot.waitUntil(lambda: _filled(widget, rows), timeout=5000)
