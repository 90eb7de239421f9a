"""How fast does napari-yeast-phenotypes classify, next to what the hardware can do?

Run ``python benchmarks/run.py`` (add ``--out FILE`` for the figures as JSON, ``--quick`` for tiny
sizes, ``--threads N`` to pin torch's thread count). Everything is measured in this one run on
this one machine, so the ratios compare like with like:

- the machine's fp32 rate: the best of a large GEMM (``torch.matmul``) and a large 1x1 convolution
  (oneDNN), at the thread count the project uses; with the model's FLOPs per crop (counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on the adapted ResNet50) it gives the ceiling in
  crops/s;
- end to end (cell table + crops + inference) on one synthetic movie: this project's
  ``pipeline.analyse`` against a notebook-style loop (one ``labels == id`` mask, one resize and one
  batch-1 forward pass per cell), at three movie lengths for the project (time per crop must not
  grow with length);
- crop extraction alone, inference alone (batch sizes and thread counts), training steps;
- peak memory (RSS) of a 100- and a 1,000-frame 512x512 movie streamed from disk, each in its own
  process;
- the longest stall of a Qt event loop while a napari ``thread_worker`` classifies a movie.

Only the standard library and the project's own dependencies are used. Speed does not depend on
the weights, so a randomly initialised ``YeastResNet(8)`` in eval mode stands in for a trained
model everywhere except in the bf16 agreement check, which needs a trained one.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_yeast_phenotypes.core import predict
from napari_yeast_phenotypes.core.config import ClassifyConfig
from napari_yeast_phenotypes.core.cpu_inference import inference_forward
from napari_yeast_phenotypes.core.crops import CropSettings, extract_crops, movie_stats
from napari_yeast_phenotypes.core.device import cpu_has_native_bf16, resolve_precision
from napari_yeast_phenotypes.core.model import Classifier, YeastResNet
from napari_yeast_phenotypes.core.pipeline import analyse
from napari_yeast_phenotypes.core.simulate import simulate_movie
from napari_yeast_phenotypes.core.tracking import measure_frame

HERE = Path(__file__).resolve()

# sizes: (full, quick)
SIZES = {
    "full": {"movie": (48, 512, 200), "lengths": (12, 24, 48), "baseline_cells": 400, "crop_frames": 8,
             "loop_frames": 2, "infer_crops": 1024, "batch_sizes": (16, 32, 64, 128, 256), "train_steps": 5,
             "train_batch": 64, "memory": (100, 1000, 512, 10), "stall": (40, 256, 30), "peak_n": 2048,
             "bf16_frames": 40},
    "quick": {"movie": (6, 128, 12), "lengths": (2, 3, 6), "baseline_cells": 10, "crop_frames": 2,
              "loop_frames": 1, "infer_crops": 64, "batch_sizes": (16, 32), "train_steps": 1, "train_batch": 8,
              "memory": (4, 12, 128, 3), "stall": (4, 128, 6), "peak_n": 256, "bf16_frames": 2},
}


_T0 = [time.perf_counter()]


def log(msg: str) -> None:
    now = time.perf_counter()
    print(f"[{now - _T0[0]:6.1f} s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- machine

def machine_info() -> dict:
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


def _best_time(fn, reps: int, min_time: float = 0.0) -> float:
    fn()
    best, spent, i = math.inf, 0.0, 0
    while i < reps or spent < min_time:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent, i = min(best, dt), spent + dt, i + 1
    return best


def peak_rate(n: int) -> dict:
    """fp32 GFLOP/s of a large GEMM and of a large 1x1 convolution (oneDNN), best of a few runs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    gemm = 2 * n ** 3 / _best_time(lambda: torch.matmul(a, b), 8, 0.5) / 1e9
    conv_rates = {}
    c, hw, batch = (1024, 14, 32) if n >= 1024 else (256, 14, 8)
    with torch.inference_mode():
        for fmt in ("channels_last", "contiguous"):
            mf = getattr(torch, fmt if fmt == "channels_last" else "contiguous_format")
            conv = torch.nn.Conv2d(c, c, 1, bias=False).eval().to(memory_format=mf)
            x = torch.randn(batch, c, hw, hw).contiguous(memory_format=mf)
            flops = 2 * batch * c * c * hw * hw
            conv_rates[fmt] = flops / _best_time(lambda conv=conv, x=x: conv(x), 8, 0.5) / 1e9
        # the same convolution in bf16, for reference only (the ceiling is fp32)
        conv = torch.nn.Conv2d(c, c, 1, bias=False).eval().to(torch.bfloat16, memory_format=torch.channels_last)
        x = torch.randn(batch, c, hw, hw).to(torch.bfloat16, memory_format=torch.channels_last)
        bf16 = 2 * batch * c * c * hw * hw / _best_time(lambda: conv(x), 8, 0.5) / 1e9
    conv_best = max(conv_rates.values())
    return {"gemm_gflops": gemm, "conv1x1_gflops": conv_best, "conv1x1_gflops_by_layout": conv_rates,
            "peak_gflops": max(gemm, conv_best), "peak_source": "conv1x1" if conv_best >= gemm else "gemm",
            "gemm_size": n, "conv_shape": [batch, c, hw, hw], "bf16_conv1x1_gflops": bf16}


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def model_flops_per_crop(size: int = 40) -> int:
    model = YeastResNet(8).eval()
    with torch.no_grad():
        return count_flops(lambda: model(torch.zeros(1, 1, size, size)))


