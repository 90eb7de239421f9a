"""Batched inference over a movie, streamed by chunks of frames.

Only one chunk of frames, its crops and one batch of activations are in memory at a time, so a
lazy (dask or memory-mapped) movie of any length is classified in bounded memory; the pages of a
memory-mapped movie are released after each chunk, so its resident memory stays flat too.

On the CPU the network runs through an inference-only copy of the model, built once per model and
precision and cached (:func:`inference_forward`): BatchNorm folded into the convolutions, weights
pre-packed once in oneDNN's blocked layout, activations kept in that layout from the first layer to
the last (no layout conversion between layers). In fp32 its probabilities equal the plain model's
up to float rounding; every copy is checked against the plain model on the first batch it sees and,
on a mismatch or any error, the plain model is used instead.

Precision: to classify movies on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX) the copy
runs in bf16 by default (about 1.8x faster; on trained models its top class agrees with fp32 on
>= 99.5 % of crops, see ``benchmarks/README.md``), provided it passes a check on the movie's first
batch; everywhere else, and for :func:`predict_crops` (metrics), in fp32. The environment variable
``NAPARI_YEAST_PHENOTYPES_PRECISION`` (``auto``, ``fp32`` or ``bf16``) overrides the choice, and
``NAPARI_YEAST_PHENOTYPES_FAST_INFERENCE=0`` turns the copy off (plain fp32 model).
"""

from __future__ import annotations

import copy
import mmap
import os
import warnings
import weakref
from collections.abc import Callable, Generator, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from .crops import extract_crops, movie_stats
from .io import InputError, as_movie
from .model import Classifier
from .timeline import prob_columns
from .tracking import Tracker, labels_look_tracked

#: what an fp32 copy may differ from the plain model by: any class probability, and the logits
#: relative to their size (probabilities alone are blind where the softmax saturates)
FAST_TOLERANCE = 1e-4
FAST_LOGIT_TOLERANCE = 1e-3
#: a bf16 copy is used for a model only if, on the first batch, its logits are this close to the
#: fp32 ones (mean relative error) and its top class agrees this often; trained models are well
#: inside (mean error ~0.005, see benchmarks/README.md), while badly conditioned ones (some random
#: or odd models) fall back to fp32
BF16_LOGIT_TOLERANCE = 0.02
BF16_MIN_AGREEMENT = 0.95
# predict_crops builds a copy only for this many crops or more (building takes a fraction of a
# second, which a few hundred crops do not repay); classify_iter always does, movies being long
_FAST_MIN_CROPS = 1024
_fast_cache: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
    return dev


def fast_inference_enabled() -> bool:
    """Whether the inference-only copy may be used (``NAPARI_YEAST_PHENOTYPES_FAST_INFERENCE``)."""
    return os.environ.get("NAPARI_YEAST_PHENOTYPES_FAST_INFERENCE", "1").strip().lower() not in ("0", "false", "no")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    try:
        caps = torch.cpu.get_capabilities()
    except Exception:  # noqa: BLE001 - older torch or an unknown CPU: assume not
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def inference_precision(device: torch.device | str = "cpu") -> str:
    """``"bf16"`` or ``"fp32"``: the precision the fast path uses on ``device`` (see the module notes)."""
    want = os.environ.get("NAPARI_YEAST_PHENOTYPES_PRECISION", "auto").strip().lower()
    if want in ("fp32", "float32"):
        return "fp32"
    if torch.device(device).type != "cpu":
        return "fp32"
    if want in ("bf16", "bfloat16"):
        return "bf16"
    if want != "auto":
        raise InputError(f"NAPARI_YEAST_PHENOTYPES_PRECISION={want!r}: use auto, fp32 or bf16")
    return "bf16" if cpu_has_native_bf16() else "fp32"


class InferenceForward:
    """A batch of crops (N, 1, S, S) float32 -> logits (N, C) float32, and how it is computed."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], path: str, precision: str):
        self.fn, self.path, self.precision = fn, path, precision
        self.notes: list[str] = []  # why faster candidates were passed over

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def describe(self) -> dict:
        return {"path": self.path, "precision": self.precision, "notes": list(self.notes)}


def _weights_key(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced, re-pointed (``.data =``, dtype or device
    moves) or changed in place (optimizer steps, ``load_state_dict``)."""
    return tuple((id(t), t._version, t.data_ptr(), t.dtype, t.device)
                 for t in model.state_dict(keep_vars=True).values())


