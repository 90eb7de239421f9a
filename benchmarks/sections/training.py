"""Train-step throughput (augmentation, forward, loss, backward, AdamW) as ``train.py`` does it."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_yeast_phenotypes.core.model import YeastResNet
from napari_yeast_phenotypes.core.train import augment_batch, make_optimizer

from .common import Context, best_time, count_flops, log


def training(crops: np.ndarray, steps: int, batch: int, peak_gflops: float) -> dict:
    """Crops/s of a train step per freeze policy and layout, and as % of its own FLOP ceiling."""
    out = {}
    x_all = torch.from_numpy(crops[:batch].copy())
    y_all = torch.arange(batch) % 8
    for policy, layout in (("conv1,fc", "nchw"), ("all", "nchw"), ("conv1,fc", "channels_last"),
                           ("all", "channels_last")):
        torch.manual_seed(0)
        model = YeastResNet(8, policy)
        model.train()
        if layout == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        x_in = x_all.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x_all
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(params, 1e-4)
        gen = torch.Generator().manual_seed(0)

        def step(model=model, opt=opt, gen=gen, x_in=x_in):
            x = augment_batch(x_in, gen)
            loss = F.cross_entropy(model(x), y_all, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        flops = count_flops(step) / batch
        dt = best_time(step, steps)
        rate = batch / dt
        ceiling = peak_gflops * 1e9 / flops
        key = policy if layout == "nchw" else f"{policy} channels_last"
        out[key] = {"crops_per_s": rate, "flops_per_crop": flops, "ceiling_crops_per_s": ceiling,
                    "percent_of_ceiling": 100 * rate / ceiling, "batch": batch}
    return out


def run(ctx: Context) -> dict:
    log("training steps ...")
    tr = training(ctx.crops, ctx.sizes["train_steps"], ctx.sizes["train_batch"], ctx.peak_gflops)
    # the headline figures are the layout train.py uses (channels-last); the NCHW rows stay beside them
    return {"training": tr, "training_percent_of_ceiling": tr["conv1,fc channels_last"]["percent_of_ceiling"],
            "training_percent_of_ceiling_all_layers": tr["all channels_last"]["percent_of_ceiling"]}
