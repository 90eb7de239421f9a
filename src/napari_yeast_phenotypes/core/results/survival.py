"""Senescence as survival: time to senescence per track, with tracks that end first censored.

A track is followed from the frame it is first seen. It has its *event* at the first frame it is
Senescent; a track that ends before that (the cell left the field, was washed out of its trap,
the movie ended) is *censored* at its last frame: it was known not senescent up to then, and
leaves the denominator afterwards instead of counting as "not senescent" in every later frame.
A track that is already Senescent when first seen says nothing about when it became so and is
left out (counted as ``senescent_at_entry``).

The statistics are lifelines' (no hand-written estimators): Kaplan-Meier curves with their
confidence bands per condition, the median time to senescence with its interval, log-rank tests
between conditions (all pairs, and all groups at once). Beside them, descriptive tables: the time
each track spent in each phenotype before senescence (Senescent is absorbing in the timelines,
so a track's frames in a live phenotype all come before it) and the transitions between
phenotypes, read from ``tracks.csv``'s ``transitions`` column.

Time is counted in frames from the track's first frame, times ``frame_interval`` (e.g. minutes
per frame) when that is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...phenotypes import CLASS_NAMES, SENESCENT
from ..errors import InputError

#: the columns :func:`time_to_senescence` adds to a tracks table
SURVIVAL_COLUMNS = ["group", "senescent_at_entry", "time", "senescent", "censored"]
ALL = "all"
SENESCENT_NAME = CLASS_NAMES[SENESCENT]
_TRANSITION = re.compile(r"^\s*(-?\d+)\s*:\s*(.+?)\s*>\s*(.+?)\s*$")


@dataclass
class SurvivalResult:
    """What :func:`senescence_survival` returns (every table is a pandas DataFrame).

    Attributes
    ----------
    tracks
        One row per track: its own columns plus ``group``, ``senescent_at_entry``, ``time``,
        ``senescent`` (the event) and ``censored``.
    curves
        Kaplan-Meier estimate per group: ``group, time, survival, lower, upper, at_risk, events,
        censored`` (the fraction not yet senescent and its pointwise confidence band).
    medians
        Per group: ``tracks, senescent, censored, senescent_at_entry, median, median_lower,
        median_upper`` (``inf``: not reached within the data).
    logrank
        Log-rank tests: one row per pair of groups, and one ``all groups`` row when there are
        more than two (``group_a, group_b, statistic, df, p``).
    phenotype_time
        Per group and live phenotype: mean time in it before senescence (or before the track
        ended) over all tracks and over those that became senescent, and its share of the time.
    transitions
        Per group: ``from, to, count`` of phenotype changes (``to = Senescent``: what came before it).
    by, alpha, time_unit
        How it was computed.
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

    @property
    def groups(self) -> list[str]:
        return list(self.medians["group"])

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by the file names ``yeast-phenotypes ageing`` writes them to."""
        return {"survival_tracks.csv": self.tracks, "km_curves.csv": self.curves,
                "median_time.csv": self.medians, "logrank.csv": self.logrank,
                "phenotype_time.csv": self.phenotype_time, "transitions.csv": self.transitions}


def _by_columns(by) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else [str(b) for b in by]


def _live_classes(tracks: pd.DataFrame, absorbing: str) -> list[str]:
    return [c[len("frames_"):] for c in tracks.columns
            if c.startswith("frames_") and c != f"frames_{absorbing}"]


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
        ``tracks`` with ``group``, ``senescent_at_entry`` (already Senescent when first seen: left
        out of the estimates), ``time`` (first frame to the first Senescent frame, or to the last
        frame for a censored track, times ``frame_interval``), ``senescent`` and ``censored``.
    """
    by = _by_columns(by)
    _check_tracks(tracks, by)
    if not frame_interval > 0:
        raise InputError(f"the frame interval must be positive, not {frame_interval!r}")
    out = tracks.copy()
    if by:
        parts = [out[b].astype(str) for b in by]
        group = parts[0]
        for p in parts[1:]:
            group = group + " / " + p
        out["group"] = group.to_numpy()
    else:
        out["group"] = ALL
    first = out["first_frame"].to_numpy(dtype=np.int64)
    last = out["last_frame"].to_numpy(dtype=np.int64)
    sen = pd.to_numeric(out["senescence_frame"], errors="coerce").to_numpy(dtype=float)
    event = np.isfinite(sen)
    out["senescent_at_entry"] = event & (sen <= first)
    end = np.where(event, sen, last)
    out["time"] = (end - first) * float(frame_interval)
    out["senescent"] = event & ~out["senescent_at_entry"].to_numpy()
    out["censored"] = ~event
    return out


