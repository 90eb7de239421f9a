"""One training step and the recipes' parts: the augmentations of training batches (never of validation
data), the weight average, class weights and the loss, the optimiser and its learning-rate schedule, the
batches of an epoch and the length of a run (:class:`_Optimiser` takes one step at a time), and the
deterministic CUDA settings."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DEFAULT_AUGMENT, TrainConfig, parse_augment
from ..data.cropset import CropSet


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


def epoch_batches(targets: np.ndarray, bs: int, steps: int, sampling: str, gen: torch.Generator) -> list:
    """The crops (indices) of the ``steps`` batches of one epoch: ``shuffle`` (a permutation: each crop
    once) or ``balanced`` (drawn with replacement, every present class equally likely)."""
    n = len(targets)
    if sampling == "balanced":
        counts = np.bincount(targets)
        w = torch.from_numpy(1.0 / counts[targets])
        idx = torch.multinomial(w, steps * bs, replacement=True, generator=gen)
    else:  # an epoch lengthened by min_steps is several passes, each a permutation of its own
        idx = torch.randperm(n, generator=gen)
        while len(idx) < steps * bs:
            idx = torch.cat([idx, torch.randperm(n, generator=gen)])
    return [idx[i * bs:(i + 1) * bs] for i in range(steps)]


def schedule_length(n: int, config: TrainConfig) -> tuple[int, int, int]:
    """``(batch size, steps per epoch, total steps)`` of a training on ``n`` crops: ``epochs`` passes, or
    ``min_steps`` steps when that is more.

    Where ``min_steps`` lengthens the run, each epoch is lengthened (not their number raised): the run keeps
    ``epochs`` epochs, each judged once. 200 steps on 100 crops in batches of 64 used to be 200 one-step
    epochs, each judged on the validation crops and its weights checked: 40% of a fine-tune's time on 2
    cores (docs/benchmarks.md), and the best epoch chosen among 200 noisy judgements rather than among
    the epochs asked.
    """
    bs = min(config.batch_size, n)
    per_pass = max(1, n // bs)
    total = max(per_pass * config.epochs, config.min_steps)
    return bs, max(per_pass, -(-total // max(1, config.epochs))), total


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


__all__ = ["WeightAverage", "augment_batch", "class_weights", "deterministic_cuda", "epoch_batches", "gaussian_blur",
           "schedule_length", "training_loss"]
