"""Round three, classes 1, 2 and 7: experiments (resume by content, one movie twice), survival statistics
from bad tables, and ordinary mistakes of the SPEC, classify-many, ageing and info said in one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_yeast_phenotypes.cli import main
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.experiment.ageing import read_tracks, run_ageing
from napari_yeast_phenotypes.core.experiment.run import classify_many
from napari_yeast_phenotypes.core.experiment.spec import MovieSpec, read_spec
from napari_yeast_phenotypes.core.experiment.state import check_distinct_movies, movie_state
from napari_yeast_phenotypes.core.files.fingerprint import describe_file
from napari_yeast_phenotypes.core.results.folder import ResultFolder
from napari_yeast_phenotypes.core.results.survival import senescence_survival
from napari_yeast_phenotypes.core.results.survival_stats import holm
from napari_yeast_phenotypes.core.results.survival_table import (
    AT_ENTRY,
    BACKWARDS,
    BAD_SENESCENCE,
    NO_FIRST,
    NO_LAST,
    OUTSIDE,
    time_to_senescence,
)

CFG = {"batch_size": 8}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def fake_result(folder: Path, image: Path, labels: Path, config=CFG, fp="f" * 16) -> None:
    """A complete result folder that records ``image`` and ``labels`` as its inputs (as classify does)."""
    with ResultFolder(folder, overwrite=True) as f:
        for name in ("cells.csv", "tracks.csv", "summary.png"):
            (f.staging / name).write_text(name)
        f.commit({"config": config, "model": {"fingerprint": fp},
                  "inputs": {"image": describe_file(image), "labels": describe_file(labels)}})


@pytest.fixture
def movie_pair(tmp_path):
    image, labels = tmp_path / "in" / "image.tif", tmp_path / "in" / "labels.tif"
    image.parent.mkdir()
    image.write_bytes(bytes(range(256)) * 40)
    labels.write_bytes(bytes(range(50)) * 100)
    return image, labels


# ------------------------------------------------------------------------------ 1. resume by content

def test_an_input_replaced_by_another_of_the_same_size_is_not_trusted(tmp_path, movie_pair):
    image, labels = movie_pair
    movie = MovieSpec("m", image, labels)
    fake_result(tmp_path / "r", image, labels)
    assert movie_state(tmp_path / "r", CFG, "f" * 16, movie) == ("complete", "")
    for path in (image, labels):
        before, st_ = path.read_bytes(), path.stat()
        path.write_bytes(before[::-1])  # a re-segmentation: same size, same path, other content
        os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))  # even with its old modification time
        state, why = movie_state(tmp_path / "r", CFG, "f" * 16, movie)
        assert state == "stale" and "other content" in why, path
        path.write_bytes(before)
    # the same content elsewhere (the folders moved, copied to a cluster): still the same movie
    moved = tmp_path / "moved"
    shutil.copytree(image.parent, moved)
    assert movie_state(tmp_path / "r", CFG, "f" * 16, MovieSpec("m", moved / "image.tif", moved / "labels.tif")) \
        == ("complete", "")


@given(st.binary(min_size=1, max_size=300), st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_one_byte_changed_is_noticed(content, data):
    at = data.draw(st.integers(0, len(content) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != content[at]))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        image, labels = d / "i.tif", d / "l.tif"
        image.write_bytes(content)
        labels.write_bytes(b"labels")
        fake_result(d / "r", image, labels)
        image.write_bytes(content[:at] + bytes([new]) + content[at + 1:])
        assert movie_state(d / "r", CFG, "f" * 16, MovieSpec("m", image, labels))[0] == "stale"


def test_one_movie_listed_twice_is_refused(tmp_path, movie_pair):
    image, labels = movie_pair
    other = tmp_path / "other"
    other.mkdir()
    (other / "image.tif").write_bytes(bytes(range(255, -1, -1)) * 40)  # same size, another movie
    (other / "labels.tif").write_bytes(bytes(range(1, 51)) * 100)
    copy = tmp_path / "copy"
    shutil.copytree(image.parent, copy)
    check_distinct_movies([MovieSpec("a", image, labels), MovieSpec("b", other / "image.tif", other / "labels.tif")])
    for twin in (MovieSpec("b", image, labels),  # the same path under another name
                 MovieSpec("b", copy / "image.tif", copy / "labels.tif"),  # a copy
                 MovieSpec("b", image, other / "labels.tif"),  # the same image, other labels
                 MovieSpec("b", other / "image.tif", labels)):  # the same labels under another image
        with pytest.raises(InputError, match="the movies a and b have the same .*counted twice"):
            check_distinct_movies([MovieSpec("a", image, labels), twin])


def test_classify_many_refuses_a_movie_listed_twice_before_any_work(tmp_path, movie_pair, capsys):
    image, labels = movie_pair
    shutil.copytree(image.parent, tmp_path / "copy")
    pd.DataFrame({"movie": ["wt1", "wt1-again"], "image": [str(image), "copy/image.tif"],
                  "labels": [str(labels), "copy/labels.tif"]}).to_csv(tmp_path / "spec.csv", index=False)
    (tmp_path / "model.pt").write_bytes(b"not loaded: refused before")
    assert main(["classify-many", str(tmp_path / "spec.csv"), "--model", str(tmp_path / "model.pt"),
                 "--out", str(tmp_path / "out"), "--workers", "0"]) == 2
    assert "wt1 and wt1-again have the same image" in one_line_error(capsys)
    assert not (tmp_path / "out" / "movies").exists()


def _fake_experiment(root: Path, movies: dict, finished=True, version=2, failed=None) -> Path:
    """A classify-many folder of ``movies`` {name: (image, labels, tracks DataFrame)} as classify-many leaves it.

    ``version=1``: as the versions before round three wrote it (no ``movie_tables``, a ``movies.csv``);
    ``failed``: {name: condition} of movies that failed (in movies.csv and failures.csv only)."""
    from napari_yeast_phenotypes.core.files.fingerprint import file_sha256
    from napari_yeast_phenotypes.core.files.tables import write_csv

    combined = []
    for name, (image, labels, tracks) in movies.items():
        folder = root / "movies" / name
        with ResultFolder(folder, overwrite=True) as f:
            write_csv(tracks, f.staging / "tracks.csv")
            f.commit({"inputs": {"image": describe_file(image), "labels": describe_file(labels)}})
        combined.append(tracks.assign(movie=name)[["movie", *tracks.columns]])
    write_csv(pd.concat(combined), root / "tracks.csv")
    exp = {"job": "classify-many", "started": "2026-01-01T00:00:00", "finished": "2026-01-01T01:00:00" if finished
           else None, "tables": {"tracks.csv": describe_file(root / "tracks.csv")},
           "movie_tables": {n: file_sha256(root / "movies" / n / "tracks.csv") for n in movies},
           "spec_columns": ["condition"], "failed": len(failed or {})}
    rows = [{"movie": n, "condition": "c", "status": "done"} for n in movies]
    rows += [{"movie": n, "condition": c, "status": "failed"} for n, c in (failed or {}).items()]
    write_csv(pd.DataFrame(rows), root / "movies.csv")
    if version == 1:
        exp.pop("movie_tables")
    (root / "experiment.json").write_text(json.dumps(exp))
    return root


def small_tracks(n=4, sen=(2, None, 3, None)) -> pd.DataFrame:
    return pd.DataFrame({"track_id": range(1, n + 1), "first_frame": 0, "last_frame": 5,
                         "senescence_frame": pd.array(list(sen)[:n], dtype="Int64")})


@pytest.mark.parametrize("version", [1, 2])
def test_ageing_refuses_an_old_experiment_that_holds_one_movie_twice(tmp_path, movie_pair, version):
    """Also a folder of the versions before round three, whose experiment.json does not list its movies."""
    image, labels = movie_pair
    exp = _fake_experiment(tmp_path / "exp", {"a": (image, labels, small_tracks()),
                                              "b": (image, labels, small_tracks())}, version=version)
    with pytest.raises(InputError, match="a and b .* same image .*counted twice"):
        run_ageing(exp)


def test_ageing_names_the_movies_that_failed_and_their_groups(tmp_path, movie_pair):
    """A condition whose only movie failed is absent from every table: the note says which and why."""
    image, labels = movie_pair
    exp = _fake_experiment(tmp_path / "exp", {"a": (image, labels, small_tracks())}, failed={"z": "=E"})
    _, _, notes = read_tracks(exp)
    said = [n for n in notes if "failed in classify-many" in n]
    assert len(said) == 1 and "z (condition '=E')" in said[0] and "failures.csv" in said[0]
    clean = _fake_experiment(tmp_path / "clean", {"a": (image, labels, small_tracks())})
    assert not [n for n in read_tracks(clean)[2] if "failed" in n]


def test_ageing_refuses_the_tables_of_an_interrupted_run(tmp_path, movie_pair, capsys):
    image, labels = movie_pair
    exp = _fake_experiment(tmp_path / "exp", {"a": (image, labels, small_tracks())}, finished=False)
    assert main(["ageing", str(exp)]) == 2
    assert "did not finish" in one_line_error(capsys) and not (exp / "ageing").exists()
    # the table itself, named on purpose: analysed, with the warning in the notes
    res, _ = run_ageing(exp / "tracks.csv", out=tmp_path / "a")
    assert any("did not finish" in n for n in res.notes)


def test_ageing_says_when_the_tables_changed_after_they_were_combined(tmp_path, movie_pair):
    image, labels = movie_pair
    exp = _fake_experiment(tmp_path / "exp", {"a": (image, labels, small_tracks())})
    res, _ = run_ageing(exp, out=tmp_path / "a1")
    assert not res.notes
    from napari_yeast_phenotypes.core.files.tables import write_csv

    write_csv(small_tracks(3), exp / "movies" / "a" / "tracks.csv")  # classified again on its own
    res, _ = run_ageing(exp, out=tmp_path / "a2")
    assert any("changed after classify-many combined them" in n for n in res.notes)


def test_a_real_interrupted_classify_many_is_refused_by_ageing(tmp_path, random_checkpoint, monkeypatch, capsys):
    from napari_yeast_phenotypes.core.experiment import run

    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    spec = [MovieSpec("bad", tmp_path / "bad.tif", tmp_path / "bad.tif")]
    res = classify_many(spec, random_checkpoint, tmp_path / "exp", workers=0)  # finished: its movie failed
    assert res.counts()["failed"] == 1 and json.loads((tmp_path / "exp" / "experiment.json").read_text())["finished"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_run_all", killed)
    with pytest.raises(KeyboardInterrupt):
        classify_many(spec, random_checkpoint, tmp_path / "exp", workers=0)
    assert main(["ageing", str(tmp_path / "exp")]) == 2
    assert "did not finish" in one_line_error(capsys)


# ------------------------------------------------------------------------------ 2. survival from bad tables

GROUPS = ["None", "NA", "", "nan", "N/A", "null", " ", "a", "A", "a / b", "=x", "$x$"]
FRAME = st.one_of(st.integers(-2, 12).map(str), st.sampled_from(["", "NA", "x", "2.5", "3.0", "inf", "nan", " 4"]))


def _expected_reason(first: str, last: str, sen: str) -> str:
    def frame(t):
        t = t.strip()
        if t.lower() in ("", "na", "nan", "<na>", "none", "null"):
            return None, False
        try:
            v = float(t)
        except ValueError:
            return None, True
        return (v, False) if np.isfinite(v) and v >= 0 and v == int(v) else (None, True)

    (f, _), (la, _), (s, sbad) = frame(first), frame(last), frame(sen)
    if f is None:
        return NO_FIRST
    if la is None:
        return NO_LAST
    if la < f:
        return BACKWARDS
    if sbad:
        return BAD_SENESCENCE
    if s is not None and (s < f or s > la):
        return OUTSIDE
    if s is not None and s == f:
        return AT_ENTRY
    return ""


@given(st.lists(st.tuples(st.sampled_from(GROUPS), FRAME, FRAME, FRAME), min_size=1, max_size=25))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_tracks_table_is_checked_and_every_track_is_accounted_for(tmp_path, rows):
    import csv

    path = tmp_path / "tracks.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["track_id", "first_frame", "last_frame", "senescence_frame", "condition"])
        w.writerows([[i, f, la, s, g] for i, (g, f, la, s) in enumerate(rows)])
    tracks, _, _ = read_tracks(path)
    res = senescence_survival(tracks, by="condition")
    st_ = res.tracks
    # groups exactly as written: None, NA and empty never merge
    assert set(res.all_groups) == {g for g, *_ in rows}
    assert list(st_["excluded"]) == [_expected_reason(f, la, s) for _, f, la, s in rows]
    followed = st_[st_["excluded"] == ""]
    invalid = st_["excluded"].isin([NO_FIRST, NO_LAST, BACKWARDS, BAD_SENESCENCE, OUTSIDE])
    assert (followed["time"] >= 0).all() and st_.loc[invalid, "time"].isna().all()
    med = res.medians.set_index("group")
    assert med["tracks"].sum() == len(followed)
    assert med["tracks"].sum() + med["senescent_at_entry"].sum() + med["invalid"].sum() == len(rows)
    assert res.excluded["tracks"].sum() == len(rows) - len(followed)
    for g in res.groups:  # every followed track is at risk at the start of its group's curve
        curve = res.curves[res.curves["group"] == g]
        assert curve["at_risk"].iloc[0] == (followed["group"] == g).sum()
    for g in set(res.all_groups) - set(res.groups):
        assert med.loc[g, "note"].startswith("no track followed")
    if len(rows) > len(followed):
        assert any("left out" in n for n in res.notes)


def test_none_na_and_empty_stay_three_groups_from_a_file(tmp_path):
    (tmp_path / "tracks.csv").write_text("track_id,first_frame,last_frame,senescence_frame,condition\n"
                                         "1,0,5,3,None\n2,0,5,,NA\n3,0,5,2,\n4,0,5,,nan\n")
    res, _ = run_ageing(tmp_path / "tracks.csv", by="condition")
    assert sorted(res.all_groups) == ["", "NA", "None", "nan"]
    assert sorted(pd.read_csv(tmp_path / "ageing" / "median_time.csv", keep_default_na=False)["group"]) == \
        ["", "NA", "None", "nan"]


@given(st.lists(st.one_of(st.integers(-3, 3), st.floats(-3, 3, allow_nan=False), st.booleans(),
                          st.sampled_from(["1", "1.0", "True", "a", ""])), min_size=2, max_size=8))
@settings(max_examples=60, deadline=None)
def test_group_values_of_a_table_in_code_never_merge_silently(values):
    """The API's groups: values that read the same but are not the same (1 and "1") are refused, never one
    group; otherwise each group is one value as written, and a table written to CSV and read back groups alike."""
    from napari_yeast_phenotypes.core.results.survival_table import group_labels

    tracks = pd.DataFrame({"condition": pd.Series(values, dtype=object)})
    texts = [v if isinstance(v, str) else str(v) for v in values]
    clash = any(t1 == t2 and (isinstance(v1, str), isinstance(v1, bool)) != (isinstance(v2, str), isinstance(v2, bool))
                for v1, t1 in zip(values, texts) for v2, t2 in zip(values, texts))
    if clash:
        with pytest.raises(InputError, match="different types that read the same"):
            group_labels(tracks, ["condition"])
    else:
        assert list(group_labels(tracks, ["condition"])) == texts


def test_group_names_never_merge_when_joined(tmp_path):
    tracks = pd.DataFrame({"track_id": [1, 2], "first_frame": 0, "last_frame": 5, "senescence_frame": [3, 4],
                           "a": ["x / y", "x"], "b": ["z", "y / z"]})
    res = senescence_survival(tracks, by=["a", "b"])
    assert len(res.all_groups) == 2


def test_a_condition_senescent_at_entry_is_reported_not_vanished(tmp_path, capsys):
    tracks = pd.DataFrame({"track_id": range(6), "first_frame": [0, 0, 0, 3, 3, 0], "last_frame": 9,
                           "senescence_frame": [4, pd.NA, 6, 3, 3, pd.NA], "condition": ["a", "a", "a", "b", "b", "a"]})
    tracks.to_csv(tmp_path / "tracks.csv", index=False)
    assert main(["ageing", str(tmp_path / "tracks.csv"), "--by", "condition"]) == 0
    out = capsys.readouterr().out
    assert "no track followed (2 senescent when first seen)" in out and "2 of 6 tracks left out" in out
    med = pd.read_csv(tmp_path / "ageing" / "median_time.csv", keep_default_na=False).set_index("group")
    assert med.loc["b", "tracks"] == 0 and med.loc["b", "senescent_at_entry"] == 2
    summary = json.loads((tmp_path / "ageing" / "ageing.json").read_text())
    assert summary["groups"] == ["a", "b"] and summary["groups_with_curve"] == ["a"]
    assert summary["excluded"] == {AT_ENTRY: 2}
    excluded = pd.read_csv(tmp_path / "ageing" / "excluded_tracks.csv")
    assert excluded.to_dict("records") == [{"group": "b", "reason": AT_ENTRY, "tracks": 2}]


@pytest.mark.parametrize("times, events, note", [
    ([5], [1], "single track"),
    ([3, 4, 6], [0, 0, 0], "no track became senescent"),
    ([5, 5, 5], [1, 1, 1], "interval not estimable"),
])
def test_medians_the_data_cannot_give_are_said(times, events, note):
    tracks = pd.DataFrame({"track_id": range(len(times)), "first_frame": 0, "last_frame": [t + 1 for t in times],
                           "senescence_frame": pd.array([t if e else None for t, e in zip(times, events)],
                                                        dtype="Int64")})
    m = senescence_survival(tracks, by=None).medians.iloc[0]
    assert note in m["note"]
    assert np.isnan(m["median_lower"]) and np.isnan(m["median_upper"])  # never an interval of [5, 5]


def test_holm_adjusts_as_by_hand():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert holm([]).size == 0 and holm([0.9, 0.8])[0] == 1.0


@given(st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_holm_is_never_below_p_and_keeps_the_order(p):
    adj = holm(p)
    p = np.asarray(p)
    assert (adj >= p - 1e-15).all() and (adj <= 1).all()
    order = np.argsort(p, kind="stable")
    assert (np.diff(adj[order]) >= -1e-15).all()


def _alike(n_groups: int, per_group: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    last = rng.integers(5, 60, n)
    sen = rng.integers(1, 80, n)
    return pd.DataFrame({"track_id": range(n), "first_frame": 0, "last_frame": last,
                         "senescence_frame": pd.Series(sen).astype("Int64").mask(sen > last),
                         "condition": [f"c{i % n_groups:03d}" for i in range(n)]})


@pytest.mark.slow
def test_pairs_among_identical_groups_are_corrected():
    res = senescence_survival(_alike(16, 40), by="condition", pairs=True)
    pairs = res.logrank[res.logrank["test"] == "pair"]
    assert len(pairs) == 16 * 15 // 2 and res.correction == "holm"
    assert (pairs["p"] < 0.05).sum() >= 1  # by chance, uncorrected
    assert (pairs["p_holm"] < 0.05).sum() == 0


@pytest.mark.slow
def test_two_hundred_conditions_take_one_test_and_seconds():
    import time

    tracks = _alike(200, 100)
    calls = []
    t0 = time.perf_counter()
    res = senescence_survival(tracks, by="condition", progress=lambda d, n: calls.append((d, n)))
    assert time.perf_counter() - t0 < 120
    assert list(res.logrank["test"]) == ["overall"] and int(res.logrank["groups"].iloc[0]) == 200
    assert calls[-1] == (200, 200) and len(calls) == 200  # progress, group by group
    from napari_yeast_phenotypes.core.results.figures import png_bytes
    from napari_yeast_phenotypes.core.results.survival_figure import ageing_figure

    assert png_bytes(ageing_figure(res))


@pytest.mark.parametrize("interval", [float("inf"), float("nan"), 0, -1])
def test_a_frame_interval_must_be_positive_and_finite(interval):
    with pytest.raises(InputError, match="positive finite"):
        time_to_senescence(small_tracks(), frame_interval=interval)


def test_a_column_named_like_an_added_one_is_kept(tmp_path):
    tracks = small_tracks().assign(group=["x", "y", "x", "y"], time=["am", "pm", "am", "pm"])
    res = senescence_survival(tracks, by="group")
    assert sorted(res.all_groups) == ["x", "y"] and list(res.tracks["time_input"]) == ["am", "pm", "am", "pm"]
    assert any("kept as 'time_input'" in n for n in res.notes)


# ------------------------------------------------------------------------------ 7. ordinary mistakes

def _spec(tmp_path, content: bytes) -> Path:
    (tmp_path / "spec.csv").write_bytes(content)
    return tmp_path / "spec.csv"


@pytest.mark.parametrize("content, words", [
    (b"", "is empty"),
    (b"\n\n  \n", "is empty"),
    (b"image,labels\n", "names no movie"),
    ("image,labels,condition\na.tif,b.tif,caf\xe9\n".encode("cp1252"), "not UTF-8 text .*line 2"),
    (b"image,labels\na.tif,b.tif,extra\n", "cannot be read as CSV"),
    (b"image,labels,condition,condition\na.tif,b.tif,x,y\n", "'condition' twice"),
    (b"image,labels,,x\na.tif,b.tif,v,w\n", "column 3 holds values but has no name"),
    (b"image,labels,status\na.tif,b.tif,ok\n", "status, which classify-many writes itself"),
    (b"image,labels,folder,reason\na.tif,b.tif,x,y\n", "folder, reason, which classify-many"),
    (b"image,labels,seconds\na.tif,b.tif,3\n", "seconds"),
])
def test_a_bad_spec_is_one_line_before_any_work(tmp_path, content, words, capsys):
    spec = _spec(tmp_path, content)
    assert main(["classify-many", str(spec), "--model", str(tmp_path / "no-model.pt"), "--out",
                 str(tmp_path / "out")]) == 2
    line = one_line_error(capsys)
    assert re.search(words, line), line


def test_a_spec_from_excel_reads(tmp_path):
    spec = _spec(tmp_path, "\ufeffimage,labels,condition,\r\na.tif,b.tif,caf\u00e9,\r\n".encode())
    (m,) = read_spec(spec)
    assert m.meta == {"condition": "caf\u00e9"} and m.image == tmp_path / "a.tif"


def test_a_blank_movie_cell_names_only_its_row(tmp_path):
    spec = _spec(tmp_path, b"movie,image,labels\nwt-1,d/pos0/image.tif,d/pos0/labels.tif\n"
                           b",d/pos1/image.tif,d/pos1/labels.tif\nwt 3,d/pos2/image.tif,d/pos2/labels.tif\n"
                           b",d/pos3/image.tif,d/pos3/labels.tif\n")
    movies = read_spec(spec)
    assert [m.movie for m in movies] == ["wt-1", "pos1", "wt_3", "pos3"]
    assert [bool(m.note) for m in movies] == [False, True, True, True]
    assert "gives no movie name: named pos1" in movies[1].note and "is named wt_3" in movies[2].note


@pytest.mark.parametrize("sep, words", [(b";", "separated by semicolons"), (b"\t", "separated by tabs")])
def test_a_spec_not_separated_by_commas_says_so(tmp_path, sep, words):
    spec = _spec(tmp_path, sep.join([b"movie", b"image", b"labels"]) + b"\n" + sep.join([b"p", b"a.tif", b"b.tif"]))
    with pytest.raises(InputError, match=words):
        read_spec(spec)


@pytest.mark.parametrize("by", [",", " ", " , "])
def test_a_by_that_names_no_column_is_refused(tmp_path, by):
    (tmp_path / "tracks.csv").write_text("track_id,first_frame,last_frame,senescence_frame,condition\n1,0,5,3,a\n")
    with pytest.raises(InputError, match="names no column"):
        run_ageing(tmp_path / "tracks.csv", by=by)


def test_a_blank_movie_name_never_takes_a_given_one(tmp_path):
    spec = _spec(tmp_path, b"movie,image,labels\npos1,a/pos0/image.tif,a/pos0/labels.tif\n"
                           b",a/pos1/image.tif,a/pos1/labels.tif\n")
    assert [m.movie for m in read_spec(spec)] == ["pos1", "pos1-2"]


def test_names_that_differ_only_in_case_are_refused(tmp_path):
    spec = _spec(tmp_path, b"movie,image,labels\nPos1,a.tif,b.tif\npos1,c.tif,d.tif\n")
    with pytest.raises(InputError, match="differ only in case"):
        read_spec(spec)
    with pytest.raises(InputError, match="cannot name a folder"):
        read_spec([MovieSpec("../outside", Path("a"), Path("b"))])


@pytest.mark.parametrize("scheduler, words", [
    ("nonsense", "is not host:port"),
    ("http://x:1", "unknown address scheme 'http'"),
    ("tcp://host:port", "is not host:port"),
    ("tcp://:8786", "is not host:port"),
    ("tcp://127.0.0.1:70000", "is not host:port"),
    ("missing.json", "does not exist"),
    ("", "is not host:port"),
    ("tcp://127.0.0.1:1", "cannot reach the Dask scheduler"),
])
def test_bad_schedulers_are_one_line_before_any_work(tmp_path, scheduler, words, capsys):
    assert main(["classify-many", str(tmp_path / "spec.csv"), "--model", "m.pt", "--out", str(tmp_path / "o"),
                 "--scheduler", scheduler]) == 2
    assert words in one_line_error(capsys)


def test_a_port_that_accepts_and_never_answers_is_said_not_waited_on():
    """The dashboard's port or a web server: the connection is accepted, no Dask handshake ever comes."""
    import socket
    import time

    from napari_yeast_phenotypes.core.experiment.cluster import connect

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    try:
        t0 = time.monotonic()
        with pytest.raises(InputError, match="answered as a Dask scheduler"):
            connect(f"tcp://127.0.0.1:{server.getsockname()[1]}", timeout=1.0)
        assert time.monotonic() - t0 < 60  # not a hang (the deadline is the timeout plus 5 s)
    finally:
        server.close()


