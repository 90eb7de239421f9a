"""The ``yeast-phenotypes`` command: demo, simulate, classify, train, curate, crossval.

Every sub-command calls the same core functions as the napari plugin. User errors are printed as
one plain message (what is wrong, what to do) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys


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
    from .core.jobs import ResultFolder
    from .core.simulate import MOVIE_FILES, MOVIE_RUN_FILE, simulate_movie, write_movie

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
                          batch_size=args.batch_size, device=args.device, precision=args.precision,
                          fast_path=not args.no_fast_path)


def cmd_classify(args) -> int:
    from .core.config import parse_class_names
    from .core.jobs import classify_movie
    from .core.progress import frames_bar

    class_names = parse_class_names(args.class_names) if args.class_names else None
    job = classify_movie(args.image, args.labels, args.model, _classify_config(args), args.out,
                         overwrite=args.overwrite, progress=frames_bar("classifying"), class_names=class_names,
                         trust=args.trust_model_file, title=str(args.image))
    for w in job.warnings:
        print(f"warning: {w}", file=sys.stderr)
    res = job.result
    if res.cells.attrs.get("relinked") and not res.cells.attrs.get("relink_forced"):
        print("the label ids were not tracked across frames: cells were relinked by overlap")
    elif res.cells.attrs.get("relinked"):
        print("cells were relinked by overlap (--relink)")
    print(f"{len(res.cells)} cell-frames in {len(res.tracks)} tracks; "
          f"{int(res.tracks['senescence_frame'].notna().sum())} tracks become senescent")
    inf = job.run.get("inference") or {}
    if inf:
        print(f"inference: {inf.get('path')} {inf.get('precision')}")
    print("wrote " + ", ".join(str(job.out / n) for n in ("cells.csv", "tracks.csv", "summary.png", "run.json")))
    return 0


def _train_config(args):
    from .core.config import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       base_weights=args.base_weights, trainable=args.trainable,
                       augment=not args.no_augment, device=args.device)


def _class_names(args) -> tuple[str, ...]:
    from .core.config import parse_class_names
    from .phenotypes import CLASS_NAMES

    return parse_class_names(args.class_names) if args.class_names else CLASS_NAMES


def _print_metrics(title: str, m: dict) -> None:
    print(f"{title}: accuracy {m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f} (n={m['n']})")
    print(f"  {'class':<16}{'precision':>10}{'recall':>8}{'f1':>8}{'n':>6}")
    for c, v in m["per_class"].items():
        fmt = lambda x: "   -" if x is None else f"{x:.3f}"
        print(f"  {c:<16}{fmt(v['precision']):>10}{fmt(v['recall']):>8}{fmt(v['f1']):>8}{v['support']:>6}")


def cmd_train(args) -> int:
    from .core.jobs import train_model
    from .core.progress import training_bar

    clf = train_model(args.train, args.val, _train_config(args), args.out, class_names=_class_names(args),
                      overwrite=args.overwrite, progress=training_bar(), notes=print)
    if clf.metadata.get("validation"):
        _print_metrics("validation (best epoch)", clf.metadata["validation"])
    print(f"wrote {args.out}")
    return 0


def cmd_crossval(args) -> int:
    from .core.jobs import crossvalidate
    from .core.progress import training_bar

    res = crossvalidate(args.data, args.folds, _train_config(args), class_names=_class_names(args), out=args.out,
                        progress=training_bar("fold"))
    for i, m in enumerate(res["folds"]):
        print(f"fold {i + 1}: accuracy {m['accuracy']:.3f}, balanced {m['balanced_accuracy']:.3f} (n={m['n']})")
    _print_metrics(f"{args.folds}-fold cross-validation, pooled", res["pooled"])
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_curate(args) -> int:
    from .core.jobs import check_writable_dir, curate_movie

    check_writable_dir(args.out)  # before the movie is read and cropped
    cs, report = curate_movie(args.image, args.labels, args.annotations, args.out,
                              experiment=args.experiment, annotator=args.annotator, channel=args.channel)
    print("\n".join(report.lines(args.out)))
    print(cs.counts().to_string())
    return 0


def cmd_demo(args) -> int:
    from .core.jobs import check_writable_dir
    from .demo import run_demo

    check_writable_dir(args.out)
    return run_demo(args.out, overwrite=args.overwrite, retrain=args.retrain, seed=args.seed,
                    epochs=args.epochs)


def _common_model_args(p):
    from .core.config import TrainConfig

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
    p.add_argument("--no-augment", action="store_true", help="no flips/rotations/intensity changes of training crops")
    p.add_argument("--class-names", help="comma-separated class names, in model output order (default: the eight)")
    p.add_argument("--device", default=d.device, help="auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .core.config import PRECISIONS, ClassifyConfig

    c = ClassifyConfig()
    ap = _Parser(
        prog="yeast-phenotypes",
        description="Phenotypes of budding-yeast cells along tracks: "
                    "simulate, classify, curate, train, crossval, demo.")
    ap.add_argument("--version", action="version", version=__version__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="simulate, curate, train a quick model, classify, report accuracy")
    p.add_argument("--out", required=True, help="folder for the demo's movies, curated set, model and results")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.add_argument("--retrain", action="store_true", help="train anew even if a cached demo model exists")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the simulated movies and of training (default 0)")
    p.add_argument("--epochs", type=_whole(1), default=None, help="training epochs (default 8)")
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
    p.add_argument("--batch-size", type=_whole(1), default=c.batch_size,
                   help=f"crops per forward pass (default {c.batch_size}: measured best on CPUs)")
    p.add_argument("--chunk-frames", type=_whole(1), default=c.chunk_frames,
                   help=f"frames read at a time; memory does not grow with the movie (default {c.chunk_frames})")
    p.add_argument("--device", default=c.device, help="auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps")
    p.add_argument("--precision", choices=PRECISIONS, default=c.precision,
                   help="auto: bf16 on CPUs with native bf16 after a check against fp32, else fp32 "
                        "(default from NAPARI_YEAST_PHENOTYPES_PRECISION, else auto)")
    p.add_argument("--no-fast-path", action="store_true", default=not c.fast_path,
                   help="run the plain model instead of the folded, oneDNN-packed CPU copy")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("train", help="train the adapted ResNet50 on crops (ImageFolder layout)")
    p.add_argument("--train", required=True, help="folder of <class>/<crop>.tif|png (or a curated set's split)")
    p.add_argument("--val", help="validation folder, same layout; never augmented")
    p.add_argument("--out", required=True, help="checkpoint file to write (the best epoch, saved after each epoch)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    _common_model_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("crossval", help="grouped k-fold cross-validation on a crop set")
    p.add_argument("--data", required=True, help="crop folder (a curated split groups by experiment)")
    p.add_argument("--folds", type=_whole(2), default=5, help="number of folds (default 5); no group is in two folds")
    p.add_argument("--out", help="write the metrics as JSON")
    _common_model_args(p)
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("curate", help="add annotated cells of a movie to a curated set")
    p.add_argument("--image", required=True, help="the movie's image (TIFF or .npy)")
    p.add_argument("--labels", required=True, help="its instance labels")
    p.add_argument("--annotations", required=True, help="CSV: frame, label, phenotype [, split, experiment]")
    p.add_argument("--out", required=True, help="curated set folder (created, or grown if it exists)")
    p.add_argument("--experiment", help="experiment name for provenance (default: the image's folder name)")
    p.add_argument("--annotator", default="", help="who annotated, kept in the manifest")
    p.add_argument("--channel", type=_whole(0), help="channel of a (T,C,Y,X) image (0 = the first)")
    p.set_defaults(func=cmd_curate)
    return ap


def main(argv=None) -> int:
    from .core.io import InputError

    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from .core.io import WRITE_ERRNOS, write_error

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
