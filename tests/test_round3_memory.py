"""Round three, class 8: memory bounded by the work, not by the input's shape (issue 21).

The figures (a 6,000 x 6,000 frame, a frame of 250,000 cells, before and after) come from
``benchmarks/memory_bounds.py`` (peak resident memory of child processes); these tests check that
the bounded paths give the same results as before on small inputs, and, with ``tracemalloc``
(deterministic: the allocations of numpy, not the machine's timing), that the working memory of
the steps that held copies of the whole frame no longer grows with it.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

import napari_yeast_phenotypes.core.data.tracking as tracking
from napari_yeast_phenotypes.core.data.crops import CropSettings, extract_crops
from napari_yeast_phenotypes.core.data.tracking import link_frames, measure_frame, overlap_pairs
from napari_yeast_phenotypes.core.results.schema import MovieStats
from napari_yeast_phenotypes.core.track.timeline import add_timeline, smooth_track, track_summary
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES, SENESCENT

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def blobs(h: int, w: int, n: int, rng, offset: int = 0) -> np.ndarray:
    """Labels of ``n`` random rectangles (later ones over earlier ones), ids from ``offset + 1``."""
    lab = np.zeros((h, w), np.int64)
    for i in range(n):
        y, x = rng.integers(0, h), rng.integers(0, w)
        lab[y:y + rng.integers(1, 12), x:x + rng.integers(1, 12)] = offset + i + 1
    return lab


@FAST
@given(st.integers(1, 60), st.integers(1, 60), st.integers(0, 40), st.sampled_from([0, 2**20, 2**40]),
       st.sampled_from([1, 3, 50, 1000]), st.integers(0, 2**32 - 1))
def test_measuring_by_bands_gives_the_same_table(h, w, n, offset, band, seed):
    lab = blobs(h, w, n, np.random.default_rng(seed), offset)
    whole = measure_frame(lab, 3, band_pixels=h * w + 1)
    pd.testing.assert_frame_equal(measure_frame(lab, 3, band_pixels=band), whole)
    if len(whole):
        assert whole["area"].sum() == (lab > 0).sum()


@FAST
@given(st.integers(2, 50), st.integers(2, 50), st.integers(1, 30), st.sampled_from([1, 7, 10_000]),
       st.integers(0, 2**32 - 1))
def test_overlaps_by_bands_are_the_pixel_counts(h, w, n, band, seed):
    rng = np.random.default_rng(seed)
    a, b = blobs(h, w, n, rng), blobs(h, w, n, rng)
    ia, ib = np.unique(a[a > 0]), np.unique(b[b > 0])
    if not ia.size or not ib.size:
        return
    i, j, pixels = overlap_pairs(a, b, ia, ib, band_pixels=band)
    dense = np.zeros((ia.size, ib.size), np.int64)
    dense[i, j] = pixels
    for p, q in zip(*np.nonzero(dense)):
        assert dense[p, q] == ((a == ia[p]) & (b == ib[q])).sum()
    assert dense.sum() == ((a > 0) & (b > 0)).sum()


@FAST
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_assignment_over_given_pairs_is_optimal(n_rows, n_cols, seed):
    rng = np.random.default_rng(seed)
    allowed = rng.random((n_rows, n_cols)) < 0.4
    cost = rng.random((n_rows, n_cols))
    r, c = np.nonzero(allowed)
    got_r, got_c = tracking._assign_sparse(r, c, cost[r, c], n_rows)
    assert len(set(got_r)) == len(got_r) and len(set(got_c)) == len(got_c) and allowed[got_r, got_c].all()
    # the same number of pairs and total cost as one dense assignment where other pairs cost too much
    big = np.where(allowed, cost, 1e6)
    rr, cc = linear_sum_assignment(big)
    ok = allowed[rr, cc]
    assert len(got_r) == ok.sum()
    assert cost[got_r, got_c].sum() == pytest.approx(cost[rr[ok], cc[ok]].sum(), rel=1e-9, abs=1e-12)


def test_linking_many_cells_in_groups_gives_the_same_tracks(small_movie, monkeypatch):
    rng = np.random.default_rng(1)
    labels = small_movie.labels.copy()
    for t in range(len(labels)):  # ids that do not follow the cells: relinking has work to do
        perm = np.r_[0, rng.permutation(np.arange(1, labels[t].max() + 1))]
        labels[t] = perm[labels[t]]
    for t in range(len(labels) - 1):
        a, b = labels[t], labels[t + 1]
        ta, tb = measure_frame(a, t), measure_frame(b, t + 1)
        dense = link_frames(ta, tb, a, b)
        monkeypatch.setattr(tracking, "DENSE_PAIRS", 1)
        assert (link_frames(ta, tb, a, b) == dense).all()
        monkeypatch.setattr(tracking, "DENSE_PAIRS", 1 << 22)


def _peak(fn) -> float:
    """Bytes allocated at the peak of ``fn()`` beyond what was allocated before (numpy reports to tracemalloc)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_measuring_a_frame_needs_memory_of_a_band_not_of_the_frame(monkeypatch):
    monkeypatch.setattr(tracking, "BAND_PIXELS", 1 << 18)
    rng = np.random.default_rng(0)
    small = blobs(512, 512, 300, rng).astype(np.int32)
    large = np.tile(small, (4, 4))  # 16 times the pixels, the same cells' shapes
    p_small = _peak(lambda: tracking.measure_frame(small, band_pixels=1 << 18))
    p_large = _peak(lambda: tracking.measure_frame(large, band_pixels=1 << 18))
    # at once it took 2 float64 weights of the frame (16 bytes a pixel): 16 times more for the large one
    assert p_large < 4 * p_small and p_large < 4 * large.nbytes