def _fold_batchnorm(model: nn.Module) -> torch.fx.GraphModule:
    """The eval-mode forward pass of ``model`` with every BatchNorm folded into its convolution.

    Pairs are found by tracing the forward pass (torch.fx), not by attribute order: a BatchNorm
    is folded only where it takes a convolution's sole output. The result shares the modules it
    does not change with ``model`` (no copy of the whole network is made): callers replace them,
    never change them in place.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    graph_module = torch.fx.symbolic_trace(model)
    modules = dict(graph_module.named_modules())
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        conv_node = node.args[0]
        if not (isinstance(conv_node, torch.fx.Node) and conv_node.op == "call_module"
                and isinstance(modules.get(conv_node.target), nn.Conv2d) and len(conv_node.users) == 1):
            continue
        fused = fuse_conv_bn_eval(modules[conv_node.target], modules[node.target])
        parent, _, name = conv_node.target.rpartition(".")
        setattr(graph_module.get_submodule(parent), name, fused)
        node.replace_all_uses_with(conv_node)
        graph_module.graph.erase_node(node)
    graph_module.graph.lint()
    graph_module.recompile()
    return graph_module


class _BlockedConv2d(nn.Module):
    """A convolution whose weights are pre-packed once for oneDNN; takes and gives oneDNN tensors."""

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("only explicit zero padding is supported")
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        weight = conv.weight.detach().to_mkldnn(dtype)
        self.register_buffer("weight", torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight, self.padding, self.stride, self.dilation, self.groups))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.float().to_mkldnn())  # an fp32 bias keeps bf16 accurate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                                        self.groups)


class _BlockedLinear(nn.Module):
    def __init__(self, linear: nn.Linear, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("weight", linear.weight.detach().to_mkldnn(dtype))
        bias = linear.bias.detach() if linear.bias is not None else torch.zeros(linear.out_features)
        self.register_buffer("bias", bias.float().to_mkldnn())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._C._nn.mkldnn_linear(x if x.is_mkldnn else x.to_mkldnn(), self.weight, self.bias)


def _to_blocked(module: nn.Module, dtype: torch.dtype, shared: set[int]) -> nn.Module:
    """Replace every Conv2d / Linear under ``module`` by its oneDNN version; ``shared`` holds the ids
    of the user's modules, which are never changed (a replacement inside one is refused)."""
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            if id(module) in shared:
                raise ValueError(f"{type(module).__name__} holds layers that tracing does not reach")
            setattr(module, name, (_BlockedConv2d if isinstance(child, nn.Conv2d) else _BlockedLinear)(child, dtype))
        else:
            _to_blocked(child, dtype, shared)
    return module


