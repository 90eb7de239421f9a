"""Round three, class 6: outputs that attack their reader. Every CSV the package writes has its spreadsheet
formulas neutralised (and reads back as given); every figure draws user text literally, and is drawn
whole before any file is written."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.files.tables import (
    FORMULA_START,
    neutralise,
    read_own_csv,
    restore,
    write_csv,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_yeast_phenotypes"
PAYLOADS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "=",
            "'=already quoted", "''", "-", "+", "@"]
NUMBERS = ["-1.5", "+3", "-0", "1e-5", "-2E+3", ".5", "-.5", "-inf", "+inf", "-nan", "12"]
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


def dangerous(cell: str) -> bool:
    """Whether a spreadsheet would run ``cell`` as a formula (text, not a number, starting with a trigger)."""
    return cell[:1] in FORMULA_START and neutralise(cell) != cell


def cells_of(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [c for row in csv.reader(fh) for c in row]


# ------------------------------------------------------------------------------ the rule

@pytest.mark.parametrize("value", PAYLOADS)
def test_formulas_are_neutralised_and_restored(value):
    written = neutralise(value)
    assert written == "'" + value and restore(written) == value


@pytest.mark.parametrize("value", NUMBERS)
def test_numbers_stay_numbers(value):
    assert neutralise(value) == value and restore(value) == value


@given(TEXT)
@settings(max_examples=300, deadline=None)
def test_any_text_round_trips_and_never_reaches_a_sheet_as_a_formula(value):
    written = neutralise(value)
    assert restore(written) == value
    assert not dangerous(written)
    assert neutralise(written) != written or not written.startswith("'")  # a mark is always marked again


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_numbers_written_as_text_are_left_alone(x):
    for text in (str(x), f"{x:.6g}", repr(x)):
        assert neutralise(text) == text


@given(st.lists(st.tuples(TEXT, st.floats(-1e6, 1e6), st.integers(-10, 10)), min_size=1, max_size=8), TEXT)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_writer_neutralises_every_cell_and_header_and_reads_back_as_given(tmp_path, rows, name):
    df = pd.DataFrame(rows, columns=["text", "number", "count"])
    df[name or "x"] = df["text"]
    path = write_csv(df, tmp_path / "t.csv", float_format=None)
    assert not any(dangerous(c) for c in cells_of(path))
    back = read_own_csv(path, dtype={"text": str}, keep_default_na=False)
    assert list(back.columns) == list(df.columns)
    assert back["text"].tolist() == df["text"].tolist()
    np.testing.assert_allclose(back["number"].to_numpy(float), df["number"].to_numpy(float), rtol=1e-12)
    assert (back["number"] < 0).sum() == (df["number"] < 0).sum()  # negative numbers stay numbers
    assert back["count"].tolist() == df["count"].tolist()


def test_categorical_and_streamed_tables_are_neutralised(tmp_path):
    parts = [pd.DataFrame({"a": pd.Categorical(["=x", "y"]), "b": [-1.5, 2.0]}),
             pd.DataFrame({"a": ["@z", "w"], "b": [3.0, -4.0]})]
    path = write_csv(iter(parts), tmp_path / "t.csv")
    assert path.read_text().splitlines() == ["a,b", "'=x,-1.5", "y,2", "'@z,3", "w,-4"]


def test_every_csv_is_written_by_the_one_writer():
    """The family, not the case: no module but the writer turns a table into CSV text."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "tables.py" and path.parent.name == "files":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "to_csv":
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr in ("writer", "DictWriter") and \
                    isinstance(node.value, ast.Name) and node.value.id == "csv":
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, offenders


