"""Faster training on the CPU: the convolutions' weight gradients as one matrix product each.

On 40x40 crops, ResNet50's later layers work on 5x5, 3x3 and 2x2 pixels. oneDNN computes the
weight gradients of such small convolutions slowly: about 48 GFLOP/s over a training step of
every layer (20 for layer4's 3x3 convolutions) on a 2-core AVX2 EPYC whose fp32 peak is 187,
while the same numbers as one GEMM run at about 137: ``grad_W = grad_out^T @ im2col(x)``, where,
in the channels-last layout, ``grad_out`` is already an ``(N*H*W, C_out)`` matrix and
``im2col(x)`` is ``x`` itself for 1x1 convolutions and ``k*k`` shifted copies of it for the
others. Training every layer went from 72 to 98 crops/s there (medians of seven benchmark runs;
43% to 58% of the FLOP ceiling, ``benchmarks/README.md``); training conv1 and fc alone does not
change (the frozen layers need no weight gradient).

:func:`gemm_weight_grads` switches this on for a model while it trains on the CPU and off again
afterwards. Only what a convolution computes in backward changes: its forward pass, its input
gradient (still oneDNN's), its parameters and its ``state_dict`` are untouched, and the weight
gradient equals oneDNN's up to float rounding (the sum runs in another order; tested).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

#: a k x k convolution (k > 1) uses the GEMM when its output has at most this many pixels per crop;
#: larger ones keep oneDNN's weight gradient, which needs no im2col copy (on 40x40 crops, limits
#: of 25, 100 and 400 pixels measured alike: 10x10 is about even). 1x1 convolutions always use it.
GEMM_MAX_OUTPUT_PIXELS = 100


def conv_weight_grad(grad_out: torch.Tensor, x: torch.Tensor, kernel: int, stride: int, padding: int
                     ) -> torch.Tensor:
    """The gradient of a square convolution's weight (no groups, no dilation) as one GEMM.

    ``grad_out`` (N, C_out, H_out, W_out), ``x`` (N, C_in, H, W): best in the channels-last
    layout, where both are matrices already. Returns (C_out, C_in, k, k), channels-last strided.
    """
    n, c_in = x.shape[:2]
    c_out, h_out, w_out = grad_out.shape[1:]
    g = grad_out.permute(0, 2, 3, 1).reshape(-1, c_out)  # (N*H_out*W_out, C_out)
    xl = x.permute(0, 2, 3, 1)  # N, H, W, C
    if padding:
        xl = F.pad(xl, (0, 0, padding, padding, padding, padding))
    span_h, span_w = stride * (h_out - 1) + 1, stride * (w_out - 1) + 1
    if kernel == 1:
        cols = xl[:, :span_h:stride, :span_w:stride].reshape(-1, c_in)
        return (g.t() @ cols).view(c_out, c_in, 1, 1)
    cols = torch.empty((n, h_out, w_out, kernel, kernel, c_in), dtype=x.dtype, device=x.device)
    for dy in range(kernel):
        for dx in range(kernel):
            cols[:, :, :, dy, dx] = xl[:, dy:dy + span_h:stride, dx:dx + span_w:stride]
    grad_w = g.t() @ cols.view(-1, kernel * kernel * c_in)
    return grad_w.view(c_out, kernel, kernel, c_in).permute(0, 3, 1, 2)


class _GemmGradConv(torch.autograd.Function):
    """``F.conv2d`` whose backward gives the weight gradient by :func:`conv_weight_grad`."""

    @staticmethod
    def forward(ctx, x, weight, stride: int, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, kernel = ctx.stride, ctx.padding, weight.shape[-1]
        if x.is_contiguous(memory_format=torch.channels_last):
            grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gemm = want_w and (kernel == 1 or grad_out.shape[2] * grad_out.shape[3] <= GEMM_MAX_OUTPUT_PIXELS)
        grad_x = grad_w = None
        if want_x or (want_w and not gemm):
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [stride, stride], [padding, padding], [1, 1], False, [0, 0], 1,
                [want_x, want_w and not gemm, False])
        if gemm:
            grad_w = conv_weight_grad(grad_out, x, kernel, stride, padding)
        return grad_x, grad_w, None, None


class GemmGradConv2d(nn.Conv2d):
    """A ``Conv2d`` that, while its weight learns, gets the weight gradient from one GEMM.

    Only made by :func:`gemm_weight_grads` from a plain ``Conv2d`` it can stand in for (square
    kernel, stride and padding, no groups, dilation or bias, zero padding); anything else, and any
    call without a weight gradient to compute, runs ``Conv2d``'s own forward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.requires_grad and torch.is_grad_enabled():
            return _GemmGradConv.apply(x, self.weight, self.stride[0], self.padding[0])
        return super().forward(x)


def _can_stand_in(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.bias is None and conv.padding_mode == "zeros"
            and conv.dilation == (1, 1) and not isinstance(conv.padding, str)
            and conv.kernel_size[0] == conv.kernel_size[1] and conv.stride[0] == conv.stride[1]
            and conv.padding[0] == conv.padding[1])


@contextmanager
def gemm_weight_grads(model: nn.Module, device: torch.device | str = "cpu") -> Iterator[int]:
    """Within the block, ``model``'s convolutions compute weight gradients by GEMM (CPU only).

    Yields how many convolutions were switched (0 off the CPU, where cuDNN and MPS have their
    own). On leaving, also by an exception or a closed generator, they are plain ``Conv2d`` again.
    """
    switched = []
    if torch.device(device).type == "cpu":
        switched = [m for m in model.modules() if _can_stand_in(m)]
    for m in switched:
        m.__class__ = GemmGradConv2d
    try:
        yield len(switched)
    finally:
        for m in switched:
            m.__class__ = nn.Conv2d