def _build_blocked(model: nn.Module, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    net = _to_blocked(_fold_batchnorm(model), dtype, {id(m) for m in model.modules()})

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = net(x.to_mkldnn(dtype))
        return y.to_dense(torch.float32) if y.is_mkldnn else y.float()

    return forward


def _build_channels_last(model: nn.Module, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # .to() converts in place: copy first, as the folded graph shares modules with the model
    net = copy.deepcopy(_fold_batchnorm(model)).to(dtype=dtype, memory_format=torch.channels_last)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(dtype).contiguous(memory_format=torch.channels_last)).float()

    return forward


_BUILDERS = (("onednn-blocked", _build_blocked), ("channels-last", _build_channels_last))


def _check(ref: torch.Tensor, got: torch.Tensor, precision: str) -> str | None:
    """Why ``got`` (logits) may not stand in for ``ref``, or None when it may."""
    rel = float(((got - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).mean())
    p_ref, p_got = torch.softmax(ref, dim=1), torch.softmax(got, dim=1)
    if precision == "fp32":
        diff = float((p_got - p_ref).abs().max())
        if diff > FAST_TOLERANCE or rel > FAST_LOGIT_TOLERANCE:
            return f"probabilities differ by up to {diff:.2g}, logits by {rel:.2g} (relative)"
        return None
    agree = float((p_got.argmax(1) == p_ref.argmax(1)).float().mean())
    if rel > BF16_LOGIT_TOLERANCE or agree < BF16_MIN_AGREEMENT:
        return f"bf16 logits differ by {rel:.2g} (relative), top class agrees on {100 * agree:.0f} %"
    return None


def inference_forward(model: nn.Module, device: torch.device | str = "cpu",
                      sample: torch.Tensor | None = None, build: bool = True,
                      precision: str | None = None) -> InferenceForward:
    """The function that maps a batch of crops to logits, as fast as this device allows.

    On the CPU: the cached inference-only copy of ``model`` (see the module notes) when one exists
    for the model's current weights, or a new one when ``build`` is set and ``sample`` (a batch of
    real crops on ``device``) is given to check it against the plain model. Otherwise, and on
    GPUs, the model itself. ``model`` must be in eval mode. ``precision`` (``"fp32"`` or
    ``"bf16"``) overrides :func:`inference_precision`. ``describe()`` of the result says which path
    and precision are used, and why a faster one was not.
    """
    device = torch.device(device)
    plain = InferenceForward(model, "eager", "fp32")
    if device.type != "cpu" or not fast_inference_enabled() or model.training:
        return plain
    precision = precision or inference_precision(device)
    key = _weights_key(model)
    per_model = _fast_cache.setdefault(model, {})
    cached = per_model.get(precision)
    if cached is not None and cached[0] == key:
        return cached[1]
    if not build or sample is None or len(sample) == 0:
        return plain
    candidates = [(name, builder, "fp32") for name, builder in _BUILDERS]
    if precision == "bf16":  # a model that bf16 does not suit still gets the fast fp32 copy
        candidates.insert(0, ("onednn-blocked", _build_blocked, "bf16"))
    chosen, problems = plain, []
    with torch.inference_mode():
        ref = model(sample).float()
    for name, builder, prec in candidates:
        try:
            fn = builder(model, prec)
            with torch.inference_mode():
                problem = _check(ref, fn(sample).float(), prec)
        except Exception as exc:  # noqa: BLE001 - a path that cannot be built is skipped, never fatal
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            chosen = InferenceForward(fn, name, prec)
            break
        problems.append(f"{name} {prec}: {problem}")
    chosen.notes = problems
    if chosen is plain and problems:
        warnings.warn("fast inference unavailable, using the plain model (" + "; ".join(problems) + ")",
                      RuntimeWarning, stacklevel=2)
    per_model[precision] = (key, chosen)
    return chosen


def _n_classes(model: torch.nn.Module) -> int:
    return getattr(getattr(model, "fc", None), "out_features", 0)


def _predict(forward: Callable[[torch.Tensor], torch.Tensor], crops: np.ndarray, batch_size: int,
             device: torch.device) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for a in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[a:a + batch_size], dtype=np.float32)).to(device)
            out.append(torch.softmax(forward(x).float(), dim=1).cpu().numpy())
    return np.concatenate(out)


def predict_crops(model: torch.nn.Module, crops: np.ndarray, batch_size: int = 64,
                  device: torch.device | str = "cpu") -> np.ndarray:
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
    forward = inference_forward(model, device, sample, build=len(crops) >= _FAST_MIN_CROPS, precision="fp32")
    return _predict(forward, crops, batch_size, device)


def iter_chunks(n_frames: int, chunk_frames: int) -> Iterator[range]:
    for a in range(0, n_frames, chunk_frames):
        yield range(a, min(n_frames, a + chunk_frames))


