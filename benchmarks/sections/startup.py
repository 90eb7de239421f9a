"""Start-up: how long ``yeast-phenotypes classify`` takes to reach its first frames, in a fresh process.

The child runs the command line itself (``cli.main``) on a movie on disk with a random checkpoint, its
progress bar replaced by one that notes the times since the process started (read from ``/proc``):
``ready`` (imports done, model loaded, movie opened, its statistics made: the pipeline about to read
frame 0), ``first_chunk`` (the first chunk done: the first frame alone, ``core/data/chunks.py``; its crops made and
its full batches classified) and
``end`` (result folder written).
``cold``: an empty package cache (the first-batch check of the inference copy runs); ``warm``: the same
command again (the check remembered: ``core/network/inference_memo.py``), best of a few. ``imports``: a
fresh process importing what the classify command imports. Files are on the page cache (a warm disk).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import Context, log, run_child


def _age() -> float:
    """Seconds since this process started."""
    try:
        with open("/proc/self/stat") as fh:
            start = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            up = float(fh.read().split()[0])
        return up - start / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def child(args: dict) -> dict:
    if args.get("imports_only"):
        t = time.perf_counter()
        import napari_yeast_phenotypes.core.jobs.classify
        import napari_yeast_phenotypes.core.pipeline  # noqa: F401
        return {"import_s": time.perf_counter() - t, "since_start_s": _age()}
    import napari_yeast_phenotypes.core.progress as progress

    marks: dict = {}

    def bar(desc, unit="frame"):
        def update(done, total):
            key = "ready" if done == 0 else "first_chunk"
            if key not in marks:
                marks[key], marks[key + "_cpu"] = _age(), time.process_time()
        return update

    progress.frames_bar = bar
    from napari_yeast_phenotypes.cli import main

    rc = main(args["argv"])
    marks["end"] = _age()
    marks["rc"] = rc
    return marks


def _write_inputs(folder: Path, n_frames: int, size: int, n_cells: int) -> tuple[Path, Path]:
    import torch

    from napari_yeast_phenotypes.core.network.checkpoint import save_checkpoint
    from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet

    from .disk_movie import write_long_movie

    write_long_movie(folder, n_frames, size, n_cells)
    torch.manual_seed(0)
    model = folder / "model.pt"
    save_checkpoint(model, Classifier(YeastResNet(8).eval()))
    return folder, model


def run(ctx: Context) -> dict:
    n_frames, size, n_cells, warm_runs = ctx.sizes["startup"]
    device = getattr(ctx, "device", "cpu")
    res: dict = {"device": device, "movie": [n_frames, size, n_cells]}
    with tempfile.TemporaryDirectory() as tmp:
        folder, model = _write_inputs(Path(tmp), n_frames, size, n_cells)
        argv = ["classify", "--image", str(folder / "image.tif"), "--labels", str(folder / "labels.tif"),
                "--model", str(model), "--out", str(folder / "out"), "--overwrite", "--device", device]
        env = {"NAPARI_YEAST_PHENOTYPES_CACHE": str(folder / "cache")}
        # the page cache holds the files (a warm disk), and Python's own bytecode caches are written
        subprocess.run([sys.executable, "-c", "import napari_yeast_phenotypes.core.pipeline"], check=False)
        log(f"start-up of classify on {device}, cold (nothing remembered) ...")
        res["cold"] = run_child("startup", {"argv": argv}, env=env)
        log("start-up, warm (the check remembered) ...")
        warm = [run_child("startup", {"argv": argv}, env=env) for _ in range(warm_runs)]
        res["warm_runs"] = warm
        res["warm"] = {k: statistics.median(r[k] for r in warm) for k in ("ready", "first_chunk", "end")}
        res["imports"] = run_child("startup", {"imports_only": True})
    res["first_chunk_s"] = res["warm"]["first_chunk"]
    return {"startup": res, "startup_first_chunk_s": res["first_chunk_s"]}
