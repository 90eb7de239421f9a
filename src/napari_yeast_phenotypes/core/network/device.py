"""Which device, which precision and which batch size inference runs with.

``select_device`` turns ``auto|cpu|cuda|cuda:N|mps`` into a torch device; ``resolve_precision``
turns a config's ``auto|fp32|bf16`` into the precision the inference copy computes in: bf16 where
the device computes in it natively (CPUs with AVX512-BF16 or AMX; NVIDIA GPUs from Ampere on,
compute capability 8.0), fp32 elsewhere (on a CUDA GPU fp32 means TF32 convolutions and matrix
products). ``default_batch_size`` is the batch a device runs best at. The decisions themselves are
pure functions of what the device offers (:func:`choose_precision`, :func:`batch_size_for`), so
they are tested without the hardware.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


def cuda_has_native_bf16(device: torch.device | str = "cuda") -> bool:
    """Whether this NVIDIA GPU computes in bfloat16 natively (compute capability 8.0 or later: Ampere on)."""
    try:
        return tuple(torch.cuda.get_device_capability(device)) >= (8, 0)
    except Exception:  # noqa: BLE001 - no CUDA, or an unreadable device: assume not
        return False


def choose_precision(want: str, device_type: str, native_bf16: bool) -> str:
    """``"bf16"`` or ``"fp32"`` for a config's ``want`` (``auto``, ``fp32``, ``bf16``) on a device of
    ``device_type`` (``cpu``, ``cuda``, ``mps``) that computes in bf16 natively or not.

    ``auto`` is bf16 where it is native (CPU and CUDA; it is checked against fp32 on the first
    batch before it is used), fp32 elsewhere; ``bf16`` asks for it anyway (emulated bf16 is slow);
    on Apple GPUs (mps) always fp32.
    """
    want = str(want).strip().lower()
    if want not in ("auto", "fp32", "bf16"):
        raise InputError(f"precision {want!r}: use auto, fp32 or bf16")
    if want == "fp32" or device_type not in ("cpu", "cuda"):
        return "fp32"
    if want == "bf16":
        return "bf16"
    return "bf16" if native_bf16 else "fp32"


def resolve_precision(precision: str = "auto", device: torch.device | str = "cpu") -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` (``auto``, ``fp32``, ``bf16``) means on ``device``."""
    device = torch.device(device)
    native = False
    if str(precision).strip().lower() == "auto":
        native = cpu_has_native_bf16() if device.type == "cpu" else device.type == "cuda" and cuda_has_native_bf16(
            device)
    return choose_precision(precision, device.type, native)


#: crops per forward pass on a CPU (measured best or within noise of it in fp32 and bf16,
#: benchmarks/README.md) and on a CUDA GPU (bf16 + channels-last keeps a large GPU busy only from
#: thousands of 40x40 crops on; ~1 GB of activations at 4096)
CPU_BATCH_SIZE = 128
GPU_BATCH_SIZE = 4096
SMALL_GPU_BATCH_SIZE = 1024
_SMALL_GPU_BYTES = 8 * 2**30


def batch_size_for(device_type: str, gpu_memory_bytes: int | None = None) -> int:
    """The batch size for a device of ``device_type`` (``cpu``, ``cuda``, ``mps``) with this much GPU memory."""
    if device_type != "cuda":
        return CPU_BATCH_SIZE
    if gpu_memory_bytes is not None and gpu_memory_bytes < _SMALL_GPU_BYTES:
        return SMALL_GPU_BATCH_SIZE
    return GPU_BATCH_SIZE


def default_batch_size(device: torch.device | str = "cpu") -> int:
    """:func:`batch_size_for` this device (its memory read from CUDA)."""
    device = torch.device(device)
    memory = None
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            memory = int(torch.cuda.get_device_properties(device).total_memory)
    return batch_size_for(device.type, memory)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Within the block, CUDA's fp32 convolutions and matrix products use TF32 (``enabled``) or IEEE fp32.

    The flags are the process's; they are put back as they were. Newer torch has ``fp32_precision``
    settings and refuses reading the older ``allow_tf32`` flags once the new ones are set, so the
    new ones are used where they exist. No effect on CPU computation.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    matmul = torch.backends.cuda.matmul
    if conv is not None and hasattr(conv, "fp32_precision") and hasattr(matmul, "fp32_precision"):
        before = (conv.fp32_precision, matmul.fp32_precision)
        value = "tf32" if enabled else "ieee"
        conv.fp32_precision = matmul.fp32_precision = value
        try:
            yield
        finally:
            conv.fp32_precision, matmul.fp32_precision = before
        return
    before = (torch.backends.cudnn.allow_tf32, matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = matmul.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, matmul.allow_tf32 = before


def describe_device(device: torch.device | str = "cpu") -> str:
    """What computes: the GPU's name and compute capability, or the CPU's model and its vector units."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            major, minor = torch.cuda.get_device_capability(device)
            return f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
        except Exception:  # noqa: BLE001
            return "a CUDA GPU"
    if device.type == "mps":
        return "an Apple GPU (mps)"
    name = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    if not name:
        import platform

        name = platform.processor() or platform.machine()
    try:
        caps = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        caps = "?"
    return f"{name} ({caps}{', native bf16' if cpu_has_native_bf16() else ''})"


__all__ = ["CPU_BATCH_SIZE", "GPU_BATCH_SIZE", "batch_size_for", "choose_precision", "cpu_has_native_bf16",
           "cuda_has_native_bf16", "default_batch_size", "describe_device", "resolve_precision", "select_device",
           "tf32"]
