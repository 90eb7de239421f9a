"""Round three, class 3: models and track models that validate but cannot work (issue 21).

A track model that makes every cell one class at confidence NaN, labels no track can follow that
shape the fit, files from a newer version, JSON nested too deeply for Python, class names that
break a CSV, a folder name or an HTML label: each is refused in words, or made safe, and the
families are tried with generated inputs (hypothesis).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_yeast_phenotypes.core.config import class_name_problem, parse_class_names
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.files.jsonfile import MAX_DEPTH, loads_json
from napari_yeast_phenotypes.core.track.timeline import (
    MIN_CONFUSION_SPREAD,
    TimelineSettings,
    add_timeline,
    confusion_spread,
    smooth_track,
    smooth_track_posterior,
)
from napari_yeast_phenotypes.core.track.track_estimates import fit_em
from napari_yeast_phenotypes.core.track.track_model import TrackModelFit, fit_track_model
from napari_yeast_phenotypes.core.track.track_model_file import load_track_model, save_track_model
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES, SENESCENT

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
N = len(CLASS_NAMES)


def probs_of(calls, conf=0.99, n=N):
    p = np.full((len(calls), n), (1 - conf) / (n - 1))
    p[np.arange(len(calls)), calls] = conf
    return p


def cells_of(tracks: dict[int, list[int]], conf=0.9) -> pd.DataFrame:
    rows = []
    for tid, calls in tracks.items():
        p = probs_of(calls, conf)
        for t in range(len(calls)):
            rows.append({"track_id": tid, "label": tid, "frame": t, **{f"p_{c}": p[t, j] for j, c in
                                                                       enumerate(CLASS_NAMES)}})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ track models that compute NaN

@given(st.floats(0, 0.049), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_a_confusion_whose_rows_differ_by_a_hair_is_refused_and_an_informative_one_read(spread, seed):
    """Rows 1e-9 apart turned every cell Senescent at confidence 0.13: any matrix whose rows are all
    within 0.05 (total variation) is refused; one with a row that stands out is read."""
    rng = np.random.default_rng(seed)
    base = rng.dirichlet(np.ones(N))
    m = np.array([base for _ in range(N)])
    i, j = rng.choice(N, 2, replace=False)
    m[0, i] += spread
    m[0, j] -= spread
    if m[0, j] < 0:
        return
    with pytest.raises(InputError, match="same row for every true class"):
        TimelineSettings(confusion=m)
    good = 0.9 * np.eye(N) + 0.1 / N
    assert TimelineSettings(confusion=good).confusion is not None


def test_a_floor_of_zero_with_a_degenerate_confusion_is_refused(tmp_path):
    confusion = np.zeros((N, N))
    confusion[:, 3] = 1.0  # every true class "called" Triple: the network's other calls have no class at all
    with pytest.raises(InputError, match="min_probability must be at least"):
        TimelineSettings(min_probability=0.0)
    for rate in ("switch_rate", "senescence_rate"):  # a rate of 0: a labelled change could not be followed
        with pytest.raises(InputError, match=f"{rate} must be at least"):
            TimelineSettings(**{rate: 0.0})
    with pytest.raises(InputError, match="same row for every true class"):
        TimelineSettings(confusion=confusion)
    # a saved file with them (hand-edited) is refused when read, naming the file
    path = save_track_model(tmp_path / "tm.json", TrackModelFit(TimelineSettings(), {}, CLASS_NAMES))
    data = json.loads(path.read_text())
    data["timeline"].update(min_probability=0, confusion=confusion.tolist())
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"tm\.json.*min_probability"):
        load_track_model(path, CLASS_NAMES)


def test_a_floor_that_flattens_every_frame_is_refused():
    s = TimelineSettings(min_probability=0.2)
    with pytest.raises(InputError, match="at least 1/8"):
        s.check_classes(N)
    s.check_classes(3)  # for three classes 0.2 is below 1/3: the network still speaks


def test_a_zero_column_confusion_with_the_smallest_floor_is_finite():
    """A confusion matrix in which no true class ever gets the network's call: the frames of that
    call carry no evidence (the floor), and the track is smoothed from its other frames, never NaN."""
    confusion = np.full((N, N), 0.1 / (N - 2))
    np.fill_diagonal(confusion, 0.9)
    confusion[:, 3] = 0.0
    confusion /= confusion.sum(axis=1, keepdims=True)
    s = TimelineSettings(min_probability=1e-12, confusion=confusion)
    calls = [0] * 5 + [3] * 5 + [0] * 5
    path, conf = smooth_track(probs_of(calls), SENESCENT, s)
    assert np.isfinite(conf).all() and (path == 0).all()


@pytest.mark.parametrize("long", [100, 400])
def test_long_tracks_with_labels_never_turn_nan(long):
    """Hundreds of senescent calls make a live class less likely than float64 holds; a person's label
    of it later must still be followed (it was NaN for the whole track)."""
    calls = [SENESCENT] * long
    fixed = np.full(long, -1)
    fixed[-1] = 0
    path, conf = smooth_track(probs_of(calls), SENESCENT, TimelineSettings(), fixed)
    assert np.isfinite(conf).all()
    assert path[-1] == 0 and (path != SENESCENT).all()  # a live cell at the end was live all along
    # and the other way round: labelled senescent first, then called live for hundreds of frames
    fixed = np.full(long, -1)
    fixed[0] = SENESCENT
    path, conf = smooth_track(probs_of([0] * long), SENESCENT, TimelineSettings(), fixed)
    assert np.isfinite(conf).all() and (path == SENESCENT).all()
    np.testing.assert_allclose(conf, 1.0, rtol=1e-9)


@st.composite
def track_models(draw):
    n = draw(st.integers(2, 8))
    sw = draw(st.floats(1e-12, 0.45))
    se = draw(st.floats(1e-12, 0.45))
    floor = draw(st.sampled_from([1e-12, 1e-8, 1e-4, 0.5 / n]))
    temperature = draw(st.floats(0.01, 100))
    confusion = None
    if draw(st.booleans()):
        rows = np.array(draw(st.lists(st.lists(st.floats(0, 1), min_size=n, max_size=n), min_size=n, max_size=n)))
        rows[:, draw(st.integers(0, n - 1))] = 0.0  # a call no class makes
        rows[np.arange(n), np.arange(n)] += 1e-3
        confusion = rows / rows.sum(axis=1, keepdims=True)
        if confusion_spread(confusion) < MIN_CONFUSION_SPREAD:
            confusion = (confusion + np.eye(n)) / 2  # rows that say nothing are refused (tested above)
    return n, TimelineSettings(sw, se, floor, temperature, None if confusion is None else tuple(map(tuple, confusion)),
                               draw(st.booleans()))


@FAST
@given(track_models(), st.data())
def test_any_valid_track_model_gives_finite_confidences(model, data):
    n, s = model
    length = data.draw(st.integers(1, 120))
    peak = data.draw(st.sampled_from([0.5, 0.99, 1.0]))
    calls = data.draw(st.lists(st.integers(0, n - 1), min_size=length, max_size=length))
    probs = probs_of(calls, peak, n)
    sink = data.draw(st.sampled_from([None, n - 1]))
    # labels a track can follow: any classes, and once the sink is labelled only the sink afterwards
    fixed = np.array(data.draw(st.lists(st.integers(-1, n - 1), min_size=length, max_size=length)))
    if sink is not None and (fixed == sink).any():
        first = int(np.flatnonzero(fixed == sink)[0])
        fixed[first:] = np.where(fixed[first:] >= 0, sink, -1)
    path, post = smooth_track_posterior(probs, sink, s, fixed)
    assert np.isfinite(post).all()
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=1e-9)
    assert ((path >= 0) & (path < n)).all()
    at = fixed >= 0
    assert (path[at] == fixed[at]).all()
    if sink is not None and s.smooth and (path == sink).any():
        assert (path[int(np.flatnonzero(path == sink)[0]):] == sink).all()


def test_probabilities_that_are_not_numbers_are_refused():
    cells = cells_of({1: [0, 0, 1]})
    cells.loc[1, "p_Nuclear"] = np.nan
    with pytest.raises(InputError, match="not numbers from 0 to 1"):
        add_timeline(cells)
    cells = cells_of({1: [0, 0, 1]})
    cells.loc[:, [f"p_{c}" for c in CLASS_NAMES]] = 0.0
    with pytest.raises(InputError, match="all zero"):
        add_timeline(cells)


# ------------------------------------------------------------------ labels that shape the fit silently

def _labelled(tracks: dict[int, list[int]]):
    cells = cells_of({t: [c if c >= 0 else 0 for c in seq] for t, seq in tracks.items()})
    truth = pd.DataFrame([{"frame": f, "label": t, "phenotype": CLASS_NAMES[c]}
                          for t, seq in tracks.items() for f, c in enumerate(seq) if c >= 0])
    return cells, truth


def test_impossible_label_sequences_are_refused_naming_the_track():
    ok = {t: [0] * 6 for t in (1, 2, 3)}
    cells, truth = _labelled({**ok, 4: [0, 0, SENESCENT, SENESCENT, 0, 0]})
    with pytest.raises(InputError, match=r"track 4: frame 4 is labelled Nuclear after frame 2 was labelled Senescent"):
        fit_track_model(cells, truth)
    with pytest.raises(InputError, match="track 4"):
        fit_em(cells, annotations=truth)


def test_conflicting_labels_are_refused():
    cells, truth = _labelled({t: [0] * 6 for t in (1, 2, 3, 4)})
    truth = pd.concat([truth, pd.DataFrame([{"frame": 2, "label": 3, "phenotype": "Aggregate"}])])
    with pytest.raises(InputError, match=r"frame 2, label 3: Aggregate and Nuclear"):
        fit_track_model(cells, truth)
    # the same label twice is one label
    cells, truth = _labelled({t: [0] * 6 for t in (1, 2, 3, 4)})
    fit_track_model(cells, pd.concat([truth, truth]))


# ------------------------------------------------------------------ files from a newer version

def test_future_track_model_is_refused(tmp_path):
    path = save_track_model(tmp_path / "tm.json", TrackModelFit(TimelineSettings(), {}, CLASS_NAMES))
    for version, words in ((2, "newer napari-yeast-phenotypes"), ("1", "not a version number"),
                           (True, "not a version number"), (0, "not a version number")):
        data = json.loads(path.read_text())
        data["format_version"] = version
        (tmp_path / "v.json").write_text(json.dumps(data))
        with pytest.raises(InputError, match=words):
            load_track_model(tmp_path / "v.json")


def test_future_checkpoint_and_ood_summary_are_refused(tmp_path, random_checkpoint):
    import torch

    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier
    from napari_yeast_phenotypes.core.network.ood import OODSummary

    data = torch.load(random_checkpoint, weights_only=True)
    data["format_version"] = 99
    torch.save(data, tmp_path / "future.pt")
    with pytest.raises(InputError, match="newer napari-yeast-phenotypes"):
        load_classifier(tmp_path / "future.pt")
    with pytest.raises(InputError, match="newer napari-yeast-phenotypes"):
        OODSummary.from_state({"version": 7}, "m.pt")
    with pytest.raises(InputError, match="not readable"):
        OODSummary.from_state({"version": "1"}, "m.pt")


def test_a_checkpoint_of_one_class_is_refused(tmp_path, random_checkpoint):
    import torch

    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier

    data = torch.load(random_checkpoint, weights_only=True)
    data["model_state"]["fc.weight"] = data["model_state"]["fc.weight"][:1]
    data["model_state"]["fc.bias"] = data["model_state"]["fc.bias"][:1]
    data["class_names"] = ["Nuclear"]
    torch.save(data, tmp_path / "one.pt")
    with pytest.raises(InputError, match="at least two classes"):
        load_classifier(tmp_path / "one.pt")


# ------------------------------------------------------------------ JSON nested too deeply

@FAST
@given(st.one_of(st.integers(0, 3 * MAX_DEPTH), st.sampled_from([999, 1000, 5000, 200_000])),
       st.sampled_from(["[", '{"a":']))
def test_deep_json_is_a_plain_error_never_a_recursion_error(depth, opener):
    closer = "]" if opener == "[" else "}"
    text = opener * depth + "1" + closer * depth
    if depth <= MAX_DEPTH:
        assert loads_json(text) is not None
    else:
        with pytest.raises(ValueError, match="nested more than"):
            loads_json(text)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200_000])
def test_deep_json_files_are_refused_everywhere(tmp_path, depth):
    from napari_yeast_phenotypes.core.data.curated.store import CuratedSet
    from napari_yeast_phenotypes.core.files.locking import holder
    from napari_yeast_phenotypes.core.results.folder import result_complete

    deep = "[" * depth + "]" * depth
    (tmp_path / "tm.json").write_text(deep)
    with pytest.raises(InputError, match="nested more than"):
        load_track_model(tmp_path / "tm.json")
    res = tmp_path / "result"
    res.mkdir()
    (res / "run.json").write_text(deep)
    assert result_complete(res) is False
    (tmp_path / "lock").write_text(deep)
    assert holder(tmp_path / "lock") == {}
    cs = tmp_path / "set"
    CuratedSet(cs)
    (cs / "settings.json").write_text(deep)
    with pytest.raises(InputError, match="settings.json is not valid"):
        CuratedSet(cs)


# ------------------------------------------------------------------ class names

UNSAFE = [",", "\n", "\r", "\t", "\x00", "\x1b", "<", ">", "&", '"', "'", "/", "\\", "=", "$", ";", "\u202e"]


@FAST
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6))
def test_class_names_one_rule(names):
    """Any list of texts either passes the one rule whole or is refused in words; what passes
    can be a folder name, a CSV column and a word of --class-names, and means the same as given."""
    try:
        got = parse_class_names(names)
    except InputError:
        return
    assert len(got) == len(names) == len({g.lower() for g in got})
    for g in got:
        assert class_name_problem(g) is None
        assert not any(c in g for c in UNSAFE) and g.isprintable() and g[0].isalnum()
    assert parse_class_names(",".join(got)) == got  # the same names through the command line


@pytest.mark.parametrize("bad", ["A,B\nC", "Nuclear<script>", "=HYPERLINK(1)", "-1", "+x", "@x", "a\x07b", ".hidden",
                                 "$\\alpha$", "x" * 65, "tab\tname", "ends.", "_marked"])
def test_unsafe_class_names_are_refused_everywhere(tmp_path, bad, random_checkpoint):
    """The same names refused on each way in: --class-names, a curated set (new or its settings.json),
    a track model file and a checkpoint."""
    import torch

    from napari_yeast_phenotypes.core.data.curated.store import CuratedSet
    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier

    names = ["Nuclear", bad] if "," not in bad else bad.split(",")
    with pytest.raises(InputError, match="cannot be a class name|empty class name"):
        parse_class_names(names)
    with pytest.raises(InputError, match="cannot be a class name|empty class name"):
        CuratedSet(tmp_path / "new", class_names=names)
    CuratedSet(tmp_path / "set", class_names=["A", "B"])
    settings_file = tmp_path / "set" / "settings.json"
    data = json.loads(settings_file.read_text())
    data["class_names"] = names
    settings_file.write_text(json.dumps(data))
    with pytest.raises(InputError, match="cannot be a class name|empty class name"):
        CuratedSet(tmp_path / "set")
    fit = TrackModelFit(TimelineSettings(), {}, ("A", "B"))
    tm = save_track_model(tmp_path / "tm.json", fit)
    data = json.loads(tm.read_text())
    data["class_names"] = names
    tm.write_text(json.dumps(data))
    with pytest.raises(InputError, match="cannot be a class name|empty class name"):
        load_track_model(tm)
    state = torch.load(random_checkpoint, weights_only=True)
    state["class_names"] = [*CLASS_NAMES[:-1], bad]
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(InputError, match="cannot be a class name|empty class name"):
        load_classifier(tmp_path / "m.pt")


def test_ordinary_class_names_still_pass():
    assert parse_class_names("G1 phase,S-phase,Mito.2,Zytoplasma+,Noyau_1,Agrégat") == (
        "G1 phase", "S-phase", "Mito.2", "Zytoplasma+", "Noyau_1", "Agrégat")
    assert parse_class_names(list(CLASS_NAMES)) == CLASS_NAMES


def test_class_names_of_classify_many_are_checked(tmp_path):
    from napari_yeast_phenotypes.cli import main

    code = main(["classify-many", str(tmp_path / "spec.csv"), "--model", str(tmp_path / "m.pt"), "--out",
                 str(tmp_path / "out"), "--class-names", "A,<b>B</b>"])
    assert code == 2


def test_a_track_model_whose_names_and_matrix_disagree_says_which_is_which(tmp_path):
    """7 class names and an 8x8 confusion matrix: the message counted 'the model' as the 7."""
    path = save_track_model(tmp_path / "tm.json", TrackModelFit(TimelineSettings(), {}, CLASS_NAMES))
    data = json.loads(path.read_text())
    data["class_names"] = list(CLASS_NAMES[:-1])
    data["timeline"]["confusion"] = (0.9 * np.eye(N) + 0.1 / N).tolist()
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=rf"tm\.json: its confusion matrix is for {N} classes but it names {N - 1}"):
        load_track_model(path)


@pytest.mark.parametrize("version, words", [(99, "newer napari-yeast-phenotypes"), ("1", "not a version number"),
                                            (True, "not a version number")])
def test_a_curated_set_from_a_newer_version_is_not_read(tmp_path, version, words):
    from napari_yeast_phenotypes.core.data.curated import CuratedSet

    CuratedSet(tmp_path / "set")
    data = json.loads((tmp_path / "set" / "settings.json").read_text())
    data["format_version"] = version
    (tmp_path / "set" / "settings.json").write_text(json.dumps(data))
    for open_set in (CuratedSet, CuratedSet.read):
        with pytest.raises(InputError, match=words):
            open_set(tmp_path / "set")


def test_a_fit_whose_calls_say_nothing_of_the_class_uses_no_confusion_matrix():
    """Every labelled cell called the same class (a random network): the fit does not fail on the refused
    matrix, it leaves the matrix out and says so."""
    rng = np.random.default_rng(0)
    rows = []
    for t in range(4 * N):
        true = CLASS_NAMES[t % N]
        for f in range(400):
            p = np.full(N, 0.02)
            p[2] = 1 - 0.02 * (N - 1)  # always Cytoplasm, whatever the cell is
            rows.append({"track_id": t + 1, "frame": f, "label": t + 1, "truth": true,
                         **{f"p_{c}": v for c, v in zip(CLASS_NAMES, p)}})
    cells = pd.DataFrame(rows)
    labels = cells[["frame", "label"]].assign(phenotype=cells["truth"])
    fit = fit_track_model(cells.drop(columns="truth"), labels, seed=int(rng.integers(100)))
    assert fit.settings.confusion is None
    assert any("no confusion matrix was used" in n for n in fit.report["notes"])