def test_crops_of_a_huge_frame_need_memory_of_the_windows_not_of_the_frame():
    rng = np.random.default_rng(0)
    image = rng.random((3000, 3000)).astype(np.float64)
    labels = np.zeros((3000, 3000), np.int32)
    labels[1000:1020, 1000:1020], labels[2000:2010, 50:70] = 1, 2
    cells = measure_frame(labels, 0)
    peak = _peak(lambda: extract_crops(image, labels, cells, CropSettings(), MovieStats(0.0, 1.0, 20.0)))
    assert peak < 0.05 * image.nbytes  # it made 3 float32 copies of the frame (1.5 times the float64 frame)


def test_crops_by_groups_of_cells_and_chunks_by_pixels_change_nothing(small_movie, monkeypatch):
    """Small inputs classify as before when the pipeline makes crops a few cells at a time and reads
    one frame at a time (what huge frames and frames of very many cells get)."""
    import torch
    from torch import nn

    import napari_yeast_phenotypes.core.pipeline as pipeline
    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.network.model import Classifier

    class StandIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(1600, 8)

        def forward(self, x):
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    clf = Classifier(StandIn().eval())
    config = ClassifyConfig(fast_path=False, precision="fp32", batch_size=16)
    before = pipeline.analyse(small_movie.image, small_movie.labels, clf, config)
    monkeypatch.setattr(pipeline, "CROP_CELLS", 3)
    monkeypatch.setattr(pipeline, "CHUNK_PIXELS", 1)
    after = pipeline.analyse(small_movie.image, small_movie.labels, clf, config)
    pd.testing.assert_frame_equal(before.cells, after.cells)
    pd.testing.assert_frame_equal(before.tracks, after.tracks)


def reference_summary(cells: pd.DataFrame, names=CLASS_NAMES, absorbing="Senescent") -> pd.DataFrame:
    """The per-track loop the summary was (one dictionary per track)."""
    rows = []
    for tid, g in cells.sort_values(["track_id", "frame"], kind="stable").groupby("track_id", sort=True):
        ph, fr = g["phenotype"].to_numpy(), g["frame"].to_numpy()
        counts = {c: int((ph == c).sum()) for c in names}
        sen = fr[ph == absorbing]
        change = np.flatnonzero(ph[1:] != ph[:-1]) + 1
        rows.append({"track_id": int(tid), "first_frame": int(fr[0]), "last_frame": int(fr[-1]),
                     "n_frames": len(fr), "dominant_phenotype": max(names, key=lambda c: (counts[c], -names.index(c))),
                     "senescence_frame": int(sen[0]) if sen.size else pd.NA,
                     **{f"frames_{c}": counts[c] for c in names},
                     "transitions": "; ".join(f"{fr[i]}:{ph[i - 1]}>{ph[i]}" for i in change)})
    out = pd.DataFrame(rows, columns=track_summary(cells.iloc[:0]).columns)
    out["senescence_frame"] = out["senescence_frame"].astype("Int64")
    return out


@FAST
@given(st.lists(st.tuples(st.integers(1, 8), st.sampled_from(CLASS_NAMES)), min_size=1, max_size=60),
       st.integers(0, 2**32 - 1))
def test_track_summary_all_at_once_is_the_loop(rows, seed):
    tracks, phen = zip(*rows)
    frames = np.random.default_rng(seed).permutation(len(rows))
    cells = pd.DataFrame({"track_id": tracks, "frame": frames, "label": 1, "phenotype": phen})
    pd.testing.assert_frame_equal(track_summary(cells), reference_summary(cells))


def test_one_frame_tracks_all_at_once_are_smoothed_as_one_by_one(rng):
    n = 300
    probs = rng.dirichlet(np.ones(8) * 0.4, size=n)
    lengths = rng.integers(1, 4, size=n)
    tid = np.repeat(np.arange(n), lengths)[:n]
    cells = pd.DataFrame({"track_id": tid, "label": np.arange(n), "frame": np.zeros(n, int),
                          **{f"p_{c}": probs[:, j] for j, c in enumerate(CLASS_NAMES)}})
    cells["frame"] = cells.groupby("track_id").cumcount()
    out = add_timeline(cells).sort_values(["track_id", "frame"]).reset_index(drop=True)
    for _, g in out.groupby("track_id"):
        path, conf = smooth_track(g[[f"p_{c}" for c in CLASS_NAMES]].to_numpy(), SENESCENT)
        assert list(g["phenotype"]) == [CLASS_NAMES[i] for i in path]
        np.testing.assert_allclose(g["confidence"], conf, rtol=1e-12)


@pytest.mark.slow
def test_the_memory_benchmark_runs_and_writes_its_figures(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "memory_bounds.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path / "m.json")],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "m.json").read_text())
    for kind in ("big_frame", "many_ids"):
        assert res[kind]["error"] is None and res[kind]["cells"] > 0 and res[kind]["beside_frame_mb"] >= 0
