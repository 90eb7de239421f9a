"""The track model learns: transition rates, calibration and emissions from annotated tracks or by EM."""

import numpy as np
import pandas as pd
import pytest

from napari_yeast_phenotypes.core.config import ClassifyConfig
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.track.timeline import TimelineSettings, add_timeline, smooth_track
from napari_yeast_phenotypes.core.track.track_estimates import count_transitions, fit_confusion, fit_em, fit_temperature
from napari_yeast_phenotypes.core.track.track_model import evaluate_tracks, fit_track_model
from napari_yeast_phenotypes.core.track.track_model_file import load_track_model, save_track_model
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES, SENESCENT

FRAG = CLASS_NAMES.index("Fragmented")
N = len(CLASS_NAMES)


def markov_tracks(n_tracks, length, switch, senesce, rng):
    """True class sequences from the model's own chain (Senescent absorbing)."""
    seqs = []
    for _ in range(n_tracks):
        s = [int(rng.integers(0, SENESCENT))]
        for _ in range(length - 1):
            c = s[-1]
            if c != SENESCENT:
                u = rng.random()
                if u < senesce:
                    c = SENESCENT
                elif u < senesce + switch:
                    c = int(rng.choice([k for k in range(SENESCENT) if k != c]))
            s.append(c)
        seqs.append(s)
    return seqs


def network(seqs, rng, frag_as_senescent=0.3, accuracy=0.9, conf=12.0):
    """Per-frame probabilities of a network that calls Fragmented cells Senescent now and then
    (confidently), and almost never calls a senescent cell live; over-confident overall."""
    true_conf = np.full((N, N), (1 - accuracy) / (N - 1))
    np.fill_diagonal(true_conf, accuracy)
    true_conf[FRAG] = (1 - accuracy) * (1 - frag_as_senescent) / (N - 2)
    true_conf[FRAG, FRAG], true_conf[FRAG, SENESCENT] = accuracy * (1 - frag_as_senescent), frag_as_senescent
    true_conf[SENESCENT] = 0.005 / (N - 1)
    true_conf[SENESCENT, SENESCENT] = 0.995
    rows, truth = [], []
    for tid, seq in enumerate(seqs, start=1):
        for t, s in enumerate(seq):
            call = rng.choice(N, p=true_conf[s])
            alpha = np.full(N, 0.3)
            alpha[call] = conf
            p = rng.dirichlet(alpha)
            rows.append({"track_id": tid, "label": tid, "frame": t,
                         **{f"p_{c}": p[j] for j, c in enumerate(CLASS_NAMES)}})
            truth.append({"frame": t, "label": tid, "phenotype": CLASS_NAMES[s]})
    return pd.DataFrame(rows), pd.DataFrame(truth)


def test_fit_recovers_known_transition_rates(rng):
    seqs = markov_tracks(120, 40, switch=0.08, senesce=0.03, rng=rng)
    cells, truth = network(seqs, rng)
    fit = fit_track_model(cells, truth, seed=1)
    counts = fit.report["transitions_seen"]
    assert counts["back"] == 0
    assert counts["stay"] + counts["switch"] + counts["senesce"] > 1000
    fitted = fit.report["fitted"]  # fitted on half the tracks, lightly shrunk towards the defaults
    assert fitted["switch_rate"] == pytest.approx(0.08, rel=0.25)
    assert fitted["senescence_rate"] == pytest.approx(0.03, rel=0.35)


def test_em_on_the_movie_recovers_rates_without_labels(rng):
    seqs = markov_tracks(80, 40, switch=0.1, senesce=0.02, rng=rng)
    cells, _ = network(seqs, rng, frag_as_senescent=0.0, accuracy=0.95)
    start = TimelineSettings(switch_rate=0.01, senescence_rate=0.2)
    settings, info = fit_em(cells, settings=start)
    assert info["iterations"] > 1
    assert settings.switch_rate == pytest.approx(0.1, rel=0.3)
    assert settings.senescence_rate == pytest.approx(0.02, rel=0.5)


def test_count_transitions_only_between_consecutive_annotated_frames():
    codes = np.array([0, 0, 1, -1, 1, SENESCENT, SENESCENT])
    frames = np.array([0, 1, 2, 3, 4, 5, 7])  # a gap between the last two
    c = count_transitions(codes, frames, [(0, 7)], SENESCENT)
    assert c == {"stay": 1, "switch": 1, "senesce": 1, "back": 0}


