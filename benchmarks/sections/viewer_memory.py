"""Peak memory (RSS) of the viewer path: a napari viewer showing the classification result of a
100- and a 1,000-frame movie, each in its own process, while the time slider moves.

The movie is read lazily from TIFF files (a dask array, one chunk per frame, as napari readers
make them), so what the viewer holds beyond the cell table is what it shows. The overlays come
from the plugin's own ``_napari._layers.result_layers`` (the phenotypes layer is a lazy per-frame
``PhenotypeFrames``). The parent classifies the movie with a random network (the movie repeats its
first 24 frames, and so do the probabilities; see :func:`repeated_result`), pickles the result and
the child reads it back, so the child's memory has no torch in it. napari needs a display that can
draw (``QT_QPA_PLATFORM=offscreen`` cannot draw layers): the child runs under ``xvfb-run`` when
there is no ``DISPLAY``, and the section is skipped with a note when neither exists.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import Context, PeakSampler, log, peak_rss_mb, random_classifier, run_child, status_mb
from .disk_movie import REPEAT, has_dask, lazy_stack, write_long_movie

MB = 1024 * 1024


def _rss() -> float:
    return status_mb("VmRSS")


def child(args: dict) -> dict:
    """In a fresh process: a shown napari viewer with the movie, then the result's overlays; RSS at each step.

    The slider visits the same frames before and after the overlays are added, so the movie's
    frames (and napari's dask cache of them) are already in memory when the overlays are measured.
    Each visit draws the canvas (``viewer.screenshot``), so textures are made as on screen.
    """
    import napari
    from napari.layers import Layer
    from qtpy.QtWidgets import QApplication

    from napari_yeast_phenotypes._napari._layers import PHENOTYPES_LAYER, result_layers

    folder, n_frames = args["folder"], int(args["frames"])
    t0 = time.perf_counter()
    rss = {"imports": _rss()}
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    app.processEvents()
    rss["viewer"] = _rss()

    image = lazy_stack(f"{folder}/image.tif")[:n_frames]
    labels = lazy_stack(f"{folder}/labels.tif")[:n_frames]
    viewer.add_image(image, name="image", contrast_limits=tuple(args["contrast_limits"]))
    labels_layer = viewer.add_labels(labels, name="labels")
    frames = np.unique(np.linspace(0, n_frames - 1, int(args["slider_frames"])).round().astype(int))

    def visit():
        for t in frames:
            viewer.dims.set_current_step(0, int(t))
            app.processEvents()
            viewer.screenshot(canvas_only=True)  # draws the canvas now, as a shown window does
        app.processEvents()

    visit()
    rss["movie"] = _rss()
    with open(args["result"], "rb") as fh:
        result = pickle.load(fh)
    table_mb = (result.cells.memory_usage(deep=True).sum() + result.tracks.memory_usage(deep=True).sum()) / MB
    rss["table"] = _rss()
    with PeakSampler("VmRSS", 0.005) as overlay_peak:
        layer_data = result_layers(result, labels, source="labels")
        rss["layer_data"] = _rss()
        overlays, by_layer, before = [], {}, rss["layer_data"]
        for data, meta, kind in layer_data:
            overlays.append(viewer.add_layer(Layer.create(data, meta, kind)))
            app.processEvents()
            by_layer[meta["name"]] = _rss() - before
            before = _rss()
        labels_layer.visible = False  # as the classify dock does
        app.processEvents()
        rss["overlays"] = _rss()
        visit()
        rss["slider"] = _rss()
    painted = viewer.layers[PHENOTYPES_LAYER].data
    frame_mb = int(np.prod(painted.shape[1:])) * np.dtype(painted.dtype).itemsize / MB
    overlay_mb = overlay_peak.peak - rss["table"]
    out = {
        "frames": n_frames,
        "cell_frames": len(result.cells),
        "tracks": len(result.tracks),
        "senescence_points": len(viewer.layers["senescence"].data),
        "phenotypes_layer_data": type(painted).__name__,
        "painted_dtype": str(np.dtype(painted.dtype)),
        "frames_visited": len(frames),
        "rss_mb": rss,
        "table_mb": table_mb,
        "overlay_mb": overlay_mb,
        "overlay_peak_rss_mb": overlay_peak.peak,
        "layer_data_mb": rss["layer_data"] - rss["table"],
        "added_mb_by_layer": by_layer,
        "slider_mb": rss["slider"] - rss["overlays"],
        "painted_frame_mb": frame_mb,
        "overlay_in_frames": overlay_mb / frame_mb,
        "eager_overlay_mb": n_frames * frame_mb,
        "movie_mb": (image.nbytes + labels.nbytes) / MB,
        "peak_rss_mb": peak_rss_mb(),
        "layers": [lay.name for lay in viewer.layers],
        "overlay_layers": len(overlays),
        "torch_loaded": "torch" in sys.modules,
        "seconds": time.perf_counter() - t0,
    }
    viewer.close()
    return out


def classify_first_frames(folder: str):
    """The classified first :data:`REPEAT` frames of the movie in ``folder`` (a random network)."""
    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.pipeline import analyse  # torch: in the parent only

    image, labels = lazy_stack(f"{folder}/image.tif"), lazy_stack(f"{folder}/labels.tif")
    n = min(REPEAT, image.shape[0])
    return analyse(image[:n], labels[:n], random_classifier(), ClassifyConfig(relink="no"))


def repeated_result(first, labels):
    """The result of classifying ``labels`` (frames repeating ``first``'s every :data:`REPEAT` frames).

    Frame t of the movie is frame t % REPEAT, so its crops and probabilities are those of that
    frame: the cell table is measured on the whole movie, each cell-frame takes the probabilities
    of its repeat, and the per-track timelines run on the whole tracks, as ``pipeline.analyse``
    would (classifying 1,000 frames again would only cost time on a shared machine).
    """
    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.data.tracking import build_cell_table
    from napari_yeast_phenotypes.core.results.schema import Result, prob_columns
    from napari_yeast_phenotypes.core.track.timeline import add_timeline, track_summary

    names = first.class_names
    probs = first.cells[["frame", "label", *prob_columns(names)]].rename(columns={"frame": "repeat"})
    table = build_cell_table(labels, relink=False)
    table = table.assign(repeat=table["frame"] % REPEAT).merge(probs, on=["repeat", "label"], how="left")
    cells = add_timeline(table.drop(columns="repeat"), names, ClassifyConfig().timeline)
    return Result(cells, track_summary(cells, names), tuple(names))


def _display_prefix() -> tuple[list[str] | None, str]:
    """How to give the child a display that can draw: (command prefix, how), or (None, why not)."""
    if os.environ.get("DISPLAY"):
        return [], f"DISPLAY={os.environ['DISPLAY']}"
    xvfb = shutil.which("xvfb-run")
    if xvfb:
        return [xvfb, "-a", "-s", "-screen 0 1280x1024x24"], "xvfb-run"
    return None, "no DISPLAY and no xvfb-run: napari cannot draw layers offscreen"


def viewer_memory(frames_small: int, frames_large: int, size: int, cells: int, slider_frames: int) -> dict:
    try:
        import napari  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - no napari/Qt: skip with a note
        return {"skipped": f"napari not importable: {exc}"}
    if not has_dask():
        return {"skipped": "dask not importable (the movie is shown as a lazy dask array)"}
    prefix, how = _display_prefix()
    if prefix is None:
        return {"skipped": how}
    res = {"display": how, "frame_size": size, "cells_per_frame": cells, "source": "dask",
           "model": "untrained YeastResNet(8)"}
    with tempfile.TemporaryDirectory() as tmp:
        write_long_movie(Path(tmp), frames_large, size, cells)
        image = lazy_stack(f"{tmp}/image.tif")
        lo, hi = np.percentile(np.asarray(image[0]), [0.5, 99.9])
        log(f"  classifying the first {REPEAT} frames (the movie repeats them) ...")
        first = classify_first_frames(tmp)
        for key, n in (("small", frames_small), ("large", frames_large)):
            result = repeated_result(first, lazy_stack(f"{tmp}/labels.tif")[:n])
            path = Path(tmp) / f"result-{n}.pkl"
            with open(path, "wb") as fh:
                pickle.dump(result, fh)
            del result
            log(f"  showing {n} frames in a napari viewer (subprocess) ...")
            res[key] = run_child("viewer_memory", {"folder": tmp, "frames": n, "result": str(path),
                                                   "slider_frames": slider_frames,
                                                   "contrast_limits": [float(lo), float(hi)]},
                                 env={"QT_QPA_PLATFORM": "xcb"}, prefix=prefix, timeout=600)
    small, large = res["small"], res["large"]
    res["growth_mb"] = large["peak_rss_mb"] - small["peak_rss_mb"]
    # napari's own cost of three layers (visuals, shaders, the tracks graph) does not depend on the
    # movie's length; what the longer movie adds to the overlays is what they hold per frame
    res["overlay_growth_mb"] = large["overlay_mb"] - small["overlay_mb"]
    res["overlay_growth_in_frames"] = res["overlay_growth_mb"] / large["painted_frame_mb"]
    res["table_growth_mb"] = large["table_mb"] - small["table_mb"]
    return res


def run(ctx: Context) -> dict:
    small, large, size, cells, slider = ctx.sizes["viewer_memory"]
    log(f"viewer memory, {small} and {large} frames of {size}x{size} shown in napari (subprocesses) ...")
    vm = viewer_memory(small, large, size, cells, slider)
    if "skipped" in vm:
        ctx.notes.append("viewer memory: " + vm["skipped"])
        return {"viewer_memory": vm, "viewer_overlay_mb_1000_frames": None}
    return {"viewer_memory": vm, "viewer_overlay_mb_1000_frames": vm["large"]["overlay_mb"]}
