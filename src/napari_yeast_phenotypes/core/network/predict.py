"""Crops in, class probabilities out, in batches under ``inference_mode``.

:func:`predict_crops` serves metrics (training, validation, cross-validation) and is always fp32;
:class:`BatchStream` serves the movie pipeline, keeping every forward pass a full batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .cpu_inference import InferenceForward, inference_forward
from .device import default_batch_size, select_device

# predict_crops builds a copy only for this many crops or more (building takes a fraction of a
# second, which a few hundred crops do not repay); the movie pipeline always does, movies being long
_FAST_MIN_CROPS = 1024


def _n_classes(model: torch.nn.Module) -> int:
    return getattr(getattr(model, "fc", None), "out_features", 0)


def host_tensor(crops: np.ndarray, device: torch.device) -> torch.Tensor:
    """``crops`` as a float32 tensor in host memory, ready to go to ``device``: pinned (page-locked) for a CUDA
    GPU, so that copies of its batches run without blocking and overlap the network; as it is otherwise (no copy
    when ``crops`` are contiguous float32)."""
    x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))
    return x.pin_memory() if torch.device(device).type == "cuda" else x


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on ``device``: without blocking from pinned memory (CUDA), not copied where it already is."""
    device = torch.device(device)
    return x.to(device, non_blocking=device.type == "cuda")


def predict_batches(forward: Callable[[torch.Tensor], torch.Tensor], crops: np.ndarray, batch_size: int,
             device: torch.device) -> np.ndarray:
    """Softmax probabilities (N, C) of ``crops`` through ``forward``, ``batch_size`` crops at a time.

    The probabilities stay on the device until every batch has been queued: one wait for the device per
    call, not one per batch (a GPU works through the queue meanwhile).
    """
    out = []
    with torch.inference_mode():
        host = host_tensor(crops, device)
        for a in range(0, len(crops), batch_size):
            out.append(torch.softmax(forward(to_device(host[a:a + batch_size], device)).float(), dim=1))
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), np.float32)


def predict_crops(model: torch.nn.Module, crops: np.ndarray, batch_size: int = 64,
                  device: torch.device | str = "cpu", fast_path: bool = True) -> np.ndarray:
    """Class probabilities (N, C) for crops (N, 1, S, S), in batches under ``inference_mode``.

    On the CPU, 1024 crops or more go through the fp32 inference-only copy of the model (see the
    module notes), fewer through the model itself unless a copy for its current weights exists.
    Always fp32: metrics on crop sets (training, validation) must not depend on the CPU.
    """
    device = select_device(device)
    model.eval().to(device)
    if len(crops) == 0:
        return np.zeros((0, _n_classes(model)), np.float32)
    sample = torch.from_numpy(np.ascontiguousarray(crops[:batch_size], dtype=np.float32)).to(device)
    forward = inference_forward(model, device, sample, build=len(crops) >= _FAST_MIN_CROPS, precision="fp32",
                                fast_path=fast_path)
    return predict_batches(forward, crops, batch_size, device)


def predict_batches_scored(forward: InferenceForward, crops: np.ndarray, batch_size: int, device: torch.device,
                           score: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`predict_batches`, and ``score(features, crops)`` of each batch from the same pass.

    Only one batch of features is held at a time (they are 2048 numbers a crop).
    """
    out, scores = [], []
    with torch.inference_mode():
        host = host_tensor(crops, device)
        for a in range(0, len(crops), batch_size):
            part = host[a:a + batch_size]
            logits, feats = forward.with_features(to_device(part, device))
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            scores.append(np.asarray(score(feats.float().cpu().numpy(), part.numpy()), dtype=np.float32))
    return np.concatenate(out), np.concatenate(scores)


class BatchStream:
    """Crops in, probabilities out, in full batches.

    A chunk's last partial batch waits for the next chunk's crops instead of running as a small,
    slow batch; at most ``batch_size - 1`` crops wait. With ``score`` (``features, crops ->
    (N,)``), each crop's score from the same forward pass goes to :attr:`scores`. ``batch_size``
    ``None`` is the device's (:func:`~napari_yeast_phenotypes.core.network.device.default_batch_size`).
    """

    def __init__(self, model: torch.nn.Module, batch_size: int | None, device: torch.device, precision: str = "auto",
                 fast_path: bool = True, score: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None):
        if batch_size is None:
            batch_size = default_batch_size(device)
        self.model, self.batch_size, self.device = model, max(1, int(batch_size)), device
        self.precision, self.fast_path = precision, fast_path
        self.forward: InferenceForward | None = None
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.done: list[np.ndarray] = []
        self.score = score
        self.scores: list[np.ndarray] = []

    def add(self, crops: np.ndarray) -> None:
        self.pending.append(crops)
        self.n_pending += len(crops)
        if self.n_pending >= self.batch_size:
            self._run(self.n_pending // self.batch_size * self.batch_size)

    def describe(self) -> dict:
        """How the crops were classified: the inference path and precision (and why a faster one was not), the
        batch size and the device."""
        from .device import describe_device

        done = self.forward.describe() if self.forward is not None else {}
        return {**done, "batch_size": self.batch_size, "device": str(self.device),
                "hardware": describe_device(self.device)}

    def finish(self) -> np.ndarray:
        if self.n_pending:
            self._run(self.n_pending)
        return np.concatenate(self.done) if self.done else np.zeros((0, _n_classes(self.model)), np.float32)

    def _run(self, n: int) -> None:
        crops = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        rest = crops[n:]
        self.pending, self.n_pending = ([rest] if len(rest) else []), len(rest)
        crops = crops[:n]
        if self.forward is None:
            sample = torch.from_numpy(np.ascontiguousarray(crops[:self.batch_size], dtype=np.float32))
            self.forward = inference_forward(self.model, self.device, sample.to(self.device),
                                             precision=self.precision, fast_path=self.fast_path, remember=True)
        if self.score is None:
            self.done.append(predict_batches(self.forward, crops, self.batch_size, self.device))
        else:
            probs, scores = predict_batches_scored(self.forward, crops, self.batch_size, self.device, self.score)
            self.done.append(probs)
            self.scores.append(scores)


__all__ = ["BatchStream", "predict_batches", "predict_batches_scored", "predict_crops"]
