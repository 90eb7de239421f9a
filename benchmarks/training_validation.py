"""Figures of docs/training.md: grouped cross-validation beside a random split, and the learning curve.

On simulated data, with the demo's recipe (``demo.demo_train_config``: ResNet50 from random weights,
every layer trained, lr 2e-3, batch 64, the default augmentations):

1. Simulate three movies (the demo's training-movie size, the demo's seeds) as three experiments,
   and curate at most ``--per-class`` cell-frames of each class from each (the demo's balanced
   draw; crops through the one crop function, ``curated.crops_for_annotations``), into two curated
   sets of the same crops: every experiment in ``train`` (for cross-validation), and exp1 + exp2
   in ``train``, exp3 in ``val`` (for the learning curve, as the demo splits them).
2. (a) ``core.jobs.crossvalidate(..., by="experiment")``, the code of ``yeast-phenotypes crossval
   --by experiment``: leave-one-experiment-out (3 folds), and random folds of the same crops beside
   it. Figure: ``docs/crossval_simulated.png``.
3. (b) ``core.jobs.learning_curve_job``, the code of ``yeast-phenotypes learning-curve``: nested
   subsets of exp1 + exp2 (at most n crops per class), validation on exp3, every subset trained
   ``--epochs`` epochs (``lc``); and the same subsets each trained for as many optimiser steps as
   the largest one gets (``lc_steps``: more epochs for fewer crops, one ``learning-curve`` call
   per subset with its ``--epochs``), so that only the number of labels varies. Figure:
   ``docs/learning_curve_simulated.png``.

Settings, figures and the seconds each part took go to ``benchmarks/results-training-validation.json``
(parts run alone are merged into the file's other parts). How long: (a) trains 6 times on 2/3 of
the 24 x ``--per-class`` crops, (b) once per subset. With the defaults (50 per class, 5 epochs)
on a 2-core machine other jobs share, at one thread (about 25 crops/s per training step there):
(a) 17 minutes, ``lc`` 7, ``lc_steps`` about 9; a few minutes in all on a quiet machine or a GPU.

    python benchmarks/training_validation.py [--per-class 50] [--epochs 5] [--lc 10,20,50,100]
        [--parts cv,lc,lc_steps] [--lc-steps 20,50] [--threads 1] [--out benchmarks/results-training-validation.json]
        [--figures docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sections.common import add_threads_option, set_threads  # the sections package sits beside this script

HERE = Path(__file__).resolve().parent
EXPERIMENTS = ("exp1", "exp2", "exp3")
ALL_PARTS = {"cv", "lc", "lc_steps"}
GROUPED, RANDOM = "#1b9e77", "#d95f02"


def build_sets(root: Path, per_class: int, seed: int) -> dict:
    """Simulate the three experiments and curate the same crops into ``root/cv`` and ``root/lc``."""
    from napari_yeast_phenotypes.core.data.crops import CropSettings
    from napari_yeast_phenotypes.core.data.curated import CuratedSet, crops_for_annotations
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie
    from napari_yeast_phenotypes.demo import TRAIN_MOVIES, _balanced_annotations

    rng = np.random.default_rng(seed)
    cv, lc = CuratedSet(root / "cv", CropSettings()), CuratedSet(root / "lc", CropSettings())
    counts = {}
    for i, exp in enumerate(EXPERIMENTS):
        movie = simulate_movie(**TRAIN_MOVIES, seed=seed * 1000 + i + 1)  # the demo's movies
        ann = _balanced_annotations(movie.truth, per_class, rng, "train", exp)
        counts[exp] = ann["phenotype"].value_counts().sort_index().to_dict()
        for cs, split in ((cv, "train"), (lc, "val" if exp == "exp3" else "train")):
            crops, rows = crops_for_annotations(movie.image, movie.labels, ann.assign(split=split), cs.crop_settings,
                                                source="image.tif", experiment=exp)
            cs.add(crops, rows, annotator="simulation truth")
    return counts


class Log:
    """Progress lines with the time since the start, for ``tail`` on a log file."""

    def __init__(self, what: str):
        self.what, self.t0, self.fold, self.phase = what, time.perf_counter(), 0, ""

    def __call__(self, p: dict) -> None:
        if p.get("fold", self.fold) < self.fold:  # crossval runs the random folds after the grouped ones
            self.phase = " (random folds)"
        self.fold = p.get("fold", self.fold)
        if p.get("done_epoch"):
            where = ", ".join(f"{k} {p[k]}" + (f"/{p[k + 's']}" if k + "s" in p else "")
                              for k in ("fold", "per_class") if k in p)
            print(f"[{time.perf_counter() - self.t0:7.0f} s] {self.what}{self.phase} {where}: "
                  f"epoch {p['epoch']}/{p['epochs']}, loss {p['train_loss']:.3f}, {p['crops_per_s']:.1f} crops/s",
                  flush=True)


def run_cv(root: Path, config) -> dict:
    from napari_yeast_phenotypes.core.jobs import crossvalidate
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    return crossvalidate(root / "cv" / "train", 3, config, class_names=CLASS_NAMES, by="experiment",
                         random_split=True, progress=Log("crossval"))


def run_lc(root: Path, per_class: list[int], config) -> list[dict]:
    from napari_yeast_phenotypes.core.jobs import learning_curve_job
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    return learning_curve_job(root / "lc" / "train", root / "lc" / "val", per_class, config, class_names=CLASS_NAMES,
                              progress=Log("learning curve"))["points"]


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one epoch over ``n_train`` crops (as ``train.train_iter`` counts them)."""
    return max(1, n_train // min(batch_size, n_train))


def run_lc_steps(root: Path, per_class: list[int], config, n_classes: int = 8, only: list[int] | None = None
                 ) -> list[dict]:
    """The learning curve again, each subset trained for as many optimiser steps as the largest one
    gets in ``config.epochs`` epochs (more epochs for smaller subsets): labels, not steps, vary. The
    largest subset is not trained again: it is the plain curve's point (the same training).
    ``only``: these subsets alone (every epoch ends with a pass over the validation crops, so the
    smallest subsets, with hundreds of one-step epochs, cost the most)."""
    from dataclasses import replace

    largest = max(per_class)
    steps = steps_per_epoch(n_classes * largest, config.batch_size) * config.epochs
    points = []
    for n in sorted(per_class)[:-1]:
        if only and n not in only:
            continue
        epochs = -(-steps // steps_per_epoch(n_classes * n, config.batch_size))
        for p in run_lc(root, [n], replace(config, epochs=epochs)):
            points.append({**p, "epochs": epochs,
                           "steps": epochs * steps_per_epoch(p["n_train"], config.batch_size)})
    return points


def settings_line(s: dict) -> str:
    t = s["train_config"]
    return (f"3 simulated experiments, at most {s['per_class_per_experiment']} crops per class each; ResNet50 from "
            f"random weights, all layers, {t['epochs']} epochs, batch {t['batch_size']}")


def cv_figure(cv: dict, s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 2.6]})
    w = 0.38
    for j, (key, name, colour) in enumerate((("grouped", "leave one experiment out", GROUPED),
                                             ("random", "random folds of the same crops", RANDOM))):
        res = cv if key == "grouped" else cv["random"]
        summ = res["summary"]
        for i, metric in enumerate(("accuracy", "macro_f1")):
            x = i + (j - 0.5) * w
            ax.bar(x, summ[metric]["mean"], w, yerr=summ[metric]["sd"] or 0, color=colour, capsize=3,
                   label=name if i == 0 else None)
            ax.plot(np.full(len(res["folds"]), x), [f[metric] for f in res["folds"]], "k.", ms=4)
        classes = list(summ["f1"])
        xs = np.arange(len(classes)) + (j - 0.5) * w
        bx.bar(xs, [summ["f1"][c]["mean"] or 0 for c in classes], w,
               yerr=[summ["f1"][c]["sd"] or 0 for c in classes], color=colour, capsize=2, label=name)
    ax.set_xticks([0, 1], ["accuracy", "macro-F1"])
    ax.set_ylim(0, 1.22)
    ax.set_ylabel("mean over 3 folds (bars: ± sd; dots: folds)", fontsize=8)
    ax.set_yticks(np.arange(0, 1.01, 0.2))
    bx.set_xticks(np.arange(len(classes)), classes, fontsize=8, rotation=20)
    bx.set_ylim(0, 1.22)
    bx.set_yticks(np.arange(0, 1.01, 0.2))
    bx.legend(fontsize=8, loc="upper center", ncol=2, framealpha=0.9)
    bx.set_ylabel("F1 per class (± sd over folds)", fontsize=8)
    fig.suptitle("Cross-validation on simulated crops: leave-one-experiment-out (green) vs random folds (orange)\n"
                 + settings_line(s), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lc_figure(curve: list[dict], s: dict, path: Path, steps: list[dict] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [p["per_class"] for p in curve]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    epochs = s["train_config"]["epochs"]
    ax.plot(n, [p["macro_f1"] for p in curve], "o-", color=GROUPED, lw=2, zorder=3,
            label=f"macro-F1, {epochs} epochs per subset")
    ax.plot(n, [p["accuracy"] for p in curve], "s--", color="#7570b3", lw=1.5, zorder=2,
            label=f"accuracy, {epochs} epochs per subset")
    if steps:
        steps = [*steps, curve[-1]]  # the largest subset: the same training in both curves
        ax.plot([p["per_class"] for p in steps], [p["macro_f1"] for p in steps], "D-", color=RANDOM, lw=1.5,
                zorder=3, label=f"macro-F1, {steps[0]['steps']} optimiser steps each\n(more epochs for fewer crops)")
    ax.axhline(1 / 8, color="0.6", ls=":", lw=1, label="accuracy of always one class (1/8)")
    ax.set_xscale("log")
    ax.set_xticks(n, [f"{p['per_class']}\n({p['n_train']} crops)" for p in curve])
    ax.minorticks_off()
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("labelled crops per class in training (nested subsets of exp1 + exp2)")
    ax.set_ylabel("on the validation experiment (exp3)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(0.0, 0.45))  # clear of every curve
    ax.set_title("Learning curve on simulated crops, validation on another experiment\n"
                 f"ResNet50 from random weights, all layers, batch {s['train_config']['batch_size']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(result: dict, figures: Path) -> None:
    """The figures of whatever parts ``result`` holds."""
    if "crossval" in result:
        cv_figure(result["crossval"], result["crossval"]["settings"], figures / "crossval_simulated.png")
    if "learning_curve" in result:
        lc_figure(result["learning_curve"]["points"], result["learning_curve"]["settings"],
                  figures / "learning_curve_simulated.png",
                  (result.get("learning_curve_equal_steps") or {}).get("points"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=50, help="crops per class drawn from each experiment")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of every training")
    ap.add_argument("--lc", default="10,20,50,100", help="learning-curve subsets: crops per class")
    ap.add_argument("--lc-steps", default="", help="lc_steps for these subsets only (default: all but the largest)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="cv,lc,lc_steps",
                    help="cv (cross-validation), lc (learning curve), lc_steps (the same with equal steps)")
    add_threads_option(ap, default=1)
    ap.add_argument("--out", default=str(HERE / "results-training-validation.json"))
    ap.add_argument("--figures", default=str(HERE.parent / "docs"))
    ap.add_argument("--figures-only", action="store_true", help="redraw the figures from --out; no training")
    args = ap.parse_args(argv)
    if args.figures_only:
        draw(json.loads(Path(args.out).read_text()), Path(args.figures))
        return 0
    import torch

    from napari_yeast_phenotypes.demo import demo_train_config

    set_threads(args.threads)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - ALL_PARTS:
        ap.error("--parts: any of cv, lc, lc_steps")
    config = demo_train_config(args.seed, args.epochs, "none", "all")
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() and parts != ALL_PARTS else {}
    settings = {"per_class_per_experiment": args.per_class, "experiments": list(EXPERIMENTS), "seed": args.seed,
                "learning_curve_per_class": [int(v) for v in args.lc.split(",") if v.strip()],
                "train_config": config.to_dict(), "threads": torch.get_num_threads()}
    machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "load_average_start": list(os.getloadavg())}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        counts = build_sets(root, args.per_class, args.seed)
        settings["crops_per_experiment_and_class"] = counts
        seconds = {"build": round(time.perf_counter() - t0, 1)}
        print(f"[{seconds['build']:7.0f} s] curated {sum(sum(c.values()) for c in counts.values())} crops: {counts}",
              flush=True)
        if "cv" in parts:
            t = time.perf_counter()
            cv = run_cv(root, config)
            seconds["crossval"] = round(time.perf_counter() - t, 1)
            result["crossval"] = {"settings": settings, "seconds": seconds["crossval"], **cv}
            for key, res in (("grouped", cv), ("random", cv["random"])):
                s = res["summary"]
                print(f"{key}: accuracy {s['accuracy']['mean']:.3f} ± {s['accuracy']['sd']:.3f}, macro-F1 "
                      f"{s['macro_f1']['mean']:.3f} ± {s['macro_f1']['sd']:.3f}", flush=True)
            out.write_text(json.dumps(result, indent=2))  # kept even if the learning curve is stopped
        if "lc" in parts:
            t = time.perf_counter()
            curve = run_lc(root, settings["learning_curve_per_class"], config)
            seconds["learning_curve"] = round(time.perf_counter() - t, 1)
            result["learning_curve"] = {"settings": settings, "seconds": seconds["learning_curve"], "points": curve}
            for p in curve:
                print(f"{p['per_class']:>4} per class ({p['n_train']} crops): macro-F1 {p['macro_f1']:.3f}, "
                      f"accuracy {p['accuracy']:.3f}", flush=True)
            result.pop("learning_curve_equal_steps", None)  # an earlier run's: other subsets or training
            out.write_text(json.dumps(result, indent=2))
        if "lc_steps" in parts:
            t = time.perf_counter()
            only = [int(v) for v in args.lc_steps.split(",") if v.strip()]
            points = run_lc_steps(root, settings["learning_curve_per_class"], config, only=only)
            seconds["learning_curve_equal_steps"] = round(time.perf_counter() - t, 1)
            result["learning_curve_equal_steps"] = {"settings": settings,
                                                    "seconds": seconds["learning_curve_equal_steps"],
                                                    "points": points}
            for p in points:
                print(f"{p['per_class']:>4} per class ({p['n_train']} crops, {p['epochs']} epochs, "
                      f"{p['steps']} steps): macro-F1 {p['macro_f1']:.3f}, accuracy {p['accuracy']:.3f}", flush=True)
    machine["load_average_end"] = list(os.getloadavg())
    result.setdefault("runs", []).append({"parts": sorted(parts), "seconds": seconds, "machine": machine})
    out.write_text(json.dumps(result, indent=2))
    draw(result, Path(args.figures))
    print(f"wrote {out} and the figures in {args.figures} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
