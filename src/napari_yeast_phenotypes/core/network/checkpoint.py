"""Checkpoints that never run code: one file of tensors and plain values written atomically
(:func:`save_checkpoint`), any model file read and checked without running code (:func:`read_model_file`:
this package's checkpoints, a bare ResNet50 state dict as the original notebook saved, a whole pickled
model only when trusted), and a :class:`~.model.Classifier` loaded from one (:func:`load_classifier`)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from ... import __version__
from ...phenotypes import CLASS_NAMES
from ..config import parse_class_names, parse_trainable
from ..data.crops import CropSettings
from ..errors import InputError
from ..files.atomic import atomic_write
from .model import DEFAULT_TRAINABLE, Classifier, YeastResNet, adapt_state_dict, check_finite_state

CHECKPOINT_FORMAT = "napari-yeast-phenotypes/checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, clf: Classifier, **metadata) -> Path:
    """Save one file of tensors and plain values (loadable with ``weights_only=True``), atomically."""
    path = Path(path)
    meta = {**clf.metadata, **metadata}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "package_version": __version__,
        "model_state": {k: v.detach().cpu().contiguous() for k, v in clf.model.state_dict().items()},
        "class_names": list(clf.class_names),
        "crop_settings": clf.crop_settings.to_dict(),
        "trainable": list(clf.model.trainable),
        "metadata": _plain(meta),
    }
    if clf.ood is not None:
        payload["ood"] = clf.ood.to_state()  # its own key: tensors and plain values, no code
    with atomic_write(path, "wb") as fh:  # straight into the file: no second copy of 100 MB in memory
        torch.save(payload, fh)
    return path


def _plain(obj):
    """Reduce metadata to str/int/float/bool/None/list/dict so it loads without code."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def read_model_file(path: str | os.PathLike, *, trust: bool = False) -> dict:
    """Read a model file into ``{"model_state", "class_names"?, "crop_settings"?, ...}``.

    Accepts this package's checkpoints, a bare ResNet50 state dict (as the original notebook
    saved), and, only with ``trust=True``, a whole pickled model. Never runs code from the file
    unless ``trust`` is set.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"model file {path} is empty (0 bytes); it was not saved completely")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():
            raise InputError(
                f"refused to load {path}: it contains Python objects or code, not only tensors and "
                "plain values, and loading it could run that code. If it is a whole model pickled by "
                "the original notebook and you trust where it came from, load it with "
                "--trust-model-file (this runs any code inside the file with your permissions)."
            ) from exc
        raise InputError(
            f"{path} is not a readable model file: it is not a PyTorch checkpoint that can be checked "
            "without running code (it may be truncated, not a model, or a plain pickle). Copy it again "
            "or pick the right file; if it is a model pickled by the original notebook and you trust "
            "where it came from, --trust-model-file loads it (and runs any code inside it)."
        ) from exc
    except Exception as exc:
        raise InputError(
            f"{path} is not a readable model file ({type(exc).__name__}: {str(exc)[:200]}). It may "
            "be truncated (an interrupted copy or save) or not a PyTorch model at all; copy it again "
            "or pick the right file."
        ) from exc
    if isinstance(obj, nn.Module):
        return {"model_state": obj.state_dict()}
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        version = obj.get("format_version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise InputError(f"{path}: the checkpoint's format_version is {version!r}, not a whole number; "
                             "the file was changed or made by another program")
        if version > CHECKPOINT_VERSION:
            raise InputError(f"{path} was saved by a newer napari-yeast-phenotypes; update the package")
        return obj
    if isinstance(obj, dict) and "model_state" in obj and isinstance(obj["model_state"], dict):
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"model_state": obj}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return {"model_state": obj["state_dict"]}
    raise InputError(f"{path} holds no model weights (found {type(obj).__name__}); pick a model file")


def _check_fields(data: dict, path) -> None:
    """Refuse checkpoint fields of the wrong type (a file edited or made by another program)."""
    expect = {"class_names": (list, tuple), "crop_settings": dict, "trainable": (list, tuple, str),
              "metadata": dict, "format_version": int}
    for key, kind in expect.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise InputError(f"{path}: the checkpoint's field {key!r} holds {type(value).__name__} "
                             f"{str(value)[:60]!r}, not what this package writes; the file was changed or made "
                             "by another program")
    origin = (data.get("metadata") or {}).get("crop_origin")
    if origin is not None and not isinstance(origin, dict):
        raise InputError(f"{path}: the checkpoint's metadata crop_origin is {type(origin).__name__}, not a mapping; "
                         "the file was changed or made by another program")
    state = data.get("model_state")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in state.items()):
        raise InputError(f"{path}: the checkpoint's weights are not a mapping of names to tensors")


def load_classifier(path: str | os.PathLike, class_names=None, *, trust: bool = False) -> Classifier:
    """Load a checkpoint or a bare state dict as a :class:`Classifier` in eval mode.

    Parameters
    ----------
    class_names
        Needed for a bare state dict when its classes are not the canonical eight in canonical
        order; a checkpoint's own class names win, and a mismatch in number is an error.
    """
    data = read_model_file(path, trust=trust)
    _check_fields(data, path)
    state = adapt_state_dict(data["model_state"])
    fc = state.get("fc.weight")
    if fc is None or state.get("conv1.weight") is None:
        raise InputError(f"{path}: not a ResNet50 classifier (no conv1/fc weights)")
    n_out = fc.shape[0] if fc.ndim == 2 else 0
    if n_out < 2:
        raise InputError(f"{path}: its last layer has {n_out} output(s); a classifier needs at least two classes "
                         "(with one it calls every cell that class, at confidence 1)")
    names = data.get("class_names")
    if names is not None:
        names = list(parse_class_names(names, f"{path}'s class names"))
    if class_names is not None:
        class_names = parse_class_names(class_names)
    if names is None:
        names = list(class_names) if class_names is not None else list(CLASS_NAMES)
    elif class_names is not None and list(class_names) != list(names):
        raise InputError(f"{path} names its own classes {names}; they differ from the ones given {list(class_names)}")
    if len(names) != n_out:
        raise InputError(
            f"{path} classifies into {n_out} classes but {len(names)} class names are in use "
            f"({', '.join(names)}). Give the model's class names in its output order "
            "(--class-names A,B,...), or use a model made for these classes."
        )
    trainable = data.get("trainable")
    trainable = DEFAULT_TRAINABLE if trainable is None else trainable  # a null is as good as no entry
    try:
        parse_trainable(trainable)
    except InputError as exc:
        raise InputError(f"{path}: its list of trained layers is not valid: {exc}") from exc
    try:
        model = YeastResNet.from_state(state, n_out, trainable)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit the adapted ResNet50: {str(exc)[:300]}") from exc
    check_finite_state(state, path)
    model.eval()
    metadata = data.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InputError(f"{path}: its metadata is a {type(metadata).__name__}, not a record of fields (edited by "
                         "hand?); save the model again from a copy that works, or train it anew")
    metadata = dict(metadata)
    if data.get("format") != CHECKPOINT_FORMAT and "crop_origin" not in metadata:
        # a bare state dict (the original notebook's) says nothing of how its crops were made
        metadata["crop_origin"] = {"kind": "external", "normalisation": "unknown (a bare state dict)"}
    try:
        settings = CropSettings.from_dict(data.get("crop_settings"))
    except InputError as exc:
        raise InputError(f"{path}: its crop settings are not valid: {exc}") from exc
    ood = None
    if data.get("ood") is not None:
        from .ood import OODSummary

        ood = OODSummary.from_state(data["ood"], str(path))
        if ood.class_means.shape[0] != len(names):
            raise InputError(f"{path}: its summary of the training data is for {ood.class_means.shape[0]} classes, "
                             f"the model has {len(names)}; the file was changed or made by another program")
    return Classifier(model, tuple(names), settings, metadata, ood)
