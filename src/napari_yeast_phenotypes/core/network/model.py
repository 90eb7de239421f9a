"""The adapted ResNet50, its freeze policy, and checkpoints that never run code.

Adaptation, as in the original study: torchvision's ResNet50 (written out in :mod:`.resnet`, same module
names and state-dict keys, so the classify path needs no torchvision); ``conv1`` takes one channel, its
weights being the ImageNet RGB weights averaged over the colour axis; ``fc`` has one output per
class. By default only ``conv1`` and ``fc`` are trained, and frozen BatchNorm layers stay in eval
mode while training, so their running statistics do not drift (``requires_grad=False`` alone
does not stop a BatchNorm layer in train mode from updating them).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ... import __version__
from ...phenotypes import CLASS_NAMES
from ..config import parse_class_names, parse_trainable
from ..data.crops import CropSettings
from ..errors import InputError
from ..files.atomic import atomic_write
from .resnet import ResNet50

CHECKPOINT_FORMAT = "napari-yeast-phenotypes/checkpoint"
CHECKPOINT_VERSION = 1
DEFAULT_TRAINABLE = ("conv1", "fc")
BASE_WEIGHT_CHOICES = "imagenet | none | PATH"


class WeightsUnavailable(InputError):
    """ImageNet weights are neither cached nor downloadable (the message says where to put the file)."""


class YeastResNet(ResNet50):
    """torchvision ResNet50 with a 1-channel ``conv1`` and an n-way ``fc``.

    Its ``state_dict`` has exactly torchvision's keys, so a bare state dict saved from a plain
    ``torchvision.models.resnet50`` with the same two changes loads into it.
    """

    def __init__(self, n_classes: int = len(CLASS_NAMES), trainable=DEFAULT_TRAINABLE, init: bool = True):
        super().__init__(num_classes=n_classes, init=init)
        self.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if init:
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.set_trainable(trainable)

    @classmethod
    def from_state(cls, state: dict, n_classes: int, trainable=DEFAULT_TRAINABLE) -> YeastResNet:
        """The network holding the weights of ``state`` (every key, exactly), without initialising any first.

        Built on the ``meta`` device and given the state's tensors (``assign``): none of the random
        initialisation of 25 M weights is computed and nothing is copied (0.1 s instead of 0.3-0.7 s
        on 2 cores). Floating-point tensors are made float32 and contiguous, as a new network's are.
        Raises ``RuntimeError`` (as ``load_state_dict``) when the keys or shapes do not fit.
        (torchvision's He-normal initialisation is not even called: on the meta device ``normal_``
        imports ``torch._dynamo``, and with it triton, which crashes napari on Mesa, ``_safe_torch``.)
        """
        with torch.device("meta"):
            model = cls(n_classes, trainable, init=False)
        state = {k: (v.float() if v.is_floating_point() else v).contiguous() if isinstance(v, torch.Tensor) else v
                 for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        return model

    def set_trainable(self, trainable) -> None:
        """Freeze every parameter except those of the named top-level children (or ``"all"``)."""
        names = parse_trainable(trainable)
        self.trainable = names
        for name, child in self.named_children():
            on = names == ("all",) or name in names
            for p in child.parameters():
                p.requires_grad_(on)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            # a BatchNorm whose affine parameters are frozen is treated as frozen as a whole
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in m.parameters()
                ):
                    m.eval()
        return self


def imagenet_weights_path() -> Path:
    """Where torchvision caches the ImageNet ResNet50 weights (TORCH_HOME)."""
    from torchvision.models import ResNet50_Weights

    name = os.path.basename(ResNet50_Weights.IMAGENET1K_V2.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _damaged_cache(path: Path, url: str, why: str) -> InputError:
    return WeightsUnavailable(
        f"the cached ImageNet weights file {path} is damaged ({why}): an interrupted download or copy. "
        f"Delete it (it is downloaded again where the internet is reachable), or replace it with a good copy "
        f"of {url}; or train without it: --base-weights none --trainable all"
    )


def expected_sha256_prefix(path: Path) -> str | None:
    """The first hex digits of the SHA-256 that torchvision puts in its weights' file names
    (``resnet50-11ad3fa6.pth``), or ``None``."""
    from torch.hub import HASH_REGEX

    found = HASH_REGEX.search(path.name)
    return found.group(1) if found and found.group(1) else None


def load_cached_imagenet_file(path: Path, url: str) -> dict:
    """Read torchvision's cached weights file, checked against the hash in its name."""
    from ..files.fingerprint import file_sha256

    expected = expected_sha256_prefix(path)
    if expected is not None and not file_sha256(path).startswith(expected):
        # a file that does not match its name was cut short or changed: it must not silently give
        # other weights (torchvision checks this only when it downloads)
        raise _damaged_cache(path, url, f"its SHA-256 does not start with {expected}, as its name says")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _damaged_cache(path, url, f"{type(exc).__name__}: {str(exc)[:120]}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _damaged_cache(path, url, "it holds no state dict of tensors")
    return state


def load_imagenet_state_dict() -> dict:
    """ImageNet ResNet50 weights through torchvision's weights API (cache first, then download)."""
    from torchvision.models import ResNet50_Weights

    weights = (ResNet50_Weights.IMAGENET1K_V2, ResNet50_Weights.IMAGENET1K_V1)
    cached = [Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url) for w in weights]
    for path, w in zip(cached, weights):
        if path.exists():
            return load_cached_imagenet_file(path, w.url)
    try:
        return ResNet50_Weights.IMAGENET1K_V2.get_state_dict(progress=True)
    except Exception as exc:
        raise WeightsUnavailable(
            "the ImageNet weights of ResNet50 are not on this machine and could not be downloaded "
            f"({type(exc).__name__}: {exc}). Either copy the file {cached[0].name} (from "
            f"{ResNet50_Weights.IMAGENET1K_V2.url}) to {cached[0]} (set TORCH_HOME to use another "
            "cache folder), or pass --base-weights PATH to a ResNet50 state dict you have, or "
            "train without them: --base-weights none --trainable all (slower to learn, needs more "
            "crops)."
        ) from exc