# ------------------------------------------------------------------------------------- baseline

def notebook_crop(image, labels, label_id, settings, stats, low, high):
    """The per-cell crop a notebook makes: full-frame mask, bbox, window, resize."""
    mask = labels == label_id
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = max(y1 - y0, x1 - x0)
    if settings.scale == "movie":
        side = max(side, settings.reference * stats.cell_side)
    side = max(side * (1 + 2 * settings.margin), settings.min_side)
    cy, cx, half = (y0 + y1) / 2, (x0 + x1) / 2, side / 2
    r0, r1 = int(np.floor(cy - half)), int(np.ceil(cy + half))
    c0, c1 = int(np.floor(cx - half)), int(np.ceil(cx + half))
    win = np.zeros((r1 - r0, c1 - c0), np.float32)
    keep = mask | (labels == 0)
    sy0, sy1, sx0, sx1 = max(r0, 0), min(r1, labels.shape[0]), max(c0, 0), min(c1, labels.shape[1])
    sub = np.where(keep[sy0:sy1, sx0:sx1], (image[sy0:sy1, sx0:sx1] - low) / (high - low), 0)
    win[sy0 - r0:sy1 - r0, sx0 - c0:sx1 - c0] = sub
    t = torch.from_numpy(win)[None, None]
    return F.interpolate(t, size=(settings.size, settings.size), mode="bilinear", antialias=True,
                         align_corners=False)


def notebook_baseline(image, labels, model, max_cells: int) -> dict:
    """Notebook-style classification: per frame np.unique, per cell a mask, a crop and a forward."""
    settings = CropSettings()
    stats = movie_stats(image, labels, settings)
    n_cells = 0
    t0 = time.perf_counter()
    rows = []
    with torch.no_grad():
        for t in range(image.shape[0]):
            img = image[t].astype(np.float32)
            lab = labels[t]
            for label_id in np.unique(lab):
                if label_id == 0:
                    continue
                mask = lab == label_id
                area = int(mask.sum())
                ys, xs = np.nonzero(mask)
                x = notebook_crop(img, lab, label_id, settings, stats, stats.low, stats.high)
                prob = torch.softmax(model(x), dim=1)[0].numpy()
                rows.append((t, int(label_id), ys.mean(), xs.mean(), area, prob))
                n_cells += 1
                if n_cells >= max_cells:
                    break
            if n_cells >= max_cells:
                break
    dt = time.perf_counter() - t0
    return {"crops": n_cells, "seconds": dt, "crops_per_s": n_cells / dt}