def test_every_figure_file_is_drawn_in_memory_first():
    """No module but core.results.figures writes a figure (savefig) itself."""
    offenders = [f"{p.relative_to(SRC)}:{n.lineno}" for p in SRC.rglob("*.py") if p.name != "figures.py"
                 for n in ast.walk(ast.parse(p.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "savefig"]
    assert not offenders, offenders


# ------------------------------------------------------------------------------ the package's own CSVs

def test_a_curated_manifest_neutralises_and_reads_back_as_given(tmp_path, small_movie):
    from napari_yeast_phenotypes.core.data.curated import CuratedSet, crops_for_annotations

    cs = CuratedSet(tmp_path / "s")
    ann = small_movie.truth.iloc[:3]
    crops, rows = crops_for_annotations(small_movie.image, small_movie.labels, ann, cs.crop_settings, "m.tif",
                                        experiment="=cmd|' /C calc'!A0")
    cs.add(crops, rows, annotator="@SUM(1)", model="-m.pt")
    cs.add(*crops_for_annotations(small_movie.image, small_movie.labels, small_movie.truth.iloc[3:5],
                                  cs.crop_settings, "m.tif", experiment="+x"), annotator="'quoted")  # appended
    assert not any(dangerous(c) for c in cells_of(tmp_path / "s" / "manifest.csv"))
    again = CuratedSet(tmp_path / "s").manifest
    assert list(again["experiment"]) == ["=cmd|' /C calc'!A0"] * 3 + ["+x"] * 2
    assert list(again["annotator"]) == ["@SUM(1)"] * 3 + ["'quoted"] * 2
    assert list(again["model"][:3]) == ["-m.pt"] * 3


def test_simulated_truth_and_result_tables_go_through_the_writer(tmp_path, small_movie):
    from napari_yeast_phenotypes.core.data.simulate import write_movie

    paths = write_movie(small_movie, tmp_path / "m")
    pd.testing.assert_frame_equal(pd.read_csv(paths["truth"]), small_movie.truth)  # numbers written exactly


@pytest.mark.slow
def test_classify_many_and_ageing_write_no_live_formula(tmp_path, random_checkpoint, capsys):
    """Every CSV of an experiment (per movie, combined, movies.csv, failures.csv, the ageing tables) with
    SPEC values, movie names and a failure reason that begin with formula characters."""
    from napari_yeast_phenotypes.cli import main
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie, write_movie

    rows = []
    for i, cond in enumerate(["=1+1", "@cond", "-5h"]):
        write_movie(simulate_movie(n_frames=5, size=64, n_cells=3, seed=i, births=False), tmp_path / f"p{i}")
        rows.append({"movie": f"m{i}", "image": f"p{i}/image.tif", "labels": f"p{i}/labels.tif", "condition": cond,
                     "=field": "+x"})
    rows.append({"movie": "broken", "image": "=missing.tif", "labels": "=missing-labels.tif", "condition": "=1+1",
                 "=field": "y"})
    pd.DataFrame(rows).to_csv(tmp_path / "spec.csv", index=False)
    out = tmp_path / "exp"
    assert main(["classify-many", str(tmp_path / "spec.csv"), "--model", str(random_checkpoint), "--out", str(out),
                 "--workers", "0", "--device", "cpu", "--precision", "fp32"]) == 1  # the broken movie
    assert main(["ageing", str(out), "--by", "condition,=field"]) == 0
    capsys.readouterr()
    written = sorted(out.rglob("*.csv"))
    assert len(written) >= 3 * 2 + 4 + 6
    for path in written:
        bad = [c for c in cells_of(path) if dangerous(c)]
        assert not bad, (path, bad[:3])
    medians = read_own_csv(out / "ageing" / "median_time.csv", dtype={"group": str}, keep_default_na=False)
    assert sorted(medians["group"]) == ["-5h / +x", "=1+1 / +x", "@cond / +x"]  # read back as written


# ------------------------------------------------------------------------------ figures

NAMES = ["$x^$", "$\\frac{$", "a$b$c", "$5 and $10", "\\$", "$$", "_^%&#{}"]


def test_ageing_figure_draws_user_text_literally(tmp_path):
    import matplotlib

    from napari_yeast_phenotypes.core.results.figures import png_bytes
    from napari_yeast_phenotypes.core.results.survival import senescence_survival
    from napari_yeast_phenotypes.core.results.survival_figure import ageing_figure

    rng = np.random.default_rng(0)
    n = 7 * 6
    tracks = pd.DataFrame({"track_id": np.arange(n), "first_frame": 0, "last_frame": rng.integers(3, 20, n),
                           "senescence_frame": pd.array([pd.NA] * n, dtype="Int64"), "cond": NAMES * 6})
    tracks.loc[::3, "senescence_frame"] = 2
    res = senescence_survival(tracks, by="cond", time_unit="$min$", pairs=True)
    with matplotlib.rc_context({"text.usetex": True}):  # no LaTeX here: drawing through it would fail
        fig = ageing_figure(res, title="$x^$ title")
        assert png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    assert any(t.startswith("$x^$:") for t in texts)  # as written, not parsed


def test_summary_figure_with_dollar_class_names_and_title(tmp_path):
    from napari_yeast_phenotypes.core.results.plots import save_summary

    names = ["$a^$", "b$", "$c$"]
    cells = pd.DataFrame({"track_id": [1, 1, 2], "frame": [0, 1, 0], "phenotype": ["$a^$", "b$", "$c$"]})
    tracks = pd.DataFrame({"track_id": [1, 2], "first_frame": [0, 0], "last_frame": [1, 0],
                           "senescence_frame": pd.array([pd.NA, pd.NA], dtype="Int64")})
    save_summary(cells, tracks, tmp_path / "s.png", names, title="movie $x^$")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_an_ageing_figure_that_fails_leaves_no_file(tmp_path, monkeypatch):
    from napari_yeast_phenotypes.core.experiment import ageing
    from napari_yeast_phenotypes.core.results import survival_figure

    tracks = pd.DataFrame({"track_id": [1, 2, 3], "first_frame": [0, 0, 0], "last_frame": [5, 6, 7],
                           "senescence_frame": ["3", "", "4"], "condition": ["a", "b", "a"]})
    tracks.to_csv(tmp_path / "tracks.csv", index=False)

    def broken(*args, **kwargs):
        raise ValueError("cannot draw")

    monkeypatch.setattr(survival_figure, "ageing_figure", broken)
    with pytest.raises(ValueError, match="cannot draw"):
        ageing.run_ageing(tmp_path / "tracks.csv", by="condition")
    assert not (tmp_path / "ageing").exists()


def test_a_class_name_that_is_a_formula_survives_fit_track_model_reading(tmp_path):
    """cells.csv is read back by the package (fit-track-model): its neutralised values come back as given."""
    df = pd.DataFrame({"track_id": [1], "frame": [0], "label": [1], "phenotype": ["=A"], "p_=A": [1.0]})
    path = write_csv(df, tmp_path / "cells.csv")
    assert "'=A" in path.read_text()
    back = read_own_csv(path)
    assert back["phenotype"].tolist() == ["=A"] and list(back.columns) == list(df.columns)


def test_read_user_csv_refuses_what_it_cannot_read_in_one_line(tmp_path):
    from napari_yeast_phenotypes.core.files.tables import read_user_csv

    cases = {b"": "empty", b"\n \n": "empty", "a,b\ncaf\xe9,1\n".encode("cp1252"): "not UTF-8",
             b"a,b\n1,2,3\n": "cannot be read as CSV", b"a,a\n1,2\n": "twice", b"a,,b\n1,2,3\n": "no name",
             b"PK\x03\x04\x00\x00": "NUL"}
    for i, (content, words) in enumerate(cases.items()):
        (tmp_path / f"{i}.csv").write_bytes(content)
        with pytest.raises(InputError, match=words) as info:
            read_user_csv(tmp_path / f"{i}.csv", "the SPEC")
        assert "\n" not in str(info.value)
    (tmp_path / "bom.csv").write_bytes("\ufeffa,b,\nNA,None,\n,x,\n".encode())
    df = read_user_csv(tmp_path / "bom.csv")
    assert list(df.columns) == ["a", "b"] and df.values.tolist() == [["NA", "None"], ["", "x"]]


def test_a_users_own_apostrophe_is_kept(tmp_path):
    path = write_csv([pd.DataFrame({"x": ["'a", "=b"]})], tmp_path / "t.csv")
    assert path.read_text().splitlines() == ["x", "''a", "'=b"]  # one more mark: the rule can be undone
    assert read_own_csv(path, dtype=str, keep_default_na=False)["x"].tolist() == ["'a", "=b"]
    assert not list(tmp_path.glob(".t.csv.*"))


def test_a_carriage_return_inside_a_value_does_not_cut_its_row(tmp_path):
    df = pd.DataFrame({"x": ["a\rb", "\r=x", "plain"], "n": [1, -2, 3]})
    path = write_csv(df, tmp_path / "t.csv")
    back = read_own_csv(path, dtype={"x": str}, keep_default_na=False)
    assert back["x"].tolist() == df["x"].tolist() and back["n"].tolist() == [1, -2, 3]
