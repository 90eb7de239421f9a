"""Reports that say how sure they are: 95% intervals (bootstrap over tracks, Wilson and crops for few tracks),
the paired verdict new vs previous, and where they reach: the checkpoint's record, ``info``, ``crossval``.

No training here except where marked slow: the figures are made from class indices.
"""

import numpy as np
import pytest

from napari_yeast_phenotypes.core.network import intervals as iv
from napari_yeast_phenotypes.core.network.evaluation import metrics
from napari_yeast_phenotypes.core.network.intervals import (
    MIN_BOOTSTRAP_TRACKS,
    compare_paired,
    fmt_ci,
    intervals,
    wilson,
    with_intervals,
)

NAMES = ["a", "b", "c", "d"]


def tracked(n_tracks=60, per_track=10, p_right=0.8, seed=0, by_track=True):
    """Crops of ``n_tracks`` cells; with ``by_track`` a cell is called right or wrong as a whole (correlated)."""
    rng = np.random.default_rng(seed)
    tracks = np.repeat(np.arange(n_tracks), per_track)
    targets = np.repeat(rng.integers(0, len(NAMES), n_tracks), per_track)
    right = np.repeat(rng.random(n_tracks) < p_right, per_track) if by_track else rng.random(len(tracks)) < p_right
    pred = np.where(right, targets, (targets + 1) % len(NAMES))
    return targets, pred, tracks.astype(str)