def test_temperature_and_confusion_fit():
    rng = np.random.default_rng(3)
    # over-confident: the top class is right 70% of the time with probability ~0.99
    targets = rng.integers(0, N, 4000)
    calls = np.where(rng.random(4000) < 0.7, targets, rng.integers(0, N, 4000))
    probs = np.full((4000, N), 0.01 / (N - 1))
    probs[np.arange(4000), calls] = 0.99
    t = fit_temperature(probs, targets)
    assert t > 1.5  # flattened
    m = fit_confusion(probs.argmax(axis=1), targets, N)
    assert np.allclose(m.sum(axis=1), 1)
    assert np.diag(m).mean() == pytest.approx(0.7 + 0.3 / N, rel=0.1)


def alternating_and_onset(fitted: TimelineSettings):
    """As the issue saw it: a Fragmented cell whose calls alternate with confident Senescent ones
    (the Fragmented frames hesitant, Senescent second), and a real onset."""
    hesitant = np.full(N, 0.05 / (N - 2))
    hesitant[FRAG], hesitant[SENESCENT] = 0.55, 0.40
    sure_sen = np.full(N, 0.03 / (N - 1))
    sure_sen[SENESCENT] = 0.97
    sure_frag = np.full(N, 0.03 / (N - 1))
    sure_frag[FRAG] = 0.97
    alt = np.array([sure_frag] * 6 + [sure_sen, hesitant] * 6)
    onset = np.array([sure_frag] * 8 + [sure_sen] * 8)
    return [smooth_track(p, SENESCENT, fitted) for p in (alt, onset)]


def test_senescence_onset_needs_sustained_evidence(rng):
    seqs = markov_tracks(150, 30, switch=0.04, senesce=0.02, rng=rng)
    cells, truth = network(seqs, rng, frag_as_senescent=0.3)
    fit = fit_track_model(cells, truth, seed=0)
    assert fit.settings.smooth and fit.settings.confusion is not None, fit.report["chosen"]
    (alt_path, alt_conf), (on_path, on_conf) = alternating_and_onset(fit.settings)
    assert not (alt_path == SENESCENT).any(), alt_path  # a Fragmented cell, not a senescence event
    assert (alt_path == FRAG).all()
    assert list(on_path) == [FRAG] * 8 + [SENESCENT] * 8  # a real onset still is one
    assert on_conf[-1] > 0.9
    # the unfitted defaults make the alternation a confident senescence event: what was fixed
    (old_path, old_conf), _ = alternating_and_onset(TimelineSettings())
    assert (old_path == SENESCENT).any() and old_conf[-1] > 0.99


def test_smoothing_not_worse_than_raw_on_validation_tracks(rng):
    seqs = markov_tracks(100, 30, switch=0.05, senesce=0.02, rng=rng)
    cells, truth = network(seqs, rng, frag_as_senescent=0.3)
    fit = fit_track_model(cells, truth, seed=2)
    val = fit.report["validation"]
    assert val["tracks"] == fit.report["validation_tracks"] == 50
    assert val["smoothed_accuracy"] >= val["raw_accuracy"]
    assert val["smoothed_false_senescence_tracks"] <= val["raw_false_senescence_tracks"]
    # the defaults are what the candidates are compared with, on the fitting tracks
    assert set(fit.report["candidates_on_fit_tracks"]) >= {"fitted", "unfitted defaults", "no smoothing"}


def test_falls_back_to_raw_when_smoothing_is_worse():
    # truth changes at every frame: no smoothing can beat calls that are always right
    rng = np.random.default_rng(0)
    seqs = [[int(c) for c in rng.integers(0, SENESCENT, 20)] for _ in range(20)]
    cells, truth = network(seqs, rng, frag_as_senescent=0.0, accuracy=0.999, conf=50)
    fit = fit_track_model(cells, truth, seed=0, base=TimelineSettings(switch_rate=0.001, senescence_rate=0.001))
    val = fit.report["validation"]
    assert val["smoothed_accuracy"] >= val["raw_accuracy"]
    if fit.report["notes"]:
        assert not fit.settings.smooth


def test_saved_track_model_round_trips_into_classify_config(tmp_path, rng):
    seqs = markov_tracks(30, 20, switch=0.05, senesce=0.02, rng=rng)
    cells, truth = network(seqs, rng)
    fit = fit_track_model(cells, truth)
    path = save_track_model(tmp_path / "track_model.json", fit)
    settings = load_track_model(path, CLASS_NAMES)
    assert settings == fit.settings
    cfg = ClassifyConfig(timeline=settings)
    assert ClassifyConfig.from_dict(cfg.to_dict()) == cfg
    out = add_timeline(cells, settings=settings)
    assert out["confidence"].between(0, 1).all()
    with pytest.raises(InputError, match="classes"):
        load_track_model(path, CLASS_NAMES[:4])
    with pytest.raises(InputError, match="for 8 classes"):
        add_timeline(cells.drop(columns=[f"p_{c}" for c in CLASS_NAMES[4:]]), CLASS_NAMES[:4],
                     settings=TimelineSettings.from_dict(fit.report["fitted"]))


