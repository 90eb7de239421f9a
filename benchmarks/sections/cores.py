"""Every core: the network alone and the movie end to end on 1, 2 and all CPUs, each in its own process.

A child process is held to its first ``cpus`` CPUs (``os.sched_setaffinity``, inherited by its worker
processes) with as many torch threads, so the ratio of end to end to the network alone at each count says
whether the cell tables and crops keep up with the network as cores are added; the tables and crops alone
(no network) are timed per ``crop_workers`` too (process start included). End to end runs with the
device's default ``crop_workers`` and with a thread making the crops ahead (1), and with processes (2)
where there are 4 CPUs or more.
"""

from __future__ import annotations

import os
import time

from .common import Context, best_time, log, run_child


def child(args: dict) -> dict:
    cpus = int(args["cpus"])
    mine = sorted(os.sched_getaffinity(0))[:cpus]
    os.sched_setaffinity(0, mine)
    import torch

    torch.set_num_threads(cpus)
    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.data.crops import movie_crops
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie
    from napari_yeast_phenotypes.core.data.tracking import build_cell_table
    from napari_yeast_phenotypes.core.network.cpu_inference import inference_forward
    from napari_yeast_phenotypes.core.network.predict import predict_batches
    from napari_yeast_phenotypes.core.pipeline import analyse, crop_workers_for

    from .common import random_classifier

    n_frames, size, n_cells = args["movie"]
    movie = simulate_movie(n_frames, size, n_cells, seed=0)
    clf = random_classifier()
    base = ClassifyConfig(relink="no", device="cpu")
    first = analyse(movie.image[:2], movie.labels[:2], clf, base)  # builds (and caches) the inference copy
    inference = first.cells.attrs["inference"]
    crops = movie_crops(movie.image, movie.labels, build_cell_table(movie.labels, relink=False), clf.crop_settings)
    cpu = torch.device("cpu")
    fwd = inference_forward(clf.model, cpu, torch.from_numpy(crops[:64]), precision=base.precision)
    net = len(crops) / best_time(lambda: predict_batches(fwd, crops, inference["batch_size"], cpu), 2)
    # the cell tables and crops alone (no network), made in this thread (0), a thread (1) or processes
    from napari_yeast_phenotypes.core.data.chunks import PreparedChunks
    from napari_yeast_phenotypes.core.data.crops import movie_stats
    from napari_yeast_phenotypes.core.data.tracking import Tracker

    stats = movie_stats(movie.image, movie.labels, clf.crop_settings)
    prepare = {}
    for w in sorted({0, 1, cpus} | ({2} if cpus >= 2 else set())):
        t = time.perf_counter()
        with PreparedChunks(movie.image, movie.labels, 8, clf.crop_settings, stats, Tracker(), w) as chunks:
            n = sum(len(c() if callable(c) else c) for chunk in chunks for c in chunk.crops)  # 0: made when asked
        prepare[str(w)] = n / (time.perf_counter() - t)
    default = crop_workers_for("cpu", cpus)
    workers = sorted({default, 0, 1} | ({2} if cpus >= 4 else set()))
    end = {}
    for w in workers:
        t = time.perf_counter()
        res = analyse(movie.image, movie.labels, clf, ClassifyConfig(relink="no", device="cpu", crop_workers=w))
        end[str(w)] = len(res.cells) / (time.perf_counter() - t)
    return {"cpus": cpus, "cpu_ids": mine, "torch_threads": torch.get_num_threads(), "inference": inference,
            "crops": int(len(crops)), "network_crops_per_s": net, "end_to_end_crops_per_s_by_crop_workers": end,
            "tables_and_crops_per_s_by_crop_workers": prepare,
            "default_crop_workers": default, "end_to_end_crops_per_s": end[str(default)],
            "percent_of_network": 100 * end[str(default)] / net,
            "best_percent_of_network": 100 * max(end.values()) / net}


def run(ctx: Context) -> dict:
    usable = len(os.sched_getaffinity(0))
    counts = sorted({1, 2, usable} & set(range(1, usable + 1)))
    res = {"usable_cpus": usable, "by_cpus": {}}
    for n in counts:
        log(f"cores: {n} of {usable} CPU(s), network alone and end to end (subprocess) ...")
        res["by_cpus"][str(n)] = run_child("cores", {"cpus": n, "movie": list(ctx.sizes["cores_movie"])})
    one = res["by_cpus"]["1"]["end_to_end_crops_per_s"]
    res["end_to_end_speedup_vs_1_cpu"] = {k: v["end_to_end_crops_per_s"] / one for k, v in res["by_cpus"].items()}
    res["min_percent_of_network"] = min(v["percent_of_network"] for v in res["by_cpus"].values())
    return {"cores": res}
