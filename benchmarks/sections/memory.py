"""Peak memory (RSS) of classifying a 100- and a 1,000-frame movie streamed from disk, each in its own process."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from napari_yeast_phenotypes.core.config import ClassifyConfig
from napari_yeast_phenotypes.core.pipeline import analyse

from .common import Context, PeakSampler, log, peak_rss_mb, random_classifier, run_child
from .disk_movie import has_dask, lazy_stack, write_long_movie


def child(args: dict) -> dict:
    """In a fresh process: classify the first ``frames`` frames; peak RSS and the sampled anonymous peak.

    Besides the peak resident set (``VmHWM``), a thread samples the anonymous part (``RssAnon``:
    the process's own memory, without file pages mapped in) every 20 ms and keeps its maximum.
    """
    folder, n_frames, source = args["folder"], int(args["frames"]), args["source"]
    if source == "dask":
        image, labels = lazy_stack(f"{folder}/image.tif"), lazy_stack(f"{folder}/labels.tif")
    else:
        from napari_yeast_phenotypes.core.data.movies import read_array

        image, labels = read_array(f"{folder}/image.tif", lazy=True), read_array(f"{folder}/labels.tif", lazy=True)
    image, labels = image[:n_frames], labels[:n_frames]
    clf = random_classifier()
    rss0 = peak_rss_mb()
    with PeakSampler("RssAnon", 0.02) as anon:
        t0 = time.perf_counter()
        result = analyse(image, labels, clf, ClassifyConfig(relink="no"))
        dt = time.perf_counter() - t0
    return {"frames": n_frames, "crops": len(result.cells), "seconds": dt, "peak_rss_mb": peak_rss_mb(),
            "peak_anon_rss_mb": anon.peak, "rss_before_mb": rss0, "source": source,
            "inference": result.cells.attrs.get("inference")}


def memory(frames_small: int, frames_large: int, size: int, cells: int, with_memmap: bool = True) -> dict:
    source = "dask" if has_dask() else "memmap"
    res = {"source": source, "frame_size": size, "cells_per_frame": cells}
    with tempfile.TemporaryDirectory() as tmp:
        write_long_movie(Path(tmp), frames_large, size, cells)
        runs = [("small", frames_small, source), ("large", frames_large, source)]
        if source != "memmap" and with_memmap:
            runs.append(("large_memmap", frames_large, "memmap"))
        for label, n, src in runs:
            res[label] = run_child("memory", {"folder": tmp, "frames": n, "source": src})
    res["growth_mb"] = res["large"]["peak_rss_mb"] - res["small"]["peak_rss_mb"]
    return res


def run(ctx: Context) -> dict:
    small, large, size, cells = ctx.sizes["memory"]
    log(f"peak memory, {small} and {large} frames of {size}x{size} from disk (subprocesses) ...")
    mem = memory(small, large, size, cells, with_memmap=not ctx.quick)
    ctx.notes.append(f"memory: {mem['source']} source, {cells} cells per frame, real network; "
                     f"'large' = {large} frames (the 1,000-frame figure in a full run)")
    return {"memory": mem, "peak_rss_mb_1000_frames": mem["large"]["peak_rss_mb"]}
