"""The Annotate dock's keys: bound on the plugin's own layers and on the dock while annotating, unbound after.

``1``-``8`` label the selected cell-frame, ``Shift+1``-``8`` fill up to the track's next label, ``0``
clears, ``U``/``D`` mark unsure / bad segmentation, ``N``/``Shift+N`` next / previous cell to check,
``Ctrl+Z``/``Ctrl+Shift+Z`` undo / redo. They never go on the user's own labels layer. napari cannot
bind ``Shift`` + a digit (Shift turns the digit into a symbol), so those are window shortcuts of the
dock: they take no napari shortcut away.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QShortcut

MARK_KEYS = {"U": "unsure", "D": "bad_segmentation"}


def _named(func, name: str):
    """``func`` as a plain function called ``name`` (napari's key handler needs a ``__name__``)."""

    def action(layer=None):
        return func()

    action.__name__ = action.__qualname__ = name
    return action


class KeyBindings:
    """Binds the annotation keys for ``dock`` (which has ``apply(value, fill)``, ``next_cell(back)``, ``undo()``,
    ``redo()``) on napari layers and as Qt shortcuts of the dock, and takes every one of them back."""

    def __init__(self, dock) -> None:
        self.dock = dock
        self._bound: list = []  # (layer, key, what was bound there before)
        self._shortcuts: list[QShortcut] = []

    def actions(self, class_names) -> dict:
        """Key (napari spelling) -> action without arguments."""
        d = self.dock
        out = {str(i + 1): (lambda n=n: d.apply(n, fill=False)) for i, n in enumerate(class_names[:9])}
        out.update({"0": lambda: d.apply("", fill=False), "N": lambda: d.next_cell(),
                    "Shift-N": lambda: d.next_cell(back=True), "Control-Z": d.undo, "Control-Shift-Z": d.redo})
        out.update({k: (lambda v=v: d.apply(v, fill=False)) for k, v in MARK_KEYS.items()})
        return out

    def bind(self, layers, class_names) -> None:
        """Bind the keys on ``layers`` (the plugin's own) and on the dock."""
        actions = self.actions(class_names)
        for lay in layers:
            for key, func in actions.items():
                previous = lay.keymap.get(key)
                lay.bind_key(key, _named(func, f"annotate {key}"), overwrite=True)
                self._bound.append((lay, key, previous))
        # the dock: the same keys while it has the focus (e.g. after clicking the gallery)
        qt_keys = {k.replace("Control", "Ctrl").replace("-", "+"): f for k, f in actions.items()}
        for key, func in qt_keys.items():
            self._shortcut(key, func, Qt.WidgetWithChildrenShortcut)
        # Shift+digit cannot be a napari key binding: a window shortcut, which takes nothing from napari
        for i, n in enumerate(class_names[:9]):
            self._shortcut(f"Shift+{i + 1}", lambda n=n: self.dock.apply(n, fill=True), Qt.WindowShortcut)

    def _shortcut(self, key: str, func, context) -> None:
        s = QShortcut(QKeySequence(key), self.dock)
        s.setContext(context)
        s.activated.connect(lambda f=func: f())
        self._shortcuts.append(s)

    @property
    def shortcuts(self) -> list[QShortcut]:
        return self._shortcuts

    def unbind(self) -> None:
        """Take back every key this object bound; what was bound before comes back."""
        for layer, key, previous in reversed(self._bound):
            layer.bind_key(key, previous, overwrite=True)  # previous None: unbound again
        self._bound = []
        for s in self._shortcuts:
            s.setEnabled(False)
            s.setParent(None)
        self._shortcuts = []


__all__ = ["MARK_KEYS", "KeyBindings"]
