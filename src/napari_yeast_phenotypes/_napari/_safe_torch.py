"""Import torch inside napari without crashing the process on Mesa OpenGL.

PyPI's Linux torch wheels bring ``triton``, which bundles its own LLVM. torch (through
``torch._dynamo``, which the optimisers and torchvision import) imports triton the first time it is
imported. When
napari has already drawn with Mesa (llvmpipe, radeonsi, ...), Mesa's ``libLLVM`` is loaded, and
loading triton's LLVM next to it crashes the whole process with a segmentation fault
(pytorch/pytorch#129100, #96060); importing torch *before* the OpenGL context exists is fine.
The plugin imports torch late on purpose (napari must start fast), so while importing it with a
system LLVM loaded we make ``import triton`` fail: torch then runs without triton, which eager
inference and training on CPU or CUDA do not use (only ``torch.compile`` does).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_MESA_LLVM_MARKERS = ("libLLVM", "libgallium", "_dri.so")


def system_llvm_loaded(maps_file: str | Path = "/proc/self/maps") -> bool:
    """Whether this process has a system LLVM (Mesa's) mapped; ``False`` where /proc does not exist."""
    try:
        maps = Path(maps_file).read_text(errors="replace")
    except OSError:
        return False
    return any(marker in maps for marker in _MESA_LLVM_MARKERS)


@contextmanager
def triton_kept_out() -> Iterator[bool]:
    """Within the block, ``import triton`` raises ImportError if loading it could crash; yields whether it does."""
    block = "triton" not in sys.modules and system_llvm_loaded()
    if not block:
        yield False
        return
    sys.modules["triton"] = None  # type: ignore[assignment]  # the documented way to make an import fail
    try:
        yield True
    finally:
        if "triton" in sys.modules and sys.modules["triton"] is None:
            del sys.modules["triton"]


def import_torch_core() -> None:
    """Import the core modules that need torch (model, pipeline), safely; call before using them."""
    with triton_kept_out():
        import torch
        import torch._dynamo  # noqa: F401 - the optimisers (training) import it later, then outside this block

        from ..core import pipeline  # noqa: F401
        from ..core.network import checkpoint, model  # noqa: F401

