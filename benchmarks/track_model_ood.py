"""Figures of docs/track_model_and_ood.md: the fitted track model and the out-of-distribution warning.

1. Train a small model on a simulated curated set (random weights, every layer; cached under the
   package's cache folder, so a rerun takes the same model), or take one given with --model.
2. Track model: classify two new simulated movies; fit the track model on half of their tracks
   (the simulation's truth standing for a person's labels) and report, on the other half, raw vs
   smoothed accuracy and false senescence for the unfitted defaults, the fitted model and the
   rates fitted by EM without labels; three seeds of the split.
3. OOD: classify the real movie in shared/data/real/yeastvision-sample-movie (fluorescence, and
   its phase-contrast channel given as if it were fluorescence) and a simulated movie; per movie
   the share of cells above the threshold and whether the warning is given.

The figures name the network they come from. The docs' figures: ``--model`` the cached demo model
(``yeast-phenotypes demo`` writes it), ``--threads 1``: about 2 minutes on a shared 2-core machine.

    python benchmarks/track_model_ood.py [--model M] [--threads 1]
        [--out benchmarks/results-track-model-ood.json] [--figures docs]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sections.common import add_threads_option, set_threads  # the sections package sits beside this script

HERE = Path(__file__).resolve().parent
REAL = Path(os.environ.get("YEAST_REAL_DATA", "/work/shared/data/real")) / "yeastvision-sample-movie"
TRAIN_MOVIE = {"n_frames": 30, "size": 256, "n_cells": 35}
PER_CLASS = (60, 60, 40)  # exp1 train, exp2 train, exp3 validation
TRAIN = {"epochs": 5, "batch_size": 64, "lr": 2e-3, "seed": 0, "base_weights": "none", "trainable": "all"}
EVAL_MOVIE = {"n_frames": 40, "size": 256, "n_cells": 30}


def small_model(work: Path) -> Path:
    """Train (or take from the cache) the small simulated-data model; returns its file."""
    from napari_yeast_phenotypes import __version__
    from napari_yeast_phenotypes.core.config import TrainConfig
    from napari_yeast_phenotypes.core.data.crops import CropSettings
    from napari_yeast_phenotypes.core.data.curated import CuratedSet, crops_for_annotations
    from napari_yeast_phenotypes.core.data.simulate import SIMULATOR_VERSION, simulate_movie
    from napari_yeast_phenotypes.core.files.paths import cache_dir
    from napari_yeast_phenotypes.core.network.train import train
    from napari_yeast_phenotypes.demo import _balanced_annotations

    key = hashlib.sha1(json.dumps([__version__, SIMULATOR_VERSION, TRAIN_MOVIE, PER_CLASS, TRAIN,
                                   CropSettings().to_dict(), "ood1"], sort_keys=True).encode()).hexdigest()[:12]
    cached = cache_dir() / f"trackood-model-{key}.pt"
    if cached.exists():
        print(f"model: cached {cached}")
        return cached
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    cs = CuratedSet(work / "curated", CropSettings())
    for i, (exp, split, per_class) in enumerate([("exp1", "train", PER_CLASS[0]), ("exp2", "train", PER_CLASS[1]),
                                                 ("exp3", "val", PER_CLASS[2])]):
        movie = simulate_movie(**TRAIN_MOVIE, seed=7000 + i)
        ann = _balanced_annotations(movie.truth, per_class, rng, split, exp)
        crops, rows = crops_for_annotations(movie.image, movie.labels, ann, cs.crop_settings, source=f"{exp}.tif",
                                            experiment=exp)
        cs.add(crops, rows, annotator="simulation truth")
    tr, va = cs.load_split("train"), cs.load_split("val")
    print(f"model: training on {len(tr)} crops, validating on {len(va)}")
    clf = train(tr, va, TrainConfig(**TRAIN), cs.crop_settings, out=work / "model.pt")
    print(f"model: trained in {time.perf_counter() - t0:.0f} s, validation accuracy "
          f"{clf.metadata['validation']['accuracy']:.3f}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "model.pt", cached)
    return cached


def classify(image, labels, clf, **kw):
    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.jobs import classify_movie

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return classify_movie(image, labels, clf, ClassifyConfig(relink="no", **kw))


def track_model_figures(clf, seeds=(0, 1, 2)) -> dict:
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie
    from napari_yeast_phenotypes.core.track.timeline import TimelineSettings
    from napari_yeast_phenotypes.core.track.track_estimates import _sorted_tracks, fit_em, truth_codes
    from napari_yeast_phenotypes.core.track.track_model import evaluate_tracks, fit_track_model

    cells, truths = [], []
    for i in range(2):
        movie = simulate_movie(**EVAL_MOVIE, seed=9100 + i)
        job = classify(movie.image, movie.labels, clf)
        c = job.result.cells.copy()
        off = 10000 * (i + 1)  # two movies in one table: unique track ids and labels
        c["track_id"] += off
        c["label"] += off
        t = movie.truth.copy()
        t["label"] += off
        cells.append(c)
        truths.append(t)
    cells, truth = pd.concat(cells, ignore_index=True), pd.concat(truths, ignore_index=True)
    sorted_cells, _ = _sorted_tracks(cells)
    codes = truth_codes(sorted_cells, truth)
    em_settings, em_info = fit_em(cells)
    out = {"tracks": int(cells["track_id"].nunique()), "cell_frames": len(cells), "splits": []}
    for seed in seeds:
        fit = fit_track_model(cells, truth, seed=seed)
        # the same tracks fit_track_model held out (the same seeded draw)
        rows = sorted_cells["track_id"].isin(_val_ids(sorted_cells, codes, seed)).to_numpy()
        vc, vcodes = sorted_cells[rows].reset_index(drop=True), codes[rows]
        out["splits"].append({
            "seed": seed, "chosen": fit.report["chosen"], "notes": fit.report["notes"],
            "temperature": fit.report["temperature"],
            "fitted_rates": [fit.report["fitted"]["switch_rate"], fit.report["fitted"]["senescence_rate"]],
            "validation": {
                "unfitted defaults": evaluate_tracks(vc, vcodes, TimelineSettings()),
                "rates fitted by EM (no labels)": evaluate_tracks(vc, vcodes, em_settings),
                "fitted": fit.report["validation"],
            },
        })
    out["em"] = {"switch_rate": em_settings.switch_rate, "senescence_rate": em_settings.senescence_rate,
                 "iterations": em_info["iterations"]}
    return out


def _val_ids(sorted_cells, codes, seed):
    from napari_yeast_phenotypes.core.track.track_model import split_tracks

    annotated = np.unique(sorted_cells["track_id"].to_numpy()[codes >= 0])
    return split_tracks(annotated, 0.5, seed)


def ood_figures(clf) -> dict:
    from napari_yeast_phenotypes.core.data.movies import read_array
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie

    res, scores = {}, {}
    movie = simulate_movie(**EVAL_MOVIE, seed=9200)
    job = classify(movie.image, movie.labels, clf)
    res["simulated movie"] = job.run["ood"]
    scores["simulated movie"] = job.result.cells["ood_score"].to_numpy()
    if (REAL / "masks.tif").exists():
        masks = read_array(REAL / "masks.tif")
        for name, file in (("real movie, fluorescence", "cdc_fluorescence.tif"),
                           ("real movie, phase contrast given as fluorescence", "phase.tif")):
            job = classify(read_array(REAL / file), masks, clf)
            res[name] = job.run["ood"]
            cells = job.result.cells
            res[name]["calls"] = cells["phenotype"].value_counts().to_dict()
            res[name]["senescent_tracks"] = int(job.result.tracks["senescence_frame"].notna().sum())
            res[name]["tracks_total"] = int(len(job.result.tracks))
            res[name]["median_confidence"] = float(cells["confidence"].median())
            scores[name] = cells["ood_score"].to_numpy()
    else:
        res["real movie"] = {"skipped": f"{REAL} is not on this machine"}
    return res, scores


def figures(tm: dict, ood: dict, scores: dict, folder: Path, model: str = "") -> None:
    """The two pictures; ``model`` (which checkpoint made the calls) goes into their titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = ["unfitted defaults", "rates fitted by EM (no labels)", "fitted"]
    for ax, (metric, raw_key, title) in zip(axes, [
            ("smoothed_accuracy", "raw_accuracy", "accuracy on validation tracks"),
            ("smoothed_false_senescence_tracks", "raw_false_senescence_tracks",
             "live tracks called senescent")]):
        vals = np.array([[s["validation"][n][metric] for n in names] for s in tm["splits"]])
        raw = np.array([s["validation"]["fitted"][raw_key] for s in tm["splits"]])
        x = np.arange(len(names) + 1)
        means = np.r_[raw.mean(), vals.mean(axis=0)]
        errs = np.r_[raw.std(), vals.std(axis=0)]
        ax.bar(x, means, yerr=errs, color=["#999999", "#d95f02", "#7570b3", "#1b9e77"], capsize=3)
        ax.set_xticks(x, ["raw calls", "defaults", "EM rates", "fitted"], fontsize=8)
        ax.set_title(title, fontsize=9)
        if metric == "smoothed_accuracy":
            ax.set_ylim(max(0.0, means.min() - 0.1), 1.0)
    fig.suptitle(f"Track model on held-out tracks of two simulated movies (mean ± sd over {len(tm['splits'])} "
                 f"splits)\nnetwork: {model}", fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / "track_model_validation.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.4))
    bins = np.logspace(-1, 3, 60)
    for name, s in scores.items():
        s = s[np.isfinite(s)]
        share = ood[name]["share_outside"]
        ax.hist(np.clip(s, bins[0], bins[-1]), bins=bins, histtype="step", lw=1.5,
                label=f"{name}: {share:.0%} above 1" + (" - warned" if ood[name]["warning"] else ""))
    ax.axvline(1.0, color="k", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("ood_score (1 = threshold from held-out training-like crops)")
    ax.set_ylabel("cells")
    ax.legend(fontsize=7)
    ax.set_title(f"network: {model}", fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "ood_scores.png", dpi=110)
    plt.close(fig)


def model_label(path: Path, val_acc) -> str:
    """Which network made the calls, in words, for the figures' titles."""
    acc = f", accuracy {val_acc:.2f} on its validation experiment" if val_acc is not None else ""
    kind = "the demo model" if path.name.startswith("demo-model-") else (
        "the small simulated-data model" if path.name.startswith("trackood-model-") else "model")
    return f"{kind} {path.name}{acc}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a checkpoint to use instead of the small simulated-data model")
    ap.add_argument("--out", default=str(HERE / "results-track-model-ood.json"))
    ap.add_argument("--figures", default=str(HERE.parent / "docs"))
    add_threads_option(ap)
    args = ap.parse_args(argv)
    import torch

    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier

    set_threads(args.threads)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else small_model(Path(tmp))
        clf = load_classifier(path)
    if clf.ood is None:
        print(f"{path} keeps no summary of its training data; train it with this version", file=sys.stderr)
        return 1
    tm = track_model_figures(clf)
    ood, scores = ood_figures(clf)
    result = {"model": path.name, "validation_accuracy_of_model": (clf.metadata.get("validation") or {}).get(
        "accuracy"), "ood_summary": {"n_fit": clf.ood.n_fit, "n_heldout": clf.ood.n_heldout,
                                      "heldout_outside": clf.ood.heldout_outside,
                                      "thresholds": clf.ood.thresholds.tolist()},
              "track_model": tm, "ood": ood, "threads": torch.get_num_threads(),
              "seconds": round(time.perf_counter() - t0, 1)}
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    figures(tm, ood, scores, Path(args.figures), model_label(path, result["validation_accuracy_of_model"]))
    print(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