def _fit(times, events, label: str, alpha: float):
    from lifelines import KaplanMeierFitter

    return KaplanMeierFitter(alpha=alpha).fit(np.asarray(times, float), np.asarray(events, bool), label=label)


def kaplan_meier(tracks: pd.DataFrame, frame_interval: float = 1.0, alpha: float = 0.05, label: str = ALL):
    """The Kaplan-Meier estimate of staying non-senescent for one tracks table (lifelines' fitter).

    Tracks already Senescent when first seen are left out. Returns the fitted
    ``lifelines.KaplanMeierFitter``, or ``None`` when no track is left.
    """
    st = time_to_senescence(tracks, None, frame_interval)
    st = st[~st["senescent_at_entry"]]
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


def _median_row(kmf, group: str, g: pd.DataFrame, n_entry: int) -> dict:
    from lifelines.utils import median_survival_times

    ci = median_survival_times(kmf.confidence_interval_)
    return {"group": group, "tracks": int(len(g)), "senescent": int(g["senescent"].sum()),
            "censored": int(g["censored"].sum()), "senescent_at_entry": n_entry,
            "median": float(kmf.median_survival_time_),
            "median_lower": float(ci.iloc[0, 0]), "median_upper": float(ci.iloc[0, 1])}


def _logrank(st: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    from lifelines.statistics import logrank_test, multivariate_logrank_test

    rows = []
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            ga, gb = st[st["group"] == a], st[st["group"] == b]
            r = logrank_test(ga["time"], gb["time"], ga["senescent"], gb["senescent"])
            rows.append({"group_a": a, "group_b": b, "statistic": float(r.test_statistic), "df": 1,
                         "p": float(r.p_value)})
    if len(groups) > 2:
        r = multivariate_logrank_test(st["time"], st["group"], st["senescent"])
        rows.append({"group_a": "all groups", "group_b": "", "statistic": float(r.test_statistic),
                     "df": int(r.degrees_of_freedom), "p": float(r.p_value)})
    return pd.DataFrame(rows, columns=["group_a", "group_b", "statistic", "df", "p"])


def phenotype_time(st: pd.DataFrame, groups: list[str], absorbing: str = SENESCENT_NAME,
                   frame_interval: float = 1.0) -> pd.DataFrame:
    """Per group and live phenotype: the time tracks spent in it before senescence (or their end).

    Read from the ``frames_<class>`` columns; in the package's timelines Senescent is absorbing,
    so every frame in a live phenotype comes before senescence.
    """
    classes = _live_classes(st, absorbing)
    rows = []
    for g in groups:
        sub = st[st["group"] == g]
        sen = sub[sub["senescent"]]
        total = float(sub[[f"frames_{c}" for c in classes]].to_numpy(dtype=float).sum()) if classes else 0.0
        for c in classes:
            col = sub[f"frames_{c}"].astype(float) * frame_interval
            rows.append({"group": g, "phenotype": c, "tracks": int(len(sub)),
                         "mean_time": float(col.mean()) if len(sub) else np.nan,
                         "mean_time_senescent_tracks": float(sen[f"frames_{c}"].astype(float).mean() * frame_interval)
                         if len(sen) else np.nan,
                         "share_of_time": float(sub[f"frames_{c}"].sum() / total) if total else np.nan})
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


def transition_counts(st: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """Per group, how often each phenotype changed into each other one (from ``transitions``)."""
    rows = []
    if "transitions" in st.columns:
        for g, text in zip(st["group"], st["transitions"]):
            rows.extend((g, a, b) for _, a, b in parse_transitions(text))
    df = pd.DataFrame(rows, columns=["group", "from", "to"])
    counts = df.groupby(["group", "from", "to"], sort=False).size().rename("count").reset_index()
    order = {g: i for i, g in enumerate(groups)}
    counts["_g"] = counts["group"].map(order)
    counts = counts.sort_values(["_g", "count", "from", "to"], ascending=[True, False, True, True], kind="stable")
    counts = counts.drop(columns="_g")
    return counts.reset_index(drop=True)


def senescence_survival(tracks: pd.DataFrame, by="condition", *, frame_interval: float = 1.0,
                        time_unit: str | None = None, alpha: float = 0.05,
                        absorbing: str = SENESCENT_NAME) -> SurvivalResult:
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

    Returns
    -------
    SurvivalResult
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), not {alpha!r}")
    by_cols = _by_columns(by)
    st = time_to_senescence(tracks, by_cols, frame_interval)
    n_entry = st.groupby("group", sort=False)["senescent_at_entry"].sum()
    st_in = st[~st["senescent_at_entry"]]
    groups = [g for g in pd.unique(st["group"]) if (st_in["group"] == g).any()]
    groups = sorted(groups, key=str)
    fitters, curves, medians = {}, [], []
    for g in groups:
        sub = st_in[st_in["group"] == g]
        kmf = _fit(sub["time"], sub["senescent"], str(g), alpha)
        fitters[g] = kmf
        curves.append(km_table(kmf, g))
        medians.append(_median_row(kmf, g, sub, int(n_entry.get(g, 0))))
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["group", "time", "survival", "lower", "upper", "at_risk", "events", "censored"])
    medians_df = pd.DataFrame(medians, columns=["group", "tracks", "senescent", "censored", "senescent_at_entry",
                                                "median", "median_lower", "median_upper"])
    return SurvivalResult(
        tracks=st, curves=curves_df, medians=medians_df,
        logrank=_logrank(st_in, groups),
        phenotype_time=phenotype_time(st_in, groups, absorbing, frame_interval),
        transitions=transition_counts(st_in, groups), by=by_cols, alpha=alpha,
        time_unit=time_unit or ("frames" if frame_interval == 1 else "time"), fitters=fitters)


