"""The raster's track-id labels: each names its row, and they never overlap, in a short panel or a tall one."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from napari_yeast_phenotypes.core.results.plots import LABEL_EVERY_ROW, draw_raster, raster_matrix
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES


def _tables(n_tracks: int, n_frames: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(100, 100 + 7 * n_tracks, 7))  # ids are not row numbers
    rows = [{"track_id": int(t), "frame": f, "phenotype": CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]}
            for t in ids for f in range(n_frames)]
    cells = pd.DataFrame(rows)
    sen = rng.integers(0, n_frames, n_tracks).astype(float)
    sen[rng.random(n_tracks) < 0.3] = np.nan
    tracks = pd.DataFrame({"track_id": ids, "first_frame": 0, "senescence_frame": sen})
    return cells, tracks


def _shown(fig, ax):
    fig.canvas.draw()
    return [t for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]


@pytest.mark.parametrize("n_tracks", [40, LABEL_EVERY_ROW + 30])
@pytest.mark.parametrize("height", [1.6, 3.0, 12.0])
def test_labels_name_their_rows_and_never_overlap(n_tracks, height):
    cells, tracks = _tables(n_tracks)
    fig, ax = plt.subplots(figsize=(4, height), dpi=100)
    try:
        draw_raster(ax, cells, tracks)
        _, order, _ = raster_matrix(cells, tracks, CLASS_NAMES)
        if n_tracks > LABEL_EVERY_ROW:
            order = np.sort(order)
        shown = _shown(fig, ax)
        assert len(shown) >= 2
        for t in shown:  # each label is the id of the row it stands at
            row = t.get_position()[1]
            assert row == int(row) and t.get_text() == str(order[int(row)])
        boxes = sorted((t.get_window_extent() for t in shown), key=lambda b: b.y0)
        for lower, upper in zip(boxes, boxes[1:]):
            assert lower.y1 <= upper.y0 + 0.5, "two track-id labels overlap"
    finally:
        plt.close(fig)


def test_a_tall_panel_labels_every_row_and_a_short_one_fewer():
    cells, tracks = _tables(40)
    counts = {}
    for height in (1.6, 12.0):
        fig, ax = plt.subplots(figsize=(4, height), dpi=100)
        try:
            draw_raster(ax, cells, tracks)
            counts[height] = len(_shown(fig, ax))
        finally:
            plt.close(fig)
    assert counts[12.0] == 40
    assert 2 <= counts[1.6] < 40
