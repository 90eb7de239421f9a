"""The device policy (precision, batch size, TF32), the CUDA inference path's logic run on the CPU, and the
remembered first-batch check. No GPU here: what is CUDA-only is the decision (pure functions, a monkeypatched
capability) and the code that runs the same on any device (autocast + channels-last, checked on the CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_yeast_phenotypes.core.config import ClassifyConfig
from napari_yeast_phenotypes.core.network import cpu_inference, device, inference_memo
from napari_yeast_phenotypes.core.network.cpu_inference import (
    BF16_LOGIT_TOLERANCE,
    CUDA_PATH,
    FAST_LOGIT_TOLERANCE,
    _build_autocast,
    candidates,
    inference_forward,
)
from napari_yeast_phenotypes.core.network.model import YeastResNet
from napari_yeast_phenotypes.core.network.predict import host_tensor, predict_batches


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = YeastResNet(8).eval()
    with torch.no_grad():  # a model whose logits are not all alike (random BatchNorm statistics)
        for bn in (b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def crops():
    return torch.rand(12, 1, 40, 40, generator=torch.Generator().manual_seed(2))


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((got - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).max())


# ------------------------------------------------------------------------------------ decisions

@pytest.mark.parametrize("want, device_type, native, expected", [
    ("auto", "cpu", True, "bf16"), ("auto", "cpu", False, "fp32"),
    ("auto", "cuda", True, "bf16"), ("auto", "cuda", False, "fp32"),  # Ampere on / older GPUs
    ("fp32", "cuda", True, "fp32"), ("bf16", "cuda", False, "bf16"), ("bf16", "cpu", False, "bf16"),
    ("auto", "mps", True, "fp32"), ("bf16", "mps", True, "fp32"), (" BF16 ", "cpu", False, "bf16"),
])
def test_precision_per_device(want, device_type, native, expected):
    assert device.choose_precision(want, device_type, native) == expected


def test_cuda_precision_follows_the_gpus_capability(monkeypatch):
    """``auto`` on CUDA is bf16 from compute capability 8.0 (Ampere) on; the capability is read from the GPU."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    assert device.resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    assert device.resolve_precision("auto", "cuda") == "fp32"
    assert device.resolve_precision("bf16", "cuda") == "bf16"

    def no_gpu(d=None):
        raise RuntimeError("no NVIDIA driver")

    monkeypatch.setattr(torch.cuda, "get_device_capability", no_gpu)
    assert device.resolve_precision("auto", "cuda") == "fp32"


def test_batch_size_per_device(monkeypatch):
    assert device.batch_size_for("cpu") == device.CPU_BATCH_SIZE == 128
    assert device.batch_size_for("mps") == 128
    assert device.batch_size_for("cuda", 141 * 2**30) == device.GPU_BATCH_SIZE == 4096
    assert device.batch_size_for("cuda", 4 * 2**30) == 1024
    assert device.batch_size_for("cuda", None) == 4096
    assert device.default_batch_size("cpu") == 128

    class Props:
        total_memory = 6 * 2**30

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=None: Props())
    assert device.default_batch_size("cuda") == 1024


def test_batch_size_none_means_the_devices_and_round_trips():
    from napari_yeast_phenotypes.cli import build_parser
    from napari_yeast_phenotypes.core.network.predict import BatchStream

    c = ClassifyConfig()
    assert c.batch_size is None and c.crop_workers is None
    assert ClassifyConfig.from_dict(c.to_dict()) == c
    assert ClassifyConfig.from_dict(json.loads(json.dumps(ClassifyConfig(batch_size=256, crop_workers=3).to_dict()))
                                    ) == ClassifyConfig(batch_size=256, crop_workers=3)
    assert BatchStream(torch.nn.Linear(2, 2), None, torch.device("cpu")).batch_size == 128
    args = build_parser().parse_args(["classify", "--image", "i.tif", "--labels", "l.tif", "--model", "m.pt",
                                      "--out", "o"])
    assert args.batch_size is None and args.crop_workers is None
    with pytest.raises(Exception, match="crop workers"):
        ClassifyConfig(crop_workers=-1)


def test_tf32_block_sets_and_restores_the_flags():
    conv = torch.backends.cudnn.conv
    matmul = torch.backends.cuda.matmul
    before = (conv.fp32_precision, matmul.fp32_precision)
    with device.tf32(True):
        assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")
        with device.tf32(False):
            assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
        assert conv.fp32_precision == "tf32"
    assert (conv.fp32_precision, matmul.fp32_precision) == before


def test_cuda_candidates():
    assert [(n, p) for n, _, p in candidates("cuda", "bf16")] == [(CUDA_PATH, "bf16"), (CUDA_PATH, "tf32")]
    assert [(n, p) for n, _, p in candidates("cuda", "fp32")] == [(CUDA_PATH, "tf32")]
    assert [(n, p) for n, _, p in candidates("cpu", "bf16")] == [
        ("onednn-blocked", "bf16"), ("onednn-blocked", "fp32"), ("channels-last", "fp32")]
    assert candidates("mps", "fp32") == []


# ------------------------------------------------------------------- the CUDA path, run on the CPU

