"""What the first-batch check of an inference copy found, remembered per model, machine and torch version.

:func:`~napari_yeast_phenotypes.core.network.cpu_inference.inference_forward` checks a faster copy of
the network (bf16, oneDNN-packed, TF32) against the plain fp32 model on the first batch before it
uses it: one plain forward pass and one per candidate, ~0.5-1 s on 2 cores before the first frame.
The outcome depends on the weights, the device and the arithmetic of this torch build, not on the
movie: it is kept in a small JSON file in the package's cache (``inference-checks.json``), keyed by
the SHA-256 of the weights, what computes (CPU model and vector units, or GPU and compute
capability), the torch version and the precision asked for, and a later run of the same model on
the same machine uses the copy that passed without checking again. A file that cannot be read or
written is ignored (the check then simply runs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json

import torch

from ..files.paths import cache_dir

MEMO_FILE = "inference-checks.json"
#: entries kept (the newest); one per model, device and precision asked for
MAX_ENTRIES = 256
MEMO_VERSION = 1


def weights_sha256(model: torch.nn.Module) -> str:
    """The SHA-256 of the model's state (names, shapes, dtypes and bytes of every tensor): ~0.1 s for 25 M weights."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        t = value.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.numel():
            digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def memo_key(weights: str, device: str, precision: str) -> str:
    """The key of one check: the weights' hash, what computes (``describe_device``), torch's version, the precision
    asked for."""
    return json.dumps([MEMO_VERSION, weights, device, torch.__version__, precision])


def _read() -> dict:
    try:
        data = json.loads((cache_dir() / MEMO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recall(key: str) -> dict | None:
    """What the check of ``key`` found (``{"path", "precision", "notes"}``), or ``None``."""
    found = _read().get(key)
    if not isinstance(found, dict) or not isinstance(found.get("path"), str) or not isinstance(
            found.get("precision"), str):
        return None
    return found


def remember(key: str, path: str, precision: str, notes: list[str]) -> None:
    """Keep what the check of ``key`` found; nothing happens where the cache cannot be written."""
    from ..files.atomic import atomic_write

    data = _read()
    data.pop(key, None)
    data[key] = {"path": path, "precision": precision, "notes": list(notes)}
    for old in list(data)[:-MAX_ENTRIES]:
        del data[old]
    with contextlib.suppress(Exception):  # a read-only or full cache only costs the check next time
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / MEMO_FILE) as fh:
            json.dump(data, fh, indent=0)


__all__ = ["MEMO_FILE", "memo_key", "recall", "remember", "weights_sha256"]
