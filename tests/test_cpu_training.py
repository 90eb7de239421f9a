"""The convolutions' weight gradients as GEMMs (core/cpu_training.py): the same gradients as torch's,
for every kind of convolution ResNet50 has on 40x40 crops, and the model is left as it was."""

import pytest
import torch
from torch import nn

from napari_yeast_phenotypes.core.network import cpu_training
from napari_yeast_phenotypes.core.network.cpu_training import GemmGradConv2d, gemm_weight_grads
from napari_yeast_phenotypes.core.network.model import YeastResNet


def assert_close_to(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal up to float rounding of long sums: tolerance relative to the tensor's magnitude."""
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)


def _grads(conv: nn.Conv2d, x: torch.Tensor, grad_out_seed: int = 3):
    x = x.detach().clone().requires_grad_(x.requires_grad)
    out = conv(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_out_seed))
    out.backward(g)
    return out.detach(), (x.grad if x.requires_grad else None), conv.weight.grad


@pytest.fixture
def gemm_calls(monkeypatch):
    """How many times the GEMM computed a weight gradient."""
    calls = []
    real = cpu_training.conv_weight_grad

    def counted(*args):
        calls.append(args[2:])
        return real(*args)

    monkeypatch.setattr(cpu_training, "conv_weight_grad", counted)
    return calls


# (c_in, c_out, kernel, stride, padding, input size): ResNet50's convolutions on a 40x40 crop
SHAPES = {
    "conv1 7x7/2 on 40x40": (1, 64, 7, 2, 3, 40),
    "layer1 3x3 on 10x10": (64, 64, 3, 1, 1, 10),
    "layer2 3x3/2 10x10 to 5x5": (128, 128, 3, 2, 1, 10),
    "layer3 3x3 on 3x3": (256, 256, 3, 1, 1, 3),
    "layer4 3x3/2 3x3 to 2x2": (512, 512, 3, 2, 1, 3),
    "1x1": (256, 64, 1, 1, 0, 5),
    "downsample 1x1/2": (256, 512, 1, 2, 0, 10),
    "3x3 on 20x20 (oneDNN's weight gradient)": (16, 16, 3, 1, 1, 20),
}


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_gradients_equal_torchs_for_every_kind_of_convolution(name, layout, gemm_calls):
    c_in, c_out, k, stride, pad, size = SHAPES[name]
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    torch.manual_seed(0)
    plain = nn.Conv2d(c_in, c_out, k, stride, pad, bias=False).to(memory_format=fmt)
    fast = nn.Conv2d(c_in, c_out, k, stride, pad, bias=False).to(memory_format=fmt)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(3, c_in, size, size).contiguous(memory_format=fmt).requires_grad_(c_in > 1)
    out_ref, gx_ref, gw_ref = _grads(plain, x)
    with gemm_weight_grads(fast) as switched:
        assert switched == 1 and type(fast) is GemmGradConv2d
        out, gx, gw = _grads(fast, x)
    assert type(fast) is nn.Conv2d
    assert torch.equal(out, out_ref)  # the forward pass is torch's own
    assert gw.shape == gw_ref.shape
    assert_close_to(gw, gw_ref)
    if gx_ref is not None:
        assert_close_to(gx, gx_ref)
    out_pixels = out.shape[2] * out.shape[3]
    used_gemm = k == 1 or out_pixels <= cpu_training.GEMM_MAX_OUTPUT_PIXELS
    assert len(gemm_calls) == int(used_gemm), (name, out_pixels)


def test_a_frozen_weight_gets_no_gradient_and_the_input_gradient_is_torchs(gemm_calls):
    torch.manual_seed(1)
    plain = nn.Conv2d(32, 32, 3, 1, 1, bias=False).requires_grad_(False)
    fast = nn.Conv2d(32, 32, 3, 1, 1, bias=False).requires_grad_(False)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 32, 5, 5, requires_grad=True)
    _, gx_ref, _ = _grads(plain, x)
    with gemm_weight_grads(fast):
        _, gx, gw = _grads(fast, x)
    assert gw is None and not gemm_calls
    assert_close_to(gx, gx_ref)


@pytest.mark.slow
def test_a_whole_training_step_gives_the_same_gradients():
    """Every layer trained (BatchNorm in train mode too), channels-last as train.py runs it."""
    x = torch.rand(4, 1, 40, 40).contiguous(memory_format=torch.channels_last)
    y = torch.arange(4)
    grads = []
    for fast in (False, True):
        torch.manual_seed(2)
        model = YeastResNet(8, "all").to(memory_format=torch.channels_last).train()
        with gemm_weight_grads(model) if fast else torch.enable_grad():
            nn.functional.cross_entropy(model(x), y).backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    plain, fast = grads
    assert plain.keys() == fast.keys() and all(g is not None for g in fast.values())
    for k in plain:
        assert_close_to(fast[k], plain[k], rel=1e-3)


def test_the_model_is_plain_again_afterwards_even_after_an_error_or_a_closed_generator():
    model = YeastResNet(8, "all")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    state = model.state_dict()
    seen = {}

    def fail_inside():
        with gemm_weight_grads(model) as switched:
            seen.update(switched=switched, types={type(m) for m in convs}, keys=list(model.state_dict()))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert seen["switched"] == len(convs) == 53 and seen["types"] == {GemmGradConv2d}
    assert seen["keys"] == list(state)  # same keys: checkpoints do not change
    assert all(type(m) is nn.Conv2d for m in convs)

    def steps():
        with gemm_weight_grads(model):
            yield 1
            yield 2

    gen = steps()
    next(gen)
    assert all(type(m) is GemmGradConv2d for m in convs)
    gen.close()  # a cancelled training: the generator is closed at its yield
    assert all(type(m) is nn.Conv2d for m in convs)


def test_only_on_the_cpu_and_only_convolutions_it_can_stand_in_for():
    model = YeastResNet(8)
    with gemm_weight_grads(model, "cuda") as switched:  # cuDNN has its own: nothing changes
        assert switched == 0
    odd = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False), nn.Conv2d(4, 4, 3, bias=True),
                        nn.Conv2d(4, 4, 3, dilation=2, bias=False), nn.Conv2d(4, 4, (1, 3), bias=False),
                        nn.Conv2d(4, 4, 3, padding="same", bias=False))
    with gemm_weight_grads(odd) as switched:
        assert switched == 0
        assert all(type(m) is nn.Conv2d for m in odd)