@pytest.mark.parametrize("bad, word", [
    ({"temperature": 0}, "temperature"),
    ({"confusion": [[0.5, 0.2], [0.5, 0.5]]}, "confusion"),
    ({"confusion": [[1.0]]}, "confusion"),
    ({"smooth": "yes"}, "smooth"),
])
def test_bad_settings_are_refused(bad, word):
    with pytest.raises(InputError, match=word):
        TimelineSettings.from_dict(bad)


def test_fit_needs_two_annotated_tracks(rng):
    cells, truth = network(markov_tracks(3, 10, 0.05, 0.02, rng), rng)
    with pytest.raises(InputError, match="at least two tracks"):
        fit_track_model(cells, truth[truth["label"] == 1])


def test_evaluate_counts_false_senescence(rng):
    cells, truth = network([[0] * 10, [FRAG] * 10], rng, frag_as_senescent=0.0, accuracy=1.0)
    cells = cells.sort_values(["track_id", "frame"]).reset_index(drop=True)
    # track 2's network says Senescent from frame 5 although the cell stays Fragmented
    cells.loc[(cells["track_id"] == 2) & (cells["frame"] >= 5), [f"p_{c}" for c in CLASS_NAMES]] = \
        np.eye(N)[SENESCENT] * 0.98 + 0.02 / N
    from napari_yeast_phenotypes.core.track.track_estimates import truth_codes

    m = evaluate_tracks(cells, truth_codes(cells, truth), TimelineSettings())
    assert m["live_tracks"] == 2
    assert m["raw_false_senescence_tracks"] == 0.5 and m["smoothed_false_senescence_tracks"] == 0.5
    assert m["raw_false_senescence_frames"] == pytest.approx(5 / 20)


# --------------------------------------------------------------------------- the guarantee: never lower agreement

def _alternating(n_tracks, length, rng, offset=0):
    """Tracks whose class changes at every frame, called right with confidence: smoothing can only hurt."""
    rows, truth = [], []
    for tid in range(offset + 1, offset + n_tracks + 1):
        for t in range(length):
            c = (tid + t) % SENESCENT
            p = np.full(N, 0.02)
            p[c] = 0.6
            p[(c + 1) % SENESCENT] = 0.26  # the next frame's class is the runner-up: smoothing follows it
            p = p / p.sum()
            rows.append({"track_id": tid, "label": tid, "frame": t,
                         **{f"p_{n}": p[j] for j, n in enumerate(CLASS_NAMES)}})
            truth.append({"frame": t, "label": tid, "phenotype": CLASS_NAMES[c]})
    return pd.DataFrame(rows), pd.DataFrame(truth)


def _steady(n_tracks, length, rng, offset=0):
    """Tracks that keep one class, called wrong now and then: smoothing helps."""
    seqs = [[int(rng.integers(0, SENESCENT))] * length for _ in range(n_tracks)]
    cells, truth = network(seqs, rng, frag_as_senescent=0.0, accuracy=0.7, conf=3)
    cells["track_id"] += offset
    cells["label"] += offset
    truth["label"] += offset
    return cells, truth


def test_smoothing_that_lowers_agreement_on_the_validation_tracks_falls_back_to_raw_calls():
    from napari_yeast_phenotypes.core.track.track_model import split_tracks

    rng = np.random.default_rng(1)
    n = 20
    val = set(split_tracks(np.arange(1, n + 1), 0.5, 0).tolist())
    parts = [(_alternating if tid in val else _steady)(1, 20, rng, offset=tid - 1) for tid in range(1, n + 1)]
    cells = pd.concat([c for c, _ in parts], ignore_index=True)
    truth = pd.concat([t for _, t in parts], ignore_index=True)
    fit = fit_track_model(cells, truth, seed=0)
    r = fit.report
    fitted_on_fit = r["candidates_on_fit_tracks"][r["decision"]["first_choice"]]
    assert fitted_on_fit["smoothed_accuracy"] > fitted_on_fit["raw_accuracy"]  # smoothing helped where it was fitted
    assert r["decision"]["fell_back"] and r["decision"]["use"] == "raw calls" and not fit.settings.smooth
    low = r["decision"]["lower_on_validation"]
    assert low["smoothed_accuracy"] < low["raw_accuracy"]
    assert r["validation"]["smoothed_accuracy"] == r["validation"]["raw_accuracy"]
    assert r["labelled"]["smoothed_accuracy"] == r["labelled"]["raw_accuracy"]
    assert "would have lowered agreement" in r["decision"]["why"] and "raw calls" in r["decision"]["why"]
    from napari_yeast_phenotypes.core.track.track_model_file import report_lines

    assert any(line.startswith("uses: raw calls") for line in report_lines(r))
    # classified with it, phenotype is the network's own call
    out = add_timeline(cells, CLASS_NAMES, fit.settings)
    assert (out["phenotype"] == out["phenotype_raw"]).all()


