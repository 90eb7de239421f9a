"""One configuration object per job: :class:`ClassifyConfig` and :class:`TrainConfig`.

The command line takes its defaults from these classes, the napari docks fill them from their
widgets, ``run.json`` and checkpoints store them with ``to_dict``, and ``from_dict`` reads them back.
Environment variables only change defaults (``NAPARI_YEAST_PHENOTYPES_PRECISION``,
``NAPARI_YEAST_PHENOTYPES_FAST_INFERENCE``); nothing deeper in the package reads them.

No torch here: a config can be made, checked and stored without loading the network.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace

from .errors import InputError
from .track.timeline import TimelineSettings

PRECISIONS = ("auto", "fp32", "bf16")
RELINK_CHOICES = ("auto", "yes", "no")
TRAINABLE_LAYERS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc")
PRECISION_ENV = "NAPARI_YEAST_PHENOTYPES_PRECISION"
FAST_PATH_ENV = "NAPARI_YEAST_PHENOTYPES_FAST_INFERENCE"


def default_precision() -> str:
    """``auto`` unless ``NAPARI_YEAST_PHENOTYPES_PRECISION`` says ``fp32`` or ``bf16``."""
    want = os.environ.get(PRECISION_ENV, "auto").strip().lower()
    return {"float32": "fp32", "bfloat16": "bf16"}.get(want, want) or "auto"


def default_fast_path() -> bool:
    """True unless ``NAPARI_YEAST_PHENOTYPES_FAST_INFERENCE`` is ``0``, ``false`` or ``no``."""
    return os.environ.get(FAST_PATH_ENV, "1").strip().lower() not in ("0", "false", "no")


def _positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be a whole number of at least {minimum}, not {value!r}")


def _finite_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, not {value!r}")
    return float(value)


DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(device) -> None:
    """Refuse a device name that is none of ``auto, cpu, cuda, cuda:N, mps`` (before any work).

    Whether the device is there is :func:`~napari_yeast_phenotypes.core.network.device.select_device`'s to say.
    """
    if not isinstance(device, str) or not DEVICE_PATTERN.match(device.strip().lower()):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps")


def _from_dict(cls, d: dict | None, what: str):
    if d is not None and not isinstance(d, dict):
        raise InputError(f"{what} settings must be a mapping of names to values, not {type(d).__name__}")
    d = dict(d or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise InputError(f"unknown {what} settings {unknown}; known: {', '.join(sorted(known))}")
    return d


@dataclass(frozen=True)
class ClassifyConfig:
    """How one movie is classified.

    Attributes
    ----------
    relink
        ``"auto"`` (relink label ids by overlap when they do not look tracked), ``"yes"``, ``"no"``.
    channel
        Channel of a (T, C, Y, X) image that holds the reporter; ``None`` for single-channel movies.
    chunk_frames
        Frames read at a time: memory does not grow with the movie's length.
    batch_size
        Crops per forward pass; ``None``: the device's (128 on a CPU, measured best or within noise of
        it; 4096 on a CUDA GPU, 1024 on one with under 8 GB; ``core.network.device.batch_size_for``).
    crop_workers
        What makes the cell table and the crops of the next frames while the network runs: ``0``
        nothing (they are made between batches, by the thread that runs the network), ``1`` a
        thread, ``N >= 2`` N processes; ``None``: the device's (``core.pipeline.crop_workers_for``).
        The results are the same whatever the choice.
    device
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    precision
        ``auto`` (bf16 on CPUs with native bf16, after a check against fp32; fp32 elsewhere),
        ``fp32`` or ``bf16``.
    fast_path
        Use the CPU inference copy of the network (BatchNorm folded, oneDNN packed).
    timeline
        Transition rates of the per-track model.
    """

    relink: str = "auto"
    channel: int | None = None
    chunk_frames: int = 8
    batch_size: int | None = None
    crop_workers: int | None = None
    device: str = "auto"
    precision: str = field(default_factory=default_precision)
    fast_path: bool = field(default_factory=default_fast_path)
    timeline: TimelineSettings = field(default_factory=TimelineSettings)

    def __post_init__(self):
        if isinstance(self.relink, bool):
            object.__setattr__(self, "relink", "yes" if self.relink else "no")
        if self.relink not in RELINK_CHOICES:
            raise InputError(f"relink must be one of {', '.join(RELINK_CHOICES)}, not {self.relink!r}")
        if self.channel is not None:
            _positive_int("channel", self.channel, 0)
        _positive_int("chunk frames", self.chunk_frames)
        if self.batch_size is not None:
            _positive_int("batch size", self.batch_size)
        if self.crop_workers is not None:
            _positive_int("crop workers", self.crop_workers, 0)
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r}: use {', '.join(PRECISIONS)}"
                             + (f" (check {PRECISION_ENV})" if os.environ.get(PRECISION_ENV) else ""))
        check_device_name(self.device)
        if not isinstance(self.fast_path, bool):
            raise InputError(f"fast_path must be true or false, not {self.fast_path!r}")
        if isinstance(self.timeline, dict):
            object.__setattr__(self, "timeline", TimelineSettings.from_dict(self.timeline))

    @property
    def relink_mode(self) -> bool | str:
        """``relink`` as the pipeline takes it: ``True``, ``False`` or ``"auto"``."""
        return {"yes": True, "no": False, "auto": "auto"}[self.relink]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> ClassifyConfig:
        d = _from_dict(cls, d, "classify")
        if "timeline" in d:
            d["timeline"] = TimelineSettings.from_dict(d["timeline"])
        return cls(**d)


def parse_trainable(trainable) -> tuple[str, ...]:
    """Parse ``"conv1,fc"`` / ``"all"`` / a sequence into a tuple of layer names, checking them."""
    if isinstance(trainable, str):
        trainable = [t.strip() for t in trainable.split(",") if t.strip()]
    if not isinstance(trainable, (list, tuple)) or not all(isinstance(t, str) for t in trainable):
        raise InputError(f"cannot train layers {trainable!r}: give 'all' or a comma-separated list of "
                         f"{', '.join(TRAINABLE_LAYERS)} (default conv1,fc)")
    names = tuple(trainable)
    if names == ("all",):
        return names
    bad = [n for n in names if n not in TRAINABLE_LAYERS]
    if bad or not names:
        raise InputError(
            f"cannot train layers {bad or names}: choose 'all' or a comma-separated list of "
            f"{', '.join(TRAINABLE_LAYERS)} (default conv1,fc)"
        )
    return names


#: longest class name taken (a folder name, a CSV column ``p_<name>``, a legend entry)
MAX_CLASS_NAME = 64
#: what a class name may hold besides letters and digits (which it must start with)
CLASS_NAME_PUNCTUATION = " ._+-"


def class_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class name, or ``None``: the one rule for class names wherever they come in.

    A class name becomes a folder of the curated set, a CSV column (``p_<name>``), a word of the
    comma-separated ``--class-names``, a legend entry drawn by matplotlib and an HTML label in the
    viewer; so it is letters and digits (any script) with space, ``.``, ``_``, ``+``, ``-`` inside,
    starting with a letter or digit (never ``=``, ``+``, ``-``, ``@``, which a spreadsheet takes for a
    formula, nor a dot), at most :data:`MAX_CLASS_NAME` characters.
    """
    if not name:
        return "it is empty"
    if len(name) > MAX_CLASS_NAME:
        return f"it is longer than {MAX_CLASS_NAME} characters"
    bad = sorted({c for c in name if not (c.isalnum() or c in CLASS_NAME_PUNCTUATION)})
    if bad:
        return "it holds " + ", ".join(repr(c) for c in bad[:5])
    if not name[0].isalnum():
        return f"it starts with {name[0]!r}"
    if name[-1] in " .":
        return f"it ends with {name[-1]!r}"
    return None