def test_a_broken_scheduler_file_is_said(tmp_path, capsys):
    (tmp_path / "s.json").write_text("{not json")
    assert main(["classify-many", "x.csv", "--model", "m.pt", "--out", str(tmp_path / "o"), "--scheduler",
                 str(tmp_path / "s.json")]) == 2
    assert "is not a Dask scheduler file" in one_line_error(capsys)


@pytest.mark.parametrize("argv, words", [
    (["--workers", "-3"], "--workers: must be at least 0"),
    (["--workers", "1.5"], "not a whole number"),
    (["--torch-threads", "-1"], "--torch-threads: must be at least 1"),
    (["--torch-threads", "0"], "--torch-threads: must be at least 1"),
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
    (["--chunk-frames", "-2"], "--chunk-frames: must be at least 1"),
    (["--channel", "-1"], "--channel: must be at least 0"),
])
def test_classify_many_counts_are_checked(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(["classify-many", "s.csv", "--model", "m.pt", "--out", "o", *argv])
    assert info.value.code == 2 and words in one_line_error(capsys)


@pytest.mark.parametrize("argv, words", [
    (["--frame-interval", "inf"], "--frame-interval: must be a positive finite number"),
    (["--frame-interval", "nan"], "--frame-interval: must be a positive finite number"),
    (["--frame-interval", "0"], "--frame-interval: must be a positive finite number"),
    (["--alpha", "0"], "--alpha: must be above 0"),
    (["--alpha", "1"], "--alpha: must be from 0 to below 1"),
    (["--alpha", "nan"], "--alpha: must be from 0 to below 1"),
])
def test_ageing_options_are_checked(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(["ageing", "dir", *argv])
    assert info.value.code == 2 and words in one_line_error(capsys)


@pytest.mark.parametrize("last, interval", [(40, 1e308), (1e300, 1e10)])
def test_times_that_overflow_are_refused_in_one_line(tmp_path, last, interval, capsys):
    tracks = pd.DataFrame({"track_id": [1, 2], "condition": ["a", "b"], "first_frame": [0, 0],
                           "last_frame": [last, 10], "senescence_frame": [np.nan, 5]})
    with pytest.raises(InputError, match="overflows"):
        time_to_senescence(tracks, "condition", interval)
    tracks.to_csv(tmp_path / "tracks.csv", index=False)
    assert main(["ageing", str(tmp_path / "tracks.csv"), "--out", str(tmp_path / "ag"),
                 "--frame-interval", repr(interval)]) == 2
    assert "overflows" in one_line_error(capsys)


def test_workers_with_a_scheduler_and_negative_counts_in_code_are_refused(tmp_path, capsys):
    assert main(["classify-many", "s.csv", "--model", "m.pt", "--out", "o", "--workers", "2",
                 "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "leave out --workers" in one_line_error(capsys)
    for kwargs, words in (({"workers": -3}, "workers must be"), ({"torch_threads": 0}, "torch threads must be"),
                          ({"workers": 1.5}, "workers must be")):
        with pytest.raises(InputError, match=words):
            classify_many("s.csv", "m.pt", tmp_path / "o", **kwargs)


@pytest.mark.parametrize("template, words", [
    ("{stem}_{x}.tif", "holds the field"), ("{", "cannot be read as a template"), ("}", "cannot be read"),
    ("{0}.tif", "holds the field"), ("{stem!r}.tif", "holds the field"), ("{stem:>9}.tif", "holds the field"),
    ("{stem.upper}.tif", "holds the field"), (" ", "is empty"),
])
def test_labels_name_templates_are_checked(tmp_path, template, words, capsys):
    (tmp_path / "a.tif").write_bytes(b"x")
    assert main(["classify-many", str(tmp_path / "*.tif"), "--model", "m.pt", "--out", str(tmp_path / "o"),
                 "--labels-name", template]) == 2
    assert words in one_line_error(capsys)


def test_labels_name_with_a_csv_spec_is_refused(tmp_path, capsys):
    spec = _spec(tmp_path, b"image,labels\na.tif,b.tif\n")
    assert main(["classify-many", str(spec), "--model", "m.pt", "--out", str(tmp_path / "o"),
                 "--labels-name", "{stem}_seg{suffix}"]) == 2
    assert "is for a glob SPEC" in one_line_error(capsys)


def test_labels_name_with_escaped_braces_works(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"x")
    (tmp_path / "a_{seg}.tif").write_bytes(b"y")
    (m,) = read_spec(str(tmp_path / "a.tif"), "{stem}_{{seg}}{suffix}")
    assert m.labels.name == "a_{seg}.tif"


# ------------------------------------------------------------------------------ info on hand-edited metadata

def _record() -> dict:
    per_class = {"A": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10},
                 "B": {"precision": 0.7, "recall": 0.6, "f1": 0.65, "support": 12}}
    metrics = {"accuracy": 0.8, "macro_f1": 0.75, "balanced_accuracy": 0.7, "n": 22, "per_class": per_class}
    return {"training": {"epochs": 3, "lr": 0.001}, "best_epoch": 2, "history": [{}, {}, {}], "stopped": "finished",
            "training_set": {"n": 40, "counts": {"A": 20, "B": 20}, "ids_sha256": "a" * 64, "crops_sha256": "b" * 64},
            "train_notes": ["a note"], "validation": metrics,
            "report": {"on": "test", "optimistic": False, "n": 22, "metrics": metrics, "previous": None,
                       "few_classes": [], "ece_before": 0.1, "ece_after": 0.05},
            "calibration": {"temperature": 1.2, "fitted_on": "val"}, "crop_origin": {"kind": "curated"}}


def _fake_model(monkeypatch, metadata):
    from napari_yeast_phenotypes.core.data.crops import CropSettings
    from napari_yeast_phenotypes.core.network import checkpoint

    clf = SimpleNamespace(class_names=("A", "B"), model=SimpleNamespace(trainable=("conv1", "fc")),
                          crop_settings=CropSettings(), metadata=metadata)
    monkeypatch.setattr(checkpoint, "load_classifier", lambda *a, **k: clf)


def test_info_prints_a_whole_record(monkeypatch, capsys):
    _fake_model(monkeypatch, _record())
    assert main(["info", "m.pt"]) == 0
    out = capsys.readouterr().out
    assert "training set: 40 crops" in out and "calibration: temperature 1.200" in out


JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=5),
                       lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
                       max_leaves=6)


@given(st.data())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_info_on_any_hand_edited_record_is_whole_or_one_line(monkeypatch, capsys, data):
    meta = _record()
    paths = [("training",), ("training_set",), ("training_set", "counts"), ("training_set", "n"),
             ("training_set", "ids_sha256"), ("history",), ("train_notes",), ("validation",),
             ("validation", "per_class"), ("validation", "accuracy"), ("report",), ("report", "metrics"),
             ("report", "n"), ("report", "previous"), ("calibration",), ("calibration", "temperature"),
             ("crop_origin",), ("best_epoch",)]
    for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3, unique=True)):
        node = meta
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if data.draw(st.booleans()):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = data.draw(JSONISH)
    _fake_model(monkeypatch, meta)
    capsys.readouterr()
    rc = main(["info", "m.pt"])
    captured = capsys.readouterr()
    assert rc in (0, 2)
    if rc == 2:
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
        assert "edited by hand" in captured.err


