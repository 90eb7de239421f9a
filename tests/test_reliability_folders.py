"""Result folders and simulated movies appear whole or not at all (issue 12, items 5 and 6).

Real processes are killed (SIGKILL) at the exact moment between two file operations of a commit,
every such moment in turn, and two real processes write into one folder at once.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.files.locking import LockHeld
from napari_yeast_phenotypes.core.results.folder import (
    LOCK_FILE,
    RESULT_FILES,
    RUN_FILE,
    WRITING_MARK,
    ResultFolder,
    result_complete,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}

# kills itself (SIGKILL) right after the k-th os.replace of the commit (k = 0: never), so each
# moment between two moves of a commit can be hit exactly
KILL_AFTER = textwrap.dedent('''
    import os, signal, sys
    real_replace = os.replace
    moves = [0]
    def replace_then_maybe_die(src, dst, *a, **kw):
        real_replace(src, dst, *a, **kw)
        moves[0] += 1
        if moves[0] == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
''')

FOLDER_WRITER = KILL_AFTER + textwrap.dedent('''
    from napari_yeast_phenotypes.core.results.folder import ResultFolder
    out, KILL_AT, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with ResultFolder(out, overwrite=True) as folder:
        for name in ("cells.csv", "tracks.csv", "summary.png"):
            (folder.staging / name).write_text(f"{tag} {name}\\n")
        os.replace = replace_then_maybe_die  # counting starts with the commit
        folder.commit({"job": "test", "tag": tag})
    print("moves", moves[0])
''')


def run_script(tmp_path: Path, code: str, *args, **kw) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300, **kw)


def tags(out: Path) -> dict[str, str]:
    """Which run wrote each result file present in ``out`` (the first word of the file)."""
    return {n: (out / n).read_text().split()[0] for n in RESULT_FILES if (out / n).exists()}


def write_folder(out: Path, tag: str) -> None:
    with ResultFolder(out, overwrite=True) as folder:
        for name in RESULT_FILES:
            (folder.staging / name).write_text(f"{tag} {name}\n")
        folder.commit({"job": "test", "tag": tag})


@pytest.mark.slow
def test_commit_killed_between_any_two_moves_never_mixes_runs(tmp_path):
    out = tmp_path / "res"
    write_folder(out, "old")
    old = {n: (out / n).read_bytes() for n in (*RESULT_FILES, RUN_FILE)}
    write_folder(tmp_path / "count", "old")  # a dry run over an earlier result counts the moves
    done = run_script(tmp_path, FOLDER_WRITER, tmp_path / "count", 0, "count")
    assert done.returncode == 0, done.stderr
    n_moves = int(done.stdout.split()[-1])
    assert n_moves >= 2 * len(RESULT_FILES) + 2  # old aside, new in, run.json and the marks
    outcomes = set()
    for k in range(1, n_moves + 1):
        proc = run_script(tmp_path, FOLDER_WRITER, out, k, "new")
        assert proc.returncode == -signal.SIGKILL, (k, proc.stderr)
        # right after the kill: never files of two runs side by side, and a run.json only over a whole result
        assert len(set(tags(out).values())) <= 1, (k, tags(out))
        if (out / RUN_FILE).exists():
            assert result_complete(out), k
            assert set(tags(out).values()) == {json.loads((out / RUN_FILE).read_text())["tag"]}
        else:
            assert not result_complete(out)
        # the next job undoes what was left half-done: one whole result, old or new, never a mix
        with pytest.raises(InputError, match="already holds results"):
            ResultFolder(out, overwrite=False).__enter__()
        assert result_complete(out) and not (out / WRITING_MARK).exists(), k
        assert not list(out.glob(".staging-*"))
        kept = set(tags(out).values())
        assert len(kept) == 1 and len(tags(out)) == len(RESULT_FILES), (k, tags(out))
        outcomes |= kept
        if kept == {"old"}:
            assert {n: (out / n).read_bytes() for n in old} == old  # the earlier result, byte for byte
        else:
            write_folder(out, "old")  # back to the start for the next moment
            old = {n: (out / n).read_bytes() for n in (*RESULT_FILES, RUN_FILE)}
    assert outcomes == {"old", "new"}  # killed before run.json: the old result; after: the new one


def test_a_failed_commit_puts_the_earlier_result_back(tmp_path, monkeypatch):
    """A disk that fills up while the new files move in: a plain message, the earlier result as it was."""
    out = tmp_path / "res"
    write_folder(out, "old")
    before = {n: (out / n).read_bytes() for n in (*RESULT_FILES, RUN_FILE)}
    real_replace = os.replace

    def replace(src, dst, *a, **kw):
        if Path(dst).parent == out and Path(src).parent.name.startswith(".staging-") and Path(dst).name == "tracks.csv":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(InputError, match="No space left on device.*free some space"):
        write_folder(out, "new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert {n: (out / n).read_bytes() for n in before} == before
    assert not (out / WRITING_MARK).exists() and not list(out.glob(".staging-*"))


def test_an_old_style_interruption_mark_is_cleared(tmp_path):
    """A mark left by the first version (text, no phase): what is there is not whole and is replaced."""
    out = tmp_path / "res"
    write_folder(out, "old")
    os.unlink(out / RUN_FILE)
    (out / WRITING_MARK).write_text("2025-01-01T00:00:00+00:00\n")
    write_folder(out, "new")  # no --overwrite needed: nothing complete was there
    assert result_complete(out) and set(tags(out).values()) == {"new"}


def test_a_mark_cannot_name_files_outside_the_folder(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (out / WRITING_MARK).write_text(json.dumps({"phase": "in", "staging": "../", "files": ["../precious.txt"],
                                                "run_file": "../precious.txt"}))
    write_folder(out, "new")
    assert victim.read_text() == "keep me"


# ------------------------------------------------------------------------------ two processes at once

HOLDER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from napari_yeast_phenotypes.core.results.folder import ResultFolder
    from napari_yeast_phenotypes.core.data.movies import InputError
    out, start, tag = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    Path(f"{start}.{tag}").write_text("ready")  # imported: waiting for the start
    while not start.exists():
        time.sleep(0.01)
    try:
        with ResultFolder(out, overwrite=True) as folder:
            for name in ("cells.csv", "tracks.csv", "summary.png"):
                (folder.staging / name).write_text(f"{tag} {name}\\n")
            time.sleep(3)  # the long work, while the other process tries
            folder.commit({"job": "test", "tag": tag})
    except InputError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
''')


@pytest.mark.slow
def test_two_processes_started_together_one_is_refused(tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    out, start = tmp_path / "res", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(script), str(out), str(start), tag], env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for tag in ("a", "b")]
    deadline = time.monotonic() + 120  # both imported and waiting, however busy the machine
    while not all(Path(f"{start}.{tag}").exists() for tag in ("a", "b")) and time.monotonic() < deadline:
        time.sleep(0.05)
    start.write_text("go")
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "in use" in refused and "yeast-phenotypes classify" in refused
    assert result_complete(out)
    winner = json.loads((out / RUN_FILE).read_text())["tag"]
    assert set(tags(out).values()) == {winner}


CLASSIFY_HOLDING = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from napari_yeast_phenotypes import cli
    from napari_yeast_phenotypes.core.jobs import classify as jobs
    holding, go = Path(sys.argv[1]), Path(sys.argv[2])
    real = jobs._write_into
    def write_when_allowed(folder, *a, **kw):
        holding.write_text("x")  # the lock is held and the movie classified; the results wait for "go"
        while not go.exists():
            time.sleep(0.02)
        return real(folder, *a, **kw)
    jobs._write_into = write_when_allowed
    sys.exit(cli.main(sys.argv[3:]))
''')


@pytest.fixture(scope="module")
def tiny_movie(tmp_path_factory):
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie

    d = tmp_path_factory.mktemp("tiny")
    m = simulate_movie(n_frames=4, size=64, n_cells=3, seed=5, births=False)
    tifffile.imwrite(d / "image.tif", m.image)
    tifffile.imwrite(d / "labels.tif", m.labels)
    return d


def classify_args(movie: Path, model: Path, out: Path, *extra) -> list[str]:
    return ["classify", "--image", str(movie / "image.tif"), "--labels", str(movie / "labels.tif"),
            "--model", str(model), "--out", str(out), "--device", "cpu", *extra]


@pytest.mark.slow
def test_two_classify_processes_into_one_folder(tmp_path, tiny_movie, random_checkpoint):
    """Process A holds --out (classified, about to write); process B, the plain command, is refused at
    once with who holds it; A then finishes whole."""
    script = tmp_path / "a.py"
    script.write_text(CLASSIFY_HOLDING)
    out, holding, go = tmp_path / "res", tmp_path / "holding", tmp_path / "go"
    a = subprocess.Popen([sys.executable, str(script), str(holding), str(go),
                          *classify_args(tiny_movie, random_checkpoint, out)],
                         env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not holding.exists():
            assert a.poll() is None, a.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        b = subprocess.run([sys.executable, "-m", "napari_yeast_phenotypes.cli",
                            *classify_args(tiny_movie, random_checkpoint, out, "--overwrite")],
                           env=ENV, capture_output=True, text=True, timeout=240)
        assert b.returncode == 2, b.stderr
        err = b.stderr.strip().splitlines()
        assert len(err) == 1 and "in use" in err[0] and f"process {a.pid}" in err[0], b.stderr
        assert not result_complete(out) and not (out / "cells.csv").exists()
        go.write_text("go")
        assert a.wait(timeout=240) == 0, a.stderr.read()
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    assert result_complete(out)


CLASSIFY_KILLED = KILL_AFTER + textwrap.dedent('''
    from pathlib import Path
    from napari_yeast_phenotypes import cli
    KILL_AT = -1
    def kill_after_cells(src, dst, *a, **kw):
        real_replace(src, dst, *a, **kw)
        moved_in = Path(src).parent.name.startswith(".staging-") and not Path(dst).parent.name.startswith(".staging-")
        if Path(dst).name == "cells.csv" and moved_in:
            os.kill(os.getpid(), signal.SIGKILL)  # the new cells.csv is in place, tracks.csv is not yet
    os.replace = kill_after_cells
    sys.exit(cli.main(sys.argv[1:]))
''')


@pytest.mark.slow
def test_classify_killed_between_cells_and_tracks_with_overwrite(tmp_path, tiny_movie, random_checkpoint):
    from napari_yeast_phenotypes.cli import main

    out = tmp_path / "res"
    assert main(classify_args(tiny_movie, random_checkpoint, out)) == 0
    old = {n: (out / n).read_bytes() for n in (*RESULT_FILES, RUN_FILE)}
    other = tmp_path / "other.pt"  # another model: its cells.csv differs from the old one
    import torch

    state = torch.load(random_checkpoint, weights_only=True)
    state["model_state"]["fc.bias"] = state["model_state"]["fc.bias"] + torch.arange(8.0)
    torch.save(state, other)
    proc = run_script(tmp_path, CLASSIFY_KILLED, *classify_args(tiny_movie, other, out, "--overwrite"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # the new cells.csv is there, and none of the old run's files beside it; nothing looks complete
    assert (out / "cells.csv").read_bytes() != old["cells.csv"]
    assert not (out / "tracks.csv").exists() and not (out / "summary.png").exists()
    assert not (out / RUN_FILE).exists() and not result_complete(out)
    # the next run finds the earlier result back in place, whole, and protects it
    assert main(classify_args(tiny_movie, random_checkpoint, out)) == 2
    assert {n: (out / n).read_bytes() for n in old} == old and result_complete(out)
    assert main(classify_args(tiny_movie, other, out, "--overwrite")) == 0
    assert result_complete(out) and (out / "cells.csv").read_bytes() != old["cells.csv"]


@pytest.mark.slow
def test_a_classify_failing_after_cells_csv_leaves_nothing_half_done(tmp_path, tiny_movie, random_checkpoint,
                                                                     monkeypatch):
    from napari_yeast_phenotypes.cli import main
    from napari_yeast_phenotypes.core.results import plots

    def broken_summary(*a, **kw):
        raise InputError("summary failed")  # cells.csv and tracks.csv are already written

    monkeypatch.setattr(plots, "save_summary", broken_summary)
    out = tmp_path / "res"
    assert main(classify_args(tiny_movie, random_checkpoint, out)) == 2
    assert not out.exists()  # a folder the run made and did not fill goes again
    monkeypatch.undo()
    assert main(classify_args(tiny_movie, random_checkpoint, out)) == 0  # not refused as "already holds results"
    assert result_complete(out)


# ------------------------------------------------------------------------------ simulate (item 6)

SIMULATE_KILLED = KILL_AFTER + textwrap.dedent('''
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie, write_movie
    out, KILL_AT, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    movie = simulate_movie(n_frames=2, size=64, n_cells=2, seed=seed, births=False)
    os.replace = replace_then_maybe_die
    write_movie(movie, out)
    print("moves", moves[0])
''')


@pytest.mark.slow
def test_simulate_killed_between_files_leaves_a_whole_movie(tmp_path):
    from napari_yeast_phenotypes.core.data.simulate import MOVIE_FILES, MOVIE_RUN_FILE, simulate_movie, write_movie

    out = tmp_path / "movie"
    movies = {seed: simulate_movie(n_frames=2, size=64, n_cells=2, seed=seed, births=False) for seed in (1, 2)}
    write_movie(movies[1], out)
    write_movie(movies[1], tmp_path / "count")  # a dry run over an earlier movie counts the moves
    count = run_script(tmp_path, SIMULATE_KILLED, tmp_path / "count", 0, 2)
    n_moves = int(count.stdout.split()[-1])
    for k in range(1, n_moves + 1):
        proc = run_script(tmp_path, SIMULATE_KILLED, out, k, 2)
        assert proc.returncode == -signal.SIGKILL, (k, proc.stderr)
        if (out / "image.tif").exists():  # never a cut TIFF that reads as shape (0,)
            assert tifffile.imread(out / "image.tif").shape == (2, 64, 64)
        if (out / "image.tif").exists() and (out / "labels.tif").exists():
            img, lab = tifffile.imread(out / "image.tif"), tifffile.imread(out / "labels.tif")
            assert any(np.array_equal(img, m.image) and np.array_equal(lab, m.labels) for m in movies.values()), k
        # the next writer (here the same library call) finds one whole movie
        with ResultFolder(out, overwrite=True, what="simulate", files=MOVIE_FILES, run_file=MOVIE_RUN_FILE):
            pass
        assert result_complete(out, MOVIE_RUN_FILE), k
        img, lab = tifffile.imread(out / "image.tif"), tifffile.imread(out / "labels.tif")
        assert any(np.array_equal(img, m.image) and np.array_equal(lab, m.labels) for m in movies.values()), k
        write_movie(movies[1], out)


def test_simulate_checks_its_destination_before_simulating(tmp_path, capsys):
    from napari_yeast_phenotypes.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["simulate", "--out", str(blocker / "movie"), "--frames", "1", "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err or "is not a folder" in err
    out = tmp_path / "movie"
    assert main(["simulate", "--out", str(out), "--frames", "2", "--size", "64", "--cells", "2"]) == 0
    before = (out / "image.tif").read_bytes()
    assert main(["simulate", "--out", str(out), "--frames", "2", "--size", "64", "--seed", "4"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "image.tif").read_bytes() == before
    with ResultFolder(out, what="simulate", files=("image.tif",), run_file="simulation.json", overwrite=True):
        # a simulate while another writer holds the folder is refused, not mixed
        assert main(["simulate", "--out", str(out), "--frames", "2", "--size", "64", "--overwrite"]) == 2
    assert "in use" in capsys.readouterr().err
    assert (out / LOCK_FILE).exists() and (out / "image.tif").read_bytes() == before


def test_lock_refusal_names_the_holder(tmp_path):
    out = tmp_path / "res"
    with ResultFolder(out), pytest.raises(LockHeld, match=f"process {os.getpid()}"):
        ResultFolder(out).__enter__()
