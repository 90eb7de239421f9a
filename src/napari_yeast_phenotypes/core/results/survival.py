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
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ...phenotypes import CLASS_NAMES, SENESCENT
from ..errors import InputError

#: the columns :func:`time_to_senescence` adds to a tracks table
SURVIVAL_COLUMNS = ["group", "excluded", "senescent_at_entry", "time", "senescent", "censored"]
ALL = "all"
SENESCENT_NAME = CLASS_NAMES[SENESCENT]
_TRANSITION = re.compile(r"^\s*(-?\d+)\s*:\s*(.+?)\s*>\s*(.+?)\s*$")

#: the reasons a track is left out of the estimates (``excluded`` in the survival table)
AT_ENTRY = "senescent when first seen"
NO_FIRST = "first frame missing or not a whole number"
NO_LAST = "last frame missing or not a whole number"
BACKWARDS = "last frame before the first frame"
BAD_SENESCENCE = "senescence frame not a whole number"
OUTSIDE = "senescence frame outside the track"
INVALID = (NO_FIRST, NO_LAST, BACKWARDS, BAD_SENESCENCE, OUTSIDE)

#: how a missing number may be written in a table made elsewhere (R, spreadsheets): read as empty
_MISSING = {"", "na", "nan", "<na>", "none", "null"}

MEDIAN_COLUMNS = ["group", "tracks", "senescent", "censored", "senescent_at_entry", "invalid", "median",
                  "median_lower", "median_upper", "note"]
LOGRANK_COLUMNS = ["test", "group_a", "group_b", "groups", "statistic", "df", "p", "p_holm"]
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


def _by_columns(by) -> list[str]:
    if by is None:
        return []
    cols = [by] if isinstance(by, str) else [str(b) for b in by]
    return list(dict.fromkeys(cols))


def _live_classes(tracks: pd.DataFrame, absorbing: str) -> list[str]:
    return [c[len("frames_"):] for c in tracks.columns
            if isinstance(c, str) and c.startswith("frames_") and c != f"frames_{absorbing}"]


def _check_tracks(tracks: pd.DataFrame, by: list[str]) -> None:
    need = ["track_id", "first_frame", "last_frame", "senescence_frame"]
    missing = [c for c in need if c not in tracks.columns]
    if missing:
        raise InputError(f"the tracks table lacks {', '.join(missing)}: give a tracks.csv written by "
                         "yeast-phenotypes classify or classify-many")
    absent = [b for b in by if b not in tracks.columns]
    if absent:
        raise InputError(f"cannot group by {', '.join(absent)}: the tracks table has no such column. "
                         f"Its columns: {', '.join(map(str, tracks.columns))}. Add it to the SPEC of "
                         "classify-many (one column per movie), or group by another")


def _as_text(value) -> str:
    """A group value as written: text as it is; a missing value (only in tables built in code) empty,
    as it would be in a CSV; anything else as ``str``."""
    if isinstance(value, str):
        return value
    try:
        if value is None or pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def group_labels(tracks: pd.DataFrame, by: list[str]) -> np.ndarray:
    """One group name per track: the ``by`` values as written, joined by `` / `` for several columns.

    Two different combinations never share a name: when joining would make them equal (a value
    holding `` / ``), every part is quoted instead.
    """
    if not by:
        return np.full(len(tracks), ALL, dtype=object)
    parts = [tracks[b].map(_as_text).to_numpy(dtype=object) for b in by]
    if len(by) == 1:
        return parts[0]
    combos = list(zip(*parts))
    joined = [" / ".join(c) for c in combos]
    if len(set(joined)) != len(set(combos)):
        joined = [" / ".join(json.dumps(p, ensure_ascii=False) for p in c) for c in combos]
    return np.asarray(joined, dtype=object)


