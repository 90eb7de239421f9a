"""On a CUDA GPU, in one run: the network alone per precision and layout (the ceiling), and a movie end to end.

Network alone: a random ``YeastResNet(8)`` in eval mode on crops already on the GPU, per batch size, as
plain eager fp32 (IEEE, TF32 off), eager TF32, eager bf16 autocast, bf16 autocast + channels-last, and
the project's inference copy (``inference_forward``: BatchNorm folded, channels-last, bf16 autocast or
TF32, as classify runs it); the project's copy also fed from pinned host memory (``predict_batches``,
the crops' copies included). End to end: the issue's movie (300 frames of 512x512, ~134 cells each:
~40,000 cell-frames; the frames of one 24-frame simulation repeated) from TIFF files on disk, through
``core.jobs.classify_movie`` on ``cuda`` (no result folder: the work alone; then once with the folder
written), per ``crop_workers`` and ``chunk_frames``, after a warm-up on a few frames (the check and
cuDNN's first calls). The ratio is the best end to end over the best network-alone bf16 channels-last.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .common import Context, log


def _sync():
    import torch

    torch.cuda.synchronize()


def _rate(fn, n: int, reps: int) -> float:
    fn()
    _sync()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - t)
    return n / best


def network_alone(batch_sizes, n_crops: int, reps: int) -> dict:
    import torch

    from napari_yeast_phenotypes.core.network.cpu_inference import inference_forward
    from napari_yeast_phenotypes.core.network.device import tf32
    from napari_yeast_phenotypes.core.network.model import YeastResNet
    from napari_yeast_phenotypes.core.network.predict import predict_batches

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = YeastResNet(8).eval().to(dev)
    crops = torch.rand(n_crops, 1, 40, 40, device=dev)
    host = crops.cpu().numpy()
    cl_model = YeastResNet(8).eval().to(dev, memory_format=torch.channels_last)
    cl_model.load_state_dict(model.state_dict())

    def eager(m, bs, layout=torch.contiguous_format, bf16=False, tf=False):
        def go():
            with torch.inference_mode(), tf32(tf), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
                for a in range(0, n_crops, bs):
                    m(crops[a:a + bs].contiguous(memory_format=layout))
        return go

    out: dict = {}
    variants = {
        "eager fp32 (IEEE)": lambda bs: eager(model, bs),
        "eager tf32": lambda bs: eager(model, bs, tf=True),
        "eager bf16 autocast": lambda bs: eager(model, bs, bf16=True),
        "eager bf16 autocast channels-last": lambda bs: eager(cl_model, bs, torch.channels_last, bf16=True),
    }
    for name, make in variants.items():
        out[name] = {str(bs): _rate(make(bs), n_crops, reps) for bs in batch_sizes}
        log(f"  {name}: " + ", ".join(f"{k}: {v:.0f}" for k, v in out[name].items()) + " crops/s")
    for prec in ("bf16", "fp32"):
        fwd = inference_forward(model, dev, crops[:256], precision=prec, remember=False)
        key = f"project copy ({fwd.path}, {fwd.precision})"

        def project(bs, fwd=fwd):
            def go():
                with torch.inference_mode():
                    for a in range(0, n_crops, bs):
                        fwd(crops[a:a + bs])
            return go

        out[key] = {str(bs): _rate(project(bs), n_crops, reps) for bs in batch_sizes}
        out[key + " from pinned host memory"] = {
            str(bs): _rate(lambda bs=bs, fwd=fwd: predict_batches(fwd, host, bs, dev), n_crops, reps)
            for bs in batch_sizes}
        log(f"  {key}: " + ", ".join(f"{k}: {v:.0f}" for k, v in out[key].items()) + " crops/s")
    return out


def end_to_end(sizes: dict, folder: Path) -> dict:
    import torch

    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.jobs.classify import classify_movie
    from napari_yeast_phenotypes.core.network.checkpoint import save_checkpoint
    from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet

    from .disk_movie import write_long_movie

    n_frames, size, n_cells = sizes["cuda_movie"]
    write_long_movie(folder, n_frames, size, n_cells)
    torch.manual_seed(0)
    model = folder / "model.pt"
    save_checkpoint(model, Classifier(YeastResNet(8).eval()))
    image, labels = folder / "image.tif", folder / "labels.tif"
    res: dict = {"movie": [n_frames, size, n_cells], "runs": []}
    warm = classify_movie(image, labels, model, ClassifyConfig(device="cuda", chunk_frames=2))
    res["inference"] = warm.run.get("inference")
    cpus = len(os.sched_getaffinity(0))
    workers = sorted({None, 0, 1, 2, 4, 8} - {w for w in (2, 4, 8) if w >= cpus}, key=lambda w: -1 if w is None
                     else w)
    for chunk in sizes["cuda_chunks"]:
        for w in workers:
            config = ClassifyConfig(device="cuda", crop_workers=w, chunk_frames=chunk)
            t = time.perf_counter()
            job = classify_movie(image, labels, model, config)
            dt = time.perf_counter() - t
            n = len(job.result.cells)
            row = {"crop_workers": job.run["inference"].get("crop_workers"), "asked": w, "chunk_frames": chunk,
                   "cell_frames": n, "seconds": dt, "crops_per_s": n / dt}
            res["runs"].append(row)
            log(f"  end to end, crop_workers {row['crop_workers']} ({'auto' if w is None else w}), chunk {chunk}: "
                f"{row['crops_per_s']:.0f} cell-frames/s")
    best = max(res["runs"], key=lambda r: r["crops_per_s"])
    t = time.perf_counter()
    job = classify_movie(image, labels, model, ClassifyConfig(device="cuda", crop_workers=best["asked"],
                                                              chunk_frames=best["chunk_frames"]), folder / "out")
    res["with_result_folder_s"] = time.perf_counter() - t
    res.update(best=best, crops_per_s=best["crops_per_s"],
               default_crops_per_s=next(r["crops_per_s"] for r in res["runs"]
                                        if r["asked"] is None and r["chunk_frames"] == 8))
    return res


def run(ctx: Context) -> dict:
    import torch

    from napari_yeast_phenotypes.core.network.device import describe_device

    res: dict = {"gpu": describe_device("cuda"), "cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version(),
                 "gpu_memory_gb": torch.cuda.get_device_properties(0).total_memory / 2**30}
    log(f"network alone on {res['gpu']} ...")
    res["network_crops_per_s"] = network_alone(ctx.sizes["cuda_batches"], ctx.sizes["cuda_net_crops"],
                                               ctx.sizes["cuda_reps"])
    ceiling_key = "eager bf16 autocast channels-last"
    ceiling = max(max(v.values()) for k, v in res["network_crops_per_s"].items()
                  if k == ceiling_key or k.startswith("project copy") and "pinned" not in k)
    res["ceiling_crops_per_s"] = ceiling
    with tempfile.TemporaryDirectory() as tmp:
        log("end to end on the GPU ...")
        res["end_to_end"] = end_to_end(ctx.sizes, Path(tmp))
    res["percent_of_ceiling"] = 100 * res["end_to_end"]["crops_per_s"] / ceiling
    res["default_percent_of_ceiling"] = 100 * res["end_to_end"]["default_crops_per_s"] / ceiling
    ctx.end_to_end_rate = res["end_to_end"]["crops_per_s"]
    return {"cuda": res}
