"""Undo, redo and ``history.jsonl``: every change of a curated set as each cell's row before and after
(:class:`Change`), undone only by the object that made it and only if no other writer changed those
cells since (:class:`HistoryMixin`)."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field

from ...errors import InputError
from .manifest import _describe, _now, _plain, _record, _same_state


@dataclass
class Change:
    """One change of the set, as undo and redo need it: each cell's row before and after (None: absent)."""

    kind: str
    keys: list[tuple]
    before: list[dict | None]
    after: list[dict | None]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


class HistoryMixin:
    """Undo and redo of a :class:`~.store.CuratedSet`'s own changes, and ``history.jsonl``, the record of every
    change."""

    def _log(self, change: Change, annotator: str, extra: dict | None = None) -> None:
        rec = {"op": change.kind, "id": change.id, "at": _now(), "annotator": annotator,
               "cells": [list(k) for k in change.keys], "before": change.before, "after": change.after,
               **(extra or {})}
        with open(self.root / "history.jsonl", "a") as fh:
            fh.write(json.dumps(rec, default=_plain) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _push(self, change: Change) -> None:
        self._undo.append(change)
        self._redo.clear()

    def _step(self, change: Change, forward: bool) -> None:
        want_now, target = (change.before, change.after) if forward else (change.after, change.before)
        with self._lock():
            self._refresh()
            index = self._key_positions()
            have = {k: _record(self.manifest, index[k]) for k in change.keys if k in index}
            moved = [k for k, w in zip(change.keys, want_now) if not _same_state(have.get(k), w)]
            if moved:
                raise InputError(f"{len(moved)} of the cells this would change were changed since by another "
                                 f"writer (e.g. {_describe(moved[0])}); nothing was changed")
            self._apply(change.keys, target)
            self._log(Change("redo" if forward else "undo", change.keys, want_now, target, id=change.id), "")

    def undo(self) -> str | None:
        """Undo this object's last change; returns its kind (``add``, ``relabel``, ``remove``) or None."""
        if not self._undo:
            return None
        change = self._undo[-1]
        self._step(change, forward=False)
        self._redo.append(self._undo.pop())
        return change.kind

    def redo(self) -> str | None:
        """Redo the last undone change; returns its kind or None."""
        if not self._redo:
            return None
        change = self._redo[-1]
        self._step(change, forward=True)
        self._undo.append(self._redo.pop())
        return change.kind

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)
