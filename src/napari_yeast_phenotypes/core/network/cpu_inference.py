"""The inference copy of a model: BatchNorm folded; on a CPU weights packed for oneDNN, optionally bf16; on a
CUDA GPU channels-last under bf16 autocast (or TF32).

Built once per model and precision and cached (:func:`inference_forward`): BatchNorm folded into
the convolutions, weights pre-packed once in oneDNN's blocked layout, activations kept in that
layout from the first layer to the last (no layout conversion between layers). In fp32 its
probabilities equal the plain model's up to float rounding; every copy is checked against the plain
model on the first batch it sees and, on a mismatch or any error, the plain model is used instead.

bf16 (about 1.8x faster on CPUs with native bf16) is used only when the caller asks for it (see
:func:`napari_yeast_phenotypes.core.network.device.resolve_precision`) and the copy passes the check: on
trained models its top class agrees with fp32 on >= 99.5 % of crops (``benchmarks/README.md``).

On a CUDA GPU the copy is the folded network in channels-last layout, run under bf16 autocast where
the GPU has bf16 (Ampere on) and with TF32 convolutions otherwise (:func:`_build_autocast`; the same
code runs on the CPU, where the tests exercise it); it is checked the same way, against the plain
model in IEEE fp32. What the check found is remembered per model, machine and torch version
(:mod:`.inference_memo`), so a second run of a model starts without it.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn

from .device import describe_device, resolve_precision, tf32

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
_fast_cache: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


class InferenceForward:
    """A batch of crops (N, 1, S, S) float32 -> logits (N, C) float32, and how it is computed.

    :meth:`with_features` also gives the penultimate-layer features (the input of ``fc``) from the
    same forward pass, for the out-of-distribution score: the logits are the very same numbers.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], path: str, precision: str,
                 features_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.fn, self.path, self.precision = fn, path, precision
        self.features_fn = features_fn
        self.notes: list[str] = []  # why faster candidates were passed over

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, features)`` of a batch; features (N, D) float32 are what ``fc`` receives."""
        if self.features_fn is not None:
            return self.features_fn(x)
        fc = getattr(self.fn, "fc", None)
        if not isinstance(fc, nn.Module):
            raise ValueError("this model has no fc layer whose input could serve as its features")
        seen = []
        handle = fc.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            logits = self.fn(x)
        finally:
            handle.remove()
        return logits, seen[-1].float().flatten(1)

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


def _expose_features(graph_module: torch.fx.GraphModule) -> bool:
    """Make the graph return ``(logits, features)``, features being the input of ``fc``.

    Only when the graph's output is exactly ``fc``'s output (a plain ResNet); the operations are
    the same, so the logits do not change. Returns whether it was done.
    """
    fc = next((n for n in graph_module.graph.nodes if n.op == "call_module" and n.target == "fc"), None)
    out = next((n for n in graph_module.graph.nodes if n.op == "output"), None)
    if fc is None or out is None or out.args[0] is not fc or not isinstance(fc.args[0], torch.fx.Node):
        return False
    out.args = ((fc, fc.args[0]),)
    graph_module.graph.lint()
    graph_module.recompile()
    return True


def _dense(y: torch.Tensor) -> torch.Tensor:
    return y.to_dense(torch.float32) if y.is_mkldnn else y.float()


def _build_blocked(model: nn.Module, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    folded = _fold_batchnorm(model)
    features = _expose_features(folded)
    net = _to_blocked(folded, dtype, {id(m) for m in model.modules()})

    def both(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = net(x.to_mkldnn(dtype))
        return _dense(logits), _dense(feats).flatten(1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = net(x.to_mkldnn(dtype))
        return _dense(y[0] if features else y)

    forward.with_features = both if features else None  # a plain callable for callers that need logits only
    return forward


def _build_channels_last(model: nn.Module, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # .to() converts in place: copy first, as the folded graph shares modules with the model
    folded = copy.deepcopy(_fold_batchnorm(model))
    features = _expose_features(folded)
    net = folded.to(dtype=dtype, memory_format=torch.channels_last)

    def both(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = net(x.to(dtype).contiguous(memory_format=torch.channels_last))
        return logits.float(), feats.float().flatten(1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = net(x.to(dtype).contiguous(memory_format=torch.channels_last))
        return (y[0] if features else y).float()

    forward.with_features = both if features else None
    return forward


def _build_autocast(model: nn.Module, precision: str, device: torch.device | None = None
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The folded network in channels-last layout on ``device``, run under bf16 autocast (``bf16``) or with
    TF32 arithmetic (``tf32``, CUDA only; ``fp32``: IEEE). The CUDA path; device-agnostic (tested on the CPU).

    Batches are moved to ``device`` without blocking (from pinned memory the copy overlaps the work).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    # .to() converts in place: copy first, as the folded graph shares modules with the model
    folded = copy.deepcopy(_fold_batchnorm(model))
    features = _expose_features(folded)
    net = folded.to(device=device, memory_format=torch.channels_last)
    bf16 = precision == "bf16"

    def run(x: torch.Tensor):
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16), tf32(precision == "tf32"):
            return net(x)

    def both(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = run(x)
        return logits.float(), feats.float().flatten(1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = run(x)
        return (y[0] if features else y).float()

    forward.with_features = both if features else None
    return forward


_BUILDERS = (("onednn-blocked", _build_blocked), ("channels-last", _build_channels_last))
#: the CUDA path (its name in ``describe()``)
CUDA_PATH = "cuda-channels-last"


def candidates(device_type: str, precision: str) -> list[tuple[str, Callable, str]]:
    """The faster copies to try, best first, as ``(path, builder, precision)``, for ``precision`` (``bf16`` or
    ``fp32``, from :func:`resolve_precision`) on a device of ``device_type``; the plain model is the last resort.

    CPU: oneDNN-blocked (bf16 first when asked for), then channels-last, in fp32. CUDA: channels-last under
    bf16 autocast when asked for, then with TF32 (what fp32 means on a CUDA GPU). Elsewhere none.
    """
    if device_type == "cuda":
        return ([(CUDA_PATH, _build_autocast, "bf16")] if precision == "bf16" else []) + [
            (CUDA_PATH, _build_autocast, "tf32")]
    if device_type != "cpu":
        return []
    found = [(name, builder, "fp32") for name, builder in _BUILDERS]
    if precision == "bf16":  # a model that bf16 does not suit still gets the fast fp32 copy
        found.insert(0, ("onednn-blocked", _build_blocked, "bf16"))
    return found


def _check(ref: torch.Tensor, got: torch.Tensor, precision: str) -> str | None:
    """Why ``got`` (logits) may not stand in for ``ref``, or None when it may.

    ``fp32``: equal up to float rounding; ``bf16`` and ``tf32`` (reduced precision): close logits and
    the same top class on nearly every crop."""
    rel = float(((got - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).mean())
    p_ref, p_got = torch.softmax(ref, dim=1), torch.softmax(got, dim=1)
    if precision == "fp32":
        diff = float((p_got - p_ref).abs().max())
        if diff > FAST_TOLERANCE or rel > FAST_LOGIT_TOLERANCE:
            return f"probabilities differ by up to {diff:.2g}, logits by {rel:.2g} (relative)"
        return None
    agree = float((p_got.argmax(1) == p_ref.argmax(1)).float().mean())
    if rel > BF16_LOGIT_TOLERANCE or agree < BF16_MIN_AGREEMENT:
        return f"{precision} logits differ by {rel:.2g} (relative), top class agrees on {100 * agree:.0f} %"
    return None


def _build(model: nn.Module, builder: Callable, precision: str, device: torch.device) -> Callable:
    return builder(model, precision, device) if builder is _build_autocast else builder(model, precision)


def inference_forward(model: nn.Module, device: torch.device | str = "cpu",
                      sample: torch.Tensor | None = None, build: bool = True,
                      precision: str = "auto", fast_path: bool = True, remember: bool = False) -> InferenceForward:
    """The function that maps a batch of crops to logits, as fast as this device allows.

    On a CPU or a CUDA GPU: the cached inference-only copy of ``model`` (see the module notes) when
    one exists for the model's current weights, or a new one when ``build`` is set and ``sample``
    (a batch of real crops on ``device``) is given to check it against the plain model. Otherwise,
    on other devices and with ``fast_path=False``, the model itself. ``model`` must be in eval mode
    and on ``device``. ``precision`` is ``auto``, ``fp32`` or ``bf16`` (see
    :func:`~napari_yeast_phenotypes.core.network.device.resolve_precision`). With ``remember`` (the movie
    pipeline), what the check finds is kept for these weights, this machine and torch version, and a
    copy that passed before is used without checking again (:mod:`.inference_memo`); not for weights
    that change (metrics during training). ``describe()`` of the result says which path
    and precision are used, and why a faster one was not.
    """
    from . import inference_memo

    device = torch.device(device)
    plain = InferenceForward(model, "eager", "fp32")
    if device.type not in ("cpu", "cuda") or not fast_path or model.training:
        return plain
    precision = resolve_precision(precision, device)
    key = _weights_key(model)
    per_model = _fast_cache.setdefault(model, {})
    cached = per_model.get((str(device), precision))
    if cached is not None and cached[0] == key:
        return cached[1]
    if not build or sample is None or len(sample) == 0:
        return plain
    tried = candidates(device.type, precision)
    memo = None
    if remember:
        memo = inference_memo.memo_key(inference_memo.weights_sha256(model), describe_device(device), precision)
        found = inference_memo.recall(memo)
        chosen = _recalled(model, device, found, tried) if found is not None else None
        if chosen is not None:
            per_model[(str(device), precision)] = (key, chosen)
            return chosen
    chosen, problems, failed = plain, [], False
    with torch.inference_mode(), tf32(False):
        ref = model(sample).float()
    for name, builder, prec in tried:
        try:
            fn = _build(model, builder, prec, device)
            features_fn = getattr(fn, "with_features", None)
            with torch.inference_mode():
                problem = _check(ref, fn(sample).float(), prec)
        except Exception as exc:  # noqa: BLE001 - a path that cannot be built is skipped, never fatal
            problem, failed = f"{type(exc).__name__}: {exc}", True
        if problem is None:
            chosen = InferenceForward(fn, name, prec, features_fn)
            break
        problems.append(f"{name} {prec}: {problem}")
    chosen.notes = problems
    if chosen is plain and problems:
        warnings.warn("fast inference unavailable, using the plain model (" + "; ".join(problems) + ")",
                      RuntimeWarning, stacklevel=2)
    if memo is not None and not failed:
        # what a copy that could not be built (rather than one that computed differently) would have given
        # is not known: nothing is remembered, the reason may not last (memory, a transient error)
        inference_memo.remember(memo, chosen.path, chosen.precision, problems)
    per_model[(str(device), precision)] = (key, chosen)
    return chosen


def _recalled(model: nn.Module, device: torch.device, found: dict, tried: list) -> InferenceForward | None:
    """The copy that an earlier check of this model chose (``found``), built without checking again; ``None``
    when it is not one of this run's candidates or cannot be built."""
    notes = [*found.get("notes", []), "checked against fp32 in an earlier run on this machine (remembered)"]
    if found["path"] == "eager":
        chosen = InferenceForward(model, "eager", "fp32")
        chosen.notes = notes
        return chosen
    for name, builder, prec in tried:
        if (name, prec) == (found["path"], found["precision"]):
            try:
                fn = _build(model, builder, prec, device)
            except Exception:  # noqa: BLE001 - then the check runs as if nothing was remembered
                return None
            chosen = InferenceForward(fn, name, prec, getattr(fn, "with_features", None))
            chosen.notes = notes
            return chosen
    return None


__all__ = ["CUDA_PATH", "InferenceForward", "candidates", "inference_forward"]
