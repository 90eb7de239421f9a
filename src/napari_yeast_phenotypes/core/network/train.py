"""Training, honest evaluation, calibration, grouped cross-validation and the learning curve.

What the original study learnt shapes this module: the validation set is never augmented; the
figures a user decides on are per-class metrics on a hand-curated validation set (and grouped
cross-validation), not training curves; augmentation is flips, 90-degree rotations and mild
intensity changes (MixUp/CutMix did not help); a random split flatters the model.

Three roles of data in :func:`train_iter`: the *training* crops; the *selection* crops, on which
the best epoch is chosen (validation macro-F1), early stopping decides and the temperature is
fitted; and the *report* crops, on which the final figures are computed. The report crops are the
test split when one is given; else a part of the validation set held out from the choice (whole
tracks, or whole experiments where there are three or more); else, for sets too small to split,
the selection crops themselves, and the report says plainly that its figures are optimistic.
Without a validation set, a part of the training set (again whole tracks) becomes it.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Callable, Generator

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DEFAULT_AUGMENT, TrainConfig, adapt_to_data, parse_augment
from ..data.crops import CropSettings
from ..data.cropset import CropSet
from ..errors import InputError
from ..files.atomic import check_writable_file
from ..progress import run_to_end
from .base_weights import build_model
from .checkpoint import save_checkpoint
from .cpu_training import gemm_weight_grads
from .device import select_device
from .evaluation import (
    expected_calibration_error,
    few_classes,
    fingerprint_ids,
    fit_temperature,
    group_folds,
    grouping,
    holdout_groups,
    log_loss,
    metrics,
    scale_probabilities,
)
from .intervals import compare_paired, with_intervals
from .model import Classifier, non_finite
from .ood import summarise_training
from .predict import predict_crops

#: a set is split (a part held out) only from this many crops and three groups on: below that, a
#: held-out part is too small to say anything, and the report says its figures are optimistic
MIN_HOLDOUT_CROPS = 40


class TrainingDiverged(InputError):
    """The loss or the weights stopped being finite numbers (a learning rate too high, mostly)."""


class TrainingCancelled(InputError):
    """Cancelled before the first epoch ended: there is no model to keep."""


def _diverged(what: str, epoch: int, step: int | None, config: TrainConfig, out, best_epoch: int | None
              ) -> TrainingDiverged:
    where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
    kept = (f"{out} keeps the best epoch before that ({best_epoch})" if out is not None and best_epoch
            else "no checkpoint was written")
    return TrainingDiverged(
        f"training stopped in {where}: {what} became NaN or infinite, so the network learns nothing from "
        f"here on; {kept}. This usually means the learning rate ({config.lr:g}) is too high: train again "
        f"with a lower one (e.g. --lr {config.lr / 10:g})"
    )


def _weights_finite(model) -> bool:
    return not non_finite(model.state_dict())  # one sum per tensor: 12 ms, not 0.2-0.7 s of masks per epoch


def augment_batch(x: torch.Tensor, gen: torch.Generator, augment=DEFAULT_AUGMENT) -> torch.Tensor:
    """Random changes of a training batch (never of validation data).

    ``flips`` (left-right, up-down), ``rot90`` (turns by 90 degrees; with ``flips`` the eight
    symmetries of a square), ``affine`` (turns up to 15 degrees, scale 0.9-1.1, shifts up to 2
    pixels), ``blur`` (Gaussian, sigma up to 1 pixel: another objective or focus), ``intensity``
    (gain x0.82-1.22, offset +-0.03), ``microscope`` (what another microscope or exposure does to the
    normalised crop: gain x0.6-1.65, gamma 0.7-1.4, offset +-0.08), ``noise`` (Gaussian, sigma up to
    0.03). Applied in that order (geometry, optics, detector, noise).
    """
    names = parse_augment(augment)
    n = x.shape[0]
    out = x
    if "flips" in names or "rot90" in names:
        k = torch.randint(0, 4, (n,), generator=gen) if "rot90" in names else torch.zeros(n, dtype=torch.long)
        flip = torch.randint(0, 2, (n,), generator=gen).bool() if "flips" in names else torch.zeros(n, dtype=bool)
        out = torch.empty_like(x)
        for r in range(4):
            for f in (False, True):
                sel = (k == r) & (flip == f)
                if sel.any():
                    v = torch.rot90(x[sel], r, dims=(2, 3))
                    out[sel] = v.flip(3) if f else v
        # rot90 and one flip give all eight symmetries; flips alone need the up-down flip too
        if "flips" in names and "rot90" not in names:
            ud = torch.randint(0, 2, (n,), generator=gen).bool()
            out[ud] = out[ud].flip(2)
    if "affine" in names:
        ang = torch.empty(n).uniform_(-15, 15, generator=gen) * math.pi / 180
        scale = torch.empty(n).uniform_(0.9, 1.1, generator=gen)
        shift = torch.empty(n, 2).uniform_(-2, 2, generator=gen) * 2 / x.shape[-1]
        cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(out.dtype), list(out.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if "blur" in names:
        out = gaussian_blur(out, torch.empty(n).uniform_(0.0, 1.0, generator=gen))
    if "intensity" in names:
        gain = torch.exp(torch.empty(n, 1, 1, 1).uniform_(-0.2, 0.2, generator=gen))
        offset = torch.empty(n, 1, 1, 1).uniform_(-0.03, 0.03, generator=gen)
        out = out * gain + offset
    if "microscope" in names:
        gamma = torch.exp(torch.empty(n, 1, 1, 1).uniform_(math.log(0.7), math.log(1.4), generator=gen))
        gain = torch.exp(torch.empty(n, 1, 1, 1).uniform_(math.log(0.6), math.log(1.65), generator=gen))
        offset = torch.empty(n, 1, 1, 1).uniform_(-0.08, 0.08, generator=gen)
        out = torch.sign(out) * out.abs().pow(gamma) * gain + offset
    if "noise" in names:
        sigma = torch.empty(n, 1, 1, 1).uniform_(0, 0.03, generator=gen)
        out = out + sigma * torch.randn(out.shape, generator=gen)
    return out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Each crop of ``x`` (N, 1, H, W) blurred with its own Gaussian of ``sigma`` (N,) pixels (0: as it is);
    separable, as one grouped convolution per axis, edges repeated."""
    n = x.shape[0]
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # (N, 2r+1); sigma near 0: a delta
    y = F.pad(x.reshape(1, n, *x.shape[2:]), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k[:, None, :, None], groups=n)  # along rows
    y = F.conv2d(y, k[:, None, None, :], groups=n)  # along columns
    return y.reshape(x.shape)


