"""Senescence as survival: time to senescence per track, with tracks that end first censored.

A track is followed from the frame it is first seen. It has its *event* at the first frame it is
Senescent; a track that ends before that (the cell left the field, was washed out of its trap,
the movie ended) is *censored* at its last frame: it was known not senescent up to then, and
leaves the denominator afterwards instead of counting as "not senescent" in every later frame.
A track that is already Senescent when first seen says nothing about when it became so and is
left out (counted as ``senescent_at_entry``).

**The table is checked, and nothing is dropped without a word.** A track whose first or last
frame is missing or not a whole number, whose last frame comes before its first, or whose
senescence frame is not a whole number or lies outside the track, is left out of every
estimate; each one keeps its row in ``survival_tracks.csv`` with the reason in ``excluded``, and
the counts per reason and group are in :attr:`SurvivalResult.excluded`. Groups are the values of
the ``by`` columns exactly as written (``NA``, ``None`` and an empty cell are three groups); a
group none of whose tracks can be followed is still listed, with the reason.

The statistics are lifelines' (no hand-written estimators): Kaplan-Meier curves with their
confidence bands per condition, the median time to senescence with its interval, and **one
log-rank test of all groups at once** (``multivariate_logrank_test``: do the groups differ at
all?). Tests of every pair of groups are made only on request (``pairs=True``) and then come with
p-values adjusted for multiple testing by **Holm's** step-down method (which holds the chance of
any false positive among all the pairs at ``alpha``, whatever their dependence): among 200
conditions there are 19,900 pairs, and about 5 % of them look "significant" at p < 0.05 when no
condition differs. A median that the data cannot give is said so (``note``), not printed as a
number: no track followed, no track that became senescent, a single track, or an interval of
zero width (every track at risk became senescent at once).

Beside them, descriptive tables: the time each track spent in each phenotype before senescence
(Senescent is absorbing in the timelines, so a track's frames in a live phenotype all come before
it) and the transitions between phenotypes, read from ``tracks.csv``'s ``transitions`` column.

Time is counted in frames from the track's first frame, times ``frame_interval`` (e.g. minutes
per frame) when that is known.

Here :func:`senescence_survival` and what it returns; the table and its checks are in
:mod:`.survival_table`, the statistics in :mod:`.survival_stats`, the figure in :mod:`.survival_figure`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import InputError
from .survival_stats import _fit, _logrank, _median_row, km_table
from .survival_table import (
    AT_ENTRY,
    INVALID,
    SENESCENT_NAME,
    _by_columns,
    phenotype_time,
    time_to_senescence,
    transition_counts,
)

MEDIAN_COLUMNS = ["group", "tracks", "senescent", "censored", "senescent_at_entry", "invalid", "median",
                  "median_lower", "median_upper", "note"]
EXCLUDED_COLUMNS = ["group", "reason", "tracks"]


@dataclass
class SurvivalResult:
    """What :func:`senescence_survival` returns (every table is a pandas DataFrame).

    Attributes
    ----------
    tracks
        One row per track of the input, in its order: its own columns plus ``group``,
        ``excluded`` (why it is left out of the estimates, empty when it is followed),
        ``senescent_at_entry``, ``time``, ``senescent`` (the event) and ``censored``.
    curves
        Kaplan-Meier estimate per group: ``group, time, survival, lower, upper, at_risk, events,
        censored`` (the fraction not yet senescent and its pointwise confidence band).
    medians
        Per group, every group of the input (also one none of whose tracks can be followed):
        ``tracks`` (followed), ``senescent``, ``censored``, ``senescent_at_entry``, ``invalid``
        (left out by the table's checks), ``median``, ``median_lower``, ``median_upper`` (``inf``:
        not reached within the data; empty: not estimable) and ``note`` (why, in words).
    logrank
        ``test, group_a, group_b, groups, statistic, df, p, p_holm``: one ``overall`` row (all
        groups with a followed track, at once) when there are two or more, and with ``pairs`` one
        ``pair`` row per pair with its Holm-adjusted p-value.
    excluded
        ``group, reason, tracks``: how many tracks were left out, why, in which group.
    notes
        What a reader should know, in words (tracks left out, groups without a curve, a test that
        could not be made, columns renamed).
    phenotype_time
        Per group and live phenotype: mean time in it before senescence (or before the track
        ended) over all tracks and over those that became senescent, and its share of the time.
    transitions
        Per group: ``from, to, count`` of phenotype changes (``to = Senescent``: what came before it).
    by, alpha, time_unit, correction
        How it was computed (``correction``: ``"holm"`` when pairs were tested, else ``""``).
    """

    tracks: pd.DataFrame
    curves: pd.DataFrame
    medians: pd.DataFrame
    logrank: pd.DataFrame
    phenotype_time: pd.DataFrame
    transitions: pd.DataFrame
    by: list[str] = field(default_factory=list)
    alpha: float = 0.05
    time_unit: str = "frames"
    fitters: dict = field(default_factory=dict, repr=False)
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EXCLUDED_COLUMNS))
    notes: list[str] = field(default_factory=list)
    correction: str = ""

    @property
    def groups(self) -> list[str]:
        """The groups with a Kaplan-Meier curve (at least one track followed)."""
        return [g for g, n in zip(self.medians["group"], self.medians["tracks"]) if n > 0]

    @property
    def all_groups(self) -> list[str]:
        """Every group of the input, also those none of whose tracks could be followed."""
        return list(self.medians["group"])

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by the file names ``yeast-phenotypes ageing`` writes them to."""
        return {"survival_tracks.csv": self.tracks, "km_curves.csv": self.curves,
                "median_time.csv": self.medians, "logrank.csv": self.logrank,
                "excluded_tracks.csv": self.excluded,
                "phenotype_time.csv": self.phenotype_time, "transitions.csv": self.transitions}

    def summary(self) -> dict:
        """The counts and choices behind the tables, for ``ageing.json`` (plain values only)."""
        st = self.tracks
        reasons = st.loc[st["excluded"] != "", "excluded"].value_counts()
        return {"tracks": int(len(st)), "followed": int((st["excluded"] == "").sum()),
                "excluded": {str(k): int(v) for k, v in reasons.items()},
                "groups": self.all_groups, "groups_with_curve": self.groups, "by": self.by,
                "alpha": self.alpha, "time_unit": self.time_unit,
                "test": "log-rank of all groups at once (lifelines multivariate_logrank_test)",
                "pairs": bool((self.logrank["test"] == "pair").any()), "correction": self.correction,
                "notes": list(self.notes)}


