"""The ``yeast-phenotypes`` command: demo, simulate, classify, fit-track-model, train, curate, crossval,
learning-curve, info, install-weights, classify-many, ageing, annotate (opens napari).

Every sub-command calls the same core functions as the napari plugin. User errors are printed as
one plain message (what is wrong, what to do) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_report import _ci, _fmt, _interval_line, _pooled_line, _summary_line, info_lines, print_report


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (what is wrong, where to read more), exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _whole(minimum: int, maximum: int | None = None, what: str = ""):
    """An argparse type: a whole number from ``minimum`` (to ``maximum``), refused in plain words otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            rng = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {rng}{what}, not {value}")
        return value
    parse.__name__ = "whole number"
    return parse


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text}")
    return value


_positive_number.__name__ = "number"
SEED = _whole(0, 2**32 - 1)


def cmd_simulate(args) -> int:
    from .core.data.simulate import MOVIE_FILES, MOVIE_RUN_FILE, simulate_movie, write_movie
    from .core.results.folder import ResultFolder

    # the destination is checked (writable, not in use, no movie unless --overwrite) before simulating
    with ResultFolder(args.out, args.overwrite, what="simulate", files=MOVIE_FILES, run_file=MOVIE_RUN_FILE):
        pass
    movie = simulate_movie(n_frames=args.frames, size=args.size, n_cells=args.cells, seed=args.seed,
                           births=not args.no_births)
    paths = write_movie(movie, args.out, overwrite=args.overwrite)
    n = movie.truth["label"].nunique()
    born = f" ({n - args.cells} of them born during the movie; --no-births for exactly {args.cells})" \
        if n > args.cells else ""
    print(f"wrote {', '.join(str(p) for p in paths.values())}: {movie.image.shape[0]} frames, {n} cells{born}")
    return 0


def _classify_config(args):
    from .core.config import ClassifyConfig

    return ClassifyConfig(relink=args.relink, channel=args.channel, chunk_frames=args.chunk_frames,
                          batch_size=args.batch_size, crop_workers=args.crop_workers, device=args.device,
                          precision=args.precision, fast_path=not args.no_fast_path)


_BATCH_HELP = "crops per forward pass (default: the device's, 128 on a CPU, 4096 on a CUDA GPU)"
_WORKERS_HELP = ("what makes the cell tables and crops of the next frames while the network runs: 0 = nothing "
                 "(made between batches), 1 = a thread, N = N processes (default: the device's, 0 on a CPU of up "
                 "to 4 cores, 1 above, up to 8 processes beside a GPU); the results are the same")


def cmd_classify(args) -> int:
    from .core.config import parse_class_names
    from .core.jobs.classify import classify_movie
    from .core.progress import frames_bar

    class_names = parse_class_names(args.class_names) if args.class_names else None
    job = classify_movie(args.image, args.labels, args.model, _classify_config(args), args.out,
                         overwrite=args.overwrite, progress=frames_bar("classifying"), class_names=class_names,
                         trust=args.trust_model_file, title=str(args.image), track_model=args.track_model)
    for w in job.warnings:
        print(f"warning: {w}", file=sys.stderr)
    res = job.result
    if res.cells.attrs.get("relinked") and not res.cells.attrs.get("relink_forced"):
        print("the label ids were not tracked across frames: cells were relinked by overlap")
    elif res.cells.attrs.get("relinked"):
        print("cells were relinked by overlap (--relink)")
    print(f"{len(res.cells)} cell-frames in {len(res.tracks)} tracks; "
          f"{int(res.tracks['senescence_frame'].notna().sum())} tracks become senescent")
    tm = job.run.get("track_model") or {}
    if tm.get("why") and not tm.get("fell_back"):  # a fall-back is among the warnings above
        print(f"track model {args.track_model}: {tm['why']}")
    inf = job.run.get("inference") or {}
    if inf:
        print(f"inference: {inf.get('path')} {inf.get('precision')}"
              + (f", batch {inf['batch_size']} on {inf.get('hardware') or inf.get('device')}" if "batch_size" in inf
                 else ""))
    print("wrote " + ", ".join(str(job.out / n) for n in ("cells.csv", "tracks.csv", "summary.png", "run.json")))
    return 0


