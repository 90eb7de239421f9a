"""An experiment of many movies: the SPEC, a 2-worker local Dask cluster, resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_yeast_phenotypes.cli import main
from napari_yeast_phenotypes.core.config import ClassifyConfig
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.experiment.cluster import plan_local
from napari_yeast_phenotypes.core.experiment.combine import read_combined
from napari_yeast_phenotypes.core.experiment.run import classify_many
from napari_yeast_phenotypes.core.experiment.spec import MovieSpec, read_spec
from napari_yeast_phenotypes.core.experiment.worker import model_loads
from napari_yeast_phenotypes.core.jobs import classify_movie
from napari_yeast_phenotypes.core.results.folder import result_complete

SRC = str(Path(__file__).resolve().parents[1] / "src")
CONFIG = ClassifyConfig(device="cpu", precision="fp32")
N_MOVIES = 4


# ------------------------------------------------------------------------------ fixtures (one cluster per module)

@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Six small simulated movies in two conditions, one corrupt movie, and their SPEC."""
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie, write_movie

    root = tmp_path_factory.mktemp("experiment")
    rows = []
    for i in range(N_MOVIES):
        movie = simulate_movie(n_frames=5, size=64, n_cells=3, seed=10 + i, births=False)
        write_movie(movie, root / "data" / f"pos{i}")
        rows.append({"image": f"data/pos{i}/image.tif", "labels": f"data/pos{i}/labels.tif",
                     "strain": "wt" if i < 2 else "sir2", "condition": "A" if i % 2 else "B", "position": f"0{i}"})
    bad = root / "data" / "broken"
    bad.mkdir()
    (bad / "image.tif").write_bytes(b"not a tiff at all")
    (bad / "labels.tif").write_bytes(b"nor this")
    rows.append({"image": "data/broken/image.tif", "labels": "data/broken/labels.tif", "strain": "wt",
                 "condition": "A", "position": "99"})
    pd.DataFrame(rows).to_csv(root / "spec.csv", index=False)
    return root


@pytest.fixture(scope="module")
def client():
    """A local cluster of 2 worker processes that import this checkout's package."""
    from napari_yeast_phenotypes.core.experiment.cluster import local_cluster

    c = local_cluster(2, 1)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def single_runs(experiment, random_checkpoint):
    """Each good movie classified alone by classify_movie: what the experiment must reproduce."""
    spec = pd.read_csv(experiment / "spec.csv", dtype=str)
    tables = {"cells.csv": [], "tracks.csv": []}
    for row in spec.itertuples():
        if "broken" in row.image:
            continue
        name = Path(row.image).parent.name
        out = experiment / "single" / name
        classify_movie(experiment / row.image, experiment / row.labels, random_checkpoint, CONFIG, out)
        for table in tables:
            df = pd.read_csv(out / table)
            front = pd.DataFrame({"movie": name, "strain": row.strain, "condition": row.condition,
                                  "position": row.position}, index=df.index)
            tables[table].append(pd.concat([front, df], axis=1))
    return {k: pd.concat(v, ignore_index=True) for k, v in tables.items()}


def assert_same_table(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for col in want.columns:
        if pd.api.types.is_float_dtype(want[col]) or col == "senescence_frame":  # NaN/<NA>: not senescent
            g, w = (pd.to_numeric(t[col]).astype(float).to_numpy() for t in (got, want))
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6, err_msg=col)
        else:
            assert got[col].astype(str).tolist() == want[col].astype(str).tolist(), col


# ------------------------------------------------------------------------------ the SPEC

def test_spec_csv_resolves_paths_and_keeps_its_columns(experiment):
    movies = read_spec(experiment / "spec.csv")
    assert [m.movie for m in movies] == [*(f"pos{i}" for i in range(N_MOVIES)), "broken"]
    assert movies[0].image == experiment / "data" / "pos0" / "image.tif"
    assert movies[2].meta == {"strain": "sir2", "condition": "B", "position": "02"}  # text kept as written


def test_spec_glob_finds_labels_beside_each_image(experiment):
    movies = read_spec(str(experiment / "data" / "pos*" / "*.tif"))  # catches the labels too: they are dropped
    assert [m.movie for m in movies] == [f"pos{i}" for i in range(N_MOVIES)]
    assert all(m.labels.name == "labels.tif" and m.image.name == "image.tif" for m in movies)


