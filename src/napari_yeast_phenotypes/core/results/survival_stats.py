"""The statistics of survival, lifelines' (no hand-written estimators): Kaplan-Meier estimates and their tables,
a group's median time to senescence or why the data cannot give it, the log-rank test of all groups at once
(and of every pair on request) and Holm's adjustment of p-values."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from .survival_table import ALL, time_to_senescence

LOGRANK_COLUMNS = ["test", "group_a", "group_b", "groups", "statistic", "df", "p", "p_holm"]


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


__all__ = ["holm", "kaplan_meier", "km_table"]
