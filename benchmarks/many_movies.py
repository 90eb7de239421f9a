"""How many movies per hour does ``classify-many`` get through, on 1 and on 2 local Dask workers?

Run ``python benchmarks/many_movies.py`` (``--quick`` for tiny sizes, ``--out FILE`` for the
figures as JSON). The same simulated movies are classified twice in this one run, once on a
local cluster of 1 worker with all the CPUs' torch threads and once on 2 workers sharing them
(``plan_local``), so the ratio compares like with like on this machine. Each cluster is started
and its workers have imported the package before the clock starts; the time then includes what a
user waits for: each worker's one model load, every movie's classification and result folder,
and the combined tables. When a CUDA GPU is present, crops/s on it are measured beside the CPU's
on the same movies (in this process).

Speed does not depend on the weights, so a randomly initialised ``YeastResNet(8)`` stands in for
a trained model. On a shared machine, the load average printed beside the figures says how
quiet it was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"full": {"movies": 8, "frames": 12, "size": 256, "cells": 30},
         "quick": {"movies": 4, "frames": 5, "size": 64, "cells": 3}}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_movies(folder: Path, n: int, frames: int, size: int, cells: int) -> Path:
    """``n`` simulated movies and a SPEC CSV naming them."""
    import pandas as pd

    from napari_yeast_phenotypes.core.data.simulate import simulate_movie, write_movie

    rows = []
    for i in range(n):
        write_movie(simulate_movie(n_frames=frames, size=size, n_cells=cells, seed=100 + i), folder / f"m{i}")
        rows.append({"image": f"m{i}/image.tif", "labels": f"m{i}/labels.tif", "position": i})
    pd.DataFrame(rows).to_csv(folder / "spec.csv", index=False)
    return folder / "spec.csv"


def make_model(path: Path) -> Path:
    import torch

    from napari_yeast_phenotypes.core.network.checkpoint import save_checkpoint
    from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet

    torch.manual_seed(0)
    return save_checkpoint(path, Classifier(YeastResNet(8).eval()))


def _warm() -> str:
    import napari_yeast_phenotypes.core.jobs  # imports torch, pandas and the pipeline
    import napari_yeast_phenotypes.core.results.plots
    import napari_yeast_phenotypes.core.results.survival_figure  # noqa: F401 - and lifelines

    return "ok"


def on_cluster(spec: Path, model: Path, out: Path, workers: int, cpus: int) -> dict:
    """Movies/hour of one classify-many run on a warm local cluster of ``workers`` workers."""
    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.experiment.cluster import local_cluster, plan_local
    from napari_yeast_phenotypes.core.experiment.run import classify_many

    n = len(spec.read_text().strip().splitlines()) - 1
    workers, threads = plan_local(n, cpus=cpus, workers=workers)
    client = local_cluster(workers, threads)
    try:
        client.run(_warm)
        t0 = time.perf_counter()
        res = classify_many(spec, model, out, ClassifyConfig(device="cpu"), client=client, torch_threads=threads)
        seconds = time.perf_counter() - t0
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    c = res.counts()
    if c["failed"]:
        raise RuntimeError(f"{c['failed']} movies failed: {res.failures['reason'].tolist()}")
    crops = sum(len((out / "movies" / m / "cells.csv").read_text().splitlines()) - 1 for m in res.movies["movie"])
    return {"workers": workers, "torch_threads_per_worker": threads, "movies": n, "seconds": round(seconds, 2),
            "movies_per_hour": round(3600 * n / seconds, 1), "crops": crops, "crops_per_s": round(crops / seconds, 1)}


def gpu_vs_cpu(spec: Path, model: Path) -> dict | None:
    """Crops/s of classify_movie on the GPU beside the CPU, on the same movies (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.experiment.spec import read_spec
    from napari_yeast_phenotypes.core.jobs import classify_movie
    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier

    movies = read_spec(spec)
    res = {"gpu": torch.cuda.get_device_name(0)}
    for device in ("cpu", "cuda"):
        clf = load_classifier(model)
        classify_movie(movies[0].image, movies[0].labels, clf, ClassifyConfig(device=device))  # warm-up
        crops, t0 = 0, time.perf_counter()
        for m in movies:
            crops += len(classify_movie(m.image, m.labels, clf, ClassifyConfig(device=device)).result.cells)
        res[f"{device}_crops_per_s"] = round(crops / (time.perf_counter() - t0), 1)
    res["gpu_over_cpu"] = round(res["cuda_crops_per_s"] / res["cpu_crops_per_s"], 2)
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny movies: checks that everything runs")
    ap.add_argument("--out", help="write the figures to this JSON file")
    ap.add_argument("--movies", type=int, help="number of movies (default 8; 4 with --quick)")
    args = ap.parse_args(argv)

    import torch

    from napari_yeast_phenotypes.core.experiment.cluster import usable_cpus

    size = dict(SIZES["quick" if args.quick else "full"])
    if args.movies:
        size["movies"] = args.movies
    cpus = usable_cpus()
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "usable_cpus": cpus,
                       "torch": torch.__version__, "load_average_before": os.getloadavg()[0]},
           "sizes": size}
    with tempfile.TemporaryDirectory(prefix="many-movies-") as tmp:
        tmp = Path(tmp)
        log(f"simulating {size['movies']} movies of {size['frames']} frames, {size['size']} px, {size['cells']} cells")
        spec = make_movies(tmp / "data", size["movies"], size["frames"], size["size"], size["cells"])
        model = make_model(tmp / "model.pt")
        for workers in (1, 2):
            log(f"classify-many on {workers} local worker(s)")
            res[f"workers_{workers}"] = on_cluster(spec, model, tmp / f"out{workers}", workers, cpus)
        one, two = res["workers_1"]["movies_per_hour"], res["workers_2"]["movies_per_hour"]
        res["two_over_one_workers"] = round(two / one, 3)
        gpu = gpu_vs_cpu(spec, model)
        res["gpu"] = gpu if gpu is not None else {"skipped": "no CUDA GPU on this machine"}
    res["machine"]["load_average_after"] = os.getloadavg()[0]
    for w in (1, 2):
        r = res[f"workers_{w}"]
        print(f"{w} worker(s) x {r['torch_threads_per_worker']} torch thread(s): {r['movies_per_hour']:.0f} movies/h "
              f"({r['movies']} movies in {r['seconds']:.1f} s, {r['crops_per_s']:.0f} crops/s)")
    print(f"2 workers / 1 worker: {res['two_over_one_workers']:.2f}x "
          f"(load average {res['machine']['load_average_before']:.1f} before, "
          f"{res['machine']['load_average_after']:.1f} after, on {cpus} CPUs)")
    if "skipped" not in res["gpu"]:
        print(f"GPU {res['gpu']['gpu']}: {res['gpu']['cuda_crops_per_s']:.0f} crops/s beside "
              f"{res['gpu']['cpu_crops_per_s']:.0f} on the CPU ({res['gpu']['gpu_over_cpu']:.1f}x)")
    else:
        print("GPU: skipped (no CUDA GPU on this machine)")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