def senescence_survival(tracks: pd.DataFrame, by="condition", *, frame_interval: float = 1.0,
                        time_unit: str | None = None, alpha: float = 0.05,
                        absorbing: str = SENESCENT_NAME, pairs: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> SurvivalResult:
    """Time to senescence per condition: Kaplan-Meier curves, medians, log-rank tests, and more.

    Parameters
    ----------
    tracks
        The tracks table of one movie or of a whole experiment (``classify-many``'s combined
        ``tracks.csv``, whose SPEC columns such as ``strain`` or ``condition`` can group it).
    by
        Column name(s) to compare by; ``None`` for one group.
    frame_interval, time_unit
        Time between frames and its unit's name (default: frames).
    alpha
        1 - the confidence level of the bands and intervals (0.05: 95 %).
    pairs
        Also test every pair of groups (Holm-adjusted); by default one test of all groups at once.
    progress
        ``callback(done, total)``: groups estimated, then pairs tested.

    Returns
    -------
    SurvivalResult
    """
    if not (isinstance(alpha, (int, float, np.number)) and 0 < alpha < 1):
        raise InputError(f"alpha must be in (0, 1), not {alpha!r}")
    by_cols = _by_columns(by)
    st = time_to_senescence(tracks, by_cols, frame_interval)
    notes = [f"the table's column {c!r} is kept as {n!r} (ageing adds its own {c!r})"
             for c, n in st.attrs.get("renamed", {}).items()]
    all_groups = sorted(pd.unique(st["group"]), key=str)
    followed = st[st["excluded"] == ""]
    reasons = st[st["excluded"] != ""].groupby(["group", "excluded"], sort=False).size()
    excluded = pd.DataFrame([{"group": g, "reason": r, "tracks": int(n)} for (g, r), n in reasons.items()],
                            columns=EXCLUDED_COLUMNS)
    for why in (AT_ENTRY, *INVALID):
        n = int((st["excluded"] == why).sum())
        if n:
            notes.append(f"{n} of {len(st)} tracks left out: {why}")
    fitters, curves, medians = {}, [], []
    by_group = dict(list(followed.groupby("group", sort=False)))
    n_entry = st[st["senescent_at_entry"]].groupby("group", sort=False).size()
    n_invalid = st[st["excluded"].isin(INVALID)].groupby("group", sort=False).size()
    k = len(by_group)
    total = len(all_groups) + (k * (k - 1) // 2 if pairs else 0)
    for i, g in enumerate(all_groups):
        sub = by_group.get(g, followed.iloc[:0])
        kmf = _fit(sub["time"], sub["senescent"], str(g), alpha) if len(sub) else None
        if kmf is not None:
            fitters[g] = kmf
            curves.append(km_table(kmf, g))
        medians.append(_median_row(kmf, g, sub, int(n_entry.get(g, 0)), int(n_invalid.get(g, 0))))
        if progress is not None:
            progress(i + 1, total)
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["group", "time", "survival", "lower", "upper", "at_risk", "events", "censored"])
    medians_df = pd.DataFrame(medians, columns=MEDIAN_COLUMNS)
    no_curve = [g for g, n in zip(medians_df["group"], medians_df["tracks"]) if n == 0]
    if no_curve:
        notes.append(f"{len(no_curve)} group(s) without any track to follow, so without a curve and left out of "
                     f"the log-rank test: {', '.join(_shown(g) for g in no_curve[:10])}"
                     + (" ..." if len(no_curve) > 10 else ""))
    groups = [g for g in all_groups if g not in set(no_curve)]
    pair_progress = None if progress is None else (lambda done, _n: progress(len(all_groups) + done, total))
    logrank, test_notes = _logrank(followed, groups, pairs, pair_progress)
    notes.extend(test_notes)
    return SurvivalResult(
        tracks=st, curves=curves_df, medians=medians_df, logrank=logrank,
        phenotype_time=phenotype_time(followed, groups, absorbing, frame_interval),
        transitions=transition_counts(followed, groups, notes), by=by_cols, alpha=alpha,
        time_unit=time_unit or ("frames" if frame_interval == 1 else "time"), fitters=fitters,
        excluded=excluded, notes=notes, correction="holm" if pairs and len(groups) >= 2 else "")


def _shown(group: str) -> str:
    """A group's name as shown in words and figures (an empty value as ``""``)."""
    return '""' if group == "" else str(group)


__all__ = ["SurvivalResult", "senescence_survival"]
