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


def imagenet_files() -> list[tuple[Path, str]]:
    """torchvision's ImageNet ResNet50 weights files in the cache (they may not be there): ``(path, url)``, the
    newer (V2) first, then V1, then any other ``resnet50-<hash>.pth`` put there (``install-weights``)."""
    from torchvision.models import ResNet50_Weights

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    known = [(folder / os.path.basename(w.url), w.url)
             for w in (ResNet50_Weights.IMAGENET1K_V2, ResNet50_Weights.IMAGENET1K_V1)]
    names = {p.name for p, _ in known}
    others = sorted(p for p in folder.glob("resnet50-*.pth") if p.name not in names and expected_sha256_prefix(p))
    return known + [(p, f"the file installed as {p.name}") for p in others]


def imagenet_weights_available() -> bool:
    """Whether ImageNet ResNet50 weights are in the cache (checked when they are loaded, not here)."""
    return any(path.is_file() for path, _ in imagenet_files())


def load_imagenet_state_dict() -> dict:
    """ImageNet ResNet50 weights through torchvision's weights API (cache first, then download)."""
    from torchvision.models import ResNet50_Weights

    cached = imagenet_files()
    for path, url in cached:
        if path.exists():
            return load_cached_imagenet_file(path, url)
    try:
        return ResNet50_Weights.IMAGENET1K_V2.get_state_dict(progress=True)
    except Exception as exc:
        raise WeightsUnavailable(
            "the ImageNet weights of ResNet50 are not on this machine and could not be downloaded "
            f"({type(exc).__name__}: {exc}). On a machine with the internet, download "
            f"{ResNet50_Weights.IMAGENET1K_V2.url} (or {ResNet50_Weights.IMAGENET1K_V1.url}), bring the file "
            f"here and install it: yeast-phenotypes install-weights {cached[0][0].name} (it checks the file and "
            f"puts it at {cached[0][0]}; set TORCH_HOME to use another cache folder). Or pass --base-weights PATH "
            "to a ResNet50 state dict you have, or train without them: --base-weights none --trainable all "
            "(slower to learn, needs more crops)."
        ) from exc


def _resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """The names and shapes of torchvision's ResNet50 state dict (1000 classes, RGB), without allocating it."""
    from torchvision.models import resnet50

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in resnet50(weights=None).state_dict().items()}


def check_resnet50_state_dict(state, what) -> None:
    """Refuse, in plain words, anything that is not a torchvision ResNet50 state dict of finite tensors."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{what} holds no state dict of tensors: it is not torchvision's ResNet50 weights file")
    want = _resnet50_shapes()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    wrong = [k for k in want if k in state and tuple(state[k].shape) != want[k]]
    if missing or extra or wrong:
        detail = "; ".join(x for x in (
            f"missing {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}" if missing else "",
            f"unexpected {', '.join(extra[:3])}{'...' if len(extra) > 3 else ''}" if extra else "",
            f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, not {want[wrong[0]]}" if wrong else "") if x)
        raise InputError(f"{what} is not torchvision's ResNet50 ImageNet weights ({detail})")
    check_finite_state(state, what)


def install_imagenet_weights(source: str | os.PathLike) -> tuple[Path, bool]:
    """Install a downloaded torchvision ResNet50 weights file into the torch cache, checked, atomically.

    The file's SHA-256 must start with the hash torchvision puts in its name
    (``resnet50-11ad3fa6.pth``: ``11ad3fa6``); a file renamed since it was downloaded is known by
    its content when it is one of torchvision's ResNet50 files (V1 or V2). It must load, without
    running code, as a ResNet50 state dict (every layer's name and shape). It is copied to a
    temporary file beside the destination, checked again there, and renamed into place: the cache
    never holds half a file.

    Returns the installed path and whether it was already there (the same file).

    Raises
    ------
    InputError
        Not a file; a name whose hash the content does not match (a download cut short or a changed
        file); a file that is none of torchvision's ResNet50 files and carries no hash in its name;
        not a ResNet50 state dict; a cache folder that cannot be written.
    """
    import shutil
    import tempfile

    from ..files.atomic import new_file_mode
    from ..files.fingerprint import file_sha256

    src = Path(source)
    if not src.is_file():
        raise InputError(f"{src} is not a file; give the ResNet50 weights file you downloaded (e.g. "
                         f"{imagenet_files()[0][0].name})")
    digest = file_sha256(src)
    known = {expected_sha256_prefix(p): p for p, _ in imagenet_files()[:2]}
    dest = next((p for prefix, p in known.items() if prefix and digest.startswith(prefix)), None)
    if dest is None:
        prefix = expected_sha256_prefix(src)
        if not src.name.startswith("resnet50-") or prefix is None:
            raise InputError(
                f"{src} is none of torchvision's ResNet50 ImageNet weights files (its SHA-256 {digest[:16]}... is "
                f"not theirs: {', '.join(p.name for p in known.values())}) and its name carries no hash to check "
                "it by; give the file as torchvision downloads it (resnet50-<hash>.pth)")
        if not digest.startswith(prefix):
            raise InputError(
                f"{src} is damaged or not the file its name says: its SHA-256 starts with {digest[:len(prefix)]}, "
                f"not {prefix} as the name {src.name} promises (a download cut short, or another file under that "
                "name). Download it again")
        dest = Path(torch.hub.get_dir()) / "checkpoints" / src.name
    try:
        state = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise InputError(f"{src} cannot be read as a weights file without running code ({type(exc).__name__}: "
                         f"{str(exc)[:120]}); it is not torchvision's ResNet50 weights") from exc
    check_resnet50_state_dict(state, src)
    del state
    if dest.is_file() and file_sha256(dest) == digest:
        return dest, True
    tmp = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        with os.fdopen(fd, "wb") as out, open(src, "rb") as fh:
            shutil.copyfileobj(fh, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, new_file_mode(dest))
        if file_sha256(tmp) != digest:  # a copy that did not arrive whole never takes the name
            raise InputError(f"copying {src} to {dest.parent} did not give the same file (a disk error?); try again")
        os.replace(tmp, dest)
        tmp = None
    except OSError as exc:
        from ..errors import write_error

        raise write_error(dest, exc) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return dest, False


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