class WeightAverage:
    """An exponential moving average of a model's weights and BatchNorm statistics, kept in a copy of it.

    ``decay`` is reached after a short warm-up (``min(decay, (1 + t) / (10 + t))`` at step ``t``), so the
    first steps do not weigh the random start. The copy is what is evaluated, chosen and saved.
    """

    def __init__(self, model, total_steps: int):
        import copy

        self.model = copy.deepcopy(model)
        self.model.eval()
        # about the last quarter of the run
        self.decay = float(min(0.9999, max(0.9, 1.0 - 4.0 / max(total_steps, 1))))
        self.steps = 0

    @torch.no_grad()
    def update(self, model) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                v.lerp_(src[k].to(v.dtype), 1.0 - d)
            else:
                v.copy_(src[k])


def class_weights(targets: np.ndarray, n_classes: int, mode: str = "balanced") -> torch.Tensor | None:
    """Loss weights per class: ``balanced`` makes every present class weigh the same in the loss
    (weight proportional to 1 / its number of crops), ``none`` gives ``None`` (every crop the same)."""
    if mode == "none":
        return None
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def training_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy; with ``weights`` the weighted mean ``sum(w_y * loss) / sum(w_y)``."""
    return F.cross_entropy(logits, y, weight=weights, label_smoothing=label_smoothing)


def batch_loss(model, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, augmentations=DEFAULT_AUGMENT,
               weights: torch.Tensor | None = None, label_smoothing: float = 0.0, device="cpu",
               memory_format=torch.channels_last) -> torch.Tensor:
    """The loss of one training batch as :func:`train_iter` computes it (the benchmark times the same).

    ``x`` is augmented (training batches only; no ``augmentations``: as it is), moved to ``device``
    in ``memory_format`` (channels-last: oneDNN's convolutions run without layout conversions,
    13-19% faster training steps on CPU, benchmarks/README.md), then :func:`training_loss`.
    """
    if augmentations:
        x = augment_batch(x, gen, augmentations)
    x = x.to(device).contiguous(memory_format=memory_format)
    return training_loss(model(x), y.to(device), weights, label_smoothing)


def make_optimizer(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW, fused where this torch has it for the parameters' device.

    The fused update is one kernel over all parameters instead of a loop of small ones: with
    every layer trained (25 M parameters) it took the optimiser step from 73 to 28 ms per batch of
    64 on a 2-core CPU (benchmarks/README.md). Same arithmetic; torch before 2.4 has no fused CPU
    AdamW, and then the plain one is used.
    """
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """Multiplier of the learning rate at ``step`` of ``total``: linear warm-up, then the schedule."""
    w = min(1.0, (step + 1) / warmup)
    if schedule == "cosine":
        return w * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if schedule == "step":
        return w * (0.1 if step >= 2 * total // 3 else 1.0)
    return w


def predict_probabilities(model, data: CropSet, batch_size: int = 128, device="cpu") -> np.ndarray:
    """Softmax probabilities (N, C) of ``data`` (never augmented); non-finite outputs refused."""
    probs = predict_crops(model, data.crops, batch_size, device)
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        raise TrainingDiverged(f"the network's outputs for {int(bad.sum())} of {len(bad)} crops are NaN or infinite: "
                               "its weights are broken (a training that diverged); lower the learning rate (--lr)")
    return probs


def evaluate(model, data: CropSet, batch_size: int = 128, device="cpu") -> dict:
    """Metrics of ``model`` on ``data`` (never augmented)."""
    probs = predict_probabilities(model, data, batch_size, device)
    return metrics(data.targets, probs.argmax(axis=1), data.class_names)


def _grouping(data: CropSet) -> tuple[np.ndarray, str]:
    return grouping(data.tracks, data.groups, len(data))


def _held_out(data: CropSet, fraction: float, seed: int) -> tuple[np.ndarray, str] | None:
    """A mask of whole groups to hold out of ``data``, and what the groups are; ``None`` if too small."""
    if fraction <= 0 or len(data) < MIN_HOLDOUT_CROPS:
        return None
    groups, by = _grouping(data)
    if len(np.unique(groups.astype(str))) < 3:
        return None
    mask = holdout_groups(groups, fraction, seed)
    return (mask, by) if 0 < mask.sum() < len(data) else None


def plan_splits(train: CropSet, val: CropSet | None, test: CropSet | None, config: TrainConfig,
                folds: dict | None = None) -> dict:
    """Which crops train, which choose the epoch (and calibrate), which give the final figures.

    ``folds``: the number of steps was chosen on folds of the training crops (:func:`steps_by_folds`):
    every training crop trains, the folds' out-of-fold calls calibrate, and the final figures are
    on the test crops, else on those out-of-fold calls.

    Returns ``{"train", "select", "report", "report_on", "optimistic", "notes"}`` (``select`` and
    ``report`` may be ``None`` for sets too small to hold anything out).
    """
    notes = []
    if folds is not None:
        k, at = folds["folds"], folds["steps"]
        notes.append(f"the number of optimiser steps ({at} of a schedule of {folds['total']}) was chosen on {k} folds "
                     f"of whole {folds['by']}s of the training crops; the model then learnt all {len(train)} of them")
        select_on = f"the out-of-fold calls of those {k} folds ({len(train)} crops)"
        if test is not None and len(test):
            return {"train": train, "select": train, "report": test, "optimistic": False, "notes": notes,
                    "select_on": select_on,
                    "report_on": f"the test split ({len(test)} crops), which no choice was made on (the number of "
                                 f"steps, {at}, was chosen on {k} folds of whole {folds['by']}s of the training crops)"}
        return {"train": train, "select": train, "report": train, "optimistic": True, "notes": notes,
                "select_on": select_on,
                "report_on": f"the out-of-fold calls of {k} folds of whole {folds['by']}s of the {len(train)} "
                             f"training crops at step {at} (each crop judged by a model that did not learn it; the "
                             "step was chosen on them, so slightly optimistic; the final model learnt all of them)"}
    if val is None or len(val) == 0:
        got = _held_out(train, config.holdout, config.seed)
        if got is None:
            notes.append(f"no validation set, and {len(train)} training crops are too few to hold a part out "
                         f"(from {MIN_HOLDOUT_CROPS} crops in 3 or more tracks on): the last epoch is kept and "
                         "the figures are on the training data, which flatter")
            return {"train": train, "select": None, "report": train, "optimistic": True,
                    "report_on": "the training data (optimistic: the model learnt them)", "notes": notes}
        mask, by = got
        notes.append(f"no validation set: {int(mask.sum())} of {len(train)} training crops (whole {by}s) are held "
                     "out as validation data; a hand-curated validation set of other experiments is better")
        train, val = train.subset(np.flatnonzero(~mask)), train.subset(np.flatnonzero(mask))
    if test is not None and len(test):
        return {"train": train, "select": val, "report": test, "optimistic": False,
                "report_on": f"the test split ({len(test)} crops), which no choice was made on", "notes": notes}
    got = _held_out(val, config.holdout, config.seed + 1)
    if got is None:
        notes.append(f"the validation data ({len(val)} crops) are too few to hold a part out: the best epoch and "
                     "the temperature are chosen on the same crops as the figures, which are therefore optimistic")
        return {"train": train, "select": val, "report": val, "optimistic": True,
                "report_on": f"the validation data the best epoch was chosen on ({len(val)} crops; optimistic)",
                "notes": notes}
    mask, by = got
    return {"train": train, "select": val.subset(np.flatnonzero(~mask)), "report": val.subset(np.flatnonzero(mask)),
            "optimistic": False, "notes": notes,
            "report_on": f"{int(mask.sum())} validation crops (whole {by}s) held out from the choice of the best "
                         f"epoch and from calibration; the other {int((~mask).sum())} chose them"}


def check_held_out(train: CropSet, other: CropSet, what: str, against: str = "training") -> None:
    """Refuse ``other`` (validation or test crops) when it shares crops with ``train``: by pixels (the same
    crop under another name, or the same folder given twice) or by cell (one track on both sides).

    Figures on crops the model learnt from would be called held out while they flatter.
    """
    seen = {}
    for i, c in enumerate(train.crops):
        seen.setdefault(hashlib.sha256(c.tobytes()).digest(), i)
    same = [(j, seen[d]) for j, c in enumerate(other.crops) if (d := hashlib.sha256(c.tobytes()).digest()) in seen]
    ids_t, ids_o = crop_ids(train), crop_ids(other)
    if same:
        j, i = same[0]
        whole = "all" if len(same) == len(other) else f"{len(same)} of the {len(other)}"
        raise InputError(f"{whole} {what} crops are also {against} crops (the same pixels: e.g. {ids_o[j]} is "
                         f"{ids_t[i]}), so figures on them would not be held out. Give {what} crops the model does "
                         f"not learn from (another folder, or the set's {what} split), or none: a part of the "
                         "training set, whole tracks, is then held out")
    if train.tracks is not None and other.tracks is not None:
        shared = set(map(str, train.tracks)) & set(map(str, other.tracks))
        if shared:
            raise InputError(f"{len(shared)} cell(s) have crops among both the {against} and the {what} crops (e.g. "
                             f"{sorted(shared)[0]}); the frames of one cell look alike, so figures on them would not "
                             f"be held out. Keep each cell's crops on one side")


def unfinished_record(epoch: int, epochs: int) -> str:
    """The ``stopped`` record of a checkpoint written while training still runs (each better epoch)."""
    return (f"not finished: written after epoch {epoch} of {epochs} while the training ran; it was interrupted "
            "before the end (or is still running), so this model was not calibrated nor judged on its report crops")


def crop_ids(data: CropSet) -> list[str]:
    """The ids of the crops (their file names without suffix; their index when they have no file)."""
    return [Path(p).stem for p in data.paths] if data.paths else [f"#{i}" for i in range(len(data))]


def training_set_fingerprint(data: CropSet) -> dict:
    """What identifies the crops a model learnt from: their ids, the ids' hash, the pixels' hash."""
    from ..files.fingerprint import array_sha256

    ids = crop_ids(data)
    return {"n": len(ids), "counts": data.counts(), "crop_ids": ids, "ids_sha256": fingerprint_ids(ids),
            "crops_sha256": array_sha256(data.crops), "origin": data.origin or {"kind": "unknown"}}


def fold_temperature(model, temperature: float) -> None:
    """Divide the logits by ``temperature`` for good: the last layer's weights and bias are scaled."""
    with torch.no_grad():
        model.fc.weight.div_(temperature)
        model.fc.bias.div_(temperature)


def deterministic_cuda(device) -> bool:
    """On a CUDA device, ask for the same result from the same seed where it costs little: cuDNN's
    deterministic kernels and no autotuning, cuBLAS's fixed workspace, and torch's deterministic algorithms
    (a warning, not an error, where an operation has none). For the rest of the process (inference after
    it as well). Not measured here (no GPU on the machines this was written on). Returns whether it applied."""
    if torch.device(device).type != "cuda":
        return False
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts its handle
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    return True


def log_prior(data: CropSet, config: TrainConfig) -> np.ndarray | None:
    """The log of the training crops' class frequencies, added to the calls with ``class_prior="labels"``
    (``None``: the uniform prior, nothing added)."""
    if config.class_prior != "labels":
        return None
    counts = np.bincount(data.targets, minlength=len(data.class_names)).astype(np.float64)
    return np.log(np.maximum(counts, 0.5) / counts.sum())


def with_prior(probs: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """``probs`` reweighted by the class prior ``exp(prior)`` and renormalised (as when it is in the bias)."""
    if prior is None:
        return probs
    q = np.asarray(probs, dtype=np.float64) * np.exp(prior - prior.max())[None]
    return (q / q.sum(axis=1, keepdims=True)).astype(np.float32)


def fold_prior(model, prior: np.ndarray | None) -> None:
    """Add the log class prior to the last layer's bias for good: every path that classifies with the
    checkpoint makes the calls :func:`with_prior` describes."""
    if prior is None:
        return
    with torch.no_grad():
        model.fc.bias.add_(torch.as_tensor(prior, dtype=model.fc.bias.dtype, device=model.fc.bias.device))


def epoch_batches(targets: np.ndarray, bs: int, steps: int, sampling: str, gen: torch.Generator) -> list:
    """The crops (indices) of the ``steps`` batches of one epoch: ``shuffle`` (a permutation: each crop
    once) or ``balanced`` (drawn with replacement, every present class equally likely)."""
    n = len(targets)
    if sampling == "balanced":
        counts = np.bincount(targets)
        w = torch.from_numpy(1.0 / counts[targets])
        idx = torch.multinomial(w, steps * bs, replacement=True, generator=gen)
    else:
        idx = torch.randperm(n, generator=gen)
    return [idx[i * bs:(i + 1) * bs] for i in range(steps)]


def schedule_length(n: int, config: TrainConfig) -> tuple[int, int, int]:
    """``(batch size, steps per epoch, total steps)`` of a training on ``n`` crops: ``epochs`` passes, or
    ``min_steps`` steps when that is more."""
    bs = min(config.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    return bs, steps_per_epoch, max(steps_per_epoch * config.epochs, config.min_steps)


class _Optimiser:
    """The model's optimiser, learning-rate schedule and loss weights: one training step at a time."""

    def __init__(self, model, data: CropSet, config: TrainConfig, total: int, device):
        self.model, self.config, self.device = model, config, device
        self.opt = make_optimizer([p for p in model.parameters() if p.requires_grad], config.lr, config.weight_decay)
        warmup = max(1, min(total // 10, 100))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt,
                                                       lambda s: lr_factor(config.schedule, s, total, warmup))
        # balanced batches already weigh every class the same: the loss does not weigh them again
        mode = "none" if config.sampling == "balanced" else config.class_weighting
        w = class_weights(data.targets, len(data.class_names), mode)
        self.weights = w.to(device) if w is not None else None
        self.x, self.y = torch.from_numpy(data.crops), torch.from_numpy(data.targets)
        self.average = WeightAverage(model, total) if config.averaging == "ema" else None

    @property
    def judged(self):
        """The model that is evaluated, chosen and saved: the weight average when there is one."""
        return self.average.model if self.average is not None else self.model

    def step(self, idx, gen) -> torch.Tensor:
        loss = batch_loss(self.model, self.x[idx], self.y[idx], gen, self.config.augmentations, self.weights,
                          self.config.label_smoothing, self.device)
        if bool(torch.isfinite(loss)):
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            if self.average is not None:
                self.average.update(self.model)
        return loss

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])


def steps_by_folds(train: CropSet, config: TrainConfig, device="cpu",
                   should_stop: Callable[[], bool] | None = None) -> Generator[dict, None, dict | None]:
    """Choose how many optimiser steps to train for on ``config.stop_folds`` folds of whole tracks of ``train``.

    Each fold's model trains on the other folds with the full schedule and is judged on its own
    crops at ten evenly spaced steps; the step whose pooled out-of-fold macro-F1 is highest (the
    later one of a tie) is chosen. Yields progress dicts (with ``fold``); returns ``{"steps",
    "total", "by", "curve": [{"step", "macro_f1", "accuracy"}], "probs"}`` (``probs``: the
    out-of-fold probabilities at the chosen step, in the order of ``train``), or ``None`` when
    there are too few tracks to make the folds (or when cancelled).
    """
    k = config.stop_folds
    groups, by = grouping(train.tracks, None, len(train))
    if len(np.unique(groups.astype(str))) < max(k, 2) * 2:
        return None
    folds = group_folds(groups, k, config.seed)
    _, _, total = schedule_length(len(train) - min(len(f) for f in folds), config)
    eval_at = sorted({max(1, int(round(total * f))) for f in np.linspace(0.1, 1.0, 10)})
    n_classes = len(train.class_names)
    prior = log_prior(train, config)
    probs = np.zeros((len(eval_at), len(train), n_classes), dtype=np.float32)
    for i, held in enumerate(folds):
        part = train.subset(np.setdiff1d(np.arange(len(train)), held))
        judge = train.subset(held)
        torch.manual_seed(config.seed + 1000 * (i + 1))
        gen = torch.Generator().manual_seed(config.seed + 1000 * (i + 1))
        model = build_model(n_classes, config.base_weights, config.trainable).to(device,
                                                                                 memory_format=torch.channels_last)
        opt = _Optimiser(model, part, config, total, device)
        bs, steps_per_epoch, _ = schedule_length(len(part), config)
        step = 0
        while step < total:
            model.train()
            with gemm_weight_grads(model, device):
                for idx in epoch_batches(part.targets, bs, steps_per_epoch, config.sampling, gen):
                    loss = opt.step(idx, gen)
                    if not bool(torch.isfinite(loss)):
                        raise TrainingDiverged(f"choosing when to stop, fold {i + 1}: the loss became NaN or "
                                               f"infinite at step {step + 1}; lower the learning rate (--lr "
                                               f"{config.lr / 10:g})")
                    step += 1
                    yield {"fold": i + 1, "folds": k, "epoch": i + 1, "epochs": k, "step": step, "steps": total,
                           "loss": float(loss.item())}
                    if step in eval_at:
                        model.eval()
                        probs[eval_at.index(step), held] = predict_probabilities(opt.judged, judge, device=device)
                        model.train()
                    if should_stop is not None and should_stop():
                        return None
                    if step >= total:
                        break
    curve = []
    for j, at in enumerate(eval_at):
        m = metrics(train.targets, with_prior(probs[j], prior).argmax(axis=1), train.class_names)
        point = {"step": at, "macro_f1": round(m["macro_f1"], 4), "accuracy": round(m["accuracy"], 4)}
        if prior is not None:  # what the calls would be without the labels' prior (for the record)
            u = metrics(train.targets, probs[j].argmax(axis=1), train.class_names)
            point.update(macro_f1_uniform_prior=round(u["macro_f1"], 4), accuracy_uniform_prior=round(u["accuracy"], 4))
        curve.append(point)
    best = max(range(len(eval_at)), key=lambda j: (curve[j]["macro_f1"], j))
    return {"steps": eval_at[best], "total": total, "by": by, "folds": k, "curve": curve,
            "probs": with_prior(probs[best], prior)}


def train_iter(train: CropSet, val: CropSet | None, config: TrainConfig = TrainConfig(),
               crop_settings: CropSettings = CropSettings(), out: str | Path | None = None,
               should_stop: Callable[[], bool] | None = None, *, test: CropSet | None = None,
               previous=None, metadata: dict | None = None) -> Generator[dict, None, Classifier]:
    """Train; yields progress dicts, returns the best :class:`Classifier`, calibrated, with its report.

    ``metadata``: plain values kept in the checkpoint's record besides what training measures (e.g. the
    classes that are not labelled yet).

    The config is first adapted to the data (:func:`~napari_yeast_phenotypes.core.config.adapt_to_data`:
    small data train for steps rather than epochs, on class-balanced batches, and without a
    validation set stop where folds of whole tracks say: :func:`steps_by_folds`).

    After every epoch that improves the validation macro-F1 (or every epoch without validation
    data), the checkpoint is written atomically to ``out``, so a crash or a cancel (``should_stop``
    returning True) keeps the best model so far. At the end (also after a cancel or an early stop)
    the best epoch is calibrated, evaluated on the report crops (see the module notes), compared
    with ``previous`` (a :class:`Classifier`) on the same crops, and saved with its record.

    Yields ``{"epoch", "epochs", "step", "steps", "loss"}`` per batch (with ``fold`` while folds
    choose when to stop) and, per epoch, ``{"done_epoch": True, "train_loss", "val_loss",
    "val_accuracy", "val_macro_f1", ...}``.
    """
    if len(train) == 0:
        raise InputError("the training set is empty")
    if out is not None:
        check_writable_file(out, overwrite=True)  # before the first epoch, not after it
    train.check_finite("the training set")
    for other, what in ((val, "validation"), (test, "test")):
        if other is not None and tuple(other.class_names) != tuple(train.class_names):
            raise InputError(f"training and {what} sets use different class lists")
        if other is not None:
            other.check_finite(f"the {what} set")
            check_held_out(train, other, what)
    if val is not None and test is not None:
        check_held_out(val, test, "test", "validation")
    asked = config
    config, adapted = adapt_to_data(config, train.counts(), val is not None and len(val) > 0)
    device = select_device(config.device)
    deterministic_cuda(device)
    folds = None
    if config.stop_folds and (val is None or len(val) == 0):
        folds = yield from steps_by_folds(train, config, device, should_stop)
        if folds is None and should_stop is not None and should_stop():
            raise TrainingCancelled("training was cancelled while folds chose when to stop: no model was kept")
        if folds is None:
            adapted.append(f"too few tracks ({len(np.unique(np.asarray(train.tracks).astype(str)))}) for "
                           f"{config.stop_folds} folds: a part of the training crops is held out instead")
    plan = plan_splits(train, val, test, config, folds)
    train, select, report_set = plan["train"], plan["select"], plan["report"]
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    n_classes = len(train.class_names)
    # channels-last layout: oneDNN runs the convolutions without layout conversions (measured
    # 13-19% faster training steps on CPU, benchmarks/README.md)
    model = build_model(n_classes, config.base_weights, config.trainable).to(device,
                                                                             memory_format=torch.channels_last)
    n = len(train)
    bs, steps_per_epoch, total = schedule_length(n, config)
    stop_at = total
    if folds is not None:  # the folds' schedule, stopped where they were best
        total, stop_at = folds["total"], folds["steps"]
    epochs = -(-stop_at // steps_per_epoch)
    opt = _Optimiser(model, train, config, total, device)
    prior = log_prior(train, config)  # the calls' class prior: in the choice of the epoch, then in the bias
    history, best, best_state, best_epoch = [], -1.0, None, None
    best_metrics = best_probs = None
    info = {**(metadata or {}), "class_counts_train": train.counts(),
            "class_counts_val": select.counts() if select is not None and folds is None else None,
            "train_notes": train.notes + adapted + plan["notes"],
            "crop_origin": train.origin or {"kind": "unknown"},
            "training_set": training_set_fingerprint(train),
            "effective_training": config.to_dict(), "steps": stop_at,
            "stopping_folds": None if folds is None else {k: v for k, v in folds.items() if k != "probs"}}
    record_config = asked.to_dict()
    t0 = time.perf_counter()
    seen, stopped, done = 0, None, 0
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        steps = min(steps_per_epoch, stop_at - done)
        # on the CPU the convolutions' weight gradients are GEMMs in the training steps (core/cpu_training.py;
        # evaluation and the checkpoint see plain convolutions)
        with gemm_weight_grads(model, device):
            for step, idx in enumerate(epoch_batches(train.targets, bs, steps, config.sampling, gen)):
                loss = opt.step(idx, gen)
                if not bool(torch.isfinite(loss)):
                    raise _diverged("the loss", epoch, step + 1, config, out, best_epoch)
                losses.append(loss.item())
                seen += len(idx)
                done += 1
                yield {"epoch": epoch, "epochs": epochs, "step": step + 1, "steps": steps_per_epoch,
                       "loss": losses[-1]}
                if should_stop is not None and should_stop():
                    stopped = "cancelled"
                    break
        if stopped and step + 1 < steps and best_state is not None:
            break  # a part-epoch is not a model to judge: the best whole epoch is kept
        judge = opt.judged  # the weight average, when there is one
        if not _weights_finite(model) or not _weights_finite(judge):  # the last step may have broken them
            raise _diverged("the weights", epoch, None, config, out, best_epoch)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                  "crops_per_s": seen / max(time.perf_counter() - t0, 1e-9), "lr": opt.lr, "steps_done": done}
        judged = select is not None and len(select) and folds is None
        try:
            if judged:
                probs = with_prior(predict_probabilities(judge, select, device=device), prior)
                m = metrics(select.targets, probs.argmax(axis=1), select.class_names)
            else:  # no validation data: the checkpoint must still compute numbers
                predict_probabilities(judge, train.subset(np.arange(min(n, 32))), device=device)
        except TrainingDiverged:
            raise _diverged("the network's outputs (in evaluation mode)", epoch, None, config, out, best_epoch) \
                from None
        if judged:
            record.update(val_loss=log_loss(probs, select.targets), val_accuracy=m["accuracy"],
                          val_balanced_accuracy=m["balanced_accuracy"], val_macro_f1=m["macro_f1"])
            score = m["macro_f1"]
        else:
            m, score = None, float(epoch)
        history.append(record)
        if score > best:
            best, best_epoch, best_metrics = score, epoch, m
            best_probs = probs if m is not None else None
            best_state = {k: v.detach().clone() for k, v in judge.state_dict().items()}
            if out is not None:
                # what this file says until the training ends: a SIGINT, a crash or a kill leaves it so
                save_checkpoint(out, Classifier(judge, train.class_names, crop_settings),
                                base_weights=config.base_weights, training=record_config, history=history,
                                validation=m, best_epoch=epoch, stopped=unfinished_record(epoch, epochs),
                                **info)
        elif config.patience and epoch - best_epoch >= config.patience:
            stopped = f"stopped early: the validation macro-F1 has not improved for {config.patience} epochs"
        yield {"epoch": epoch, "epochs": epochs, "done_epoch": True, "best_epoch": best_epoch, **record}
        if stopped or (should_stop is not None and should_stop()):
            stopped = stopped or "cancelled"
            break
    if best_state is None:
        raise TrainingCancelled("training was cancelled before its first epoch ended: no model was kept")
    model.load_state_dict(best_state)
    model.eval()
    fold_prior(model, prior)  # the probabilities of the choice (best_probs, the folds') already have it
    if best_metrics is not None and best_probs is not None:
        sel_pred = best_probs.argmax(axis=1)
        with_intervals(best_metrics, select.targets, sel_pred, select.tracks)
    clf = Classifier(model, train.class_names, crop_settings)
    if folds is not None:  # calibrated on (and, without test crops, judged on) the folds' out-of-fold calls
        best_probs = folds["probs"]
    evaluation = _final_report(clf, select, report_set, plan, config, device, previous, best_probs)
    meta = {"base_weights": config.base_weights, "training": record_config, "history": history,
            "best_epoch": best_epoch, "stopped": stopped or "finished", "validation": best_metrics,
            "report": evaluation["record"], "calibration": evaluation["calibration"], **info}
    clf.metadata = meta
    clf.evaluation = evaluation
    # a summary of the training crops, so a movie unlike them is said (core/ood.py)
    clf.ood = summarise_training(model, train, None if folds is not None else (select if select is not None else val),
                                 device=device, seed=config.seed)
    if out is not None:
        save_checkpoint(out, clf)
    return clf


def _final_report(clf: Classifier, select: CropSet | None, report: CropSet, plan: dict, config: TrainConfig,
                  device, previous, sel_probs: np.ndarray | None = None) -> dict:
    """Calibrate on the selection crops, judge on the report crops, compare with ``previous``.

    ``sel_probs``: the best epoch's probabilities on the selection crops, if at hand.
    """
    t = 1.0
    cal = {"temperature": 1.0, "fitted_on": None}
    if select is not None and sel_probs is None:
        sel_probs = predict_probabilities(clf.model, select, device=device)
    if config.calibrate and select is not None and len(select) >= 2:
        t = fit_temperature(sel_probs, select.targets)
        cal = {"temperature": round(t, 4),
               "fitted_on": plan.get("select_on") or f"{len(select)} validation crops (the selection part)",
               "ece_before_on_those": round(expected_calibration_error(sel_probs, select.targets), 4),
               "ece_after_on_those": round(expected_calibration_error(scale_probabilities(sel_probs, t),
                                                                      select.targets), 4)}
    before = sel_probs if report is select else predict_probabilities(clf.model, report, device=device)
    after = scale_probabilities(before, t) if t != 1.0 else before
    pred = after.argmax(axis=1)
    m = with_intervals(metrics(report.targets, pred, report.class_names), report.targets, pred, report.tracks)
    record = {"on": plan["report_on"], "optimistic": plan["optimistic"], "n": len(report), "metrics": m,
              "ece_before": round(expected_calibration_error(before, report.targets), 4),
              "ece_after": round(expected_calibration_error(after, report.targets), 4),
              "log_loss_before": round(log_loss(before, report.targets), 4),
              "log_loss_after": round(log_loss(after, report.targets), 4),
              "few_classes": few_classes(m), "notes": plan["notes"], "previous": None, "comparison": None}
    cal.update(ece_before=record["ece_before"], ece_after=record["ece_after"], measured_on=plan["report_on"])
    if previous is not None:
        _compare_with_previous(record, previous, report, pred, device)
    if t != 1.0:
        fold_temperature(clf.model, t)  # the checkpoint gives calibrated probabilities everywhere
    return {"record": record, "calibration": cal, "targets": report.targets, "before": before, "after": after,
            "report_set": report}


#: the column of a previous model's calls of classes the new model does not have (counted wrong)
OTHER_CLASSES = "(other classes)"


def _compare_with_previous(record: dict, previous, report: CropSet, pred: np.ndarray, device) -> None:
    """Judge ``previous`` on the report crops and add its figures and the paired verdict to ``record``.

    A previous model with more classes (the new one calls only the classes labelled so far) is
    judged by its own calls: a call of a class the new model does not have is wrong, counted in a
    column of its own (``(other classes)``), so neither model is flattered.
    """
    names = tuple(report.class_names)
    prev_names = tuple(previous.class_names)
    if not set(names) <= set(prev_names):
        missing = ", ".join(c for c in names if c not in prev_names)
        record["notes"] = [*record["notes"], f"the previous model does not have the classes {missing}: not compared"]
        return
    probs = predict_probabilities(previous.model, report, device=device)
    where = {c: i for i, c in enumerate(names)}
    extra = names != prev_names and len(prev_names) > len(names)
    as_new = np.array([where.get(c, len(names)) for c in prev_names])  # other classes -> the extra column
    prev_pred = as_new[probs.argmax(axis=1)]
    judged = (*names, OTHER_CLASSES) if extra else names
    record["previous"] = with_intervals(metrics(report.targets, prev_pred, judged), report.targets, prev_pred,
                                        report.tracks)
    if names == prev_names:
        record["previous"]["ece"] = round(expected_calibration_error(probs, report.targets), 4)
    else:
        record["notes"] = [*record["notes"], (f"the previous model has {len(prev_names)} classes; on these crops its "
                                              f"calls of the {len(prev_names) - len(names)} the new model does not "
                                              "have count as wrong")]
    # the verdict: the same resampled tracks for both models (a paired bootstrap of the difference)
    record["comparison"] = compare_paired(report.targets, pred, prev_pred, judged, report.tracks)


def train(train_set: CropSet, val_set: CropSet | None = None, config: TrainConfig = TrainConfig(),
          crop_settings: CropSettings = CropSettings(), out=None, progress=None, *, test: CropSet | None = None,
          previous=None) -> Classifier:
    """Train to the end (see :func:`train_iter`); ``progress`` gets every progress dict."""
    return run_to_end(train_iter(train_set, val_set, config, crop_settings, out, test=test, previous=previous),
                      progress)


__all__ = ["TrainingCancelled", "TrainingDiverged", "WeightAverage", "augment_batch", "class_weights",
           "deterministic_cuda", "epoch_batches", "evaluate", "fold_prior", "fold_temperature", "gaussian_blur",
           "plan_splits", "predict_probabilities", "schedule_length", "steps_by_folds", "train", "train_iter",
           "training_loss", "training_set_fingerprint", "with_prior"]