@pytest.mark.parametrize("content, match", [
    ("image,condition\na.tif,A\n", "lacks the column"),
    ("image,labels\n", "names no movie"),
    ("image,labels,movie\na.tif,a_l.tif,x\nb.tif,b_l.tif,x\n", "same name|get the name"),
])
def test_bad_specs_are_refused_in_plain_words(tmp_path, content, match):
    (tmp_path / "spec.csv").write_text(content)
    with pytest.raises(InputError, match=match):
        read_spec(tmp_path / "spec.csv")


def test_glob_without_labels_says_what_it_looked_for(tmp_path):
    (tmp_path / "movie.tif").write_bytes(b"")
    with pytest.raises(InputError, match="no labels found beside"):
        read_spec(str(tmp_path / "*.tif"))
    with pytest.raises(InputError, match="no file matches"):
        read_spec(str(tmp_path / "nothing*.tif"))


@pytest.mark.parametrize("cpus", [1, 2, 3, 8, 17, 64])
@pytest.mark.parametrize("n_movies", [1, 3, 100])
def test_local_plan_never_oversubscribes_the_cores(cpus, n_movies):
    workers, threads = plan_local(n_movies, cpus=cpus)
    assert 1 <= workers <= n_movies and threads >= 1
    assert workers * threads <= cpus
    assert plan_local(n_movies, cpus=cpus, gpu=True)[0] == 1  # one worker feeds a GPU


# ------------------------------------------------------------------------------ on a 2-worker cluster

@pytest.mark.slow
def test_cluster_run_equals_the_single_movie_runs(experiment, random_checkpoint, client, single_runs):
    res = classify_many(experiment / "spec.csv", random_checkpoint, experiment / "run", CONFIG, client=client)
    assert res.counts() == {"done": N_MOVIES, "skipped": 0, "failed": 1}
    for table in ("cells.csv", "tracks.csv"):
        assert_same_table(read_combined(experiment / "run" / table), single_runs[table])
    assert_same_table(res.tracks, single_runs["tracks.csv"])
    # the corrupt movie is in the failures table, with why; it stopped no other
    failures = pd.read_csv(experiment / "run" / "failures.csv")
    assert failures["movie"].tolist() == ["broken"]
    assert "could not read" in failures["reason"].iloc[0]
    # each worker loaded the model at most once, though each of the 2 classified several movies' worth
    loads = client.run(model_loads)
    assert len(loads) == 2 and set(loads.values()) <= {0, 1} and sum(loads.values()) >= 1
    run = json.loads((experiment / "run" / "movies" / "pos0" / "run.json").read_text())
    assert run["model"]["sha256"] == json.loads((experiment / "single" / "pos0" / "run.json").read_text()
                                                )["model"]["sha256"]


@pytest.mark.slow
def test_killed_run_restarted_gives_the_same_outputs(experiment, random_checkpoint, client, single_runs):
    out = experiment / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    address = client.scheduler.address
    cmd = [sys.executable, "-m", "napari_yeast_phenotypes.cli", "classify-many", str(experiment / "spec.csv"),
           "--model", str(random_checkpoint), "--out", str(out), "--scheduler", address, "--device", "cpu",
           "--precision", "fp32"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not list(out.glob("movies/*/run.json")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never finished a movie"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and anything it started
        proc.wait(timeout=60)
        proc.stderr.close()
    done_before = {p.parent.name: p.read_text() for p in out.glob("movies/*/run.json")
                   if result_complete(p.parent)}
    assert 1 <= len(done_before) < N_MOVIES, "the kill came too late to test a restart"
    assert not (out / "cells.csv").exists()  # the combined tables come last

    res = classify_many(experiment / "spec.csv", random_checkpoint, out, CONFIG, client=client)
    for name, text in done_before.items():  # complete movies were skipped, not redone
        assert (out / "movies" / name / "run.json").read_text() == text
        assert res.movies.set_index("movie").loc[name, "status"] == "skipped"
    cells = read_combined(out / "cells.csv")
    assert not cells.duplicated(["movie", "frame", "label"]).any()
    assert_same_table(cells, single_runs["cells.csv"])
    assert_same_table(read_combined(out / "tracks.csv"), single_runs["tracks.csv"])
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".staging-") or p.name.endswith(".tmp")]
    assert not leftovers

    combined = {t: (out / t).read_text() for t in ("cells.csv", "tracks.csv")}
    again = classify_many(experiment / "spec.csv", random_checkpoint, out, CONFIG, workers=0)  # idempotent
    assert again.counts() == {"done": 0, "skipped": N_MOVIES, "failed": 1}
    assert {t: (out / t).read_text() for t in combined} == combined


