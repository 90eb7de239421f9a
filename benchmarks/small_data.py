"""Small data on real cells: does the batch size still move held-out accuracy once the defaults adapt?

The lead labelled the real yeastvision movie by eye (``benchmarks/labels/yeastvision_by_eye.csv``:
track_id, frame, phenotype, role). Rows of role ``train`` (60 tracks, frames 0-4) are curated, with the
package's own curate job, into a curated set's ``train`` split; rows of role ``judge`` (40 other
tracks, frames 5-9) into its ``test`` split. Each training fine-tunes the demo model (seed 0,
``yeast-phenotypes demo`` caches it) with the package's defaults and the batch size given, and is
judged on the judge rows only: they are the report (test) crops, on which no choice is made. What
is chosen (the epoch, or with small data the number of steps) is chosen within the train rows:
a held-out part of whole tracks (``small_data=off``) or 3 folds of whole tracks (``auto``).

    python benchmarks/small_data.py [--seeds 0 1 2] [--batches 16 64] [--modes off auto] [--threads 1]

Writes ``benchmarks/results-small-data.json``: per run the judge accuracy with its 95% interval
(bootstrap over the judge tracks), macro-F1, the optimiser steps, the share of the whole movie called
each class; per mode and batch the mean, sample sd, min and max over seeds; per mode the difference
of the mean accuracies of the two batch sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sections.common import add_threads_option, set_threads  # the sections package sits beside this script

HERE = Path(__file__).resolve().parent
LABELS = HERE / "labels" / "yeastvision_by_eye.csv"
MOVIE = HERE.parents[1] / "shared" / "data" / "real" / "yeastvision-sample-movie"


def build_curated(root: Path, labels: Path, movie: Path) -> Path:
    """The curated set of the labels: role train -> split train, role judge -> split test (curate job)."""
    from napari_yeast_phenotypes.core.jobs.curate import curate_movie

    rows = pd.read_csv(labels)
    ann = pd.DataFrame({"frame": rows["frame"], "label": rows["track_id"], "phenotype": rows["phenotype"],
                        "split": rows["role"].map({"train": "train", "judge": "test"}),
                        "experiment": "yeastvision"})
    if ann["split"].isna().any():
        raise SystemExit(f"{labels}: role must be train or judge")
    csv = root.parent / "annotations.csv"
    ann.to_csv(csv, index=False)
    curate_movie(movie / "cdc_fluorescence.tif", movie / "masks.tif", csv, root, experiment="yeastvision",
                 annotator="the lead, by eye")
    return root


def movie_shares(model: Path, movie: Path) -> dict:
    """The share of the movie's cell-frames called each class (raw calls: the network alone)."""
    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.jobs.classify import classify_movie

    res = classify_movie(movie / "cdc_fluorescence.tif", movie / "masks.tif", model,
                         ClassifyConfig(device="cpu", precision="fp32")).result
    return {k: round(float(v), 4) for k, v in res.cells["phenotype_raw"].value_counts(normalize=True).items()}


def demo_model_of_seed_0() -> Path | None:
    """This version's cached demo model of seed 0, else the newest cached demo model trained with seed 0."""
    from napari_yeast_phenotypes.core.files.paths import demo_models
    from napari_yeast_phenotypes.core.network.checkpoint import read_model_file
    from napari_yeast_phenotypes.demo import cached_model_path

    if cached_model_path(0).is_file():
        return cached_model_path(0)
    for path in demo_models():
        training = ((read_model_file(path).get("metadata") or {}).get("training") or {})
        if training.get("seed") == 0:
            return path
    return None


