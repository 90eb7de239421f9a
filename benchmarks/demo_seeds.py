"""The demo's figures over several seeds: mean and spread, as the README quotes them.

Each seed changes everything the demo draws: the three simulated training/validation movies, the
training (initial weights, batch order, augmentation) and the new movie it classifies. Models are
cached per seed (the demo's own cache), so a rerun only classifies again.

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--threads 0] [--out benchmarks/results-demo-seeds.json]

About 5 minutes per seed on a quiet 2-core CPU the first time (the training), seconds later.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sections.common import add_threads_option, set_threads  # the sections package sits beside this script

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(HERE / "results-demo-seeds.json"))
    add_threads_option(ap)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    from napari_yeast_phenotypes.demo import run_demo

    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            log = io.StringIO()
            with contextlib.redirect_stdout(log):
                run_demo(Path(tmp) / "demo", seed=seed)
            acc = json.loads((Path(tmp) / "demo" / "accuracy.json").read_text())
        acc["seed"], acc["seconds"] = seed, round(time.perf_counter() - t0, 1)
        runs.append(acc)
        print(f"seed {seed}: accuracy {acc['accuracy']:.3f} (unsmoothed {acc['accuracy_unsmoothed']:.3f}), "
              f"senescence within 2 frames {acc['senescence_within_2_frames']:.0%} of "
              f"{acc['senescent_tracks']} tracks, {acc['seconds']:.0f} s", flush=True)
    summary = {"seeds": args.seeds, "runs": runs}
    for key in ("accuracy", "accuracy_unsmoothed", "senescence_within_2_frames"):
        v = np.array([r[key] for r in runs], dtype=float)
        summary[key] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                        "min": float(v.min()), "max": float(v.max())}
    summary["senescent_tracks_found"] = [
        f"{round(r['senescence_within_2_frames'] * r['senescent_tracks'])}/{r['senescent_tracks']}" for r in runs]
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    a, u = summary["accuracy"], summary["accuracy_unsmoothed"]
    print(f"accuracy {a['mean']:.3f} +- {a['sd']:.3f} (range {a['min']:.3f}-{a['max']:.3f}); unsmoothed "
          f"{u['mean']:.3f} +- {u['sd']:.3f}; senescence tracks {', '.join(summary['senescent_tracks_found'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