def test_wilson_matches_the_textbook_values():
    assert wilson(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert wilson(10, 10) == pytest.approx([0.7225, 1.0], abs=1e-4)
    assert wilson(8, 17) == pytest.approx([0.2617, 0.6904], abs=1e-4)
    assert wilson(0, 0) is None


def test_the_vectorised_replicates_score_as_metrics_does():
    rng = np.random.default_rng(3)
    t, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    p[t == 3] = 0  # a present class never predicted: F1 0, as in metrics
    t[t == 2] = 1  # an absent class: left out of macro-F1
    m = metrics(t, p, NAMES)
    s = iv._scores(np.asarray(m["confusion"], dtype=float)[None])
    assert s["accuracy"][0] == pytest.approx(m["accuracy"])
    assert s["balanced_accuracy"][0] == pytest.approx(m["balanced_accuracy"])
    assert s["macro_f1"][0] == pytest.approx(m["macro_f1"])
    for i, c in enumerate(NAMES):
        f = m["per_class"][c]["f1"]
        if m["per_class"][c]["support"]:
            assert s["f1"][0, i] == pytest.approx(f or 0.0, abs=1e-4)
        else:
            assert np.isnan(s["f1"][0, i])


def test_resampling_whole_tracks_widens_the_interval_of_correlated_crops():
    t, p, tracks = tracked(by_track=True)
    ci = intervals(t, p, NAMES, tracks)
    assert ci["n_tracks"] == 60 and "bootstrap over 60 tracks" in ci["method"] and not ci["note"]
    acc = metrics(t, p, NAMES)["accuracy"]
    lo, hi = ci["accuracy"]
    assert lo < acc < hi
    as_if_independent = intervals(t, p, NAMES, None)
    assert as_if_independent["n_tracks"] == 0 and "no track" in as_if_independent["note"]
    assert "as if independent" in as_if_independent["method"]
    # 600 crops of 60 cells carry about the information of 60 crops: the interval is about sqrt(10) wider
    width = hi - lo
    assert width > 2 * (as_if_independent["accuracy"][1] - as_if_independent["accuracy"][0])
    assert width == pytest.approx(wilson(round(acc * 60), 60)[1] - wilson(round(acc * 60), 60)[0], rel=0.35)
    for key in ("macro_f1", "balanced_accuracy"):
        assert ci[key][0] <= metrics(t, p, NAMES)[key] <= ci[key][1]
    assert all(ci["f1"][c] is not None for c in NAMES if (t == NAMES.index(c)).any())


def test_intervals_are_reproducible_and_plain_values():
    t, p, tracks = tracked(seed=4)
    a, b = intervals(t, p, NAMES, tracks), intervals(t, p, NAMES, tracks)
    assert a == b
    flat = [a["accuracy"], a["macro_f1"], a["balanced_accuracy"], *a["f1"].values()]
    assert all(type(v) is float for pair in flat if pair for v in pair)  # a checkpoint keeps plain floats
    assert intervals(t, p, NAMES, tracks, seed=1) != a  # the seed is what makes it reproducible


def test_few_tracks_give_the_wider_of_tracks_crops_and_wilson_and_say_so():
    k = MIN_BOOTSTRAP_TRACKS - 1
    for by_track in (True, False):  # crops of a cell alike (tracks widen) or not (crops and Wilson do)
        t, p, tracks = tracked(n_tracks=k, per_track=3, by_track=by_track, seed=5)
        ci = intervals(t, p, NAMES, tracks)
        assert ci["n_tracks"] == k and ci["method"].startswith(f"the wider of a bootstrap over {k} tracks")
        assert f"only {k} tracks" in ci["note"] and "rough" in ci["note"]
        w = wilson(int((t == p).sum()), len(t))
        assert ci["accuracy"][0] <= w[0] and ci["accuracy"][1] >= w[1]
        by_crops = intervals(t, p, NAMES, None)
        for key in ("accuracy", "macro_f1"):
            assert ci[key][0] <= by_crops[key][0] and ci[key][1] >= by_crops[key][1]


def test_an_all_right_set_does_not_get_a_zero_width_interval():
    t = np.repeat(np.arange(4), 50)
    ci = intervals(t, t, NAMES, np.arange(200) // 5)
    assert ci["accuracy"][1] == 1.0 and ci["accuracy"][0] < 0.99  # Wilson's lower bound for 200/200
    assert fmt_ci(1.0, ci["accuracy"]) == f"1.000 ({ci['accuracy'][0]:.3f}-1.000)"
    assert fmt_ci(0.5, None) == "0.500" and fmt_ci(None, None) == "-"


def test_the_paired_verdict_better_worse_and_cannot_tell():
    t, old, tracks = tracked(n_tracks=80, p_right=0.6, seed=1)
    better = np.where(np.repeat(np.random.default_rng(2).random(80) < 0.9, 10), t, old)
    v = compare_paired(t, better, old, NAMES, tracks)
    assert v["verdict"] == "better" and v["accuracy"]["difference"] > 0 and v["accuracy"]["interval"][0] > 0
    assert v["words"].startswith("better on 800 crops of 80 tracks") and "95% interval" in v["words"]
    assert compare_paired(t, old, better, NAMES, tracks)["verdict"] == "worse"
    same = compare_paired(t, old, old, NAMES, tracks)
    assert same["verdict"] == "cannot tell" and same["accuracy"]["interval"] == [0.0, 0.0]
    # 17 crops of two cells: "0.471 against 0.000" is two cells, and a verdict must not claim more
    t17, tr17 = t[:17], tracks[:17]
    p17 = np.where(tr17 == tr17[0], t17, (t17 + 1) % 4)  # the new model gets the first cell right
    small = compare_paired(t17, p17, (t17 + 1) % 4, NAMES, tr17)
    assert small["n_tracks"] == 2 and "the wider of" in small["method"] and small["accuracy"]["difference"] > 0.4
    assert small["verdict"] == "cannot tell" and small["words"].startswith("cannot tell with 17 crops of 2 tracks")
    # the same crops without tracks (as if independent) would have said "better"
    assert compare_paired(t17, p17, (t17 + 1) % 4, NAMES)["verdict"] == "better"
    one_crop_apart = p17.copy()
    one_crop_apart[0] = t17[0] if p17[0] != t17[0] else (t17[0] + 1) % 4
    close = compare_paired(t17, one_crop_apart, p17, NAMES, tr17)
    assert close["verdict"] == "cannot tell" and close["words"].startswith("cannot tell with 17 crops")
    assert "difference" in close["words"] and "interval" in close["words"]


def test_the_paired_bootstrap_resamples_the_same_tracks_for_both_models():
    # two models that differ on one crop per track: unpaired intervals overlap, the paired one does not
    t, old, tracks = tracked(n_tracks=40, per_track=10, p_right=0.5, seed=7)
    new = old.copy()
    first = np.r_[0, np.flatnonzero(np.diff(tracks.astype(int))) + 1]
    wrong_first = first[old[first] != t[first]]
    new[wrong_first] = t[wrong_first]
    a, b = intervals(t, new, NAMES, tracks)["accuracy"], intervals(t, old, NAMES, tracks)["accuracy"]
    assert a[0] < b[1]  # each model's own interval overlaps the other's
    assert compare_paired(t, new, old, NAMES, tracks)["verdict"] == "better"


def test_with_intervals_adds_them_to_a_metrics_dict():
    t, p, tracks = tracked()
    m = with_intervals(metrics(t, p, NAMES), t, p, tracks)
    assert m["ci"]["level"] == 0.95 and set(m["ci"]["f1"]) == set(NAMES)


def test_the_report_figure_draws_intervals(tmp_path):
    from napari_yeast_phenotypes.core.network.evaluation_figures import report_figure

    t, p, tracks = tracked()
    m = with_intervals(metrics(t, p, NAMES), t, p, tracks)
    fig = report_figure({"metrics": m}, NAMES, m, ncols=2)
    ax_counts, _, ax_f1, _ = fig.axes
    assert "accuracy" in ax_counts.get_title() and "(" in ax_counts.get_title()
    assert "95% intervals" in ax_f1.get_title() and len(ax_f1.containers) >= 2  # bars with error bars
    assert any(type(c).__name__ == "ErrorbarContainer" for c in ax_f1.containers)


def test_a_previous_model_of_more_classes_is_judged_by_its_own_calls():
    """The new model calls only the labelled classes; the previous (8-class) one is still compared on the same
    crops, its calls of classes the new one lacks counted wrong, never dropped."""
    import torch

    from napari_yeast_phenotypes.core.data.cropset import CropSet
    from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet
    from napari_yeast_phenotypes.core.network.train_report import (
        OTHER_CLASSES,
        _compare_with_previous,
        predict_probabilities,
    )
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    torch.manual_seed(0)
    previous = Classifier(YeastResNet(8).eval())
    names = ("Aggregate", "Cytoplasm")
    rng = np.random.default_rng(0)
    report = CropSet(rng.random((12, 1, 40, 40), dtype=np.float32), np.arange(12) % 2, names,
                     tracks=np.arange(12) // 2)
    calls = np.asarray(CLASS_NAMES)[predict_probabilities(previous.model, report).argmax(axis=1)]
    record = {"notes": []}
    _compare_with_previous(record, previous, report, report.targets, "cpu")
    prev = record["previous"]
    assert prev["accuracy"] == pytest.approx(np.mean(calls == np.asarray(names)[report.targets]))
    assert OTHER_CLASSES in prev["per_class"] and prev["per_class"][OTHER_CLASSES]["support"] == 0
    assert record["comparison"]["accuracy"]["difference"] == pytest.approx(1 - prev["accuracy"], abs=1e-4)
    assert any("count as wrong" in n for n in record["notes"])
    # a previous model that lacks a class of the new one cannot be judged on its crops: said, not compared
    record = {"notes": []}
    _compare_with_previous(record, Classifier(YeastResNet(2).eval(), ("Nuclear", "Aggregate")), report,
                           report.targets, "cpu")
    assert "previous" not in record and "Cytoplasm" in record["notes"][0]