@pytest.mark.parametrize("seed", range(12))
def test_the_track_model_never_lowers_agreement_on_labelled_tracks(seed):
    """Whatever the movie (tracks that smoothing helps, hurts, or both), the fit's model is at least as accurate as
    the raw calls on the fitting tracks, on the validation tracks and on all labelled tracks."""
    rng = np.random.default_rng(seed)
    parts = []
    for tid in range(1, int(rng.integers(4, 16)) + 1):
        kind = rng.choice(["steady", "alternating", "markov"])
        if kind == "markov":
            c, t = network(markov_tracks(1, int(rng.integers(3, 25)), 0.1, 0.03, rng), rng,
                           accuracy=float(rng.uniform(0.5, 0.95)))
            c["track_id"] += tid - 1
            c["label"] += tid - 1
            t["label"] += tid - 1
        else:
            c, t = (_steady if kind == "steady" else _alternating)(1, int(rng.integers(3, 25)), rng, offset=tid - 1)
        parts.append((c, t))
    cells = pd.concat([c for c, _ in parts], ignore_index=True)
    truth = pd.concat([t for _, t in parts], ignore_index=True).sample(frac=0.8, random_state=seed)  # some unlabelled
    fit = fit_track_model(cells, truth, seed=seed, validation_fraction=float(rng.uniform(0.2, 0.8)))
    r = fit.report
    for where in (r["candidates_on_fit_tracks"][r["chosen"]], r["validation"], r["labelled"]):
        assert where["smoothed_accuracy"] >= where["raw_accuracy"]
    assert r["decision"]["use"] == ("smoothing" if fit.settings.smooth else "raw calls")
    # what the report says is what classifying with the settings gives
    from napari_yeast_phenotypes.core.track.track_estimates import truth_codes

    out = add_timeline(cells, CLASS_NAMES, fit.settings).sort_values(["track_id", "frame"]).reset_index(drop=True)
    codes = truth_codes(out, truth)
    known = codes >= 0
    used = (np.array([CLASS_NAMES.index(c) for c in out["phenotype"]])[known] == codes[known]).mean()
    raw = (np.array([CLASS_NAMES.index(c) for c in out["phenotype_raw"]])[known] == codes[known]).mean()
    assert used == pytest.approx(r["labelled"]["smoothed_accuracy"]) and used >= raw


def test_no_smoothing_is_the_networks_own_call_even_with_a_confusion_matrix():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(N), 30)
    confusion = np.full((N, N), 0.02)
    confusion[:, 0] = 1 - 0.02 * (N - 1)  # a matrix whose most likely true class is always 0
    for i in range(1, N):  # (rows not all alike: a matrix that says nothing is refused)
        confusion[i, 0] -= 0.01 * i
        confusion[i, i] += 0.01 * i
    s = TimelineSettings(confusion=tuple(map(tuple, confusion)), smooth=False)
    path, _ = smooth_track(probs, SENESCENT, s)
    assert (path == probs.argmax(axis=1)).all()


def test_a_track_model_file_that_lowered_agreement_gives_raw_calls_and_says_so(tmp_path):
    from napari_yeast_phenotypes.core.track.track_model_file import read_track_model, track_model_decision

    rng = np.random.default_rng(0)
    cells, truth = network(markov_tracks(12, 10, 0.05, 0.02, rng), rng)
    fit = fit_track_model(cells, truth)
    path = save_track_model(tmp_path / "tm.json", fit)
    settings, decision = track_model_decision(*read_track_model(path, CLASS_NAMES))
    assert decision["why"] == fit.report["decision"]["why"] and not decision["fell_back"]
    # a file from before decisions were recorded, whose smoothing was worse on its validation tracks
    import json

    data = json.loads(path.read_text())
    data["timeline"]["smooth"] = True
    del data["report"]["decision"]
    data["report"]["validation"].update(raw_accuracy=0.9, smoothed_accuracy=0.8)
    path.write_text(json.dumps(data))
    settings, decision = track_model_decision(*read_track_model(path, CLASS_NAMES))
    assert not settings.smooth and decision["use"] == "raw calls" and decision["fell_back"]
    assert "0.800 vs 0.900" in decision["why"]
    data["report"] = {"method": "em", "validation": None}
    path.write_text(json.dumps(data))
    settings, decision = track_model_decision(*read_track_model(path, CLASS_NAMES))
    assert settings.smooth and "not checked against labels" in decision["why"]
