"""Memory bounded by the work, not by the input's shape (issue 21, class 8): peak memory of classifying
one huge frame, and one frame of very many cells, each in a fresh process.

Run ``python benchmarks/memory_bounds.py --out FILE`` (``--quick`` for tiny sizes). Two movies of
one frame each:

- ``big_frame``: a ``--size`` x ``--size`` frame (default 6,000; the issue's case is 20,000), float32
  image and int32 labels, with round cells of 24 pixels every 40 pixels (22,500 cells at 6,000);
- ``many_ids``: a ``--ids-size`` square frame (default 2,000) tiled with 4 x 4 cells, every one its own
  id (250,000 ids at 2,000; the issue's case, 10^6 ids, is ``--ids-size 4000``).

Each is classified by :func:`napari_yeast_phenotypes.core.pipeline.analyse` (statistics, checks,
cell table, crops, probabilities, timelines) in a child process, whose peak resident memory is
measured from the moment its arrays are built (the kernel's high-water mark, reset there through
``/proc/self/clear_refs``; Linux). The figure that matters is the memory **beside** the frame
(peak minus the resident memory once the frame is in memory), in MB and as a multiple of the
frame's own bytes (image + labels). The network is a one-layer stand-in (memory of a forward
pass is bounded by the batch, and ResNet50 on 250,000 crops would take an hour of CPU); every
other step is the package's own.

``--src DIR`` runs the children on another checkout's ``src`` (e.g. the code before the fix), so
"before" and "after" come from the same script on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"full": {"big_frame": 6000, "many_ids": 2000}, "quick": {"big_frame": 600, "many_ids": 200}}


def status_mb(name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(kind: str, size: int):
    """The one-frame movie of a scenario, built without temporaries of the frame's size."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.zeros((1, size, size), np.int32)
    image = rng.standard_normal((1, size, size), dtype=np.float32)
    image += 100.0
    if kind == "big_frame":
        r, step = 12, 40
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = (yy ** 2 + xx ** 2) <= r * r
        n = 0
        for y in range(r, size - r - 1, step):
            for x in range(r, size - r - 1, step):
                n += 1
                win = labels[0, y - r:y + r + 1, x - r:x + r + 1]
                win[disk] = n
                image[0, y - r:y + r + 1, x - r:x + r + 1][disk] += 50.0 + (n % 7) * 10
    else:  # every 4 x 4 block its own id
        k = size // 4
        ids = np.arange(1, k * k + 1, dtype=np.int32).reshape(k, k)
        labels[0, :k * 4, :k * 4] = np.repeat(np.repeat(ids, 4, axis=0), 4, axis=1)
        image[0, :k * 4, :k * 4] += 50.0
    return image, labels


def child(args: dict) -> dict:
    """In a fresh process: build the movie, reset the peak, classify, read the peak."""
    if args.get("src"):
        sys.path.insert(0, args["src"])
    import numpy as np
    import torch
    from torch import nn

    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.network.model import Classifier
    from napari_yeast_phenotypes.core.pipeline import analyse

    class StandIn(nn.Module):
        """One linear layer on the crop's mean: 8 outputs, as fast as a network can be."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(1, 8)

        def forward(self, x):
            return self.fc(x.mean(dim=(1, 2, 3))[:, None])

    torch.manual_seed(0)
    torch.set_num_threads(1)
    import napari_yeast_phenotypes as pkg

    image, labels = build(args["kind"], int(args["size"]))
    clf = Classifier(StandIn().eval())
    frame_mb = (image.nbytes + labels.nbytes) / 2 ** 20
    try:
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
        reset = True
    except OSError:
        reset = False
    rss0 = status_mb("VmRSS")
    t0 = time.perf_counter()
    error = None
    try:
        result = analyse(image, labels, clf, ClassifyConfig(relink="no", fast_path=False, precision="fp32"))
        cells = len(result.cells)
    except Exception as exc:  # noqa: BLE001 - a refusal or an out-of-memory is a figure too
        error, cells = f"{type(exc).__name__}: {str(exc)[:300]}", 0
    seconds = time.perf_counter() - t0
    peak = status_mb("VmHWM")
    return {"kind": args["kind"], "size": int(args["size"]), "package": str(Path(pkg.__file__).parent),
            "cells": int(cells), "ids": int(labels.max()), "frame_mb": round(frame_mb, 1),
            "rss_with_frame_mb": round(rss0, 1), "peak_rss_mb": round(peak, 1),
            "beside_frame_mb": round(peak - rss0, 1), "beside_frame_x": round((peak - rss0) / frame_mb, 2),
            "peak_reset": reset, "seconds": round(seconds, 1), "error": error, "numpy": np.__version__}


def run_child(kind: str, size: int, src: str | None, limit_mb: float, timeout: float) -> dict:
    """One scenario in its own process; killed (and said) past ``limit_mb`` of address space."""
    cmd = [sys.executable, __file__, "--child", json.dumps({"kind": kind, "size": size, "src": src})]

    def cap():  # pragma: no cover - runs in the child before exec
        import resource

        if limit_mb:
            lim = int(limit_mb * 2 ** 20)
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=cap, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "size": size, "error": f"did not finish in {timeout:.0f} s"}
    if proc.returncode:
        return {"kind": kind, "size": size, "error": f"exit {proc.returncode}: {proc.stderr[-600:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (checks that it runs; no meaning)")
    ap.add_argument("--size", type=int, help="side of the big frame (default 6000; the issue's is 20000)")
    ap.add_argument("--ids-size", type=int, help="side of the frame of 4x4 cells (default 2000: 250,000 ids)")
    ap.add_argument("--src", help="run the children on this checkout's src folder (e.g. the code before)")
    ap.add_argument("--limit-mb", type=float, default=12000,
                    help="address-space limit of each child in MB (it fails past it; default 12000)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds each child may take (default 1800)")
    ap.add_argument("--out", help="write the figures as JSON here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    sizes = dict(SIZES["quick" if args.quick else "full"])
    if args.size:
        sizes["big_frame"] = args.size
    if args.ids_size:
        sizes["many_ids"] = args.ids_size
    res = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "load_average_start": os.getloadavg()}, "src": args.src or "this checkout"}
    for kind, size in sizes.items():
        print(f"{kind} {size}x{size} ...", file=sys.stderr, flush=True)
        r = run_child(kind, size, args.src, args.limit_mb, args.timeout)
        res[kind] = r
        print(f"  {json.dumps(r)}", file=sys.stderr, flush=True)
    res["machine"]["load_average_end"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    for kind in sizes:
        r = res[kind]
        if r.get("error") and "beside_frame_mb" not in r:
            print(f"{kind}: {r['error']}")
        else:
            print(f"{kind}: {r['cells']} cells, frame {r['frame_mb']} MB, peak {r['peak_rss_mb']} MB, beside the "
                  f"frame {r['beside_frame_mb']} MB = {r['beside_frame_x']}x the frame, {r['seconds']} s"
                  + (f" ({r['error']})" if r.get("error") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