def _frames(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame numbers from a column as written: (value as float, missing, not a whole number >= 0)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        missing = np.isnan(num)
    else:
        text = values.map(lambda v: "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v).strip())
        missing = text.str.lower().isin(_MISSING).to_numpy()
        num = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~missing & ~(np.isfinite(num) & (num >= 0) & (np.floor(num) == num))
    return num, missing, bad


def time_to_senescence(tracks: pd.DataFrame, by=None, frame_interval: float = 1.0) -> pd.DataFrame:
    """Each track's time to senescence, or to its end (censored), from its first frame.

    Parameters
    ----------
    tracks
        A tracks table (``tracks.csv`` of one movie, or the combined one of ``classify-many``):
        ``track_id, first_frame, last_frame, senescence_frame`` and the ``by`` columns.
    by
        Column name(s) that define the groups (e.g. ``"condition"`` or ``["strain", "condition"]``);
        ``None``: one group, ``"all"``.
    frame_interval
        Time between frames (in the unit you report; 1 = frames).

    Returns
    -------
    pandas.DataFrame
        ``tracks`` with ``group``, ``excluded`` (why a track is left out of the estimates: see
        :data:`INVALID` and :data:`AT_ENTRY`; empty when it is followed), ``senescent_at_entry``
        (already Senescent when first seen), ``time`` (first frame to the first Senescent frame,
        or to the last frame for a censored track, times ``frame_interval``; 0 for a track
        senescent when first seen, empty for one the checks leave out), ``senescent`` and
        ``censored``. A column of the input with one of these names is kept as ``<name>_input``.
    """
    by = _by_columns(by)
    _check_tracks(tracks, by)
    if not (isinstance(frame_interval, (int, float, np.number)) and np.isfinite(frame_interval)
            and frame_interval > 0):
        raise InputError(f"the frame interval must be a positive finite number, not {frame_interval!r}")
    group = group_labels(tracks, by)
    clash = {c: f"{c}_input" for c in SURVIVAL_COLUMNS if c in tracks.columns}
    out = tracks.rename(columns=clash).reset_index(drop=True)
    out.attrs["renamed"] = clash
    out["group"] = group
    first, first_missing, first_bad = _frames(tracks["first_frame"])
    last, last_missing, last_bad = _frames(tracks["last_frame"])
    sen, sen_missing, sen_bad = _frames(tracks["senescence_frame"])
    reason = np.full(len(out), "", dtype=object)
    event = ~sen_missing & ~sen_bad
    with np.errstate(invalid="ignore"):
        rules = [(first_missing | first_bad, NO_FIRST), (last_missing | last_bad, NO_LAST),
                 (last < first, BACKWARDS), (sen_bad, BAD_SENESCENCE),
                 (event & ((sen < first) | (sen > last)), OUTSIDE), (event & (sen == first), AT_ENTRY)]
    for mask, why in rules:
        reason[(reason == "") & mask] = why
    followed = reason == ""
    out["excluded"] = reason
    out["senescent_at_entry"] = reason == AT_ENTRY
    end = np.where(event, sen, last)
    out["time"] = np.where(followed | (reason == AT_ENTRY), (end - first) * float(frame_interval), np.nan)
    out["senescent"] = followed & event
    out["censored"] = followed & ~event
    return out


def _fit(times, events, label: str, alpha: float):
    from lifelines import KaplanMeierFitter

    return KaplanMeierFitter(alpha=alpha).fit(np.asarray(times, float), np.asarray(events, bool), label=label)


def kaplan_meier(tracks: pd.DataFrame, frame_interval: float = 1.0, alpha: float = 0.05, label: str = ALL):
    """The Kaplan-Meier estimate of staying non-senescent for one tracks table (lifelines' fitter).

    Tracks already Senescent when first seen, and tracks the table's checks leave out, are left
    out. Returns the fitted ``lifelines.KaplanMeierFitter``, or ``None`` when no track is left.
    """
    st = time_to_senescence(tracks, None, frame_interval)
    st = st[st["excluded"] == ""]
    if not len(st):
        return None
    return _fit(st["time"], st["senescent"], label, alpha)


def km_table(kmf, group: str) -> pd.DataFrame:
    """A fitted Kaplan-Meier estimate as a plain table: time, survival, band, at risk, events."""
    sf = kmf.survival_function_.iloc[:, 0]
    ci = kmf.confidence_interval_
    et = kmf.event_table
    return pd.DataFrame({
        "group": group,
        "time": sf.index.to_numpy(dtype=float),
        "survival": sf.to_numpy(dtype=float),
        "lower": ci.iloc[:, 0].to_numpy(dtype=float),
        "upper": ci.iloc[:, 1].to_numpy(dtype=float),
        "at_risk": et["at_risk"].reindex(sf.index).to_numpy(dtype=np.int64),
        "events": et["observed"].reindex(sf.index).to_numpy(dtype=np.int64),
        "censored": et["censored"].reindex(sf.index).to_numpy(dtype=np.int64),
    })


def _median_row(kmf, group: str, g: pd.DataFrame, n_entry: int, n_invalid: int) -> dict:
    """A group's median time to senescence, or why the data cannot give it."""
    row = {"group": group, "tracks": int(len(g)), "senescent": int(g["senescent"].sum()),
           "censored": int(g["censored"].sum()), "senescent_at_entry": n_entry, "invalid": n_invalid,
           "median": np.nan, "median_lower": np.nan, "median_upper": np.nan, "note": ""}
    if kmf is None or not len(g):
        why = [f"{n_entry} senescent when first seen" if n_entry else "",
               f"{n_invalid} left out by the table's checks" if n_invalid else ""]
        row["note"] = "no track followed (" + ", ".join(w for w in why if w) + ")"
        return row
    longest = float(g["time"].max())
    if not row["senescent"]:
        row["note"] = f"not estimable: no track became senescent (followed up to {longest:g})"
        return row
    if len(g) < 2:
        row["note"] = "not estimable from a single track"
        return row
    from lifelines.utils import median_survival_times

    ci = median_survival_times(kmf.confidence_interval_)
    median, lower, upper = float(kmf.median_survival_time_), float(ci.iloc[0, 0]), float(ci.iloc[0, 1])
    row["median"] = median
    if not np.isfinite(median):
        row["note"] = f"not reached: more than half never became senescent (followed up to {longest:g})"
    if lower == upper:
        row["note"] = (row["note"] + "; " if row["note"] else "") + \
            "interval not estimable (every track at risk became senescent at once)"
    else:
        row["median_lower"], row["median_upper"] = lower, upper
    return row


def holm(p) -> np.ndarray:
    """Holm's step-down adjustment of p-values (family-wise error rate), in the input's order."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    if not m:
        return p.copy()
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def _logrank(st: pd.DataFrame, groups: list[str], pairs: bool = False,
             progress: Callable[[int, int], None] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One log-rank test of all ``groups`` at once; with ``pairs``, every pair, Holm-adjusted."""
    from lifelines.statistics import logrank_test, multivariate_logrank_test

    rows, notes = [], []
    if len(groups) < 2:
        return pd.DataFrame(rows, columns=LOGRANK_COLUMNS), notes
    sub = st[st["group"].isin(groups)]
    if not sub["senescent"].any():
        notes.append("no track of any group became senescent: there is nothing for a log-rank test to compare")
        return pd.DataFrame(rows, columns=LOGRANK_COLUMNS), notes
    r = multivariate_logrank_test(sub["time"].to_numpy(float), sub["group"].to_numpy(object),
                                  sub["senescent"].to_numpy(bool))
    rows.append({"test": "overall", "group_a": "", "group_b": "", "groups": len(groups),
                 "statistic": float(r.test_statistic), "df": int(r.degrees_of_freedom), "p": float(r.p_value),
                 "p_holm": np.nan})
    if pairs:
        by_group = dict(list(sub.groupby("group", sort=False)))
        n = len(groups) * (len(groups) - 1) // 2
        done, pair_rows = 0, []
        for i, a in enumerate(groups):
            for b in groups[i + 1:]:
                ga, gb = by_group[a], by_group[b]
                if ga["senescent"].any() or gb["senescent"].any():
                    t = logrank_test(ga["time"], gb["time"], ga["senescent"], gb["senescent"])
                    stat, p = float(t.test_statistic), float(t.p_value)
                else:
                    stat, p = np.nan, np.nan  # no event in either: nothing to compare
                pair_rows.append({"test": "pair", "group_a": a, "group_b": b, "groups": 2, "statistic": stat,
                                  "df": 1, "p": p, "p_holm": np.nan})
                done += 1
                if progress is not None:
                    progress(done, n)
        ps = np.array([r["p"] for r in pair_rows], dtype=float)
        ok = np.isfinite(ps)
        adj = np.full(len(ps), np.nan)
        adj[ok] = holm(ps[ok])
        for r_, a_ in zip(pair_rows, adj):
            r_["p_holm"] = float(a_)
        untested = int((~ok).sum())
        if untested:
            notes.append(f"{untested} pair(s) of groups without any senescent track were not tested")
        rows.extend(pair_rows)
    return pd.DataFrame(rows, columns=LOGRANK_COLUMNS), notes


def phenotype_time(st: pd.DataFrame, groups: list[str], absorbing: str = SENESCENT_NAME,
                   frame_interval: float = 1.0) -> pd.DataFrame:
    """Per group and live phenotype: the time tracks spent in it before senescence (or their end).

    Read from the ``frames_<class>`` columns (a value that is not a number counts as missing);
    in the package's timelines Senescent is absorbing, so every frame in a live phenotype comes
    before senescence.
    """
    classes = _live_classes(st, absorbing)
    frames = {c: pd.to_numeric(st[f"frames_{c}"], errors="coerce").astype(float) for c in classes}
    rows = []
    for g in groups:
        in_g = (st["group"] == g).to_numpy()
        sen = in_g & st["senescent"].to_numpy(bool)
        total = float(sum(np.nansum(frames[c].to_numpy()[in_g]) for c in classes)) if classes else 0.0
        for c in classes:
            col = frames[c].to_numpy()
            rows.append({"group": g, "phenotype": c, "tracks": int(in_g.sum()),
                         "mean_time": float(np.nanmean(col[in_g]) * frame_interval)
                         if np.isfinite(col[in_g]).any() else np.nan,
                         "mean_time_senescent_tracks": float(np.nanmean(col[sen]) * frame_interval)
                         if np.isfinite(col[sen]).any() else np.nan,
                         "share_of_time": float(np.nansum(col[in_g]) / total) if total else np.nan})
    return pd.DataFrame(rows, columns=["group", "phenotype", "tracks", "mean_time", "mean_time_senescent_tracks",
                                       "share_of_time"])


def parse_transitions(text) -> list[tuple[int, str, str]]:
    """``"12:Nuclear>Aggregate; 30:Aggregate>Senescent"`` -> ``[(12, "Nuclear", "Aggregate"), ...]``."""
    if not isinstance(text, str) or not text.strip():
        return []
    out = []
    for part in text.split(";"):
        m = _TRANSITION.match(part)
        if m is None:
            if part.strip():
                raise InputError(f"cannot read the transition {part.strip()!r}; expected frame:From>To")
            continue
        out.append((int(m.group(1)), m.group(2), m.group(3)))
    return out


def transition_counts(st: pd.DataFrame, groups: list[str], notes: list[str] | None = None) -> pd.DataFrame:
    """Per group, how often each phenotype changed into each other one (from ``transitions``).

    A track whose ``transitions`` cannot be read is left out of these counts, and said in ``notes``.
    """
    rows, unreadable = [], 0
    if "transitions" in st.columns:
        for g, text in zip(st["group"], st["transitions"]):
            try:
                rows.extend((g, a, b) for _, a, b in parse_transitions(text))
            except InputError:
                unreadable += 1
    if unreadable and notes is not None:
        notes.append(f"{unreadable} track(s) with transitions that cannot be read (expected frame:From>To; ...) are "
                     "left out of transitions.csv")
    df = pd.DataFrame(rows, columns=["group", "from", "to"])
    counts = df.groupby(["group", "from", "to"], sort=False).size().rename("count").reset_index()
    order = {g: i for i, g in enumerate(groups)}
    counts["_g"] = counts["group"].map(order)
    counts = counts.sort_values(["_g", "count", "from", "to"], ascending=[True, False, True, True], kind="stable")
    counts = counts.drop(columns="_g")
    return counts.reset_index(drop=True)


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


# ---------------------------------------------------------------------------- figures

def draw_km(ax, curve: pd.DataFrame, colour=None, label: str | None = None, band: bool = True, lw: float = 1.6):
    """One Kaplan-Meier curve (a :func:`km_table`) as a step line with its confidence band."""
    t = curve["time"].to_numpy(dtype=float)
    (line,) = ax.step(t, curve["survival"].to_numpy(dtype=float), where="post", color=colour, label=label, lw=lw)
    if band:
        ax.fill_between(t, curve["lower"].to_numpy(dtype=float), curve["upper"].to_numpy(dtype=float),
                        step="post", color=line.get_color(), alpha=0.2, lw=0)
    censored = curve[curve["censored"] > 0]
    if len(censored):  # ticks where tracks left without becoming senescent
        ax.plot(censored["time"], censored["survival"], "|", color=line.get_color(), ms=5, mew=0.8)
    return line


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return "not tested"
    return "p < 1e-10" if p < 1e-10 else f"p = {p:.2g}"


#: more groups than this: the figure names none of them (the tables do)
MAX_NAMED_GROUPS = 20


def _median_text(m) -> str:
    if np.isfinite(m["median"]):
        return f"median {m['median']:.3g}"
    if m["median"] == np.inf:
        return "median not reached"
    return "median not estimable"


def ageing_figure(res: SurvivalResult, title: str | None = None):
    """Kaplan-Meier curves per group (bands, medians, log-rank p) and the time in each phenotype
    before senescence; a matplotlib ``Figure`` (no pyplot state is touched). Every text is drawn
    as written (see :mod:`.figures`); with more than :data:`MAX_NAMED_GROUPS` groups the curves
    are drawn without bands or names (the tables name them)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from ...phenotypes import class_colours
    from .figures import literal_text, make_literal

    with literal_text():
        fig = Figure(figsize=(15, 4.6), layout="constrained")
        ax_km, ax_ph = fig.subplots(1, 2, width_ratios=[1.2, 1])
        many = len(res.all_groups) > MAX_NAMED_GROUPS
        medians = res.medians.set_index("group")
        handles = []
        for g in res.all_groups:
            m = medians.loc[g]
            if m["tracks"] == 0:
                if not many:
                    handles.append(Line2D([], [], color="none", label=f"{_shown(g)}: no curve, {m['note']}"))
                continue
            line = draw_km(ax_km, res.curves[res.curves["group"] == g], band=not many, lw=0.8 if many else 1.6,
                           label=f"{_shown(g)}: {_median_text(m)} (n={int(m['tracks'])}, "
                                 f"{int(m['senescent'])} senescent)")
            if not many:
                handles.append(line)
        ax_km.set_ylim(0, 1.02)
        ax_km.set_xlabel(f"time since the track's first frame ({res.time_unit})")
        ax_km.set_ylabel("fraction not yet senescent")
        ax_km.set_title(f"Kaplan-Meier, {int(round(100 * (1 - res.alpha)))} % bands"
                        + (f" by {', '.join(res.by)}" if res.by else ""))
        texts = []
        if many:
            texts.append(f"{len(res.all_groups)} groups: see km_curves.csv and median_time.csv")
        overall = res.logrank[res.logrank["test"] == "overall"]
        pairs = res.logrank[res.logrank["test"] == "pair"]
        if len(overall):
            r = overall.iloc[0]
            texts.append(f"log-rank, all {int(r['groups'])} groups at once: {_p_text(r['p'])}")
        if 0 < len(pairs) <= 6:
            texts.append("pairs (Holm-adjusted):")
            texts += [f"{_shown(r.group_a)} vs {_shown(r.group_b)}: {_p_text(r.p_holm)}" for r in pairs.itertuples()]
        elif len(pairs):
            texts.append(f"{len(pairs)} pairs: see logrank.csv (Holm-adjusted)")
        left_out = int((res.tracks["excluded"] != "").sum())
        if left_out:
            texts.append(f"{left_out} of {len(res.tracks)} tracks left out (see excluded_tracks.csv)")
        handles += [Line2D([], [], color="none", label=t) for t in texts]
        ax_km.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)

        pt = res.phenotype_time
        if len(pt):
            classes = list(pd.unique(pt["phenotype"]))
            colours = class_colours(classes)
            groups = res.groups
            left = np.zeros(len(groups))
            for c, col in zip(classes, colours):
                vals = pt[pt["phenotype"] == c].set_index("group").reindex(groups)["mean_time"].to_numpy(dtype=float)
                ax_ph.barh(np.arange(len(groups)), vals, left=left, color=col, label=c)
                left += np.nan_to_num(vals)
            if many:
                ax_ph.set_yticks([])
                ax_ph.set_ylabel(f"{len(groups)} groups (see phenotype_time.csv)")
            else:
                ax_ph.set_yticks(np.arange(len(groups)), [_shown(g) for g in groups])
            ax_ph.invert_yaxis()
            ax_ph.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        ax_ph.set_xlabel(f"mean time per track ({res.time_unit})")
        ax_ph.set_title("Time in each phenotype before senescence")
        if title:
            fig.suptitle(title)
        make_literal(fig)
    return fig


__all__ = ["SurvivalResult", "ageing_figure", "draw_km", "group_labels", "holm", "kaplan_meier", "km_table",
           "parse_transitions", "phenotype_time", "senescence_survival", "time_to_senescence",
           "transition_counts"]
