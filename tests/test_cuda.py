"""The CUDA path on a real GPU (skipped where PyTorch sees none): the copy chosen, its agreement with fp32 on the
CPU, pinned copies, crops made by worker processes beside the GPU. Its logic is tested on the CPU in
tests/test_device_paths.py and tests/test_chunks.py; these run in a GPU session (benchmarks/gpu_session.sh)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from napari_yeast_phenotypes.core.config import ClassifyConfig
from napari_yeast_phenotypes.core.data.simulate import simulate_movie
from napari_yeast_phenotypes.core.network.cpu_inference import CUDA_PATH, inference_forward
from napari_yeast_phenotypes.core.network.device import cuda_has_native_bf16, default_batch_size, resolve_precision
from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet
from napari_yeast_phenotypes.core.network.predict import host_tensor, predict_batches
from napari_yeast_phenotypes.core.pipeline import classify_iter
from napari_yeast_phenotypes.core.progress import run_to_end

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


@pytest.fixture(scope="module")
def movie():
    return simulate_movie(n_frames=6, size=160, n_cells=14, seed=4)


@pytest.fixture(scope="module")
def clf(movie):
    """Random weights with BatchNorm statistics of real crops (as after training): outputs not saturated."""
    from napari_yeast_phenotypes.core.data.crops import movie_crops
    from napari_yeast_phenotypes.core.data.tracking import build_cell_table

    torch.manual_seed(0)
    m = YeastResNet(8, "all")
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    crops = movie_crops(movie.image, movie.labels, build_cell_table(movie.labels, relink=False))
    m.train()
    with torch.no_grad():
        m(torch.from_numpy(crops))
    return Classifier(m.eval())


def test_the_gpu_gets_bf16_channels_last_and_a_large_batch(clf, movie):
    dev = torch.device("cuda")
    model = clf.model.to(dev)
    sample = torch.rand(64, 1, 40, 40, device=dev)
    fwd = inference_forward(model, dev, sample, precision="auto", remember=False)
    assert fwd.path == CUDA_PATH
    assert fwd.precision == ("bf16" if cuda_has_native_bf16(dev) else "tf32")
    assert resolve_precision("auto", dev) == ("bf16" if cuda_has_native_bf16(dev) else "fp32")
    assert default_batch_size(dev) >= 1024
    host = host_tensor(np.zeros((8, 1, 40, 40), np.float32), dev)
    assert host.is_pinned()
    clf.model.cpu()


def test_gpu_probabilities_agree_with_the_cpus(clf, movie):
    """classify on the GPU (bf16 autocast) against the CPU in fp32: the same top class on nearly every cell,
    probabilities within bf16's reach; the cell table itself the same."""
    cpu = run_to_end(classify_iter(movie.image, movie.labels, clf, ClassifyConfig(relink="no", device="cpu",
                                                                                    precision="fp32")))
    gpu = run_to_end(classify_iter(movie.image, movie.labels, clf, ClassifyConfig(relink="no", device="cuda",
                                                                                    crop_workers=2)))
    clf.model.cpu()
    cols = [c for c in cpu.columns if c.startswith("p_")]
    pd.testing.assert_frame_equal(gpu.drop(columns=cols), cpu.drop(columns=cols))
    p_cpu, p_gpu = cpu[cols].to_numpy(), gpu[cols].to_numpy()
    assert (p_cpu.argmax(1) == p_gpu.argmax(1)).mean() >= 0.95
    assert np.abs(p_cpu - p_gpu).max() < 0.1
    assert gpu.attrs["inference"]["path"] == CUDA_PATH and gpu.attrs["inference"]["batch_size"] >= 1024


def test_pinned_batches_give_the_same_probabilities(clf):
    dev = torch.device("cuda")
    model = clf.model.to(dev)
    crops = np.random.default_rng(0).random((300, 1, 40, 40), dtype=np.float32)
    fwd = inference_forward(model, dev, torch.from_numpy(crops[:64]).to(dev), precision="fp32", remember=False)
    a = predict_batches(fwd, crops, 64, dev)
    b = predict_batches(fwd, crops, 300, dev)
    clf.model.cpu()
    assert a.shape == (300, 8) and np.allclose(a, b, atol=2e-3)
