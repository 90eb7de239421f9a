"""The ageing figure: Kaplan-Meier curves per group with their bands, medians and the log-rank p-value, and the
time in each phenotype before senescence (:func:`ageing_figure`); one Kaplan-Meier curve on given axes
(:func:`draw_km`, also summary.png's)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .survival import SurvivalResult, _shown


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


__all__ = ["ageing_figure", "draw_km"]