def test_info_on_a_real_checkpoint_with_a_broken_record(tmp_path, random_checkpoint, capsys):
    import torch

    data = torch.load(random_checkpoint, weights_only=True)
    data["metadata"] = {**_record(), "training_set": {"n": 3, "counts": [1, 2]}}
    torch.save(data, tmp_path / "edited.pt")
    assert main(["info", str(tmp_path / "edited.pt")]) == 2
    assert "edited by hand" in one_line_error(capsys)


@pytest.mark.parametrize("field", ["metadata", "trainable", "class_names", "crop_settings", "ood", "format"])
def test_a_checkpoint_with_a_top_level_field_edited_is_read_or_refused_in_one_line(tmp_path, random_checkpoint,
                                                                                   field, capsys):
    """A null, a number, a text, a list: ``info`` (and so classify) prints the model or says one line."""
    import torch

    data = torch.load(random_checkpoint, weights_only=True)
    for i, value in enumerate((None, 3, "x", [1], {})):
        edited = {**data, field: value}
        torch.save(edited, tmp_path / f"e{i}.pt")
        capsys.readouterr()
        rc = main(["info", str(tmp_path / f"e{i}.pt")])
        captured = capsys.readouterr()
        assert rc in (0, 2), (field, value)
        if rc == 2:
            assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, (field, value, captured.err)