def parse_class_names(names, where: str = "--class-names") -> tuple[str, ...]:
    """Class names from ``"A,B,C"`` or a sequence, checked by :func:`class_name_problem`, none twice
    (ignoring case).

    Names twice would make two outputs of the model mean one class (and class folders, matched
    without case, would be read twice). Checkpoints, ``--class-names``, curated sets and track models
    all come through here.
    """
    if isinstance(names, str):
        names = names.split(",")
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise InputError(f"{where}: class names must be a list of text, not {str(names)[:80]!r}")
    names = tuple(n.strip() for n in names)
    if not names or any(not n for n in names):
        raise InputError(f"{where}: empty class name in {list(names)[:20]}; give names separated by commas, "
                         "e.g. A,B,C")
    for n in names:
        why = class_name_problem(n)
        if why:
            raise InputError(f"{where}: {n[:80]!r} cannot be a class name ({why}); use letters and digits, with "
                             f"space, '.', '_', '+' or '-' inside, starting with a letter or digit, at most "
                             f"{MAX_CLASS_NAME} characters")
    lower = [n.lower() for n in names]
    twice = sorted({n for n in names if lower.count(n.lower()) > 1})
    if twice:
        raise InputError(f"{where}: class names must differ (ignoring case), but {', '.join(twice)} "
                         f"is given more than once in {','.join(names)}")
    return names


