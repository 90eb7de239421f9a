"""Make docs/ageing_km.png: a simulated ageing experiment, analysed as `yeast-phenotypes ageing` does.

Three conditions of simulated movies: "wild type" and "wild type again" simulated alike (per-frame
senescence hazard 0.01 for mature cells), and "short-lived" with a 4x higher hazard (0.04). Cells
are washed out of the field at random (1 % per frame), so tracks also end before the movie does:
they are censored. The phenotypes are the simulator's ground truth standing in for a perfect
classifier (no trained model is used here), so the figure shows the statistics, not a model.

Run from the repository root: ``python docs/make_ageing_figure.py`` (about a minute).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from napari_yeast_phenotypes.core.data.simulate import simulate_movie
from napari_yeast_phenotypes.core.results.figures import save_png
from napari_yeast_phenotypes.core.results.survival import senescence_survival
from napari_yeast_phenotypes.core.results.survival_figure import ageing_figure
from napari_yeast_phenotypes.core.track.timeline import track_summary

HERE = Path(__file__).resolve().parent
CONDITIONS = {"wild type": (0.01, range(0, 6)), "wild type again": (0.01, range(10, 16)),
              "short-lived": (0.04, range(20, 26))}
WASHOUT = 0.01


def movie_tracks(seed: int, p_senesce: float) -> pd.DataFrame:
    truth = simulate_movie(n_frames=60, size=160, n_cells=16, seed=seed, p_senesce=p_senesce).truth
    rng = np.random.default_rng(seed)
    stay = {lab: int(rng.geometric(WASHOUT)) for lab in truth["label"].unique()}
    first = truth.groupby("label")["frame"].transform("min")
    kept = truth[truth["frame"] - first < truth["label"].map(stay)]
    return track_summary(kept.assign(track_id=kept["label"]))


def main() -> None:
    tracks = pd.concat([movie_tracks(seed, p).assign(movie=f"{name}-{seed}", condition=name)
                        for name, (p, seeds) in CONDITIONS.items() for seed in seeds], ignore_index=True)
    res = senescence_survival(tracks, by="condition", frame_interval=10, time_unit="min", pairs=True)
    print(res.medians.to_string(index=False))
    print(res.logrank.to_string(index=False))
    fig = ageing_figure(res, title="Simulated ageing experiment (ground-truth phenotypes, 6 movies per condition)")
    save_png(fig, HERE / "ageing_km.png", dpi=100)


if __name__ == "__main__":
    main()
