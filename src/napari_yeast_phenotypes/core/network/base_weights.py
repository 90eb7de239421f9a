"""The weights a network starts from: ImageNet's ResNet50 weights (torchvision's cache, checked against the
hash in the file's name; downloaded; installed from a file brought by hand, :func:`install_imagenet_weights`),
none, or a model file's (:func:`build_model`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ...phenotypes import CLASS_NAMES
from ..errors import InputError
from .checkpoint import read_model_file
from .model import DEFAULT_TRAINABLE, YeastResNet, adapt_state_dict, check_finite_state

BASE_WEIGHT_CHOICES = "imagenet | none | PATH"


class WeightsUnavailable(InputError):
    """ImageNet weights are neither cached nor downloadable (the message says where to put the file)."""


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