class _BatchStream:
    """Crops in, probabilities out, in full batches.

    A chunk's last partial batch waits for the next chunk's crops instead of running as a small,
    slow batch; at most ``batch_size - 1`` crops wait.
    """

    def __init__(self, model: torch.nn.Module, batch_size: int, device: torch.device):
        self.model, self.batch_size, self.device = model, max(1, int(batch_size)), device
        self.forward: InferenceForward | None = None
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.done: list[np.ndarray] = []

    def add(self, crops: np.ndarray) -> None:
        self.pending.append(crops)
        self.n_pending += len(crops)
        if self.n_pending >= self.batch_size:
            self._run(self.n_pending // self.batch_size * self.batch_size)

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
            self.forward = inference_forward(self.model, self.device, sample.to(self.device))
        self.done.append(_predict(self.forward, crops, self.batch_size, self.device))


def _release_mapped_pages(*arrays) -> None:
    """Let go of the pages of memory-mapped inputs that this process has read so far.

    Reading a memory-mapped movie maps its pages into the process: its resident memory would grow
    to the file's size over a long movie, although those pages are only the kernel's file cache.
    Dropping them after each chunk keeps the resident memory flat; frames read again (none are)
    would simply come back from the cache. Only shared mappings (modes ``r``, ``r+``, ``w+``) are
    released; a copy-on-write one (``c``) may hold changes made in memory and is left alone.
    """
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None:
        return
    for arr in arrays:
        mm = getattr(arr, "_mmap", None)  # np.memmap and its views share their mmap object
        if isinstance(mm, mmap.mmap) and getattr(arr, "mode", None) in ("r", "r+", "w+"):
            try:
                mm.madvise(advice)
            except (OSError, ValueError):
                pass


def classify_iter(image, labels, clf: Classifier, *, relink: bool | str = "auto", channel: int | None = None,
                  chunk_frames: int = 8, batch_size: int = 128, device: str = "auto",
                  ) -> Generator[tuple[int, int], None, pd.DataFrame]:
    """Classify every cell in every frame; yields ``(frames_done, n_frames)``, returns the table.

    The returned table is the cell table (``frame, label, track_id, y, x, area, bbox_*``) with
    one ``p_<class>`` column per class of ``clf``; ``table.attrs["inference"]`` says which
    inference path and precision were used. Use it with ``yield from`` or :func:`run_to_end`; a
    napari ``thread_worker`` passes the yields to a progress bar.

    ``batch_size`` is the network's batch: 128 is measured best or within noise of it on CPUs in
    fp32 and bf16 (``benchmarks/run.py`` prints the sweep); ``chunk_frames`` frames are read at a
    time, so memory does not grow with the movie's length.
    """
    image, labels = as_movie(image, labels, channel=channel)
    n = image.shape[0]
    if relink == "auto":
        relink = not labels_look_tracked(labels)
    stats = movie_stats(image, labels, clf.crop_settings)
    dev = select_device(device)
    clf.model.eval().to(dev)
    tracker = Tracker(relink=bool(relink))
    stream = _BatchStream(clf.model, batch_size, dev)
    tables = []
    yield 0, n
    for frames in iter_chunks(n, chunk_frames):
        # one read per chunk: a lazy (dask, zarr) source computes 2 arrays instead of 2 per frame
        image_chunk = np.asarray(image[frames.start:frames.stop])
        labels_chunk = np.asarray(labels[frames.start:frames.stop])
        chunk_tables = []
        for i, t in enumerate(frames):
            tab = tracker.update(labels_chunk[i], t)
            if len(tab):
                chunk_tables.append(tab)
                stream.add(extract_crops(image_chunk[i], labels_chunk[i], tab, clf.crop_settings, stats))
        if chunk_tables:  # one table per chunk: a frame's small table costs more than its rows
            tables.append(pd.concat(chunk_tables, ignore_index=True))
        del image_chunk, labels_chunk
        _release_mapped_pages(image, labels)
        yield frames.stop, n
    if not tables:
        raise InputError("the labels hold no cells in any frame, so there is nothing to classify")
    probs = stream.finish()
    table = pd.concat(tables, ignore_index=True)
    table[prob_columns(clf.class_names)] = probs
    table.attrs["relinked"] = bool(relink)
    table.attrs["movie_stats"] = stats.to_dict()
    if stream.forward is not None:
        table.attrs["inference"] = stream.forward.describe()
    return table


def run_to_end(gen: Generator, progress: Callable[[int, int], None] | None = None):
    """Drive a progress generator to its end and return its return value."""
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)


__all__ = ["InferenceForward", "classify_iter", "inference_forward", "inference_precision", "predict_crops",
           "run_to_end", "select_device"]