# -------------------------------------------------------------------------------------- project

def project_run(image, labels, clf, config: ClassifyConfig | None = None) -> dict:
    t0 = time.perf_counter()
    result = analyse(image, labels, clf, config)
    dt = time.perf_counter() - t0
    n = len(result.cells)
    return {"frames": int(image.shape[0]), "crops": n, "seconds": dt, "crops_per_s": n / dt,
            "ms_per_crop": 1e3 * dt / n}


def crop_extraction(image, labels, frames: int, loop_frames: int) -> dict:
    settings = CropSettings()
    stats = movie_stats(image, labels, settings)
    tables = [measure_frame(labels[t], t) for t in range(frames)]
    n = sum(len(tb) for tb in tables)

    def project():
        for t in range(frames):
            extract_crops(image[t], labels[t], tables[t], settings, stats)

    dt_project = _best_time(project, 2)
    t0 = time.perf_counter()
    n_loop = 0
    for t in range(loop_frames):
        img = image[t].astype(np.float32)
        for label_id in tables[t]["label"].to_numpy():
            notebook_crop(img, labels[t], label_id, settings, stats, stats.low, stats.high)
            n_loop += 1
    dt_loop = time.perf_counter() - t0
    project_rate, loop_rate = n / dt_project, n_loop / dt_loop
    return {"project_crops_per_s": project_rate, "loop_crops_per_s": loop_rate,
            "speedup": project_rate / loop_rate, "project_crops": n, "loop_crops": n_loop}


