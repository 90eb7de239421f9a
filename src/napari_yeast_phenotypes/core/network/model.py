"""The adapted ResNet50, its freeze policy, the :class:`Classifier` that carries it, and the check of its weights.

Adaptation, as in the original study: torchvision's ResNet50 (written out in :mod:`.resnet`, same module
names and state-dict keys, so the classify path needs no torchvision); ``conv1`` takes one channel, its
weights being the ImageNet RGB weights averaged over the colour axis; ``fc`` has one output per
class. By default only ``conv1`` and ``fc`` are trained, and frozen BatchNorm layers stay in eval
mode while training, so their running statistics do not drift (``requires_grad=False`` alone
does not stop a BatchNorm layer in train mode from updating them).

Checkpoints that never run code are written and read in :mod:`.checkpoint`; the weights a network starts
from (ImageNet's, or a model file's) come from :mod:`.base_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ...phenotypes import CLASS_NAMES
from ..config import parse_trainable
from ..data.crops import CropSettings
from ..errors import InputError
from .resnet import ResNet50

DEFAULT_TRAINABLE = ("conv1", "fc")


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


def adapt_state_dict(state: dict) -> dict:
    """Make a torchvision ResNet50 state dict fit a 1-channel conv1: average the RGB weights."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    w = state.get("conv1.weight")
    if w is not None and w.ndim == 4 and w.shape[1] == 3:
        state["conv1.weight"] = w.mean(dim=1, keepdim=True)
    return state


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


