"""The survival table of a tracks table, and its checks: each track's group, time to senescence (or to its
end, censored) and why a track is left out (:func:`time_to_senescence`); and the descriptive tables beside
the estimates, the time in each phenotype before senescence (:func:`phenotype_time`) and the transitions
between phenotypes (:func:`transition_counts`). No lifelines here."""

from __future__ import annotations

import json
import re

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
    """A group value as written: text as it is; a missing value (``None``, NaN, ``pd.NA``: only in tables
    built in code) empty, as it would be in a CSV written from that table and read back (so the API and
    the command line group a table alike); anything else as ``str``."""
    if isinstance(value, str):
        return value
    try:
        if value is None or pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def _kind(value) -> str:
    """What sort of value a group value is: text, a number, a truth value, or its type's name."""
    import numbers

    if isinstance(value, str):
        return "text"
    if isinstance(value, (bool, np.bool_)):
        return "a truth value"
    if isinstance(value, numbers.Number):
        return "a number"
    return type(value).__name__


def group_labels(tracks: pd.DataFrame, by: list[str]) -> np.ndarray:
    """One group name per track: the ``by`` values as written, joined by `` / `` for several columns.

    Two different combinations never share a name: when joining would make them equal (a value
    holding `` / ``), every part is quoted instead.
    """
    if not by:
        return np.full(len(tracks), ALL, dtype=object)
    parts = [tracks[b].map(_as_text).to_numpy(dtype=object) for b in by]
    for b, texts in zip(by, parts):  # 1 and "1" (a table built in code) would silently become one group
        kinds: dict[str, set] = {}
        for value, text in zip(tracks[b].to_numpy(dtype=object), texts):
            kinds.setdefault(text, set()).add(_kind(value) if text else "missing")
        clash = [t for t, k in kinds.items() if len(k) > 1 and t]
        if clash:
            raise InputError(f"the column {b!r} holds values of different types that read the same "
                             f"({clash[0]!r} as {' and '.join(sorted(kinds[clash[0]]))}): they would be one group; "
                             "make the column one type (e.g. all text) first")
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
    timed = followed | (reason == AT_ENTRY)
    with np.errstate(over="ignore", invalid="ignore"):
        out["time"] = np.where(timed, (end - first) * float(frame_interval), np.nan)
    if (timed & ~np.isfinite(out["time"].to_numpy(dtype=float))).any():
        longest = float(np.nanmax(np.where(timed, end - first, np.nan)))
        raise InputError(f"times do not fit a number: {longest:g} frames x a frame interval of {frame_interval:g} "
                         "overflows; give the frame interval in a larger unit (hours rather than seconds), or "
                         "check the table's frame columns")
    out["senescent"] = followed & event
    out["censored"] = followed & ~event
    return out


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


__all__ = ["group_labels", "parse_transitions", "phenotype_time", "time_to_senescence", "transition_counts"]
