"""Crop extraction alone: ``crops.extract_crops`` (all cells of a frame at once) against a per-label loop."""

from __future__ import annotations

import time

import numpy as np

from napari_yeast_phenotypes.core.data.crops import CropSettings, extract_crops, movie_stats
from napari_yeast_phenotypes.core.data.tracking import measure_frame

from .common import Context, best_time, log
from .end_to_end import notebook_crop


def crop_extraction(image, labels, frames: int, loop_frames: int) -> dict:
    settings = CropSettings()
    stats = movie_stats(image, labels, settings)
    tables = [measure_frame(labels[t], t) for t in range(frames)]
    n = sum(len(tb) for tb in tables)

    def project():
        for t in range(frames):
            extract_crops(image[t], labels[t], tables[t], settings, stats)

    dt_project = best_time(project, 2)
    t0 = time.perf_counter()
    n_loop = 0
    for t in range(loop_frames):
        img = image[t].astype(np.float32)
        for label_id in tables[t]["label"].to_numpy():
            notebook_crop(img, labels[t], label_id, settings, stats, stats.low, stats.high)
            n_loop += 1
    dt_loop = time.perf_counter() - t0
    project_rate, loop_rate = n / dt_project, n_loop / dt_loop
    return {"project_crops_per_s": project_rate, "loop_crops_per_s": loop_rate,
            "speedup": project_rate / loop_rate, "project_crops": n, "loop_crops": n_loop}


def run(ctx: Context) -> dict:
    log("crop extraction ...")
    ce = crop_extraction(ctx.movie.image, ctx.movie.labels, ctx.sizes["crop_frames"], ctx.sizes["loop_frames"])
    return {"crop_extraction": ce, "crop_extraction_speedup": ce["speedup"]}