def adapt_state_dict(state: dict) -> dict:
    """Make a torchvision ResNet50 state dict fit a 1-channel conv1: average the RGB weights."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    w = state.get("conv1.weight")
    if w is not None and w.ndim == 4 and w.shape[1] == 3:
        state["conv1.weight"] = w.mean(dim=1, keepdim=True)
    return state


def build_model(n_classes: int = len(CLASS_NAMES), base_weights: str | os.PathLike | None = "imagenet",
                trainable=DEFAULT_TRAINABLE) -> YeastResNet:
    """The adapted ResNet50 with base weights from ImageNet, none (random), or a local file.

    ImageNet's ``fc`` is not used: the classifier head starts fresh for ``n_classes``. A local
    file whose ``fc`` has ``n_classes`` outputs (a model of this package: fine-tuning the current
    model) keeps it, so fine-tuning starts from the model's own calls.
    """
    model = YeastResNet(n_classes, trainable)
    if base_weights in (None, "none", ""):
        return model
    if str(base_weights) == "imagenet":
        state = load_imagenet_state_dict()
    else:
        state = read_model_file(base_weights)["model_state"]
    state = adapt_state_dict(state)
    fc = state.get("fc.weight")
    if str(base_weights) == "imagenet" or fc is None or tuple(fc.shape) != tuple(model.fc.weight.shape):
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    check_finite_state(state, base_weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise InputError(
            f"{base_weights}: not a ResNet50 state dict (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}...)"
        )
    return model


@dataclass
class Classifier:
    """A model ready to classify, with everything needed to preprocess exactly as in training."""

    model: YeastResNet
    class_names: tuple[str, ...] = CLASS_NAMES
    crop_settings: CropSettings = field(default_factory=CropSettings)
    metadata: dict = field(default_factory=dict)
    #: summary of the training crops for the out-of-distribution score (:mod:`.ood`), or None
    ood: object | None = None
    #: what the training that made it measured, with arrays (probabilities on the report crops);
    #: in memory only, never saved (the checkpoint keeps the plain figures in ``metadata``)
    evaluation: dict | None = field(default=None, repr=False, compare=False)

    @property
    def external_crops(self) -> bool:
        """Whether the model learnt from crops made elsewhere (not by this package's crop function)."""
        return (self.metadata.get("crop_origin") or {}).get("kind") == "external"


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


def non_finite(state: dict) -> list[str]:
    """The names of the floating-point tensors of ``state`` that hold a NaN or an infinity.

    One sum per tensor: a NaN or an infinity makes it NaN or infinite, so a finite sum means finite
    values (12 ms for the 25 M weights of the network, against 180 ms for a mask of them); only a
    tensor whose sum is not finite (a bad value, or finite values whose sum overflows) is looked at
    value by value.
    """
    floats = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    with torch.no_grad():
        sums = [v.detach().sum() for v in floats.values()]
    ok = torch.isfinite(torch.stack(sums)).tolist() if sums else []
    return [k for k, fine in zip(floats, ok) if not fine and not bool(torch.isfinite(floats[k]).all())]


def check_finite_state(state: dict, path) -> None:
    """Refuse weights holding NaN or infinity (a training that diverged): they would classify every cell
    alike, with NaN probabilities."""
    bad = non_finite(state)
    if bad:
        raise InputError(
            f"{path} holds weights that are not finite numbers (NaN or infinity in {', '.join(bad[:3])}"
            + (f" and {len(bad) - 3} more" if len(bad) > 3 else "") + "): it comes from a training that "
            "diverged. Use an earlier checkpoint, or train again with a lower learning rate (--lr)"
        )


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
    n_out = fc.shape[0]
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
    try:
        parse_trainable(data.get("trainable", DEFAULT_TRAINABLE))
    except InputError as exc:
        raise InputError(f"{path}: its list of trained layers is not valid: {exc}") from exc
    try:
        model = YeastResNet.from_state(state, n_out, data.get("trainable", DEFAULT_TRAINABLE))
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit the adapted ResNet50: {str(exc)[:300]}") from exc
    check_finite_state(state, path)
    model.eval()
    metadata = dict(data.get("metadata", {}))
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