#: in the order they are applied: geometry, then the optics (blur), the detector (intensity), the noise
AUGMENTATIONS = ("flips", "rot90", "affine", "blur", "intensity", "microscope", "noise")
DEFAULT_AUGMENT = "flips,rot90,intensity"  # the study's: dihedral turns and mild intensity changes
AVERAGING = ("none", "ema")
SCHEDULES = ("cosine", "step", "constant")
CLASS_WEIGHTING = ("balanced", "none")
SAMPLING = ("shuffle", "balanced")
CLASS_PRIORS = ("uniform", "labels")
SMALL_DATA = ("auto", "off")
#: with fewer labelled crops than this in a class, ``small_data="auto"`` adapts the training (:func:`adapt_to_data`)
SMALL_DATA_PER_CLASS = 50
#: small data: at least this many optimiser steps, whatever the batch size and the number of crops
SMALL_DATA_MIN_STEPS = 200
#: small data without a validation set: when to stop is chosen on this many folds of whole tracks
SMALL_DATA_FOLDS = 3
#: the trainable-layer presets the dock offers (any comma-separated list of layers is accepted)
TRAINABLE_PRESETS = ("conv1,fc", "conv1,layer4,fc", "all")


#: named training recipes: the fields each sets (any field can still be set on top of a recipe)
RECIPES = {
    # the original study's: ImageNet weights, conv1 + fc, flips, 90-degree turns and mild intensity changes
    "study": {},
    # measured on the demo (docs/training.md): weights averaged along the run (an exponential moving average,
    # evaluated and saved), and crops that look as if from another microscope (blur, gain/offset/gamma, noise)
    "robust": {"averaging": "ema", "augment": "flips,rot90,blur,intensity,microscope,noise",
               "label_smoothing": 0.1},
}


