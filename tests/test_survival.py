"""Senescence as survival: censoring, lifelines' estimates, and a simulated two-condition experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

from napari_yeast_phenotypes.cli import main
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.results.plots import draw_not_senescent
from napari_yeast_phenotypes.core.results.survival import senescence_survival
from napari_yeast_phenotypes.core.results.survival_table import parse_transitions, time_to_senescence
from napari_yeast_phenotypes.core.track.timeline import track_summary


def hand_tracks() -> pd.DataFrame:
    """Five tracks whose fate is known: A senescent at t=2, B leaves (not senescent) at t=1, C
    senescent at t=3, D followed to t=4 without senescence, E already senescent when first seen."""
    return pd.DataFrame({
        "track_id": [1, 2, 3, 4, 5],
        "first_frame": [0, 0, 5, 0, 2],
        "last_frame": [6, 1, 9, 4, 8],
        "senescence_frame": pd.array([2, pd.NA, 8, pd.NA, 2], dtype="Int64"),
        "condition": ["x"] * 5,
    })


def test_a_track_that_ends_early_is_censored_not_surviving():
    st = time_to_senescence(hand_tracks()).set_index("track_id")
    assert st["time"].tolist() == [2, 1, 3, 4, 0]
    assert st["senescent"].tolist() == [True, False, True, False, False]
    assert st["censored"].tolist() == [False, True, False, True, False]
    assert st["senescent_at_entry"].tolist() == [False, False, False, False, True]

    curve = senescence_survival(hand_tracks(), by=None).curves.set_index("time")
    # by hand: at t=2, 3 tracks at risk (B left at t=1), 1 event -> 2/3; at t=3, 2 at risk, 1 event -> 1/3
    assert curve.loc[2.0, "at_risk"] == 3
    assert curve.loc[2.0, "survival"] == pytest.approx(2 / 3, rel=1e-12)
    assert curve.loc[3.0, "survival"] == pytest.approx(1 / 3, rel=1e-12)
    # the old estimate kept B "not senescent" for ever: 2 of 4 at t=3, not 1/3
    assert curve.loc[3.0, "survival"] < 0.5 - 0.1
    assert (curve["lower"] <= curve["survival"] + 1e-12).all() and (curve["survival"] <= curve["upper"] + 1e-12).all()


def test_the_estimate_is_lifelines_own():
    res = senescence_survival(hand_tracks(), by="condition", alpha=0.1)
    kmf = KaplanMeierFitter(alpha=0.1).fit([2, 1, 3, 4], [1, 0, 1, 0])  # E left out: senescent at entry
    curve = res.curves[res.curves["group"] == "x"]
    np.testing.assert_allclose(curve["survival"], kmf.survival_function_.iloc[:, 0], rtol=1e-12)
    np.testing.assert_allclose(curve["lower"], kmf.confidence_interval_.iloc[:, 0], rtol=1e-12)
    np.testing.assert_allclose(curve["upper"], kmf.confidence_interval_.iloc[:, 1], rtol=1e-12)
    med = res.medians.iloc[0]
    assert med["median"] == kmf.median_survival_time_
    assert (med["tracks"], med["senescent"], med["censored"], med["senescent_at_entry"]) == (4, 2, 2, 1)


def test_frame_interval_scales_time():
    st = time_to_senescence(hand_tracks(), frame_interval=15.0)
    assert st["time"].tolist() == [30, 15, 45, 60, 0]
    with pytest.raises(InputError, match="positive"):
        time_to_senescence(hand_tracks(), frame_interval=0)


def test_grouping_by_a_missing_column_says_which_exist():
    with pytest.raises(InputError, match="no such column.*condition"):
        senescence_survival(hand_tracks(), by="strain")


def test_phenotype_time_and_transitions_per_group():
    tracks = pd.DataFrame({
        "track_id": [1, 2, 3], "first_frame": [0, 0, 0], "last_frame": [5, 5, 3],
        "senescence_frame": pd.array([4, pd.NA, pd.NA], dtype="Int64"), "g": ["a", "a", "b"],
        "frames_Nuclear": [2, 6, 0], "frames_Aggregate": [2, 0, 4], "frames_Senescent": [2, 0, 0],
        "transitions": ["2:Nuclear>Aggregate; 4:Aggregate>Senescent", "", "1:Aggregate>Aggregate"],
    })
    res = senescence_survival(tracks, by="g")
    pt = res.phenotype_time.set_index(["group", "phenotype"])
    assert pt.loc[("a", "Nuclear"), "mean_time"] == pytest.approx(4.0)  # (2 + 6) / 2
    assert pt.loc[("a", "Nuclear"), "mean_time_senescent_tracks"] == pytest.approx(2.0)
    assert pt.loc[("a", "Nuclear"), "share_of_time"] == pytest.approx(8 / 10)
    assert "Senescent" not in set(pt.index.get_level_values("phenotype"))
    tr = {(r["group"], r["from"], r["to"]): r["count"] for r in res.transitions.to_dict("records")}
    assert tr == {("a", "Nuclear", "Aggregate"): 1, ("a", "Aggregate", "Senescent"): 1,
                  ("b", "Aggregate", "Aggregate"): 1}
    assert parse_transitions("12:Nuclear>Aggregate") == [(12, "Nuclear", "Aggregate")]
    with pytest.raises(InputError, match="frame:From>To"):
        parse_transitions("Nuclear to Aggregate")


def test_summary_panel_draws_the_censored_estimate():
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    from napari_yeast_phenotypes.core.results.plots import not_senescent_curve

    draw_not_senescent(ax, None, hand_tracks())  # the panel of summary.png and of the viewer's dock
    line = ax.get_lines()[0]
    kmf = not_senescent_curve(hand_tracks())
    np.testing.assert_allclose(line.get_ydata(), kmf.survival_function_.iloc[:, 0], rtol=1e-12)


# ------------------------------------------------------------------------------ a simulated experiment

def _simulated_tracks(condition: str, p_senesce: float, seeds, washout: float = 0.01) -> pd.DataFrame:
    """Tracks of simulated movies, their phenotypes the simulator's ground truth (no model is
    trained here; the truth stands in for a perfect classification). Cells are washed out of the
    field at random (``washout`` per frame), so tracks also end before the movie does."""
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie

    out = []
    for seed in seeds:
        truth = simulate_movie(n_frames=40, size=128, n_cells=12, seed=seed, p_senesce=p_senesce).truth
        rng = np.random.default_rng(seed)
        leave = {lab: int(rng.geometric(washout)) for lab in truth["label"].unique()}
        first = truth.groupby("label")["frame"].transform("min")
        kept = truth[truth["frame"] - first < truth["label"].map(leave)]
        tracks = track_summary(kept.assign(track_id=kept["label"]))
        out.append(tracks.assign(movie=f"{condition}-{seed}", condition=condition))
    return pd.concat(out, ignore_index=True)


def test_log_rank_finds_the_difference_put_in_and_none_between_alike_conditions():
    tracks = pd.concat([_simulated_tracks("slow", 0.01, [1, 2, 3]),
                        _simulated_tracks("slow-again", 0.01, [4, 5, 6]),
                        _simulated_tracks("fast", 0.06, [7, 8, 9])], ignore_index=True)
    overall = senescence_survival(tracks, by="condition").logrank
    assert list(overall["test"]) == ["overall"]  # by default one test of all groups at once, no pairs
    res = senescence_survival(tracks, by="condition", pairs=True)
    assert res.tracks["censored"].sum() > 0 and res.tracks["senescent"].sum() > 0
    p = {(r.group_a, r.group_b): r.p for r in res.logrank.itertuples()}
    assert p[("fast", "slow")] < 1e-3 and p[("fast", "slow-again")] < 1e-3
    assert p[("slow", "slow-again")] > 0.05
    assert p[("", "")] < 1e-3 and p[("", "")] == overall["p"].iloc[0]
    assert res.correction == "holm"
    holm = {(r.group_a, r.group_b): r.p_holm for r in res.logrank.itertuples() if r.test == "pair"}
    assert all(holm[k] >= p[k] for k in holm)
    # the same test as lifelines' own, on the same durations
    st = res.tracks[~res.tracks["senescent_at_entry"]]
    a, b = st[st["group"] == "fast"], st[st["group"] == "slow"]
    assert p[("fast", "slow")] == pytest.approx(logrank_test(a["time"], b["time"], a["senescent"],
                                                             b["senescent"]).p_value, rel=1e-9)
    med = res.medians.set_index("group")["median"]
    assert med["fast"] < med["slow"]  # a faster senescence rate: an earlier median


def test_cli_ageing_writes_tables_and_figure(tmp_path, capsys):
    tracks = pd.concat([_simulated_tracks("A", 0.01, [1]), _simulated_tracks("B", 0.06, [2])], ignore_index=True)
    tracks.to_csv(tmp_path / "tracks.csv", index=False)
    assert main(["ageing", str(tmp_path), "--by", "condition", "--frame-interval", "10", "--time-unit", "min"]) == 0
    out = capsys.readouterr().out
    assert "log-rank test of all 2 groups at once" in out
    assert (tmp_path / "ageing" / "ageing.png").stat().st_size > 10_000
    curves = pd.read_csv(tmp_path / "ageing" / "km_curves.csv")
    assert set(curves["group"]) == {"A", "B"} and (curves["time"] % 10 == 0).all()
    assert main(["ageing", str(tmp_path), "--by", "condition"]) == 2  # earlier results are kept
    assert "--overwrite" in capsys.readouterr().err


def test_the_summary_curve_is_on_movie_frames_with_delayed_entry_and_numbers_at_risk():
    """summary.png's Kaplan-Meier panel counts movie frames, as the other panels: a cell first seen at frame 5 is
    at risk from frame 5 on, never before."""
    from napari_yeast_phenotypes.core.results.plots import at_risk, not_senescent_curve

    tracks = pd.DataFrame({"track_id": [1, 2, 3, 4], "first_frame": [0, 0, 5, 0], "last_frame": [9, 9, 9, 3],
                           "senescence_frame": [4, np.nan, 7, 0]})
    # track 4 is senescent when first seen: out; track 3 enters at 5
    assert list(at_risk(tracks, [0, 4, 5, 7, 9])) == [2, 2, 2, 2, 1]
    kmf = not_senescent_curve(tracks)
    sf = kmf.survival_function_.iloc[:, 0]
    assert sf.loc[:3.9].min() == 1.0
    assert sf.loc[4.0] == pytest.approx(0.5)  # 1 of 2 at risk at frame 4 (track 3 not seen yet)
    assert sf.loc[7.0] == pytest.approx(0.5 * (1 - 1 / 2))  # at 7: tracks 2 and 3 at risk, 3 becomes senescent