def run_one(curated: Path, base: str, batch: int, seed: int, mode: str, work: Path, movie: Path | None) -> dict:
    """One training (fine-tuning ``base``) judged on the test split; ``movie``: also the share of it called each
    class."""
    from napari_yeast_phenotypes.core.config import TrainConfig
    from napari_yeast_phenotypes.core.jobs.training import train_model_iter, training_data
    from napari_yeast_phenotypes.core.progress import run_to_end

    config = TrainConfig(base_weights=base, batch_size=batch, seed=seed, small_data=mode, device="cpu")
    data = training_data(curated=curated)
    out = work / f"model-{mode}-b{batch}-s{seed}.pt"
    t0 = time.perf_counter()
    clf = run_to_end(train_model_iter(data, config, out, overwrite=True))
    seconds = time.perf_counter() - t0
    meta = clf.metadata
    rep = meta["report"]
    m = rep["metrics"]
    run = {"mode": mode, "batch_size": batch, "seed": seed, "judge_crops": rep["n"],
           "judge_tracks": m["ci"]["n_tracks"], "accuracy": round(m["accuracy"], 4),
           "accuracy_ci": m["ci"]["accuracy"], "macro_f1": round(m["macro_f1"], 4),
           "per_class_recall": {c: v["recall"] for c, v in m["per_class"].items() if v["support"]},
           "steps": meta["steps"], "best_epoch": meta["best_epoch"], "epochs_run": len(meta["history"]),
           "stopping_folds": (meta.get("stopping_folds") or {}).get("curve"),
           "classes": list(clf.class_names), "report_on": rep["on"], "seconds": round(seconds, 1)}
    if movie is not None:
        run["movie_share"] = movie_shares(out, movie)
    out.unlink()
    return run


def summarise(runs: list[dict], modes, batches) -> dict:
    out = {}
    for mode in modes:
        per = {}
        for b in batches:
            v = np.array([r["accuracy"] for r in runs if r["mode"] == mode and r["batch_size"] == b], dtype=float)
            if len(v):
                per[str(b)] = {"mean": round(float(v.mean()), 4),
                               "sd": round(float(v.std(ddof=1)), 4) if len(v) > 1 else None,
                               "min": round(float(v.min()), 4), "max": round(float(v.max()), 4), "n_seeds": len(v)}
        if len(per) == 2:
            a, b = (per[str(x)]["mean"] for x in batches)
            per["difference_of_means"] = round(a - b, 4)
        out[mode] = per
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batches", type=int, nargs=2, default=[16, 64])
    ap.add_argument("--modes", nargs="+", default=["off", "auto"], choices=["off", "auto"])
    ap.add_argument("--base", help="model to fine-tune (default: the cached demo model of seed 0)")
    ap.add_argument("--no-movie-shares", action="store_true", help="do not classify the whole movie after each run")
    ap.add_argument("--movie", default=str(MOVIE), help=f"the yeastvision movie's folder (default {MOVIE})")
    ap.add_argument("--out", default=str(HERE / "results-small-data.json"))
    add_threads_option(ap, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    base = Path(args.base) if args.base else demo_model_of_seed_0()
    if base is None or not base.is_file():
        print("no demo model of seed 0 in the cache: run `yeast-phenotypes demo --out DIR` once (about 5 minutes), "
              "or give --base")
        return 2
    from napari_yeast_phenotypes.core.files.fingerprint import file_sha256
    movie = Path(args.movie)
    runs = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        curated = build_curated(Path(tmp) / "curated", LABELS, movie)
        for mode in args.modes:
            for seed in args.seeds:
                for b in args.batches:
                    r = run_one(curated, str(base), b, seed, mode, Path(tmp),
                                None if args.no_movie_shares else movie)
                    runs.append(r)
                    print(f"small_data={mode} batch {b} seed {seed}: judge accuracy {r['accuracy']:.3f} "
                          f"({r['accuracy_ci'][0]:.3f}-{r['accuracy_ci'][1]:.3f}), macro-F1 {r['macro_f1']:.3f}, "
                          f"{r['steps']} steps, {r['seconds']:.0f} s"
                          + (f"; movie {r['movie_share']}" if "movie_share" in r else ""), flush=True)
    summary = summarise(runs, args.modes, args.batches)
    res = {"labels": str(LABELS.relative_to(HERE.parent)), "movie": movie.name, "base_model": base.name,
           "base_model_sha256": file_sha256(base),
           "threads": args.threads, "seconds": round(time.perf_counter() - t_all, 1), "summary": summary,
           "runs": runs}
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    for mode, per in summary.items():
        line = ", ".join(f"batch {b}: {v['mean']:.3f} ± {v['sd'] or 0:.3f} ({v['min']:.3f}-{v['max']:.3f})"
                         for b, v in per.items() if isinstance(v, dict))
        print(f"small_data={mode}: {line}; difference of means {per.get('difference_of_means', float('nan')):+.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
