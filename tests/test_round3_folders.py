"""Round three, class 5: nothing is read, written, moved or hashed outside the folders a user names, and
never through a symbolic link (issue 21).

Every case keeps a folder outside the named one and checks, byte for byte, that it is as it was.
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_yeast_phenotypes.core.data.curated import CuratedSet
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.files.inside import (
    OutsideFolder,
    append_inside,
    open_inside,
    path_inside,
    tree_inside,
)
from napari_yeast_phenotypes.core.results.folder import (
    RUN_FILE,
    WRITING_MARK,
    recover_result_folder,
    result_complete,
)
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (links not followed) and its bytes."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() and not p.is_symlink() else "link")
            for p in sorted(folder.rglob("*"))}


@contextmanager
def no_hang(seconds: int = 20):
    """Fail (instead of hanging the suite) when the block reads an endless file."""
    def alarm(*_):
        raise TimeoutError("hung")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ the one helper

PARTS = st.sampled_from(["a", "b", "..", ".", "", "/", "c.txt", "link", "..a", "a..", "\\..", "x/../.."])


@FAST
@given(st.lists(PARTS, min_size=1, max_size=5), st.booleans())
def test_names_lead_inside_their_folder_or_are_refused(tmp_path, parts, absolute):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True, exist_ok=True)
    if not (root / "link").is_symlink():
        (root / "link").symlink_to(tmp_path)
    name = ("/" if absolute else "") + "/".join(parts)
    try:
        got = path_inside(root, name)
    except OutsideFolder:
        return
    # what is accepted is under the root, reached without a link
    rel = got.relative_to(root)
    assert ".." not in rel.parts
    steps = [root.joinpath(*rel.parts[:i + 1]) for i in range(len(rel.parts))]
    assert not any(p.is_symlink() for p in steps)
    assert os.path.realpath(got).startswith(os.path.realpath(root) + os.sep) or got == root


def test_open_inside_reads_only_regular_files(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_text("x")
    (tmp_path / "outside").write_text("secret")
    (root / "link").symlink_to(tmp_path / "outside")
    os.mkfifo(root / "fifo")
    assert open_inside(root, "f", "r").read() == "x"
    for name in ("link", "fifo", "/etc/passwd", "../outside", "."):
        with no_hang(5), pytest.raises(OutsideFolder):
            open_inside(root, name)
    with pytest.raises(OutsideFolder):
        append_inside(root, "link", b"more")
    assert (tmp_path / "outside").read_text() == "secret"
    files, links = tree_inside(root, 0)
    assert files == ["f"] and sorted(p.name for p in links) == ["link"]


# ------------------------------------------------------------------ curated sets

def filled_set(root: Path) -> CuratedSet:
    cs = CuratedSet(root)
    rows = pd.DataFrame({"frame": [0, 0, 1, 1], "label": [1, 2, 1, 2], "track_id": [1, 2, 1, 2],
                         "phenotype": ["Nuclear", "Aggregate"] * 2, "split": "train", "experiment": "e",
                         "source": "m.tif", "movie_id": "m1"})
    cs.add(np.random.default_rng(0).random((4, 1, 40, 40)).astype(np.float32), rows)
    cs.add(np.random.default_rng(1).random((2, 1, 40, 40)).astype(np.float32),
           rows.iloc[:2].assign(split="val", movie_id="m2", track_id=[5, 6]))
    return cs


def outside_crops(folder: Path) -> Path:
    """Another lab's crops: an ImageFolder that must stay as it is."""
    for c in CLASS_NAMES[:2]:
        (folder / c).mkdir(parents=True)
        for i in range(3):
            tifffile.imwrite(folder / c / f"theirs{i}.tif", np.full((40, 40), i, np.float32))
    (folder / "history.jsonl").write_text("their history\n")
    (folder / "notes.txt").write_text("keep me")
    return folder


def _link(root: Path, outside: Path, what: str) -> None:
    if what == "split folder":
        (root / "test").symlink_to(outside, target_is_directory=True)
    elif what == "class folder":
        (root / "train" / "Triple").symlink_to(outside / "Nuclear", target_is_directory=True)
    elif what == "crop file":
        (root / "train" / "Nuclear" / "theirs.tif").symlink_to(outside / "Nuclear" / "theirs0.tif")
    elif what in ("history.jsonl", "settings.json", "manifest.csv"):
        real = (root / what).read_bytes()
        (outside / f"copy-{what}").write_bytes(real)
        (root / what).unlink()
        (root / what).symlink_to(outside / f"copy-{what}")
    elif what in (".removed", ".orphans"):
        (root / what).symlink_to(outside, target_is_directory=True)
    elif what == ".curated.lock":
        (root / what).unlink()
        (root / what).symlink_to(outside / "notes.txt")