# ------------------------------------------------------------------------------ in this process

@pytest.mark.slow
def test_results_of_another_config_are_kept_unless_overwrite(experiment, random_checkpoint, tmp_path):
    movies = [m for m in read_spec(experiment / "spec.csv") if m.movie == "pos0"]
    classify_many(movies, random_checkpoint, tmp_path, CONFIG, workers=0)
    before = (tmp_path / "movies" / "pos0" / "cells.csv").read_text()
    other = ClassifyConfig(device="cpu", precision="fp32", batch_size=7)
    with pytest.raises(InputError, match="other classify settings"):
        classify_many(movies, random_checkpoint, tmp_path, other, workers=0)
    assert (tmp_path / "movies" / "pos0" / "cells.csv").read_text() == before
    res = classify_many(movies, random_checkpoint, tmp_path, other, workers=0, overwrite=True)
    assert res.counts()["done"] == 1
    assert json.loads((tmp_path / "movies" / "pos0" / "run.json").read_text())["config"]["batch_size"] == 7


def test_a_folder_of_other_results_is_not_overwritten(experiment, random_checkpoint, tmp_path):
    (tmp_path / "cells.csv").write_text("mine\n")
    movies = [MovieSpec("one", experiment / "data/pos0/image.tif", experiment / "data/pos0/labels.tif")]
    with pytest.raises(InputError, match="did not write"):
        classify_many(movies, random_checkpoint, tmp_path, CONFIG, workers=0)
    assert (tmp_path / "cells.csv").read_text() == "mine\n"


@pytest.mark.slow
def test_cli_classify_many_and_ageing(experiment, random_checkpoint, tmp_path, capsys):
    spec = pd.read_csv(experiment / "spec.csv", dtype=str)
    spec = spec[spec["position"].isin(["00", "03", "99"])]  # two movies of two strains, and the corrupt one
    spec.to_csv(experiment / "spec3.csv", index=False)
    out = tmp_path / "exp"
    rc = main(["classify-many", str(experiment / "spec3.csv"), "--model", str(random_checkpoint), "--out", str(out),
               "--workers", "0", "--device", "cpu", "--precision", "fp32"])
    captured = capsys.readouterr()
    assert rc == 1  # one movie failed: said, and the exit status says so too
    assert "2 classified" in captured.out and "failed: broken" in captured.err
    rc = main(["ageing", str(out), "--by", "strain"])
    assert rc == 0
    for name in ("km_curves.csv", "median_time.csv", "logrank.csv", "ageing.png", "transitions.csv"):
        assert (out / "ageing" / name).is_file()
    medians = pd.read_csv(out / "ageing" / "median_time.csv")
    assert sorted(medians["group"]) == ["sir2", "wt"]
    tracks = read_combined(out / "tracks.csv")
    assert medians["tracks"].sum() + medians["senescent_at_entry"].sum() == len(tracks)
    assert main(["ageing", str(out), "--by", "colour"]) == 2
    assert "no such column" in capsys.readouterr().err


def test_what_classify_says_of_a_movie_is_said_once_naming_it(experiment, random_checkpoint, tmp_path):
    """A movie's warnings (here: a cell whose pixels are all NaN) reach the experiment's notes, with its name."""
    import tifffile

    from napari_yeast_phenotypes.core.data.simulate import simulate_movie

    movie = simulate_movie(n_frames=3, size=64, n_cells=3, seed=21, births=False)
    image = movie.image.astype(np.float32)
    lab = int(np.unique(movie.labels[1][movie.labels[1] > 0])[0])
    image[1][movie.labels[1] == lab] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", image)
    tifffile.imwrite(tmp_path / "nan_labels.tif", movie.labels)
    movies = [MovieSpec("blank_border", tmp_path / "nan.tif", tmp_path / "nan_labels.tif"),
              MovieSpec("pos0", experiment / "data/pos0/image.tif", experiment / "data/pos0/labels.tif")]
    res = classify_many(movies, random_checkpoint, tmp_path / "exp", CONFIG, workers=0)
    said = [n for n in res.notes if "NaN or infinite" in n]
    assert len(said) == 1 and said[0].startswith("blank_border: ")
    assert said == [n for n in json.loads((tmp_path / "exp" / "experiment.json").read_text())["notes"]
                    if "NaN or infinite" in n]