def inference_only(model, crops: np.ndarray, batch_sizes, precisions, flops_per_crop: int,
                   peak_gflops: float) -> dict:
    """Crops already made: the network alone, per precision and batch size; the plain model too."""
    cpu = torch.device("cpu")
    res = {}
    for prec in precisions:
        fwd = inference_forward(model, cpu, torch.from_numpy(crops[:64]), precision=prec)
        rates = {str(bs): len(crops) / _best_time(lambda f=fwd, b=bs: predict.predict_batches(f, crops, b, cpu), 2)
                 for bs in batch_sizes}
        best = max(rates, key=rates.get)
        res[prec] = {**fwd.describe(), "crops_per_s_by_batch_size": rates, "best_batch_size": int(best),
                     "percent_of_fp32_ceiling_by_batch_size": {
                         k: 100 * v * flops_per_crop / (peak_gflops * 1e9) for k, v in rates.items()}}
    res["eager_fp32_crops_per_s_by_batch_size"] = {
        str(bs): len(crops) / _best_time(lambda b=bs: predict.predict_batches(model, crops, b, cpu), 1)
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
            res[str(n)] = len(crops) / _best_time(lambda: predict.predict_batches(fwd, crops, batch_size, cpu), 2)
    finally:
        torch.set_num_threads(n0)
    return res


def training(crops: np.ndarray, steps: int, batch: int, peak_gflops: float) -> dict:
    """Train-step throughput (forward, loss, backward, AdamW) as train.py does it, per freeze policy."""
    from napari_yeast_phenotypes.core.train import augment_batch

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
        opt = torch.optim.AdamW(params, lr=1e-4)
        gen = torch.Generator().manual_seed(0)

        def step(model=model, opt=opt, gen=gen, x_in=x_in):
            x = augment_batch(x_in, gen)
            loss = F.cross_entropy(model(x), y_all, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        flops = count_flops(step) / batch
        dt = _best_time(step, steps)
        rate = batch / dt
        ceiling = peak_gflops * 1e9 / flops
        key = policy if layout == "nchw" else f"{policy} channels_last"
        out[key] = {"crops_per_s": rate, "flops_per_crop": flops, "ceiling_crops_per_s": ceiling,
                       "percent_of_ceiling": 100 * rate / ceiling, "batch": batch}
    return out


# ---------------------------------------------------------------------------------------- memory

def _write_long_movie(folder: Path, n_frames: int, size: int, n_cells: int) -> dict:
    """A (n_frames, size, size) uint16 image and labels as plain TIFF stacks, written frame by frame."""
    import tifffile

    base = simulate_movie(min(n_frames, 24), size, n_cells, seed=3, births=False, drift=False)
    paths = {}
    for name, arr in (("image", base.image), ("labels", base.labels)):
        path = folder / f"{name}.tif"
        out = tifffile.memmap(path, shape=(n_frames, size, size), dtype=arr.dtype)
        for t in range(n_frames):
            out[t] = arr[t % len(arr)]
        out.flush()
        del out
        paths[name] = str(path)
    return paths


class _TiffFrames:
    """A (T, Y, X) array-like over a contiguous TIFF stack that reads with plain file reads (no
    memory map), so that what a process holds is only what it asked for."""

    def __init__(self, path: str):
        import tifffile

        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            self.shape, self.dtype, self.offset = tuple(series.shape), np.dtype(series.dtype), series.dataoffset
        if self.offset is None:
            raise RuntimeError(f"{path} is not a contiguous TIFF stack")
        self.path, self.ndim = path, len(self.shape)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        frames = range(self.shape[0])[key[0]]
        items = int(np.prod(self.shape[1:]))
        if isinstance(frames, int):
            frames = [frames]
        out = np.stack([np.fromfile(self.path, self.dtype, items, offset=self.offset + t * items * self.dtype.itemsize)
                        .reshape(self.shape[1:]) for t in frames]) if len(frames) else np.zeros((0,) + self.shape[1:],
                                                                                                 self.dtype)
        out = out[(slice(None),) + key[1:]]
        return out[0] if isinstance(key[0], (int, np.integer)) else out


def _lazy_stack(path: str):
    """The stack as a dask array with one chunk per frame, as napari readers make them."""
    import dask.array as da

    frames = _TiffFrames(path)
    return da.from_array(frames, chunks=(1,) + frames.shape[1:], asarray=True, fancy=False)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    ``VmHWM`` (Linux) is the high-water mark of this very process image. ``ru_maxrss`` is the
    fallback; on Linux it would also count the parent's memory at the fork that started this
    process, so it is not used where ``VmHWM`` exists.
    """
    hwm = _status_mb("VmHWM")
    if math.isfinite(hwm):
        return hwm
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def memory_child(folder: str, n_frames: int, source: str) -> None:
    """Run in a fresh process: classify the first ``n_frames`` frames, print peak RSS as JSON.

    Besides the peak resident set (``VmHWM``), a thread samples the anonymous part (``RssAnon``:
    the process's own memory, without file pages mapped in) every 20 ms and keeps its maximum.
    """
    import threading

    if source == "dask":
        image, labels = _lazy_stack(f"{folder}/image.tif"), _lazy_stack(f"{folder}/labels.tif")
    else:
        from napari_yeast_phenotypes.core.io import read_array

        image, labels = read_array(f"{folder}/image.tif", lazy=True), read_array(f"{folder}/labels.tif", lazy=True)
    image, labels = image[:n_frames], labels[:n_frames]
    torch.manual_seed(0)
    clf = Classifier(YeastResNet(8).eval())
    rss0 = peak_rss_mb()
    anon, done = [0.0], threading.Event()

    def sample():
        while not done.wait(0.02):
            anon[0] = max(anon[0], _status_mb("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    result = analyse(image, labels, clf, ClassifyConfig(relink="no"))
    dt = time.perf_counter() - t0
    done.set()
    sampler.join()
    print(json.dumps({"frames": n_frames, "crops": len(result.cells), "seconds": dt, "peak_rss_mb": peak_rss_mb(),
                      "peak_anon_rss_mb": anon[0], "rss_before_mb": rss0, "source": source,
                      "inference": result.cells.attrs.get("inference")}))


def _status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def memory(frames_small: int, frames_large: int, size: int, cells: int, with_memmap: bool = True) -> dict:
    try:
        import dask  # noqa: F401

        source = "dask"
    except ImportError:
        source = "memmap"
    res = {"source": source, "frame_size": size, "cells_per_frame": cells}
    with tempfile.TemporaryDirectory() as tmp:
        _write_long_movie(Path(tmp), frames_large, size, cells)
        runs = [("small", frames_small, source), ("large", frames_large, source)]
        if source != "memmap" and with_memmap:
            runs.append(("large_memmap", frames_large, "memmap"))
        for label, n, src in runs:
            proc = subprocess.run([sys.executable, str(HERE), "--memory-child", tmp, str(n), src],
                                  capture_output=True, text=True, check=False,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode:
                raise RuntimeError(f"memory child failed: {proc.stderr[-2000:]}")
            res[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    res["growth_mb"] = res["large"]["peak_rss_mb"] - res["small"]["peak_rss_mb"]
    return res


# ------------------------------------------------------------------------------------ event loop

def stall_child(n_frames: int, size: int, cells: int) -> None:
    """Run in a fresh process: a Qt event loop with a 10 ms timer while a thread_worker classifies."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from napari.qt.threading import thread_worker
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_yeast_phenotypes.core.pipeline import analyse_iter

    app = QApplication.instance() or QApplication([])
    movie = simulate_movie(n_frames, size, cells, seed=0)
    torch.manual_seed(0)
    clf = Classifier(YeastResNet(8).eval())
    gaps, last, state = [], [None], {}

    def tick():
        now = time.perf_counter()
        if last[0] is not None:
            gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setTimerType(Qt.PreciseTimer)
    timer.setInterval(10)
    timer.timeout.connect(tick)

    # the idle loop first, for reference
    timer.start()
    QTimer.singleShot(500, app.quit)
    app.exec_()
    idle = list(gaps)
    gaps.clear()
    last[0] = None

    worker = thread_worker(analyse_iter, start_thread=False)(movie.image, movie.labels, clf)
    worker.returned.connect(lambda r: state.update(cells=len(r.cells)))
    worker.errored.connect(lambda e: state.update(error=repr(e)))
    worker.finished.connect(lambda: QTimer.singleShot(50, app.quit))
    t0 = time.perf_counter()
    worker.start()
    app.exec_()
    dt = time.perf_counter() - t0
    timer.stop()
    g = np.asarray(gaps) * 1e3
    print(json.dumps({"max_gap_ms": float(g.max()), "p99_gap_ms": float(np.percentile(g, 99)),
                      "mean_gap_ms": float(g.mean()), "ticks": int(g.size),
                      "idle_max_gap_ms": float(np.max(idle) * 1e3) if idle else None,
                      "seconds": dt, "crops": state.get("cells"), "error": state.get("error"),
                      "movie": [n_frames, size, cells]}))


def event_loop_stall(n_frames: int, size: int, cells: int) -> dict:
    try:
        import napari.qt.threading  # noqa: F401
        import qtpy.QtWidgets  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - no napari/Qt: skip with a note
        return {"skipped": f"napari/Qt not importable: {exc}"}
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(HERE), "--stall-child", str(n_frames), str(size), str(cells)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        return {"skipped": f"the Qt child failed: {proc.stderr[-1500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ bf16

def bf16_check(frames: int, quick: bool = False) -> dict:
    """The project's bf16 path against its fp32 path on a trained model (if one is cached)."""
    from napari_yeast_phenotypes.core.crops import movie_crops
    from napari_yeast_phenotypes.core.model import load_classifier
    from napari_yeast_phenotypes.core.tracking import build_cell_table

    res = {"native_bf16": cpu_has_native_bf16(), "default_precision": resolve_precision("auto", "cpu")}
    paths = sorted(glob.glob(os.path.expanduser("~/.cache/napari-yeast-phenotypes/demo-model-*.pt")),
                   key=os.path.getmtime)
    if paths:
        clf = load_classifier(paths[-1])
        res["model"] = os.path.basename(paths[-1])
    else:
        torch.manual_seed(0)
        clf = Classifier(YeastResNet(8).eval())
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
        probs[prec] = predict.predict_batches(fwd, crops, 128, cpu)
        rates[prec] = len(crops) / (time.perf_counter() - t0)
    p32, p16 = probs["fp32"], probs["bf16"]
    res.update(crops=len(crops), agreement=float((p16.argmax(1) == p32.argmax(1)).mean()),
               max_abs_prob_diff=float(np.abs(p16 - p32).max()), mean_abs_prob_diff=float(np.abs(p16 - p32).mean()),
               fp32_crops_per_s=rates["fp32"], bf16_crops_per_s=rates["bf16"], speedup=rates["bf16"] / rates["fp32"])
    return res


# ------------------------------------------------------------------------------------------ main

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the figures to this JSON file")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs (seconds)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's default, the physical cores)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: memory,stall,bf16,training")
    ap.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--stall-child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        folder, n, source = args.memory_child
        memory_child(folder, int(n), source)
        return {}
    if args.stall_child:
        stall_child(*args.stall_child)
        return {}
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    cfg = SIZES["quick" if args.quick else "full"]
    t_start = time.perf_counter()
    res: dict = {"mode": "quick" if args.quick else "full", "machine": machine_info(), "notes": []}

    log("peak fp32 rate ...")
    peak = peak_rate(cfg["peak_n"])
    flops = model_flops_per_crop()
    ceiling = peak["peak_gflops"] * 1e9 / flops
    res.update(peak=peak, model_flops_per_crop=flops, model_gflops_per_crop=flops / 1e9, ceiling_crops_per_s=ceiling,
               bf16_ceiling_crops_per_s=peak["bf16_conv1x1_gflops"] * 1e9 / flops)

    n_frames, size, n_cells = cfg["movie"]
    log(f"simulating a {n_frames}-frame {size}x{size} movie with {n_cells} cells ...")
    movie = simulate_movie(n_frames, size, n_cells, seed=0)
    torch.manual_seed(0)
    model = YeastResNet(8).eval()
    clf = Classifier(model)

    log("project end to end ...")
    t0 = time.perf_counter()
    first = analyse(movie.image[:2], movie.labels[:2], clf)  # builds (and caches) the inference copy
    res["first_call_setup_s"] = time.perf_counter() - t0
    res["project_inference"] = first.cells.attrs.get("inference")
    runs = [project_run(movie.image[:n], movie.labels[:n], clf) for n in cfg["lengths"]]
    main_run = max(runs, key=lambda r: r["crops"])
    res["project"] = main_run
    res["project_crops_per_s"] = main_run["crops_per_s"]
    res["time_per_crop_ms_by_frames"] = {str(r["frames"]): r["ms_per_crop"] for r in runs}
    res["scaling_runs"] = runs
    if res["project_inference"] and res["project_inference"]["precision"] != "fp32":
        log("project end to end, fp32 ...")
        fp32 = ClassifyConfig(precision="fp32")
        analyse(movie.image[:2], movie.labels[:2], clf, fp32)
        fp32_run = project_run(movie.image, movie.labels, clf, fp32)
    else:
        fp32_run = main_run
    res["project_fp32"] = fp32_run
    res["project_fp32_crops_per_s"] = fp32_run["crops_per_s"]

    log("notebook-style baseline ...")
    base = notebook_baseline(movie.image, movie.labels, model, cfg["baseline_cells"])
    res["baseline"] = base
    res["baseline_crops_per_s"] = base["crops_per_s"]
    res["speedup_vs_baseline"] = res["project_crops_per_s"] / base["crops_per_s"]
    res["percent_of_ceiling"] = 100 * res["project_crops_per_s"] / ceiling
    res["percent_of_ceiling_fp32"] = 100 * res["project_fp32_crops_per_s"] / ceiling
    if res["project_inference"] and res["project_inference"]["precision"] == "bf16":
        res["percent_of_bf16_ceiling"] = 100 * res["project_crops_per_s"] / res["bf16_ceiling_crops_per_s"]
    res["speedup_vs_baseline_fp32"] = res["project_fp32_crops_per_s"] / base["crops_per_s"]

    log("crop extraction ...")
    ce = crop_extraction(movie.image, movie.labels, cfg["crop_frames"], cfg["loop_frames"])
    res["crop_extraction"] = ce
    res["crop_extraction_speedup"] = ce["speedup"]

    log("inference alone ...")
    settings, stats = CropSettings(), movie_stats(movie.image, movie.labels)
    crops = np.concatenate([extract_crops(movie.image[t], movie.labels[t], measure_frame(movie.labels[t], t),
                                          settings, stats) for t in range(n_frames)])
    crops = np.resize(crops, (cfg["infer_crops"],) + crops.shape[1:])
    precisions = ["fp32"] + (["bf16"] if resolve_precision("auto", "cpu") == "bf16" else [])
    res["inference_only"] = inference_only(model, crops, cfg["batch_sizes"], precisions, flops, peak["peak_gflops"])
    res["inference_threads_crops_per_s"] = thread_sweep(model, crops, 64)

    if "training" not in skip:
        log("training steps ...")
        tr = training(crops, cfg["train_steps"], cfg["train_batch"], peak["peak_gflops"])
        res["training"] = tr
        res["training_percent_of_ceiling"] = tr["conv1,fc"]["percent_of_ceiling"]
        res["training_percent_of_ceiling_all_layers"] = tr["all"]["percent_of_ceiling"]

    if "memory" not in skip:
        small, large, msize, mcells = cfg["memory"]
        log(f"peak memory, {small} and {large} frames of {msize}x{msize} from disk (subprocesses) ...")
        mem = memory(small, large, msize, mcells, with_memmap=not args.quick)
        res["memory"] = mem
        res["peak_rss_mb_1000_frames"] = mem["large"]["peak_rss_mb"]
        res["notes"].append(
            f"memory: {mem['source']} source, {mcells} cells per frame, real network; "
            f"'large' = {large} frames (the 1,000-frame figure in a full run)")

    if "stall" not in skip:
        log("event-loop stall under a napari thread_worker (subprocess) ...")
        st = event_loop_stall(*cfg["stall"])
        res["event_loop"] = st
        res["max_event_loop_stall_ms"] = st.get("max_gap_ms")
        if "skipped" in st:
            res["notes"].append("event loop: " + st["skipped"])

    if "bf16" not in skip:
        log("bf16 against fp32 on a trained model ...")
        res["bf16"] = bf16_check(cfg["bf16_frames"], quick=args.quick)

    res["machine"]["load_average_end"] = list(os.getloadavg())
    res["benchmark_seconds"] = time.perf_counter() - t_start
    print_summary(res)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2, default=float))
    return res


def print_summary(res: dict) -> None:
    m, p = res["machine"], res["peak"]
    lines: list[str] = []
    add = lines.append
    add(f"machine: {m['cpu']}, {m['usable_cpus']} cpus, torch {m['torch']} ({m['torch_threads']} threads), "
        f"load {m['load_average_start'][0]:.2f} -> {m['load_average_end'][0]:.2f}")
    add(f"fp32 peak: GEMM {p['gemm_gflops']:.0f} GFLOP/s, 1x1 conv {p['conv1x1_gflops']:.0f} GFLOP/s; "
        f"{res['model_gflops_per_crop']:.3f} GFLOP/crop -> ceiling {res['ceiling_crops_per_s']:.0f} crops/s "
        f"(bf16 1x1 conv {p['bf16_conv1x1_gflops']:.0f} GFLOP/s -> {res['bf16_ceiling_crops_per_s']:.0f} crops/s)")
    inf = res["project_inference"] or {"path": "?", "precision": "?"}
    add(f"project end to end ({inf['path']}, {inf['precision']}): {res['project_crops_per_s']:.0f} crops/s = "
        f"{res['percent_of_ceiling']:.0f}% of the fp32 ceiling, {res['speedup_vs_baseline']:.1f}x the notebook "
        f"baseline ({res['baseline_crops_per_s']:.1f} crops/s)"
        + (f"; {res['percent_of_bf16_ceiling']:.0f}% of the bf16 ceiling" if "percent_of_bf16_ceiling" in res else ""))
    add(f"project end to end in fp32: {res['project_fp32_crops_per_s']:.0f} crops/s = "
        f"{res['percent_of_ceiling_fp32']:.0f}% of the ceiling, {res['speedup_vs_baseline_fp32']:.1f}x the baseline")
    add("time per crop (ms) by movie length in frames: "
        + ", ".join(f"{k}: {v:.3f}" for k, v in res["time_per_crop_ms_by_frames"].items()))
    ce = res["crop_extraction"]
    add(f"crop extraction: {ce['project_crops_per_s']:.0f} vs {ce['loop_crops_per_s']:.0f} crops/s per-label loop "
        f"({res['crop_extraction_speedup']:.1f}x)")
    inf_only = res["inference_only"]
    for prec in ("fp32", "bf16"):
        if prec in inf_only:
            add(f"inference alone, {prec}, crops/s by batch size: "
                + ", ".join(f"{k}: {v:.0f}" for k, v in inf_only[prec]["crops_per_s_by_batch_size"].items()))
    add("inference alone, plain eager fp32, by batch size: "
        + ", ".join(f"{k}: {v:.0f}" for k, v in inf_only["eager_fp32_crops_per_s_by_batch_size"].items()))
    add("inference alone, fp32, by threads: "
        + ", ".join(f"{k}: {v:.0f}" for k, v in res["inference_threads_crops_per_s"].items()))
    if "training" in res:
        add("training: " + ", ".join(f"{k}: {v['crops_per_s']:.0f} crops/s ({v['percent_of_ceiling']:.0f}% of its "
                                     "ceiling)" for k, v in res["training"].items()))
    if "memory" in res:
        mem = res["memory"]
        line = (f"peak RSS ({mem['frame_size']}x{mem['frame_size']}, {mem['cells_per_frame']} cells/frame): "
                f"{mem['small']['frames']} frames {mem['small']['peak_rss_mb']:.0f} MB, {mem['large']['frames']} "
                f"frames {mem['large']['peak_rss_mb']:.0f} MB ({mem['source']}, "
                f"{mem['large']['crops'] / mem['large']['seconds']:.0f} crops/s)")
        if "large_memmap" in mem:
            mm = mem["large_memmap"]
            line += (f"; memory-mapped TIFF, {mm['frames']} frames {mm['peak_rss_mb']:.0f} MB "
                     f"({mm['crops'] / mm['seconds']:.0f} crops/s)")
        add(line)
    if "event_loop" in res:
        st = res["event_loop"]
        add("event loop: " + (st["skipped"] if "skipped" in st else
                              f"max stall {st['max_gap_ms']:.1f} ms, p99 {st['p99_gap_ms']:.1f} ms "
                              f"(idle max {st['idle_max_gap_ms']:.1f} ms)"))
    if "bf16" in res:
        b = res["bf16"]
        add(f"bf16 vs fp32 ({b['model']}): top class agrees on {100 * b['agreement']:.2f}% of {b['crops']} crops, "
            f"max prob diff {b['max_abs_prob_diff']:.3f}; {b['bf16_crops_per_s']:.0f} vs {b['fp32_crops_per_s']:.0f} "
            "crops/s")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