@pytest.mark.slow
def test_autocast_channels_last_path_on_the_cpu(model, crops):
    """The CUDA builder (BatchNorm folded, channels-last, bf16 autocast) is device-agnostic: on the CPU its bf16
    logits are within the bf16 check of the model's, its fp32 ones equal them up to rounding, and the features
    come from the same pass."""
    with torch.inference_mode():
        ref = model(crops)
        fp32 = _build_autocast(model, "fp32", torch.device("cpu"))
        assert rel_err(fp32(crops), ref) < FAST_LOGIT_TOLERANCE
        bf16 = _build_autocast(model, "bf16", torch.device("cpu"))
        got = bf16(crops)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        assert 0 < rel_err(got, ref) < BF16_LOGIT_TOLERANCE  # computed in bf16, yet close
        logits, feats = bf16.with_features(crops)
        assert torch.equal(logits, got) and feats.shape == (len(crops), 2048)
    assert next(model.parameters()).is_contiguous()  # the model itself is left as it was


@pytest.mark.slow
def test_inference_forward_checks_the_cuda_candidates(model, crops, monkeypatch):
    """The check-and-fallback of inference_forward with the CUDA candidates (run on the CPU): bf16 autocast
    chosen when it agrees with fp32, TF32 next when it does not, and said in describe()."""
    monkeypatch.setattr(cpu_inference, "candidates", lambda device_type, precision: candidates("cuda", precision))
    fwd = inference_forward(model, "cpu", crops, precision="bf16", remember=False)
    assert (fwd.path, fwd.precision) == (CUDA_PATH, "bf16")
    monkeypatch.setattr(cpu_inference, "BF16_LOGIT_TOLERANCE", 1e-9)  # nothing reduced passes: fp32 (eager)
    clone = YeastResNet(8).eval()
    clone.load_state_dict(model.state_dict())
    with pytest.warns(RuntimeWarning, match="plain model"):
        fwd = inference_forward(clone, "cpu", crops, precision="bf16", remember=False)
    assert fwd.path == "eager" and len(fwd.describe()["notes"]) == 2


def test_predict_batches_copies_nothing_on_the_cpu(model, crops):
    host = host_tensor(crops.numpy(), torch.device("cpu"))
    assert np.shares_memory(host.numpy(), crops.numpy())  # pinned copies are for CUDA only
    probs = predict_batches(model, crops.numpy(), 5, torch.device("cpu"))
    with torch.inference_mode():
        assert np.allclose(probs, torch.softmax(model(crops), 1).numpy(), atol=1e-6)


# ------------------------------------------------------------------------- the remembered check

def count_forward(m):
    calls = []
    m.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.slow
def test_the_check_is_remembered_per_weights(model, crops):
    """The first run checks (one plain forward pass as the reference); a second run of the same weights (another
    process: here a new model object) builds the chosen copy without the reference pass; other weights are
    checked again; an unreadable memo file is ignored."""
    first = inference_forward(model, "cpu", crops, precision="fp32", remember=True)
    assert first.path != "eager"
    memo = json.loads((inference_memo.cache_dir() / inference_memo.MEMO_FILE).read_text())
    assert [v["path"] for v in memo.values()] == [first.path]

    again = YeastResNet(8).eval()
    again.load_state_dict(model.state_dict())
    calls = count_forward(again)
    second = inference_forward(again, "cpu", crops, precision="fp32", remember=True)
    assert not calls  # no reference pass: nothing checked
    assert (second.path, second.precision) == (first.path, first.precision)
    assert "remembered" in second.describe()["notes"][-1]
    with torch.inference_mode():
        assert torch.equal(second(crops), first(crops))

    other = YeastResNet(8).eval()
    calls = count_forward(other)
    inference_forward(other, "cpu", crops, precision="fp32", remember=True)
    assert calls  # other weights: checked
    assert len(json.loads((inference_memo.cache_dir() / inference_memo.MEMO_FILE).read_text())) == 2

    (inference_memo.cache_dir() / inference_memo.MEMO_FILE).write_text("{not json")
    third = YeastResNet(8).eval()
    third.load_state_dict(model.state_dict())
    calls = count_forward(third)
    assert inference_forward(third, "cpu", crops, precision="fp32", remember=True).path == first.path
    assert calls
    # metrics of crop sets (weights that change every epoch) are not remembered
    assert len(json.loads((inference_memo.cache_dir() / inference_memo.MEMO_FILE).read_text())) == 1  # anew
    fourth = YeastResNet(8).eval()
    inference_forward(fourth, "cpu", crops, precision="fp32")
    assert len(json.loads((inference_memo.cache_dir() / inference_memo.MEMO_FILE).read_text())) == 1


def test_memo_key_names_machine_torch_and_precision(model):
    digest = inference_memo.weights_sha256(model)
    assert digest == inference_memo.weights_sha256(model) and len(digest) == 64
    keys = {inference_memo.memo_key(digest, "cpu A", "bf16"), inference_memo.memo_key(digest, "cpu B", "bf16"),
            inference_memo.memo_key(digest, "cpu A", "fp32")}
    assert len(keys) == 3 and all(torch.__version__ in k for k in keys)
