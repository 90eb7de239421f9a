"""Undo, redo and ``history.jsonl``: every change of a curated set as each cell's row before and after
(:class:`Change`), undone only by the object that made it and only if no other writer changed those
cells since (:class:`HistoryMixin`)."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field

from ...errors import WRITE_ERRNOS, InputError, write_error
from ...files.inside import append_inside, open_inside, truncate_inside
from .manifest import _describe, _now, _plain, _record, _same_state

HISTORY_FILE = "history.jsonl"


def _ends_cut(root) -> bool:
    """Whether ``history.jsonl`` ends inside a line (a process killed while appending to it)."""
    try:
        with open_inside(root, HISTORY_FILE, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except (OSError, InputError):
        return False  # absent; or a link, which the append then refuses


def read_history(root) -> tuple[list[dict], int]:
    """The records of a curated set's ``history.jsonl``, oldest first, and how many lines could not be read.

    A line cut short (a process killed, or a disk full, while it was appended; older versions left
    such lines) is skipped and counted, never an error: the records before and after it are whole.
    """
    records, skipped = [], 0
    try:
        with open_inside(root, HISTORY_FILE, "rb") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except (ValueError, RecursionError):
                    skipped += 1
                    continue
                if isinstance(rec, dict):
                    records.append(rec)
                else:
                    skipped += 1
    except FileNotFoundError:
        pass
    return records, skipped


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

    def _log(self, change: Change, annotator: str, extra: dict | None = None) -> int:
        """Append the change's record to ``history.jsonl`` (never through a link); returns the file's size
        before, so that :meth:`_unlog` can take the record back if the change itself then fails.

        A failed append (a full disk) leaves no part of a line: the file is cut back to its size before
        (truncating needs no free space). A line that a killed process left cut short is ended first, so
        the new record starts on a line of its own.
        """
        rec = {"op": change.kind, "id": change.id, "at": _now(), "annotator": annotator,
               "cells": [list(k) for k in change.keys], "before": change.before, "after": change.after,
               **(extra or {})}
        line = (json.dumps(rec, default=_plain) + "\n").encode()
        path = self.root / HISTORY_FILE
        if _ends_cut(self.root):
            line = b"\n" + line
        try:
            return append_inside(self.root, HISTORY_FILE, line)
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:
                raise InputError(f"{write_error(path, exc)}; nothing was changed") from exc
            raise

    def _unlog(self, size: int) -> None:
        """Take back the record :meth:`_log` appended (the change it records did not happen)."""
        truncate_inside(self.root, HISTORY_FILE, size)

    def history(self) -> list[dict]:
        """The records of ``history.jsonl``, oldest first (see :func:`read_history`)."""
        return read_history(self.root)[0]

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
            self._apply(change.keys, target,
                        log=(Change("redo" if forward else "undo", change.keys, want_now, target, id=change.id), ""))

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
