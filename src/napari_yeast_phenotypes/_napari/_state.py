"""What the docks share: one evented session state per viewer.

The Classify, Annotate and Train docks never set each other's widgets. Each keeps what it shows in
step with one :class:`SessionState` (napari-animation's widgets listen to their animation model the
same way): a dock that changes something says so to the state, and every dock listening hears it.

- ``result``: the open classification (:class:`OpenResult`), replaced by each Classify run
  (``result_changed``) and changed in place by the Annotate dock's labels, re-smoothing and live
  updates (``result_updated``, with the rows that changed);
- ``model``, ``track_model``, ``curated_set``: the files in use (``..._changed``);
- ``live``: the live model of the Annotate dock, when one is fitted (``live_changed``);
- ``classify_requested``: "classify the open movie again" (the Train dock's "Use this model").
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path

from psygnal import Signal


@dataclass
class OpenResult:
    """A classified movie open in the viewer: the core's result, how it was made, and what it was made from."""

    result: object  # core.results.schema.Result
    run: dict = field(default_factory=dict)
    labels: object = None  # the (T, Y, X) labels array that was classified
    labels_layer: object = None  # the user's labels layer (hidden while the overlays show)
    image_layer: object = None
    phenotypes_layer: object = None  # the overlay painted in class colours


def _path(value) -> Path | None:
    if value is None or str(value) in ("", "."):
        return None
    return Path(str(value))


class SessionState:
    """The session shared by the docks of one viewer (see the module docstring)."""

    result_changed = Signal(object)  # OpenResult | None
    result_updated = Signal(object)  # rows of the cell table that changed (numpy array), or None for all
    model_changed = Signal(object)  # Path | None
    track_model_changed = Signal(object)  # Path | None
    curated_set_changed = Signal(object)  # Path | None
    live_changed = Signal(object)  # the live model (core), or None
    classify_requested = Signal(bool)  # sync: classify in this thread (tests)

    def __init__(self) -> None:
        self.open: OpenResult | None = None
        self.model: Path | None = None
        self.track_model: Path | None = None
        self.curated_set: Path | None = None
        self.live = None

    # ------------------------------------------------------------------ setters that say what changed
    def set_result(self, open_result: OpenResult | None) -> None:
        self.open = open_result
        self.result_changed.emit(open_result)

    def result_changed_in_place(self, rows=None) -> None:
        """The open result's cells changed (labels, re-smoothing, a live update): ``rows`` or all (``None``)."""
        self.result_updated.emit(rows)

    def set_model(self, path) -> None:
        path = _path(path)
        if path != self.model:
            self.model = path
            self.model_changed.emit(path)

    def set_track_model(self, path) -> None:
        path = _path(path)
        if path != self.track_model:
            self.track_model = path
            self.track_model_changed.emit(path)

    def set_curated_set(self, path) -> None:
        path = _path(path)
        if path != self.curated_set:
            self.curated_set = path
            self.curated_set_changed.emit(path)

    def set_live(self, live) -> None:
        self.live = live
        self.live_changed.emit(live)

    def request_classify(self, sync: bool = False) -> None:
        self.classify_requested.emit(sync)


_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def state_of(viewer) -> SessionState:
    """The session state of ``viewer`` (made on first use; it lives as long as the viewer).

    npe2 hands each dock the viewer behind its own proxy: the state belongs to the viewer itself.
    """
    viewer = getattr(viewer, "__wrapped__", viewer)
    state = _STATES.get(viewer)
    if state is None:
        state = _STATES[viewer] = SessionState()
    return state


__all__ = ["OpenResult", "SessionState", "state_of"]