@pytest.mark.slow
def test_a_resegmented_movie_is_classified_again_not_skipped(tmp_path, random_checkpoint, capsys):
    """End to end: two movies of one shape; one's labels replaced by a re-segmentation of the same size."""
    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie, write_movie

    for i in range(2):
        write_movie(simulate_movie(n_frames=5, size=64, n_cells=3, seed=20 + i, births=False), tmp_path / f"p{i}")
    spec = [MovieSpec(f"p{i}", tmp_path / f"p{i}" / "image.tif", tmp_path / f"p{i}" / "labels.tif") for i in range(2)]
    config = ClassifyConfig(device="cpu", precision="fp32")
    assert classify_many(spec, random_checkpoint, tmp_path / "exp", config, workers=0).counts()["done"] == 2
    labels = tmp_path / "p1" / "labels.tif"
    other = simulate_movie(n_frames=5, size=64, n_cells=3, seed=99, births=False)
    write_movie(other, tmp_path / "reseg")
    new = (tmp_path / "reseg" / "labels.tif").read_bytes()
    assert len(new) == labels.stat().st_size  # a re-segmentation of the same size
    labels.write_bytes(new)
    with pytest.raises(InputError, match="made from another labels file"):
        classify_many(spec, random_checkpoint, tmp_path / "exp", config, workers=0)
    res = classify_many(spec, random_checkpoint, tmp_path / "exp", config, workers=0, overwrite=True)
    assert res.counts() == {"done": 1, "skipped": 1, "failed": 0}
    run = json.loads((tmp_path / "exp" / "movies" / "p1" / "run.json").read_text())
    assert run["inputs"]["labels"]["sha256"] == describe_file(labels)["sha256"]
