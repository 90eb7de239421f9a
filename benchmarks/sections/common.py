"""What every section shares: the run's context, timing, memory readings and child processes."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

RUN_PY = Path(__file__).resolve().parents[1] / "run.py"
_T0 = [time.perf_counter()]


@dataclass
class Context:
    """What one benchmark run knows so far; sections read it and add to it."""

    sizes: dict
    quick: bool
    skip: set = field(default_factory=set)
    notes: list = field(default_factory=list)
    peak_gflops: float = 0.0  # the machine's fp32 rate (machine section)
    peak_bf16_gflops: float = 0.0  # its bf16 1x1-convolution rate, for reference
    flops_per_crop: int = 0
    movie: object = None  # the synthetic movie of the speed sections (end_to_end section)
    model: object = None  # a random YeastResNet(8) in eval mode
    clf: object = None  # the same as a Classifier
    crops: object = None  # (N, 1, 40, 40) crops of the movie (inference section)
    device: str = "cpu"  # what classifies (--device): cpu, or cuda for the GPU sections
    end_to_end_rate: float = 0.0  # cell-frames/s end to end on that device (end_to_end or cuda section)


def add_threads_option(ap, default: int = 0) -> None:
    """The ``--threads`` option of the stand-alone benchmark scripts (apply it with :func:`set_threads`)."""
    ap.add_argument("--threads", type=int, default=default,
                    help="torch threads (0: torch's default; 1 is several times faster than 2 on a 2-core "
                         f"machine other jobs share; default {default})")


def set_threads(n: int | None) -> None:
    """Pin torch's thread count to ``n`` (0 or ``None``: leave torch's default)."""
    if n:
        import torch

        torch.set_num_threads(n)


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0[0]:6.1f} s] {msg}", file=sys.stderr, flush=True)


def best_time(fn, reps: int, min_time: float = 0.0) -> float:
    """The shortest of ``reps`` timed calls (and at least ``min_time`` seconds of them), after one warm-up."""
    fn()
    best, spent, i = math.inf, 0.0, 0
    while i < reps or spent < min_time:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent, i = min(best, dt), spent + dt, i + 1
    return best


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn``, counted by torch's ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def random_classifier():
    """A randomly initialised ``YeastResNet(8)`` in eval mode (speed and memory do not depend on weights)."""
    import torch

    from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet

    torch.manual_seed(0)
    return Classifier(YeastResNet(8).eval())


def status_mb(field_name: str) -> float:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ``RssAnon``...) in MB; NaN elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    ``VmHWM`` (Linux) is the high-water mark of this very process image. ``ru_maxrss`` is the
    fallback; on Linux it would also count the parent's memory at the fork that started this
    process, so it is not used where ``VmHWM`` exists.
    """
    hwm = status_mb("VmHWM")
    if math.isfinite(hwm):
        return hwm
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


class PeakSampler:
    """Samples a ``/proc/self/status`` field every ``period`` seconds in a thread and keeps its maximum.

    ``VmHWM`` cannot be reset, so the peak of one phase of a process (after its imports, say) is
    sampled instead; use as a context manager, read ``peak``.
    """

    def __init__(self, field_name: str = "VmRSS", period: float = 0.01):
        self.field_name, self.period, self.peak = field_name, period, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, status_mb(self.field_name))
            if self._done.wait(self.period):
                break

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, status_mb(self.field_name))


def run_child(name: str, args: dict, env: dict | None = None, prefix: list[str] | None = None,
              timeout: float | None = None) -> dict:
    """Run ``run.py --child name`` in a fresh process and return the JSON it prints last.

    Raises ``RuntimeError`` with the end of its stderr when it fails.
    """
    cmd = [*(prefix or []), sys.executable, str(RUN_PY), "--child", name, json.dumps(args)]
    child_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env, check=False, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"the {name} child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
