"""A result folder, written whole or not at all, by one writer at a time (:class:`ResultFolder`).

A result folder is complete when its ``run.json`` is there and the files it lists have the hashes it
records (:func:`result_complete`). While a job writes into a folder it holds the folder's lock, so a
second job into the same folder is refused instead of mixing the two; a commit that was interrupted
(a killed job) is undone by the next one (:func:`recover_result_folder`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from ..errors import WRITE_ERRNOS, InputError, write_error
from ..files.atomic import _fsync_dir, atomic_write, check_writable_dir
from ..files.fingerprint import file_sha256
from ..files.inside import OutsideFolder, path_inside, read_text_inside, sha256_inside
from ..files.jsonfile import loads_json
from ..files.locking import FileLock

RESULT_FILES = ("cells.csv", "tracks.csv", "summary.png")


RUN_FILE = "run.json"


LOCK_FILE = ".yeast-phenotypes.lock"


WRITING_MARK = ".yeast-phenotypes.writing"


PREVIOUS = ".previous"  # inside a staging folder: the earlier result, while a commit replaces it


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_run(out: str | os.PathLike, run_file: str = RUN_FILE) -> dict:
    """``run.json`` of the folder ``out``: a regular file in it (never through a link), a JSON object.

    Raises
    ------
    FileNotFoundError
        When there is none.
    ValueError
        When it is not a JSON object (an :class:`~napari_yeast_phenotypes.core.errors.InputError` when it is a
        link, a device or a folder).
    """
    run = loads_json(read_text_inside(out, run_file))
    if not isinstance(run, dict):
        raise ValueError(f"{Path(out) / run_file} is not a JSON object")
    return run


def result_complete(out: str | os.PathLike, run_file: str = RUN_FILE) -> bool:
    """Whether ``out`` holds a complete result: ``run.json`` and every file it lists, unchanged.

    Only regular files of ``out`` itself count, never through a symbolic link, and a file whose size
    is not the recorded one is not hashed: a ``run.json`` naming ``/dev/zero``, ``../x`` or a link
    says "not complete" at once, without reading anything outside the folder.
    """
    out = Path(out)
    try:
        outputs = read_run(out, run_file)["outputs"]
        if not isinstance(outputs, dict) or not outputs:
            return False
        for name, meta in outputs.items():
            if not _plain_name(name) or not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
                return False
            size = meta.get("bytes")
            size = size if isinstance(size, int) and not isinstance(size, bool) else None
            if sha256_inside(out, name, size) != meta["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _existing_results(out: Path, files=RESULT_FILES, run_file: str = RUN_FILE) -> list[str]:
    """Result files already in ``out`` that a new run must not replace silently."""
    if (out / WRITING_MARK).exists():
        return []  # an interrupted write: nothing complete to protect, the new run replaces it
    return [n for n in (*files, run_file) if (out / n).exists()]


def _plain_name(name) -> bool:
    return isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..")


def _read_mark(out: Path) -> dict:
    """The mark of an interrupted commit; names that are not plain file names in ``out`` are dropped."""
    try:
        mark = loads_json(read_text_inside(out, WRITING_MARK))
    except (OSError, ValueError):
        return {}
    if not isinstance(mark, dict):
        return {}
    if not (_plain_name(mark.get("staging")) and str(mark["staging"]).startswith(".staging-")):
        mark.pop("staging", None)
    if not (isinstance(mark.get("files"), list) and all(_plain_name(n) for n in mark["files"])
            and _plain_name(mark.get("run_file"))):
        mark.pop("files", None)
    return mark


def recover_result_folder(out: str | os.PathLike, files=RESULT_FILES, run_file: str = RUN_FILE) -> str | None:
    """Undo a commit that was interrupted (a killed or failed job); call it holding the folder's lock.

    A commit first moves the earlier results aside (``run.json`` first, so the folder stops looking
    complete at once), then moves the new files in, then writes ``run.json``; the mark file says
    which phase it was in. Interrupted before ``run.json``, the new files go and the earlier results
    come back, whole, as they were. Returns what was done (``None`` when there was nothing to do).
    Staging folders of dead jobs are removed.
    """
    out = Path(out)
    done = None
    if (out / WRITING_MARK).exists():
        mark = _read_mark(out)
        if "files" in mark:
            files, run_file = mark["files"], mark["run_file"]  # the interrupted job's own
        names = [*files, run_file]
        previous = None
        if mark.get("staging"):
            try:  # a staging folder that is a link would bring files from elsewhere into the folder
                previous = path_inside(out, f"{mark['staging']}/{PREVIOUS}")
            except OutsideFolder:
                previous = None
        if mark.get("phase") == "in" and result_complete(out, run_file):
            done = "finished"  # killed after run.json: the new result is whole
        else:
            if mark.get("phase") != "aside":
                # moving new files in (or a mark of unknown form): what is in place is not a whole result
                for name in names:
                    try:
                        os.unlink(out / name)
                    except FileNotFoundError:
                        pass
            restored = []
            if previous is not None and previous.is_dir():
                for p in sorted(previous.iterdir(), key=lambda p: p.name == run_file):  # run.json last
                    os.replace(p, out / p.name)
                    restored.append(p.name)
            done = "restored" if restored else "removed"
        _fsync_dir(out)
        os.unlink(out / WRITING_MARK)
    for stale in out.glob(".staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return done


class ResultFolder:
    """Exclusive, all-or-nothing writing of one result folder (a ``with`` block).

    On entry: the folder is created and checked writable, its lock taken (a second writer is
    refused at once), a commit that an earlier job left unfinished undone
    (:func:`recover_result_folder`), and earlier complete results refused unless ``overwrite``.
    :meth:`commit` moves the files written into :attr:`staging` into place, ``run.json`` last; a
    job that fails or is killed before that leaves the earlier results as they were (killed during
    the moves: a folder without ``run.json``, which the next job restores).

    ``files`` and ``run_file`` name a job's outputs and its record (``simulate`` writes a movie).
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False, what: str = "classify",
                 files=RESULT_FILES, run_file: str = RUN_FILE):
        self.out, self.overwrite, self.what = Path(out), overwrite, what
        self.files, self.run_file = tuple(files), run_file
        self._lock: FileLock | None = None
        self.staging: Path | None = None
        self._created = self._committed = False

    def __enter__(self) -> ResultFolder:
        self._created = not self.out.exists()
        check_writable_dir(self.out)
        self._lock = FileLock(self.out / LOCK_FILE, timeout=0, what=f"yeast-phenotypes {self.what}").acquire()
        try:
            recover_result_folder(self.out, self.files, self.run_file)
            existing = _existing_results(self.out, self.files, self.run_file)
            if existing and not self.overwrite:
                raise InputError(
                    f"{self.out} already holds results ({', '.join(existing)}); choose another --out, or "
                    "pass --overwrite to replace them"
                )
            self.staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.out))
        except OSError as exc:
            self._lock.release()
            raise write_error(self.out, exc) from exc
        except BaseException:
            self._lock.release()
            raise
        return self

    def _mark(self, phase: str) -> None:
        with atomic_write(self.out / WRITING_MARK) as fh:
            json.dump({"staging": self.staging.name, "phase": phase, "files": list(self.files),
                       "run_file": self.run_file, "pid": os.getpid(), "since": _now()}, fh)

    def commit(self, run: dict) -> None:
        """Move the staged files into place (``run.json`` last, listing their hashes)."""
        staged = sorted(p.name for p in self.staging.iterdir() if not p.name.startswith("."))
        try:
            run = {**run, "outputs": {n: {"bytes": (self.staging / n).stat().st_size,
                                          "sha256": file_sha256(self.staging / n)} for n in staged}}
            previous = self.staging / PREVIOUS
            previous.mkdir()
            self._mark("aside")
            # the earlier result leaves first, its run.json before the rest: the folder never holds
            # new files beside old ones, nor a run.json that does not describe the files beside it
            for name in (self.run_file, *self.files):
                if (self.out / name).exists():
                    os.replace(self.out / name, previous / name)
            self._mark("in")
            for name in staged:
                os.replace(self.staging / name, self.out / name)
            with atomic_write(self.out / self.run_file) as fh:
                json.dump(run, fh, indent=2, default=str)
            _fsync_dir(self.out)
            os.unlink(self.out / WRITING_MARK)
        except BaseException as exc:
            if (self.out / WRITING_MARK).exists():
                recover_result_folder(self.out, self.files, self.run_file)  # the earlier result comes back
            if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
                raise write_error(self.out, exc) from exc
            raise
        self._committed = True

    def __exit__(self, *exc) -> None:
        try:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self._lock.release()
        # a folder this job made and filled with nothing goes again
        if self._created and not self._committed and not [p for p in self.out.iterdir() if p.name != LOCK_FILE]:
            shutil.rmtree(self.out, ignore_errors=True)


__all__ = ["ResultFolder", "read_run", "recover_result_folder", "result_complete"]
