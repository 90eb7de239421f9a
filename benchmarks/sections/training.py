"""Train-step throughput (augmentation, forward, loss, backward, AdamW) as ``train.py`` does it."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from napari_yeast_phenotypes.core.network.cpu_training import gemm_weight_grads
from napari_yeast_phenotypes.core.network.model import YeastResNet
from napari_yeast_phenotypes.core.network.train_steps import batch_loss, make_optimizer

from .common import Context, best_time, count_flops, log
from .machine import peak_rate

# (freeze policy, layout, weight gradients): the last two are what train.py runs; the others show
# what channels-last and the GEMM weight gradients (core/cpu_training.py) each add
VARIANTS = (("conv1,fc", "nchw", "onednn"), ("all", "nchw", "onednn"),
            ("conv1,fc", "channels_last", "onednn"), ("all", "channels_last", "onednn"),
            ("conv1,fc", "channels_last", "gemm"), ("all", "channels_last", "gemm"))


def row_name(policy: str, layout: str, grads: str) -> str:
    """The key of a variant in the results (the first four keep the names of earlier runs)."""
    return policy + ("" if layout == "nchw" else " channels_last") + (" gemm-grads" if grads == "gemm" else "")


def training(crops: np.ndarray, steps: int, batch: int, peak_gflops: float, rounds: int = 1) -> dict:
    """Crops/s of a train step per variant, and as % of its own FLOP ceiling.

    Each variant's best of ``steps`` timed steps (after one warm-up), taken in ``rounds`` rounds
    that go over all the variants in turn: a slow spell of a shared host then slows one round of
    every variant instead of every step of one.
    """
    x_all = torch.from_numpy(crops[:batch].copy())
    y_all = torch.arange(batch) % 8
    steps_fns, flops = {}, {}
    for policy, layout, grads in VARIANTS:
        torch.manual_seed(0)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        model = YeastResNet(8, policy).to(memory_format=fmt)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(params, 1e-4)
        gen = torch.Generator().manual_seed(0)

        def step(model=model, opt=opt, gen=gen, fmt=fmt, grads=grads):
            with gemm_weight_grads(model) if grads == "gemm" else nullcontext():
                loss = batch_loss(model, x_all, y_all, gen, label_smoothing=0.05, memory_format=fmt)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        name = row_name(policy, layout, grads)
        steps_fns[name], flops[name] = step, count_flops(step) / batch
    best = dict.fromkeys(steps_fns, float("inf"))
    for _ in range(rounds):
        for name, step in steps_fns.items():
            best[name] = min(best[name], best_time(step, max(1, -(-steps // rounds))))
    out = {}
    for (_, layout, grads), name in zip(VARIANTS, steps_fns):
        rate = batch / best[name]
        ceiling = peak_gflops * 1e9 / flops[name]
        out[name] = {"crops_per_s": rate, "flops_per_crop": flops[name], "ceiling_crops_per_s": ceiling,
                     "percent_of_ceiling": 100 * rate / ceiling, "batch": batch, "layout": layout,
                     "weight_grads": grads}
    return out


def run(ctx: Context) -> dict:
    # the peak once more, just before: on a shared host one reading can fall 20% short for a while,
    # and a low peak would flatter every percentage below; the higher of the two readings is used
    log("peak fp32 rate again ...")
    again = peak_rate(ctx.sizes["peak_n"])["peak_gflops"]
    peak = max(ctx.peak_gflops, again)
    crops = ctx.crops
    if crops is None:  # run on its own (--only training): crops of a small simulated movie
        from napari_yeast_phenotypes.core.data.simulate import simulate_movie

        from .inference import movie_crop_set

        crops = movie_crop_set(simulate_movie(4, 256, 30, seed=0), ctx.sizes["train_batch"])
    log("training steps ...")
    tr = training(crops, ctx.sizes["train_steps"], ctx.sizes["train_batch"], peak, 1 if ctx.quick else 3)
    # the headline figures are what train.py runs: channels-last, GEMM weight gradients on the CPU
    return {"training": tr, "training_peak_gflops": {"used": peak, "readings": [ctx.peak_gflops, again]},
            "training_percent_of_ceiling": tr[row_name("conv1,fc", "channels_last", "gemm")]["percent_of_ceiling"],
            "training_percent_of_ceiling_all_layers":
                tr[row_name("all", "channels_last", "gemm")]["percent_of_ceiling"]}