def recipe_config(name: str = "study", **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of the recipe ``name`` (:data:`RECIPES`), with ``overrides`` on top."""
    if name not in RECIPES:
        raise InputError(f"unknown training recipe {name!r}: use {', '.join(RECIPES)}")
    return TrainConfig(**{**TrainConfig().to_dict(), **RECIPES[name], "recipe": name, **overrides})


def parse_augment(augment) -> tuple[str, ...]:
    """Parse ``"flips,rot90"`` / ``"none"`` / ``True`` / ``False`` / a sequence into augmentation names."""
    if augment is True:
        augment = DEFAULT_AUGMENT
    if augment is False or augment is None:
        return ()
    if isinstance(augment, str):
        augment = [a.strip().lower() for a in augment.split(",") if a.strip()]
    names = tuple(augment)
    if names in ((), ("none",)):
        return ()
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad:
        raise InputError(f"unknown augmentation {', '.join(map(str, bad))}: choose none or a comma-separated list "
                         f"of {', '.join(AUGMENTATIONS)} (default {DEFAULT_AUGMENT})")
    return tuple(a for a in AUGMENTATIONS if a in names)  # one canonical order


@dataclass
class TrainConfig:
    """One training job; the CLI, the napari dock and the checkpoint all use this object.

    Attributes
    ----------
    epochs, batch_size, lr, weight_decay, seed
        As usual (AdamW).
    base_weights
        ``imagenet`` (torchvision's, cached in TORCH_HOME), ``none`` (random), or the path of a
        ResNet50 state dict or of a checkpoint of this package (fine-tuning the current model).
    trainable
        Layers that learn: ``conv1,fc`` (the study's), ``conv1,layer4,fc``, ``all`` or any list of
        top-level layers. Frozen layers keep their weights and their BatchNorm statistics.
    augment
        Augmentations of training batches only (never of validation data): ``none`` or a list of
        ``flips, rot90, affine, blur, intensity, microscope, noise``. ``True``/``False`` (older
        configs) mean the default list / none.
    label_smoothing
        Of the training loss.
    schedule
        Learning rate after a short warm-up: ``cosine`` (to zero), ``step`` (x0.1 at two thirds of
        the epochs) or ``constant``.
    class_weighting
        ``balanced`` (each class weighs the same in the loss, whatever its number of crops) or ``none``.
    patience
        Stop when the validation macro-F1 has not improved for this many epochs (0: never stop early).
    holdout
        Fraction held out, grouped by track (by experiment where there are three or more): from
        the training set when there is no validation set, and from the validation set when there
        is no test set, so that the final figures are on crops the best epoch was not chosen on.
    calibrate
        Fit a temperature on the validation data and fold it into the classifier's last layer.
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    min_steps
        At least this many optimiser steps (each epoch is lengthened to reach them, their number stays; 0:
        ``epochs`` as given).
    sampling
        ``shuffle`` (each crop once per epoch) or ``balanced`` (each batch drawn with every class equally
        likely, with replacement; the loss then weighs every crop the same).
    stop_folds
        0: the best epoch is chosen on the validation data. ``k`` >= 2, without a validation set: the
        number of steps is chosen on ``k`` folds of whole tracks of the training crops (each trained
        on the others and judged at regular steps), then the model trains on all of them for that
        many steps; the report is on the test crops, else on the folds' out-of-fold calls.
    class_prior
        How likely each class is before the crop is seen, in the model's calls: ``uniform`` (what
        balanced weighting or sampling trains), or ``labels``: as often as among the training crops
        (the log of their frequencies is added to the last layer's bias after training; a class with
        4 crops of 300 is then called only on strong evidence).
    averaging
        ``none``: the weights of the best epoch; ``ema``: an exponential moving average of the
        weights (and BatchNorm statistics) along the run, over about its last quarter, is what is
        evaluated, chosen and saved.
    recipe
        The named recipe (:data:`RECIPES`) the config started from, for the record.
    small_data
        ``auto``: with fewer than :data:`SMALL_DATA_PER_CLASS` labelled crops in a class, training
        takes at least :data:`SMALL_DATA_MIN_STEPS` steps, draws class-balanced batches and (without
        a validation set) stops where :data:`SMALL_DATA_FOLDS` folds of whole tracks say
        (:func:`adapt_to_data`); ``off``: as configured.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    base_weights: str = "imagenet"
    trainable: str = "conv1,fc"
    augment: str = DEFAULT_AUGMENT
    label_smoothing: float = 0.05
    schedule: str = "cosine"
    class_weighting: str = "balanced"
    patience: int = 0
    holdout: float = 0.3
    calibrate: bool = True
    device: str = "auto"
    min_steps: int = 0
    sampling: str = "shuffle"
    stop_folds: int = 0
    small_data: str = "auto"
    averaging: str = "none"
    recipe: str = "study"
    class_prior: str = "uniform"

    def __post_init__(self):
        if self.class_prior not in CLASS_PRIORS:
            raise InputError(f"class prior {self.class_prior!r}: use {', '.join(CLASS_PRIORS)}")
        if self.averaging not in AVERAGING:
            raise InputError(f"weight averaging {self.averaging!r}: use {', '.join(AVERAGING)}")
        if self.recipe not in RECIPES:
            raise InputError(f"unknown training recipe {self.recipe!r}: use {', '.join(RECIPES)}")
        _positive_int("epochs", self.epochs)
        _positive_int("the minimum number of steps", self.min_steps, 0)
        if self.sampling not in SAMPLING:
            raise InputError(f"sampling {self.sampling!r}: use {', '.join(SAMPLING)}")
        if self.stop_folds == 1 or isinstance(self.stop_folds, bool):
            raise InputError("stop folds must be 0 (choose on the validation data) or 2 or more, not 1")
        _positive_int("stop folds", self.stop_folds, 0)
        if self.small_data not in SMALL_DATA:
            raise InputError(f"small data {self.small_data!r}: use {', '.join(SMALL_DATA)}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise InputError("batch size must be a whole number of at least 2 (BatchNorm layers that train need 2)")
        if not _finite_number("the learning rate", self.lr) > 0:
            raise InputError(f"the learning rate must be positive, not {self.lr!r}")
        if not _finite_number("weight decay", self.weight_decay) >= 0:
            raise InputError(f"weight decay must be zero or positive, not {self.weight_decay!r}")
        if not 0 <= _finite_number("label smoothing", self.label_smoothing) < 1:
            raise InputError(f"label smoothing must be in [0, 1), not {self.label_smoothing!r}")
        # numpy and torch take seeds from 0 to 2**32 - 1 (numpy) / 2**64 - 1 (torch)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise InputError(f"the seed must be a whole number from 0 to 4294967295, not {self.seed!r}")
        if not isinstance(self.base_weights, str) or not self.base_weights.strip():
            raise InputError(f"base weights must be imagenet, none or a file name, not {self.base_weights!r}")
        if not isinstance(self.augment, (bool, str, list, tuple)):
            raise InputError(f"augment must be none or a list such as {DEFAULT_AUGMENT!r}, not {self.augment!r}")
        self.augment = ",".join(parse_augment(self.augment)) or "none"
        if not isinstance(self.trainable, str):
            raise InputError(f"trainable must be text such as 'conv1,fc' or 'all', not {self.trainable!r}")
        parse_trainable(self.trainable)
        if self.schedule not in SCHEDULES:
            raise InputError(f"learning-rate schedule {self.schedule!r}: use {', '.join(SCHEDULES)}")
        if self.class_weighting not in CLASS_WEIGHTING:
            raise InputError(f"class weighting {self.class_weighting!r}: use {', '.join(CLASS_WEIGHTING)}")
        _positive_int("patience", self.patience, 0)
        if not 0 <= _finite_number("the held-out fraction", self.holdout) < 1:
            raise InputError(f"the held-out fraction must be in [0, 1), not {self.holdout!r}")
        if not isinstance(self.calibrate, bool):
            raise InputError(f"calibrate must be true or false, not {self.calibrate!r}")
        check_device_name(self.device)

    @property
    def augmentations(self) -> tuple[str, ...]:
        """The augmentations as a tuple of names (empty for none)."""
        return parse_augment(self.augment)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> TrainConfig:
        if d is not None and not isinstance(d, dict):
            raise InputError(f"training settings must be a mapping of names to values, not {type(d).__name__}")
        return cls(**_from_dict(cls, d, "training"))


def adapt_to_data(config: TrainConfig, counts: dict, has_validation: bool) -> tuple[TrainConfig, list[str]]:
    """The training config for these crops: with ``small_data="auto"`` and fewer than
    :data:`SMALL_DATA_PER_CLASS` labelled crops in a class, steps rather than epochs (at least
    :data:`SMALL_DATA_MIN_STEPS`), class-balanced batches (the loss unweighted: every class is learnt,
    rare ones included) with the calls weighted by the labels' class frequencies (``class_prior``:
    a class of 4 crops among 300 is not called as often as one of 169) and, without a validation set,
    the stopping step chosen on :data:`SMALL_DATA_FOLDS` folds of whole tracks.

    ``counts``: labelled training crops per class (classes with none are left out). Returns the
    config to train with and what was adapted, in words (for the record and the user).
    """
    present = {c: int(n) for c, n in counts.items() if n > 0}
    if config.small_data == "off" or not present or min(present.values()) >= SMALL_DATA_PER_CLASS:
        return config, []
    few = [f"{c} ({n})" for c, n in present.items() if n < SMALL_DATA_PER_CLASS]
    adapted = replace(config, min_steps=max(config.min_steps, SMALL_DATA_MIN_STEPS), sampling="balanced",
                      class_weighting="none", class_prior="labels",
                      stop_folds=config.stop_folds or (0 if has_validation else SMALL_DATA_FOLDS))
    how = [f"at least {adapted.min_steps} optimiser steps whatever the batch size (epochs lengthened as needed)",
           "class-balanced batches, the calls then weighted by how often each class is among the labels"]
    if adapted.stop_folds:
        how.append(f"the number of steps chosen on {adapted.stop_folds} folds of whole tracks of the training crops, "
                   "then trained on all of them")
    return adapted, [f"small data (under {SMALL_DATA_PER_CLASS} labelled crops of {', '.join(few)}): "
                     + "; ".join(how) + " (small_data=off trains as configured)"]


__all__ = [
    "AUGMENTATIONS", "AVERAGING", "CLASS_PRIORS", "ClassifyConfig", "RECIPES", "SAMPLING", "SCHEDULES",
    "SMALL_DATA", "SMALL_DATA_FOLDS", "SMALL_DATA_MIN_STEPS", "SMALL_DATA_PER_CLASS", "TRAINABLE_PRESETS",
    "TrainConfig", "adapt_to_data", "check_device_name", "class_name_problem", "parse_augment",
    "parse_class_names", "parse_trainable", "recipe_config"
]
