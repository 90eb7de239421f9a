"""bf16 against fp32: top-class agreement and speed of the two inference paths on a trained model."""

from __future__ import annotations

import time

import numpy as np
import torch

from napari_yeast_phenotypes.core.data.crops import movie_crops
from napari_yeast_phenotypes.core.data.simulate import simulate_movie
from napari_yeast_phenotypes.core.data.tracking import build_cell_table
from napari_yeast_phenotypes.core.files.paths import demo_models
from napari_yeast_phenotypes.core.network.checkpoint import load_classifier
from napari_yeast_phenotypes.core.network.cpu_inference import inference_forward
from napari_yeast_phenotypes.core.network.device import cpu_has_native_bf16, resolve_precision
from napari_yeast_phenotypes.core.network.predict import predict_batches

from .common import Context, log, random_classifier


def bf16_check(frames: int, quick: bool = False) -> dict:
    """The project's bf16 path against its fp32 path on a trained model (the newest cached demo model)."""
    res = {"native_bf16": cpu_has_native_bf16(), "default_precision": resolve_precision("auto", "cpu")}
    models = demo_models()
    if models:
        clf = load_classifier(models[0])
        res["model"] = models[0].name
    else:
        clf = random_classifier()
        res["model"] = "untrained YeastResNet(8): no trained demo model cached (run yeast-phenotypes demo)"
    crops = []
    movies = ((frames, 128, 12),) if quick else ((frames, 256, 40), (frames // 2, 512, 150))
    for seed, (n, size, cells) in enumerate(movies):
        movie = simulate_movie(n, size, cells, seed=100 + seed)
        table = build_cell_table(movie.labels, relink=False)
        crops.append(movie_crops(movie.image, movie.labels, table, clf.crop_settings))
    crops = np.concatenate(crops)
    model, cpu = clf.model.eval(), torch.device("cpu")
    sample = torch.from_numpy(crops[:64])
    probs, rates = {}, {}
    for prec in ("fp32", "bf16"):
        fwd = inference_forward(model, cpu, sample, precision=prec)
        res[f"{prec}_path"] = fwd.describe()
        t0 = time.perf_counter()
        probs[prec] = predict_batches(fwd, crops, 128, cpu)
        rates[prec] = len(crops) / (time.perf_counter() - t0)
    p32, p16 = probs["fp32"], probs["bf16"]
    res.update(crops=len(crops), agreement=float((p16.argmax(1) == p32.argmax(1)).mean()),
               max_abs_prob_diff=float(np.abs(p16 - p32).max()), mean_abs_prob_diff=float(np.abs(p16 - p32).mean()),
               fp32_crops_per_s=rates["fp32"], bf16_crops_per_s=rates["bf16"], speedup=rates["bf16"] / rates["fp32"])
    return res


def run(ctx: Context) -> dict:
    log("bf16 against fp32 on a trained model ...")
    return {"bf16": bf16_check(ctx.sizes["bf16_frames"], quick=ctx.quick)}
