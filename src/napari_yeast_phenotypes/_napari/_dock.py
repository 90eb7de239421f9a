"""What the docks share: their status line (red for errors, errors also as a napari notification)
and finding another dock of this plugin in the viewer."""

from __future__ import annotations

ERROR_STYLE = "color: #ff6b6b;"


class StatusLine:
    """A mixin for the docks: :meth:`set_status` on their ``status`` label, :meth:`_error` for a user's mistake.

    Each dock shows the notification through its own ``_notify_error``, which calls the
    ``show_error`` of its own module, so that tests can watch one dock's messages.
    """

    def set_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(ERROR_STYLE if error else "")

    def _error(self, message: str) -> None:
        self.set_status(message, error=True)
        self._notify_error(message)

    def _notify_error(self, message: str) -> None:  # pragma: no cover - every dock has its own
        raise NotImplementedError


def dock_of(viewer, class_name: str):
    """The docked widget of class ``class_name`` (e.g. ``"ClassifyWidget"``) in ``viewer``, or ``None``."""
    for w in viewer.window.dock_widgets.values():
        if type(w).__name__ == class_name:
            return w
    return None


__all__ = ["ERROR_STYLE", "StatusLine", "dock_of"]