def _train_config(args):
    """The :class:`TrainConfig` of the options: the recipe's (``--recipe``), with every option given on top."""
    from .core.config import recipe_config

    # options a recipe sets default to None: given, they win over the recipe
    by_recipe = {"augment": "none" if args.no_augment else args.augment, "averaging": args.averaging,
                 "label_smoothing": args.label_smoothing}
    return recipe_config(args.recipe, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         base_weights=args.base_weights, trainable=args.trainable, device=args.device,
                         schedule=args.schedule, class_weighting=args.class_weighting, patience=args.patience,
                         holdout=args.holdout, calibrate=not args.no_calibrate, min_steps=args.min_steps,
                         sampling=args.sampling, stop_folds=args.stop_folds, small_data=args.small_data,
                         class_prior=args.class_prior,
                         **{k: v for k, v in by_recipe.items() if v is not None})


def _class_names(args) -> tuple[str, ...]:
    from .core.config import parse_class_names
    from .phenotypes import CLASS_NAMES

    return parse_class_names(args.class_names) if args.class_names else CLASS_NAMES


def cmd_train(args) -> int:
    from .core.jobs.training import train_model
    from .core.progress import training_bar

    clf = train_model(args.train, args.val, _train_config(args), args.out, class_names=_class_names(args),
                      overwrite=args.overwrite, progress=training_bar(), notes=print, test_dir=args.test,
                      previous=args.compare, curated=args.curated)
    print_report(clf.metadata)
    print(f"wrote {args.out} (best epoch {clf.metadata['best_epoch']}; {clf.metadata['stopped']})")
    return 0


