"""Inference alone (crops already made): per precision and batch size, the plain model, and by thread count."""

from __future__ import annotations

import os

import numpy as np
import torch

from napari_yeast_phenotypes.core.data.crops import CropSettings, extract_crops, movie_stats
from napari_yeast_phenotypes.core.data.tracking import measure_frame
from napari_yeast_phenotypes.core.network.cpu_inference import inference_forward
from napari_yeast_phenotypes.core.network.device import resolve_precision
from napari_yeast_phenotypes.core.network.predict import predict_batches

from .common import Context, best_time, log


def inference_only(model, crops: np.ndarray, batch_sizes, precisions, flops_per_crop: int,
                   peak_gflops: float) -> dict:
    """Crops already made: the network alone, per precision and batch size; the plain model too."""
    cpu = torch.device("cpu")
    res = {}
    for prec in precisions:
        fwd = inference_forward(model, cpu, torch.from_numpy(crops[:64]), precision=prec)
        rates = {str(bs): len(crops) / best_time(lambda f=fwd, b=bs: predict_batches(f, crops, b, cpu), 2)
                 for bs in batch_sizes}
        best = max(rates, key=rates.get)
        res[prec] = {**fwd.describe(), "crops_per_s_by_batch_size": rates, "best_batch_size": int(best),
                     "percent_of_fp32_ceiling_by_batch_size": {
                         k: 100 * v * flops_per_crop / (peak_gflops * 1e9) for k, v in rates.items()}}
    res["eager_fp32_crops_per_s_by_batch_size"] = {
        str(bs): len(crops) / best_time(lambda b=bs: predict_batches(model, crops, b, cpu), 1)
        for bs in (64, max(batch_sizes))}
    return res


def thread_sweep(model, crops: np.ndarray, batch_size: int) -> dict:
    """fp32 inference alone at 1 thread and at every usable core."""
    cpu = torch.device("cpu")
    fwd = inference_forward(model, cpu, torch.from_numpy(crops[:64]), precision="fp32")
    n0 = torch.get_num_threads()
    res = {}
    try:
        for n in sorted({1, n0, os.cpu_count() or n0}):
            torch.set_num_threads(n)
            res[str(n)] = len(crops) / best_time(lambda: predict_batches(fwd, crops, batch_size, cpu), 2)
    finally:
        torch.set_num_threads(n0)
    return res


def movie_crop_set(movie, n: int) -> np.ndarray:
    """``n`` crops of the movie's cells (repeated when the movie has fewer)."""
    settings, stats = CropSettings(), movie_stats(movie.image, movie.labels)
    crops = np.concatenate([extract_crops(movie.image[t], movie.labels[t], measure_frame(movie.labels[t], t),
                                          settings, stats) for t in range(movie.image.shape[0])])
    return np.resize(crops, (n,) + crops.shape[1:])


def run(ctx: Context) -> dict:
    log("inference alone ...")
    ctx.crops = movie_crop_set(ctx.movie, ctx.sizes["infer_crops"])
    precisions = ["fp32"] + (["bf16"] if resolve_precision("auto", "cpu") == "bf16" else [])
    return {"inference_only": inference_only(ctx.model, ctx.crops, ctx.sizes["batch_sizes"], precisions,
                                             ctx.flops_per_crop, ctx.peak_gflops),
            "inference_threads_crops_per_s": thread_sweep(ctx.model, ctx.crops, 64)}