# ---------------------------------------------------------------------------- figures

def draw_km(ax, curve: pd.DataFrame, colour=None, label: str | None = None, band: bool = True):
    """One Kaplan-Meier curve (a :func:`km_table`) as a step line with its confidence band."""
    t = curve["time"].to_numpy(dtype=float)
    (line,) = ax.step(t, curve["survival"].to_numpy(dtype=float), where="post", color=colour, label=label, lw=1.6)
    if band:
        ax.fill_between(t, curve["lower"].to_numpy(dtype=float), curve["upper"].to_numpy(dtype=float),
                        step="post", color=line.get_color(), alpha=0.2, lw=0)
    censored = curve[curve["censored"] > 0]
    if len(censored):  # ticks where tracks left without becoming senescent
        ax.plot(censored["time"], censored["survival"], "|", color=line.get_color(), ms=5, mew=0.8)
    return line


def _p_text(p: float) -> str:
    return "p < 1e-10" if p < 1e-10 else f"p = {p:.2g}"


def ageing_figure(res: SurvivalResult, title: str | None = None):
    """Kaplan-Meier curves per group (bands, medians, log-rank p) and the time in each phenotype
    before senescence; a matplotlib ``Figure`` (no pyplot state is touched)."""
    from matplotlib.figure import Figure

    from ...phenotypes import class_colours

    fig = Figure(figsize=(15, 4.6), layout="constrained")
    ax_km, ax_ph = fig.subplots(1, 2, width_ratios=[1.2, 1])
    for g in res.groups:
        m = res.medians.set_index("group").loc[g]
        med = "not reached" if not np.isfinite(m["median"]) else f"{m['median']:.3g}"
        draw_km(ax_km, res.curves[res.curves["group"] == g],
                label=f"{g}: median {med} (n={int(m['tracks'])}, {int(m['senescent'])} senescent)")
    ax_km.set_ylim(0, 1.02)
    ax_km.set_xlabel(f"time since the track's first frame ({res.time_unit})")
    ax_km.set_ylabel("fraction not yet senescent")
    ax_km.set_title(f"Kaplan-Meier, {int(100 * (1 - res.alpha))} % bands"
                    + (f" by {', '.join(res.by)}" if res.by else ""))
    handles, _ = ax_km.get_legend_handles_labels()
    if len(res.logrank):  # the tests go into the legend, under the curves they compare
        from matplotlib.lines import Line2D

        lines = [f"{r.group_a} vs {r.group_b}: {_p_text(r.p)}" if r.group_b else f"all groups: {_p_text(r.p)}"
                 for r in res.logrank.itertuples()]
        if len(lines) > 6:  # many groups: the overall test only
            lines = lines[-1:]
        handles += [Line2D([], [], color="none", label=t) for t in ["log-rank:", *lines]]
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
        ax_ph.set_yticks(np.arange(len(groups)), groups)
        ax_ph.invert_yaxis()
        ax_ph.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax_ph.set_xlabel(f"mean time per track ({res.time_unit})")
    ax_ph.set_title("Time in each phenotype before senescence")
    if title:
        fig.suptitle(title)
    return fig


__all__ = ["SurvivalResult", "ageing_figure", "draw_km", "kaplan_meier", "km_table", "parse_transitions",
           "phenotype_time", "senescence_survival", "time_to_senescence",
           "transition_counts"]
