"""The loop's speed: one fine-tune of ~100 crops x 3 epochs through the training job, end to end.

A curated set is made from a simulated movie (``curate``: ~100 training crops of 9 tracks, ~36
validation crops of 3 others); a random checkpoint stands for the current model. In a fresh process
``core.jobs.training.train_model`` fine-tunes it (base weights = that checkpoint, the previous model
compared on the same crops, 3 epochs, the default recipe) and writes the new checkpoint: the wall time
from the call to the written file, the imports before it, and the CPU time of its parts (model
building, the optimiser's first use, the training steps, evaluation, checkpoints, calibration and the
report, the summary of the training data for the out-of-distribution score).

Twice: with the defaults (``small_data="auto"``: under 50 labels in a class, at least 200 optimiser steps on
class-balanced batches, which is what the Train dock does with ~100 labels), and as asked
(``small_data="off"``: 3 epochs of the ~100 crops, the issue's "100 crops x 3 epochs").
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import sys
import tempfile
import time
from pathlib import Path

from .common import Context, log, run_child

PHASES = ("build_model", "make_optimizer", "batch_loss", "predict_probabilities", "save_checkpoint",
          "summarise_training", "_final_report", "_weights_finite")


def child(args: dict) -> dict:
    t0 = time.perf_counter()
    from napari_yeast_phenotypes.core.config import TrainConfig
    from napari_yeast_phenotypes.core.jobs import training as job

    train = importlib.import_module("napari_yeast_phenotypes.core.network.train")
    # the training loop, its steps and its report: each phase is timed in every module that calls it
    parts = (train, importlib.import_module("napari_yeast_phenotypes.core.network.train_steps"),
             importlib.import_module("napari_yeast_phenotypes.core.network.train_report"))
    imports = time.perf_counter() - t0
    cpu = collections.defaultdict(float)

    def timed(name, fn):
        def wrapped(*a, **k):
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                cpu[name] += time.process_time() - t
        return wrapped

    for name in PHASES:
        for module in parts:
            if hasattr(module, name):
                setattr(module, name, timed(name, getattr(module, name)))
    job.load_model = timed("load_previous", job.load_model)
    cfg = TrainConfig(epochs=args["epochs"], base_weights=args["base"], device="cpu", seed=0,
                      small_data=args.get("small_data", "auto"))
    t, c = time.perf_counter(), time.process_time()
    clf = job.train_model(curated=args["curated"], config=cfg, out=args["out"], overwrite=True,
                          previous=args["base"])
    wall = time.perf_counter() - t
    import torch

    return {"seconds": wall, "cpu_seconds": time.process_time() - c, "imports_s": imports,
            "torch_threads": torch.get_num_threads(), "train_crops": clf.metadata["class_counts_train"],
            "epochs": args["epochs"], "small_data": cfg.small_data, "steps": clf.metadata["steps"],
            "epochs_judged": len(clf.metadata["history"]), "cpu_s_by_part": dict(cpu)}


def make_curated_set(folder: Path, quick: bool) -> tuple[Path, Path]:
    import numpy as np
    import pandas as pd
    import torch

    from napari_yeast_phenotypes.cli import main
    from napari_yeast_phenotypes.core.network.checkpoint import save_checkpoint
    from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet

    frames, size, cells = (3, 128, 6) if quick else (12, 192, 12)
    movie = folder / "movie"
    with contextlib.redirect_stdout(sys.stderr):  # what the commands say is not the benchmark's summary
        main(["simulate", "--out", str(movie), "--frames", str(frames), "--size", str(size), "--cells", str(cells),
              "--seed", "2", "--no-births"])
        truth = pd.read_csv(movie / "truth.csv")
        truth["split"] = np.where(truth["label"] <= cells * 3 // 4, "train", "val")
        truth = truth[(truth["split"] == "val") | (truth.index % 10 != 0)]  # ~100 training crops
        truth.to_csv(folder / "ann.csv", index=False)
        main(["curate", "--image", str(movie / "image.tif"), "--labels", str(movie / "labels.tif"), "--annotations",
              str(folder / "ann.csv"), "--out", str(folder / "cur")])
    torch.manual_seed(0)
    base = folder / "base.pt"
    save_checkpoint(base, Classifier(YeastResNet(8).eval()))
    return folder / "cur", base


def run(ctx: Context) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        curated, base = make_curated_set(Path(tmp), ctx.quick)
        epochs = 1 if ctx.quick else 3
        res = {}
        for small_data in ("auto", "off"):
            log(f"fine-tune through the training job, {epochs} epoch(s), small_data={small_data} (subprocess) ...")
            res[small_data] = run_child("finetune", {"curated": str(curated), "base": str(base), "epochs": epochs,
                                                     "out": str(Path(tmp) / f"ft-{small_data}.pt"),
                                                     "small_data": small_data})
    return {"finetune": res["auto"], "finetune_seconds": res["auto"]["seconds"],
            "finetune_as_asked": res["off"], "finetune_as_asked_seconds": res["off"]["seconds"]}