LINKS = ["split folder", "class folder", "crop file", "history.jsonl", "settings.json", "manifest.csv", ".removed",
         ".orphans", ".curated.lock"]


@pytest.mark.parametrize("what", LINKS)
def test_a_link_inside_a_curated_set_is_refused_and_nothing_outside_moves(tmp_path, what):
    from napari_yeast_phenotypes.core.jobs.training import load_crop_folder

    root = tmp_path / "set"
    filled_set(root)
    outside = outside_crops(tmp_path / "theirs")
    _link(root, outside, what)
    before = snapshot(outside)
    with pytest.raises(InputError, match="symbolic link"):
        CuratedSet(root)
    if what != ".curated.lock":  # the lock is only a writer's
        with pytest.raises(InputError, match="symbolic link"):
            load_crop_folder(root / "train", CLASS_NAMES)
    assert snapshot(outside) == before
    if not (root / ".orphans").is_symlink():
        assert not list((root / ".orphans").rglob("theirs*"))  # their crops were not set aside as orphans


def test_a_history_made_a_link_after_opening_is_not_appended_to(tmp_path):
    root = tmp_path / "set"
    cs = filled_set(root)
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text("not yours\n")
    manifest = (root / "manifest.csv").read_bytes()
    (root / "history.jsonl").unlink()
    (root / "history.jsonl").symlink_to(outside)
    with pytest.raises(InputError, match="symbolic link"):
        cs.relabel(cs.manifest["crop_id"].iloc[0], "Triple")
    assert outside.read_text() == "not yours\n"
    assert (root / "manifest.csv").read_bytes() == manifest  # the change and its record agree: neither


def test_the_curate_command_refuses_a_linked_set(tmp_path, small_movie):
    from napari_yeast_phenotypes.cli import main
    from napari_yeast_phenotypes.core.data.simulate import write_movie

    files = write_movie(small_movie, tmp_path / "movie")
    small_movie.truth.iloc[:4].to_csv(tmp_path / "ann.csv", index=False)
    root = tmp_path / "set"
    filled_set(root)
    outside = outside_crops(tmp_path / "theirs")
    _link(root, outside, "split folder")
    before = snapshot(outside)
    code = main(["curate", "--image", str(files["image"]), "--labels", str(files["labels"]), "--annotations",
                 str(tmp_path / "ann.csv"), "--out", str(root)])
    assert code == 2 and snapshot(outside) == before


# ------------------------------------------------------------------ result folders

def a_result(out: Path) -> dict:
    from napari_yeast_phenotypes.core.results.folder import ResultFolder

    with ResultFolder(out, overwrite=True) as folder:
        for name in ("cells.csv", "tracks.csv", "summary.png"):
            (folder.staging / name).write_text(f"{name}\n")
        folder.commit({"job": "test"})
    return json.loads((out / RUN_FILE).read_text())


@pytest.mark.parametrize("name", ["/dev/zero", "../secret.txt", "/etc/passwd", "fifo", "link", "", ".", "a/../b"])
def test_outputs_that_name_other_files_are_never_read(tmp_path, name):
    out = tmp_path / "res"
    run = a_result(out)
    secret = tmp_path / "secret.txt"
    secret.write_text("cells.csv\n")
    os.mkfifo(out / "fifo")
    (out / "link").symlink_to(secret)
    from napari_yeast_phenotypes.core.files.fingerprint import file_sha256

    run["outputs"][name] = {"bytes": secret.stat().st_size, "sha256": file_sha256(secret)}
    (out / RUN_FILE).write_text(json.dumps(run))
    with no_hang():
        assert result_complete(out) is False


def test_fit_track_model_on_a_result_naming_dev_zero_does_not_hang(tmp_path):
    from napari_yeast_phenotypes.core.jobs.track_fit import fit_track_model_job

    out = tmp_path / "res"
    run = a_result(out)
    run["outputs"]["cells.csv"] = {"bytes": 10**12, "sha256": "0" * 64}
    run["outputs"]["/dev/zero"] = {"sha256": "0" * 64}
    (out / RUN_FILE).write_text(json.dumps(run))
    with no_hang(), pytest.raises(InputError, match="not a complete result folder"):
        fit_track_model_job(out, em=True)
    (out / RUN_FILE).unlink()
    (tmp_path / "elsewhere.json").write_text(json.dumps(run))
    (out / RUN_FILE).symlink_to(tmp_path / "elsewhere.json")
    with no_hang(), pytest.raises(InputError, match="symbolic link"):
        fit_track_model_job(out, em=True)


