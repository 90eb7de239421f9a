"""The machine and its fp32 peak rate, and the model's FLOPs per crop: the ceiling every speed is held to."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

from napari_yeast_phenotypes.core.network.model import YeastResNet

from .common import Context, best_time, count_flops, log


def machine_info() -> dict:
    """CPU model and flags, cores, library versions, torch threads, load average."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "avx512": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "load_average_start": list(os.getloadavg()),
    }


def peak_rate(n: int) -> dict:
    """fp32 GFLOP/s of a large GEMM and of a large 1x1 convolution (oneDNN), best of a few runs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    gemm = 2 * n ** 3 / best_time(lambda: torch.matmul(a, b), 8, 0.5) / 1e9
    conv_rates = {}
    c, hw, batch = (1024, 14, 32) if n >= 1024 else (256, 14, 8)
    with torch.inference_mode():
        for fmt in ("channels_last", "contiguous"):
            mf = getattr(torch, fmt if fmt == "channels_last" else "contiguous_format")
            conv = torch.nn.Conv2d(c, c, 1, bias=False).eval().to(memory_format=mf)
            x = torch.randn(batch, c, hw, hw).contiguous(memory_format=mf)
            flops = 2 * batch * c * c * hw * hw
            conv_rates[fmt] = flops / best_time(lambda conv=conv, x=x: conv(x), 8, 0.5) / 1e9
        # the same convolution in bf16, for reference only (the ceiling is fp32)
        conv = torch.nn.Conv2d(c, c, 1, bias=False).eval().to(torch.bfloat16, memory_format=torch.channels_last)
        x = torch.randn(batch, c, hw, hw).to(torch.bfloat16, memory_format=torch.channels_last)
        bf16 = 2 * batch * c * c * hw * hw / best_time(lambda: conv(x), 8, 0.5) / 1e9
    conv_best = max(conv_rates.values())
    return {"gemm_gflops": gemm, "conv1x1_gflops": conv_best, "conv1x1_gflops_by_layout": conv_rates,
            "peak_gflops": max(gemm, conv_best), "peak_source": "conv1x1" if conv_best >= gemm else "gemm",
            "gemm_size": n, "conv_shape": [batch, c, hw, hw], "bf16_conv1x1_gflops": bf16}


def model_flops_per_crop(size: int = 40) -> int:
    """FLOPs of one forward pass of the adapted ResNet50 on a 1 x size x size crop."""
    model = YeastResNet(8).eval()
    with torch.no_grad():
        return count_flops(lambda: model(torch.zeros(1, 1, size, size)))


def run(ctx: Context) -> dict:
    log("peak fp32 rate ...")
    peak = peak_rate(ctx.sizes["peak_n"])
    flops = model_flops_per_crop()
    ctx.peak_gflops, ctx.flops_per_crop = peak["peak_gflops"], flops
    ctx.peak_bf16_gflops = peak["bf16_conv1x1_gflops"]
    return {"peak": peak, "model_flops_per_crop": flops, "model_gflops_per_crop": flops / 1e9,
            "ceiling_crops_per_s": peak["peak_gflops"] * 1e9 / flops,
            "bf16_ceiling_crops_per_s": peak["bf16_conv1x1_gflops"] * 1e9 / flops}
