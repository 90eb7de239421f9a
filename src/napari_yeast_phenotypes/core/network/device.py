"""Which device and which precision inference runs on.

``select_device`` turns ``auto|cpu|cuda|cuda:N|mps`` into a torch device; ``resolve_precision``
turns a config's ``auto|fp32|bf16`` into the precision the CPU inference copy uses: bf16 only on
CPUs that compute in it natively (AVX512-BF16 or AMX), fp32 elsewhere and on GPUs.
"""

from __future__ import annotations

import torch

from ..config import check_device_name
from ..errors import InputError


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if isinstance(device, torch.device):
        return device
    check_device_name(device)  # a name torch would read otherwise ("meta", "xla", "cuda:-1") is refused here
    device = device.strip().lower()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device} does not exist: PyTorch sees {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError("device mps was asked for, but this machine has no Apple GPU; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    try:
        caps = torch.cpu.get_capabilities()
    except Exception:  # noqa: BLE001 - older torch or an unknown CPU: assume not
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(precision: str = "auto", device: torch.device | str = "cpu") -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` (``auto``, ``fp32``, ``bf16``) means on ``device``."""
    want = str(precision).strip().lower()
    if want not in ("auto", "fp32", "bf16"):
        raise InputError(f"precision {precision!r}: use auto, fp32 or bf16")
    if want == "fp32" or torch.device(device).type != "cpu":
        return "fp32"
    if want == "bf16":
        return "bf16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


__all__ = ["cpu_has_native_bf16", "resolve_precision", "select_device"]