def test_an_interrupted_commit_whose_staging_is_a_link_moves_nothing_in(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    theirs = tmp_path / "theirs"
    (theirs / ".previous").mkdir(parents=True)
    (theirs / ".previous" / "cells.csv").write_text("their cells")
    (out / ".staging-x").symlink_to(theirs, target_is_directory=True)
    (out / WRITING_MARK).write_text(json.dumps({"phase": "aside", "staging": ".staging-x", "files": ["cells.csv"],
                                                "run_file": "run.json"}))
    recover_result_folder(out)
    assert (theirs / ".previous" / "cells.csv").read_text() == "their cells"
    assert not (out / "cells.csv").exists()


# ------------------------------------------------------------------ an experiment's movies

@pytest.mark.parametrize("linked", ["movie folder", "movies folder"])
def test_a_link_in_movies_sends_no_results_elsewhere(tmp_path, linked):
    from napari_yeast_phenotypes.core.experiment.spec import MovieSpec
    from napari_yeast_phenotypes.core.experiment.state import movie_state
    from napari_yeast_phenotypes.core.experiment.worker import run_movie

    out = tmp_path / "exp"
    elsewhere = tmp_path / "other-experiment"
    a_result(elsewhere / "m1")  # a complete result there: must be neither trusted, replaced nor tidied
    before = snapshot(elsewhere)
    (out / "movies").mkdir(parents=True)
    if linked == "movie folder":
        (out / "movies" / "m1").symlink_to(elsewhere / "m1", target_is_directory=True)
    else:
        (out / "movies").rmdir()
        (out / "movies").symlink_to(elsewhere, target_is_directory=True)
    movie = MovieSpec("m1", tmp_path / "image.tif", tmp_path / "labels.tif")
    assert movie_state(out / "movies" / "m1", {}, "fp", movie) == ("todo", "")
    task = {"movie": "m1", "image": str(movie.image), "labels": str(movie.labels),
            "folder": str(out / "movies" / "m1"), "config": {}, "torch_threads": 1}
    res = run_movie(task)
    assert res["status"] == "failed" and "symbolic link" in res["reason"]
    assert snapshot(elsewhere) == before


# ------------------------------------------------------------------ lock files and records that are not regular files

def _victim(tmp_path) -> Path:
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    return victim


@pytest.mark.parametrize("kind", ["link", "dangling", "fifo", "folder"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused_and_nothing_is_written_through(tmp_path, kind):
    from napari_yeast_phenotypes.core.files.locking import FileLock

    victim = _victim(tmp_path)
    lock = tmp_path / "out" / ".yeast-phenotypes.lock"
    lock.parent.mkdir()
    if kind == "link":
        lock.symlink_to(victim)
    elif kind == "dangling":
        lock.symlink_to(tmp_path / "outside" / "made-by-the-lock")
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    with pytest.raises(InputError, match="lock file .* (symbolic link|not a regular file)"), \
            FileLock(lock, timeout=0, what="test"):
        pass
    assert victim.read_text() == "precious" and sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"]
    # the same lock works again once the user removed what is there
    if kind == "folder":
        lock.rmdir()
    else:
        lock.unlink()
    with FileLock(lock, timeout=0, what="test"):
        assert json.loads(lock.read_text())["what"] == "test"


def test_the_commands_write_no_lock_through_a_link(tmp_path, capsys):
    """simulate (and every result folder: classify, classify-many's movies) into a folder whose lock is a link."""
    from napari_yeast_phenotypes.cli import main

    victim = _victim(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".yeast-phenotypes.lock").symlink_to(victim)
    assert main(["simulate", "--out", str(tmp_path / "out"), "--frames", "2", "--size", "64", "--cells", "2"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious"


def test_a_history_that_is_a_fifo_is_refused_in_one_line(tmp_path):
    victim = tmp_path / "set"
    CuratedSet(victim)
    (victim / "history.jsonl").unlink(missing_ok=True)
    os.mkfifo(victim / "history.jsonl")
    with pytest.raises(InputError, match="not a regular file"):
        append_inside(victim, "history.jsonl", b"{}\n")
