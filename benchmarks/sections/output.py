"""What writing a result costs: cells.csv, tracks.csv, summary.png and run.json of a 40,000 cell-frame movie.

In a fresh process (so that importing matplotlib and lifelines for summary.png counts, as in a command),
a result of 134 tracks x 300 frames is made up (probabilities drifting along each track, then the
per-track timelines as classify makes them; not timed), and ``core.jobs.classify.write_result`` writes
its folder: timed whole, then each part again. The share is that time over the time the same run's
end-to-end rate takes for 40,000 cell-frames (the classify job imports the plotting libraries in a
thread while the movie is classified, so on a machine with a core to spare their import is not on the
path: ``write_s_without_imports``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import Context, log, run_child


def synthetic_result(n_tracks: int, n_frames: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    from napari_yeast_phenotypes.core.results.schema import Result, prob_columns
    from napari_yeast_phenotypes.core.track.timeline import TimelineSettings, add_timeline, track_summary
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    rng = np.random.default_rng(seed)
    t, k = np.meshgrid(np.arange(n_frames), np.arange(1, n_tracks + 1), indexing="ij")
    n = t.size
    logits = np.cumsum(rng.normal(0, 0.4, (n_frames, n_tracks, len(CLASS_NAMES))), axis=0).reshape(n, -1)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    y, x = rng.uniform(20, 490, n), rng.uniform(20, 490, n)
    cells = pd.DataFrame({"frame": t.ravel(), "label": k.ravel(), "track_id": k.ravel(), "y": y, "x": x,
                          "area": rng.integers(80, 400, n), "bbox_y0": (y - 8).astype(int),
                          "bbox_x0": (x - 8).astype(int), "bbox_y1": (y + 8).astype(int),
                          "bbox_x1": (x + 8).astype(int)})
    cells[prob_columns(CLASS_NAMES)] = probs.astype(np.float32)
    cells["ood_score"] = rng.gamma(2.0, 0.3, n)
    cells = add_timeline(cells, CLASS_NAMES, TimelineSettings())
    return Result(cells, track_summary(cells, CLASS_NAMES), tuple(CLASS_NAMES))


def child(args: dict) -> dict:
    from napari_yeast_phenotypes.core.jobs.classify import write_result

    result = synthetic_result(args["tracks"], args["frames"])
    out: dict = {"cell_frames": len(result.cells)}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_result(result, Path(tmp) / "a", {"inference": {}}, title="synthetic")
        out["write_s"] = time.perf_counter() - t
        t = time.perf_counter()
        write_result(result, Path(tmp) / "b", {"inference": {}}, title="synthetic")
        out["write_s_without_imports"] = time.perf_counter() - t
        from napari_yeast_phenotypes.core.results.export import write_tables
        from napari_yeast_phenotypes.core.results.plots import save_summary

        t = time.perf_counter()
        write_tables(result.cells, result.tracks, tmp, result.class_names)
        out["tables_s"] = time.perf_counter() - t
        t = time.perf_counter()
        save_summary(result.cells, result.tracks, Path(tmp) / "s.png", result.class_names, title="synthetic")
        out["summary_png_s"] = time.perf_counter() - t
    out["imports_s"] = out["write_s"] - out["write_s_without_imports"]
    return out


def run(ctx: Context) -> dict:
    tracks, frames = ctx.sizes["output"]
    log(f"writing a result of {tracks} tracks x {frames} frames (subprocess) ...")
    res = run_child("output", {"tracks": tracks, "frames": frames})
    rate = getattr(ctx, "end_to_end_rate", None)
    if rate:
        run_s = res["cell_frames"] / rate
        res.update(end_to_end_crops_per_s=rate, run_s=run_s, percent_of_run=100 * res["write_s"] / run_s,
                   percent_of_run_without_imports=100 * res["write_s_without_imports"] / run_s)
    return {"output": res}