def cmd_crossval(args) -> int:
    from .core.jobs.training import crossvalidate
    from .core.network.intervals import fmt_ci
    from .core.progress import training_bar

    res = crossvalidate(args.data, args.folds, _train_config(args), class_names=_class_names(args), out=args.out,
                        curated=args.curated,
                        progress=training_bar("fold"), by=args.by, random_split=not args.no_random_split)
    for i, m in enumerate(res["folds"]):
        print(f"fold {i + 1}: accuracy {_ci(m, 'accuracy')}, macro-F1 {_ci(m, 'macro_f1')} (n={m['n']})")
    for note in res["notes"]:
        print(f"note: {note}")
    what = "leave-one-experiment-out" if res["by"] == "experiment" else f"folds of whole {res['by']}s"
    print(_summary_line(f"{res['k']}-fold cross-validation, {what}", res))
    print(_pooled_line(res))
    if _interval_line(res["pooled"]):
        print(_interval_line(res["pooled"]))
    pooled_ci = (res["pooled"].get("ci") or {}).get("f1") or {}
    print(f"  {'class':<16}{'f1 mean':>8}{'sd':>7}{'pooled f1 (95% interval)':>26}"
          + (f"{'random':>8}" if "random" in res else ""))
    for c in res["summary"]["f1"]:
        v = res["summary"]["f1"][c]
        pc = res["pooled"]["per_class"][c]
        pooled = "-" if pc["support"] == 0 else fmt_ci(pc["f1"] or 0.0, pooled_ci.get(c))
        r = f"{_fmt(res['random']['summary']['f1'][c]['mean']):>8}" if "random" in res else ""
        print(f"  {c:<16}{_fmt(v['mean']):>8}{_fmt(v['sd']):>7}{pooled:>26}{r}")
    if "random" in res:
        print(_summary_line("a random split of the same crops would have claimed", res["random"]))
        print(_pooled_line(res["random"]))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_learning_curve(args) -> int:
    from .core.jobs.training import learning_curve_job
    from .core.progress import training_bar

    per_class = [int(v) for v in args.per_class.split(",") if v.strip()]
    curve = learning_curve_job(args.train, args.val, per_class, _train_config(args), class_names=_class_names(args),
                               out=args.out, progress=training_bar("subset"), curated=args.curated)
    print(f"{'per class':>9}{'crops':>7}{'macro-F1':>10}{'accuracy':>10}")
    for p in curve["points"]:
        print(f"{p['per_class']:>9}{p['n_train']:>7}{p['macro_f1']:>10.3f}{p['accuracy']:>10.3f}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_fit_track_model(args) -> int:
    from .core.jobs.track_fit import fit_track_model_job
    from .core.track.track_model_file import report_lines

    fit = fit_track_model_job(args.result, args.out, curated=args.curated, labels=args.labels, em=args.em,
                              overwrite=args.overwrite, validation_fraction=args.validation_fraction, seed=args.seed)
    print(f"labels: {fit.report['fitted_on']['labels']}")
    for line in report_lines(fit.report):
        print(line)
    print(f"wrote {args.out}; classify with it: yeast-phenotypes classify ... --track-model {args.out}")
    return 0


def cmd_info(args) -> int:
    from .core.errors import InputError
    from .core.network.checkpoint import load_classifier

    clf = load_classifier(args.model, trust=False)
    try:  # the record is built whole before a line is printed: a hand-edited one is said in one line
        lines = info_lines(args.model, clf)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise InputError(f"{args.model}: its record of how it was made is not what yeast-phenotypes writes ({what}); "
                         "was it edited by hand? The model itself loads: classify with it, or train it again "
                         "for a new record") from None
    for line in lines:
        print(line)
    return 0


def cmd_install_weights(args) -> int:
    from .core.network.base_weights import install_imagenet_weights

    path, already = install_imagenet_weights(args.file)
    if already:
        print(f"{path} is already this file (SHA-256 checked): nothing to do")
    else:
        print(f"installed {args.file} as {path}: its SHA-256 starts with the hash in its name, and it loads as "
              "torchvision's ResNet50 state dict")
    print("training with --base-weights imagenet (the default) now starts from these weights, as in the study")
    return 0


def cmd_curate(args) -> int:
    from .core.files.atomic import check_writable_dir
    from .core.jobs.curate import curate_movie

    check_writable_dir(args.out)  # before the movie is read and cropped
    cs, report = curate_movie(args.image, args.labels, args.annotations, args.out,
                              experiment=args.experiment, annotator=args.annotator, channel=args.channel)
    print("\n".join(report.lines(args.out)))
    print(cs.counts().to_string())
    return 0


def cmd_demo(args) -> int:
    from .core.files.atomic import check_writable_dir
    from .demo import run_demo

    check_writable_dir(args.out)
    return run_demo(args.out, overwrite=args.overwrite, retrain=args.retrain, seed=args.seed,
                    epochs=args.epochs, recipe=args.recipe, device=args.device,
                    track_model=not args.no_track_model)


def cmd_annotate(args) -> int:
    from .core.errors import InputError

    try:
        import napari
    except ImportError:
        raise InputError("napari is not installed here; install the viewer with: pip install "
                         "'napari-yeast-phenotypes[napari]' (or pip install -e '.[napari]' in a clone)") from None
    from ._napari._launch import open_annotator

    for what, path in (("image", args.image), ("labels", args.labels), ("model", args.model),
                       ("track model", args.track_model)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{what} file not found: {path}")
    if args.curated and not args.model:
        raise InputError("--curated starts annotating on a classification: give the model too (--model)")
    open_annotator(args.image, args.labels, model=args.model, curated=args.curated, track_model=args.track_model,
                   channel=args.channel)
    napari.run()
    return 0


# ---------------------------------------------------------------------------- an ageing experiment

def cmd_classify_many(args) -> int:
    from .core.config import parse_class_names
    from .core.experiment.run import classify_many, movies_bar

    class_names = list(parse_class_names(args.class_names)) if args.class_names else None
    config = _classify_config(args)
    res = classify_many(args.spec, args.model, args.out, config, scheduler=args.scheduler,
                        workers=args.workers, torch_threads=args.torch_threads, overwrite=args.overwrite,
                        progress=movies_bar("classifying movies"), class_names=class_names,
                        trust=args.trust_model_file, labels_name=args.labels_name,
                        track_model=args.track_model,
                        checking=movies_bar("checking earlier results (SHA-256 of the inputs)"))
    for note in res.notes:
        print(f"note: {note}")
    c = res.counts()
    how = res.run.get("run", {})
    where = how.get("scheduler", "")
    if where == "local":
        where = f"a local cluster of {how['workers']} worker(s) x {how['torch_threads']} torch thread(s)"
    print(f"{len(res.movies)} movies: {c['done']} classified, {c['skipped']} already complete (skipped), "
          f"{c['failed']} failed" + (f"; ran on {where}" if where else ""))
    print(f"{len(res.tracks)} tracks; wrote {res.out / 'cells.csv'}, {res.out / 'tracks.csv'}, "
          f"{res.out / 'failures.csv'}, {res.out / 'movies.csv'} and one folder per movie in {res.out / 'movies'}")
    for row in res.failures.itertuples():
        print(f"failed: {row.movie}: {row.reason}", file=sys.stderr)
    return 1 if c["failed"] else 0


def cmd_ageing(args) -> int:
    from .core.experiment.ageing import run_ageing
    from .core.progress import frames_bar

    bar = frames_bar("groups estimated" + (", then pairs tested" if args.pairs else ""), unit="step")
    res, written = run_ageing(args.dir, by=args.by, out=args.out, frame_interval=args.frame_interval,
                              time_unit=args.time_unit, alpha=args.alpha, overwrite=args.overwrite,
                              pairs=args.pairs, progress=bar)
    import pandas as pd

    with pd.option_context("display.max_rows", 60, "display.width", 160, "display.max_colwidth", 70):
        print(res.medians.to_string(index=False))
    for note in res.notes:
        print(f"note: {note}")
    for r in res.logrank.itertuples():
        if r.test == "overall":
            print(f"log-rank test of all {r.groups} groups at once: chi2 {r.statistic:.3g} (df {r.df}), p = {r.p:.3g}")
    pairs = res.logrank[res.logrank["test"] == "pair"]
    if len(pairs):
        print(f"pairwise log-rank tests ({len(pairs)} pairs), p adjusted for multiple testing by Holm's method:")
        for r in pairs.head(20).itertuples():
            print(f"  {r.group_a} vs {r.group_b}: chi2 {r.statistic:.3g}, p = {r.p:.3g}, Holm-adjusted p = "
                  f"{r.p_holm:.3g}")
        if len(pairs) > 20:
            print(f"  ... {len(pairs) - 20} more in logrank.csv")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _experiment_parsers(sub, c) -> None:
    """The parsers of classify-many and ageing (kept together, apart from the other commands)."""
    from .core.config import PRECISIONS

    p = sub.add_parser("classify-many", help="classify every movie of an experiment (a SPEC) on Dask")
    p.add_argument("spec", help="CSV with one row per movie (image, labels, optional movie name, any columns such "
                                "as strain, condition, position), or a quoted glob of image files")
    p.add_argument("--model", required=True, help="checkpoint (.pt) or bare ResNet50 state dict")
    p.add_argument("--out", required=True,
                   help="experiment folder: one result folder per movie, combined cells.csv and tracks.csv, "
                        "failures.csv; a rerun skips complete movies")
    p.add_argument("--scheduler", help="address (tcp://host:8786) or scheduler file of a running dask.distributed "
                                       "cluster, e.g. one of dask-jobqueue; default: a local cluster")
    p.add_argument("--workers", type=_whole(0), help="workers of the local cluster (default: CPUs / 2, one on a "
                                                    "GPU); 0 = every movie in this process, without Dask; not with "
                                                    "--scheduler")
    p.add_argument("--torch-threads", type=_whole(1),
                   help="torch threads per worker (default: the CPUs shared out among the workers)")
    p.add_argument("--labels-name", help="with a glob SPEC only: the labels' file name beside each image, or a "
                                         "template with {stem}, {suffix} or {name}, such as {stem}_masks{suffix} "
                                         "(default: labels.tif, masks.tif, ...)")
    p.add_argument("--relink", choices=["auto", "yes", "no"], default=c.relink, nargs="?", const="yes",
                   help="relink label ids across frames by overlap (default auto: when they look untracked)")
    p.add_argument("--channel", type=_whole(0), help="channel of (T,C,Y,X) images to classify (0 = the first)")
    p.add_argument("--class-names", help="class names of a bare state dict, in output order")
    p.add_argument("--trust-model-file", action="store_true",
                   help="allow a whole pickled model; this runs any code in the file: only for files you trust")
    p.add_argument("--batch-size", type=_whole(1), default=c.batch_size, help=_BATCH_HELP)
    p.add_argument("--crop-workers", type=_whole(0), default=c.crop_workers, help=_WORKERS_HELP)
    p.add_argument("--chunk-frames", type=_whole(1), default=c.chunk_frames,
                   help=f"frames read at a time (default {c.chunk_frames})")
    p.add_argument("--device", default=c.device, help="auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps")
    p.add_argument("--precision", choices=PRECISIONS, default=c.precision,
                   help="auto: bf16 on CPUs with native bf16 after a check against fp32, else fp32")
    p.add_argument("--no-fast-path", action="store_true", default=not c.fast_path,
                   help="run the plain model instead of the folded, oneDNN-packed CPU copy")
    p.add_argument("--track-model", metavar="FILE",
                   help="a track model fitted by fit-track-model (JSON); default: the built-in transition rates")
    p.add_argument("--overwrite", action="store_true",
                   help="classify again movies whose folders hold results of another config, model or input "
                        "(inputs are compared by content, SHA-256)")
    p.set_defaults(func=cmd_classify_many)

    p = sub.add_parser("ageing", help="senescence as survival: Kaplan-Meier per condition, a log-rank test")
    p.add_argument("dir", help="a classify-many folder (or any folder with a tracks.csv, or the tracks.csv itself)")
    p.add_argument("--by", help="SPEC column(s) to compare, comma-separated (e.g. condition or strain,condition); "
                                "default: all tracks as one group")
    p.add_argument("--out", help="folder for the tables and ageing.png (default: DIR/ageing)")
    p.add_argument("--frame-interval", type=_positive_number, default=1.0,
                   help="time between frames, in --time-unit (default 1: times in frames)")
    p.add_argument("--time-unit", help="name of the time unit (default: frames, or 'time' with --frame-interval)")
    p.add_argument("--alpha", type=_open_fraction, default=0.05,
                   help="1 - confidence level of bands and intervals, and the level of the tests (0.05)")
    p.add_argument("--pairs", action="store_true",
                   help="also test every pair of groups (k(k-1)/2 tests), with p-values adjusted by Holm's method; "
                        "default: one log-rank test of all groups at once")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier analysis in --out")
    p.set_defaults(func=cmd_ageing)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to below 1, not {text}")
    return value


_fraction.__name__ = "fraction"


def _open_fraction(text: str) -> float:
    value = _fraction(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be above 0 and below 1, not 0")
    return value


_open_fraction.__name__ = "fraction"


def _common_model_args(p):
    from .core.config import (
        AUGMENTATIONS,
        AVERAGING,
        CLASS_PRIORS,
        CLASS_WEIGHTING,
        RECIPES,
        SAMPLING,
        SCHEDULES,
        SMALL_DATA,
        SMALL_DATA_FOLDS,
        SMALL_DATA_MIN_STEPS,
        SMALL_DATA_PER_CLASS,
        TrainConfig,
    )

    d = TrainConfig()
    p.add_argument("--epochs", type=_whole(1), default=d.epochs,
                   help=f"passes over the training crops (default {d.epochs})")
    p.add_argument("--batch-size", type=_whole(2, what=" (BatchNorm layers that train need 2)"),
                   default=d.batch_size,
                   help=f"crops per training step (default {d.batch_size})")
    p.add_argument("--lr", type=_positive_number, default=d.lr, help=f"learning rate of AdamW (default {d.lr:g})")
    p.add_argument("--seed", type=SEED, default=d.seed, help="random seed of weights, shuffling and augmentation")
    p.add_argument("--base-weights", default=d.base_weights,
                   help="imagenet (torchvision's; cached in TORCH_HOME) | none (random) | "
                        "PATH to a ResNet50 state dict")
    p.add_argument("--trainable", default=d.trainable,
                   help="layers to train: conv1,fc (default, as in the study), e.g. conv1,layer4,fc, or all")
    p.add_argument("--recipe", choices=list(RECIPES), default=d.recipe,
                   help="study (default): the original study's recipe; robust: weights averaged along the run and "
                        "crops that look as if from another microscope (blur, gain/gamma/offset, noise), measured "
                        "steadier over seeds (docs/training.md). Options given below win over the recipe")
    p.add_argument("--augment", default=None,
                   help=f"augmentations of training crops only: none or a list of {', '.join(AUGMENTATIONS)} "
                        f"(default: the recipe's; study: {d.augment}; robust: {RECIPES['robust']['augment']})")
    p.add_argument("--averaging", choices=AVERAGING, default=None,
                   help="ema: evaluate and keep an exponential moving average of the weights along the run "
                        "(default: the recipe's; study: none, robust: ema)")
    p.add_argument("--label-smoothing", type=_fraction, default=None,
                   help=f"of the training loss (default: the recipe's; study: {d.label_smoothing}, robust: "
                        f"{RECIPES['robust']['label_smoothing']})")
    p.add_argument("--no-augment", action="store_true", help="no augmentation (same as --augment none)")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help=f"learning rate after a short warm-up (default {d.schedule})")
    p.add_argument("--class-weighting", choices=CLASS_WEIGHTING, default=d.class_weighting,
                   help="balanced: every class weighs the same in the loss, however many crops it has "
                        f"(default {d.class_weighting})")
    p.add_argument("--patience", type=_whole(0), default=d.patience,
                   help="stop when the validation macro-F1 has not improved for this many epochs (0: never)")
    p.add_argument("--holdout", type=_fraction, default=d.holdout,
                   help="fraction held out (whole tracks) from the training set without --val, and from the "
                        f"validation set without --test, for honest final figures (default {d.holdout})")
    p.add_argument("--no-calibrate", action="store_true", help="no temperature scaling of the probabilities")
    p.add_argument("--min-steps", type=_whole(0), default=d.min_steps,
                   help="at least this many optimiser steps, whatever the batch size (each epoch lengthened to "
                        "reach them)")
    p.add_argument("--sampling", choices=SAMPLING, default=d.sampling,
                   help="shuffle: each crop once per epoch; balanced: every class equally likely in each batch")
    p.add_argument("--class-prior", choices=CLASS_PRIORS, default=d.class_prior,
                   help="uniform: every class equally likely before a crop is seen; labels: as often as among the "
                        "training crops (the calls of rare classes need stronger evidence)")
    p.add_argument("--stop-folds", type=_whole(0), default=d.stop_folds,
                   help="without --val: choose the number of steps on this many folds of whole tracks of the "
                        "training crops, then train on all of them (0: hold a part out)")
    p.add_argument("--small-data", choices=SMALL_DATA, default=d.small_data,
                   help=f"auto (default): with under {SMALL_DATA_PER_CLASS} labelled crops in a class, at least "
                        f"{SMALL_DATA_MIN_STEPS} steps, class-balanced batches, --class-prior labels and --stop-folds "
                        f"{SMALL_DATA_FOLDS} without --val; off: as configured")
    p.add_argument("--class-names", help="comma-separated class names, in model output order (default: the eight)")
    p.add_argument("--device", default=d.device, help="auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .core.config import PRECISIONS, RECIPES, ClassifyConfig
    from .demo import DEFAULT_RECIPE

    c = ClassifyConfig()
    ap = _Parser(
        prog="yeast-phenotypes",
        description="Phenotypes of budding-yeast cells along tracks: "
                    "simulate, classify, fit-track-model, curate, train, crossval, learning-curve, info, demo, "
                    "install-weights, classify-many, ageing, annotate.")
    ap.add_argument("--version", action="version", version=__version__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="simulate, curate, train a quick model, classify, report accuracy")
    p.add_argument("--out", required=True, help="folder for the demo's movies, curated set, model and results")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.add_argument("--retrain", action="store_true", help="train anew even if a cached demo model exists")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the simulated movies and of training (default 0)")
    p.add_argument("--epochs", type=_whole(1), default=None, help="training epochs (default 8)")
    p.add_argument("--recipe", choices=list(RECIPES), default=DEFAULT_RECIPE,
                   help=f"training recipe (default {DEFAULT_RECIPE}; see train --help)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps")
    p.add_argument("--no-track-model", action="store_true",
                   help="smooth with the built-in transition rates instead of a track model fitted on the "
                        "validation movie's labelled cells")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="write a synthetic movie with ground truth")
    p.add_argument("--out", required=True, help="folder for image.tif, labels.tif and truth.csv")
    p.add_argument("--frames", type=_whole(1, 100_000), default=40, help="number of frames (default 40)")
    p.add_argument("--size", type=_whole(64, 8192), default=256,
                   help="side of the square field of view in pixels (default 256)")
    p.add_argument("--cells", type=_whole(1, 100_000), default=30,
                   help="cells in the first frame (default 30); about 20-30%% more are born later unless --no-births")
    p.add_argument("--no-births", action="store_true", help="no cells appear after the first frame")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a movie already in --out")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("classify", help="classify every cell of a segmented movie")
    p.add_argument("--image", required=True, help="(T,Y,X) or (Y,X) TIFF or .npy; (T,C,Y,X) with --channel")
    p.add_argument("--labels", required=True, help="instance labels of the same shape (0 = background)")
    p.add_argument("--model", required=True, help="checkpoint (.pt) or bare ResNet50 state dict")
    p.add_argument("--out", required=True,
                   help="folder for cells.csv, tracks.csv, summary.png and run.json (written together at the end)")
    p.add_argument("--relink", choices=["auto", "yes", "no"], default=c.relink, nargs="?", const="yes",
                   help="relink label ids across frames by overlap (default auto: when they look untracked)")
    p.add_argument("--channel", type=_whole(0), help="channel of a (T,C,Y,X) image to classify (0 = the first)")
    p.add_argument("--class-names", help="class names of a bare state dict, in output order")
    p.add_argument("--trust-model-file", action="store_true",
                   help="allow a whole pickled model; this runs any code in the file: only for files you trust")
    p.add_argument("--batch-size", type=_whole(1), default=c.batch_size, help=_BATCH_HELP)
    p.add_argument("--crop-workers", type=_whole(0), default=c.crop_workers, help=_WORKERS_HELP)
    p.add_argument("--chunk-frames", type=_whole(1), default=c.chunk_frames,
                   help=f"frames read at a time; memory does not grow with the movie (default {c.chunk_frames})")
    p.add_argument("--device", default=c.device, help="auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps")
    p.add_argument("--precision", choices=PRECISIONS, default=c.precision,
                   help="auto: bf16 where the device computes in it natively (CPUs with AVX512-BF16 or AMX, GPUs "
                        "from Ampere on), after a check against fp32, else fp32 (TF32 on a GPU) "
                        "(default from NAPARI_YEAST_PHENOTYPES_PRECISION, else auto)")
    p.add_argument("--no-fast-path", action="store_true", default=not c.fast_path,
                   help="run the plain model instead of the folded inference copy (oneDNN-packed on a CPU, "
                        "channels-last with bf16 autocast or TF32 on a GPU)")
    p.add_argument("--track-model", metavar="FILE",
                   help="a track model fitted by fit-track-model (JSON); default: the built-in transition rates")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("fit-track-model",
                       help="fit the per-track model of a classified movie on a person's labels (or by EM)")
    p.add_argument("result", help="a result folder of classify (cells.csv, run.json)")
    p.add_argument("--out", required=True, help="track model file to write (JSON), for classify --track-model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--curated", metavar="DIR",
                     help="a curated set: its labels of this movie (found by the movie's content) are used")
    src.add_argument("--labels", metavar="CSV", help="labels of this movie: CSV with frame, label, phenotype")
    src.add_argument("--em", action="store_true",
                     help="no labels: fit the transition rates on the movie by EM (no validation figures)")
    p.add_argument("--validation-fraction", type=_open_fraction, default=0.5,
                   help="share of the labelled tracks held out to check the fit on (default 0.5)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the draw of held-out tracks (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file at --out")
    p.set_defaults(func=cmd_fit_track_model)

    p = sub.add_parser("train", help="train the adapted ResNet50 on crops (ImageFolder layout)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--curated", metavar="DIR",
                      help="a curated set: its train split learns, its val split (unless --val) chooses the epoch, "
                           "its test split (unless --test) reports")
    what.add_argument("--train", help="folder of <class>/<crop>.tif|png (or a curated set's split)")
    p.add_argument("--val", help="validation folder, same layout; never augmented; chooses the best epoch")
    p.add_argument("--test", help="test folder (e.g. a curated set's test split): the final figures, on crops no "
                                  "choice was made on")
    p.add_argument("--compare", help="a previous model file, judged on the same crops for comparison")
    p.add_argument("--out", required=True, help="checkpoint file to write (the best epoch, saved after each epoch)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    _common_model_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("crossval", help="grouped k-fold cross-validation on a crop set")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--curated", metavar="DIR", help="a curated set: every labelled crop of its train and val splits")
    what.add_argument("--data", help="crop folder (a curated set's split knows experiments and tracks)")
    p.add_argument("--folds", type=_whole(2), default=5, help="number of folds (default 5); no group is in two folds")
    p.add_argument("--by", choices=["auto", "experiment", "track"], default="auto",
                   help="experiment: leave one experiment out; track: folds of whole tracks; auto (default): "
                        "experiments when there are at least --folds of them, else tracks")
    p.add_argument("--no-random-split", action="store_true",
                   help="skip the random split of the same crops (shown beside, as what it would have claimed)")
    p.add_argument("--out", help="write the metrics as JSON")
    _common_model_args(p)
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("learning-curve", help="validation macro-F1 against labelled crops per class")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--curated", metavar="DIR",
                      help="a curated set: its train split subsampled, its val split judges")
    what.add_argument("--train", help="training crop folder (or a curated set's split)")
    p.add_argument("--val", help="validation crop folder (needed with --train)")
    p.add_argument("--per-class", default="5,10,20,40", help="crops per class of each subset (default 5,10,20,40)")
    p.add_argument("--out", help="write the points as JSON")
    _common_model_args(p)
    p.set_defaults(func=cmd_learning_curve)

    p = sub.add_parser("info", help="what a model file holds: classes, crop settings, config, figures, training set")
    p.add_argument("model", help="checkpoint (.pt)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("install-weights",
                       help="install a downloaded torchvision ResNet50 ImageNet weights file into the torch cache")
    p.add_argument("file", help="the file as torchvision names it, e.g. resnet50-11ad3fa6.pth or resnet50-0676ba61.pth "
                                "(from https://download.pytorch.org/models/); its hash is checked")
    p.set_defaults(func=cmd_install_weights)

    p = sub.add_parser("curate", help="add annotated cells of a movie to a curated set")
    p.add_argument("--image", required=True, help="the movie's image (TIFF or .npy)")
    p.add_argument("--labels", required=True, help="its instance labels")
    p.add_argument("--annotations", required=True, help="CSV: frame, label, phenotype [, split, experiment]")
    p.add_argument("--out", required=True, help="curated set folder (created, or grown if it exists)")
    p.add_argument("--experiment", help="experiment name for provenance (default: the image's folder name)")
    p.add_argument("--annotator", default="", help="who annotated, kept in the manifest")
    p.add_argument("--channel", type=_whole(0), help="channel of a (T,C,Y,X) image (0 = the first)")
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("annotate", help="open napari on a movie with the Classify and Annotate docks")
    p.add_argument("image", help="the movie's image (TIFF or .npy)")
    p.add_argument("labels", help="its instance labels")
    p.add_argument("--model", help="a checkpoint: the movie is classified at once")
    p.add_argument("--curated", metavar="DIR", help="a curated set: annotating starts on the classification")
    p.add_argument("--track-model", metavar="FILE", help="a track model file for the classification")
    p.add_argument("--channel", type=_whole(0), help="channel of a (T,C,Y,X) image (0 = the first)")
    p.set_defaults(func=cmd_annotate)

    _experiment_parsers(sub, c)
    for parser in sub.choices.values():
        _say_defaults(parser)
    return ap


def _say_defaults(parser: argparse.ArgumentParser) -> None:
    """Add "(default X)" to the help of every option that has a default its help does not state yet."""
    for action in parser._actions:
        d = action.default
        if (not action.option_strings or action.help in (None, argparse.SUPPRESS) or d in (None, argparse.SUPPRESS)
                or isinstance(d, bool) or "default" in action.help):
            continue
        action.help = f"{action.help} (default {d})"


def main(argv=None) -> int:
    from .core.errors import InputError

    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from .core.errors import WRITE_ERRNOS, write_error

        if exc.errno not in WRITE_ERRNOS:
            raise
        # a destination that failed where no check could foresee it (a disk filling up mid-run)
        print(f"error: {write_error(exc.filename or 'a file', exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; files written so far are complete", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
