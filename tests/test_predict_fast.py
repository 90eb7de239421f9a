"""The fast paths give what the plain ones give: inference (core.cpu_inference) and crops (core.crops)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from napari_yeast_phenotypes.core.config import ClassifyConfig
from napari_yeast_phenotypes.core.data.crops import (
    CropSettings,
    extract_crops,
    movie_crops,
    movie_stats,
    window_geometry,
)
from napari_yeast_phenotypes.core.data.simulate import simulate_movie
from napari_yeast_phenotypes.core.data.tracking import build_cell_table, measure_frame
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.network import cpu_inference, predict
from napari_yeast_phenotypes.core.network.cpu_inference import FAST_LOGIT_TOLERANCE, FAST_TOLERANCE, inference_forward
from napari_yeast_phenotypes.core.network.device import cpu_has_native_bf16, resolve_precision
from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet
from napari_yeast_phenotypes.core.network.predict import predict_crops
from napari_yeast_phenotypes.core.pipeline import classify_iter
from napari_yeast_phenotypes.core.progress import run_to_end


@pytest.fixture(scope="module")
def movie():
    return simulate_movie(n_frames=6, size=160, n_cells=14, seed=4)


@pytest.fixture(scope="module")
def crops(movie):
    table = build_cell_table(movie.labels, relink=False)
    return movie_crops(movie.image, movie.labels, table, CropSettings())


@pytest.fixture
def model(crops):
    """A random-weights model whose BatchNorm statistics are those of real crops (as after
    training), so folding them into the convolutions is really tested and outputs are not saturated."""
    torch.manual_seed(0)
    m = YeastResNet(8, "all")
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average
    m.train()
    with torch.no_grad():
        m(torch.from_numpy(crops))
    return m.eval()


def eager_probs(model, crops):
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(crops)), dim=1).numpy()


def assert_logits_close(got: torch.Tensor, ref: torch.Tensor, rel: float = FAST_LOGIT_TOLERANCE) -> None:
    """Logits agree up to float rounding, relative to their size (a fused kernel on another CPU
    rounds differently; an absolute 1e-4 on logits near 3 is below fp32's own rounding there)."""
    err = ((got - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).max().item()
    assert err < rel, f"logits differ by {err:.2g} relative to their norm"


@pytest.mark.slow
def test_fp32_fast_path_equals_eager(model, crops):
    fwd = inference_forward(model, "cpu", torch.from_numpy(crops[:32]), precision="fp32")
    assert fwd.precision == "fp32"
    if torch.backends.mkldnn.is_available():
        assert fwd.path == "onednn-blocked"
    with torch.inference_mode():
        fast = torch.softmax(fwd(torch.from_numpy(crops)), dim=1).numpy()
    assert np.abs(fast - eager_probs(model, crops)).max() < FAST_TOLERANCE
    # odd batch sizes (the last batch of a movie) too
    with torch.inference_mode():
        fast7 = torch.softmax(fwd(torch.from_numpy(crops[:7])), dim=1).numpy()
    assert np.abs(fast7 - eager_probs(model, crops[:7])).max() < FAST_TOLERANCE


@pytest.mark.slow
def test_predict_crops_uses_fast_path_and_matches(model, crops, monkeypatch):
    """predict_crops (metrics of crop sets) is fp32 even where movies are classified in bf16."""
    monkeypatch.setenv("NAPARI_YEAST_PHENOTYPES_PRECISION", "bf16")
    monkeypatch.setattr(predict, "_FAST_MIN_CROPS", 1)
    got = predict_crops(model, crops, batch_size=16)
    assert got.shape == (len(crops), 8) and got.dtype == np.float32
    assert np.abs(got - eager_probs(model, crops)).max() < FAST_TOLERANCE
    assert set(cpu_inference._fast_cache[model]) == {("cpu", "fp32")}


@pytest.mark.slow
def test_cached_copy_follows_weight_changes(model, crops):
    sample = torch.from_numpy(crops[:16])
    first = inference_forward(model, "cpu", sample, precision="fp32")
    assert inference_forward(model, "cpu", sample, precision="fp32") is first  # cached
    with torch.no_grad():
        model.fc.weight.mul_(3.0)  # in place, as an optimizer step does
    second = inference_forward(model, "cpu", sample, precision="fp32")
    assert second is not first
    with torch.inference_mode():
        fast = torch.softmax(second(torch.from_numpy(crops)), dim=1).numpy()
    assert np.abs(fast - eager_probs(model, crops)).max() < FAST_TOLERANCE
    model.fc.bias.data = model.fc.bias.data + 1.0  # re-pointed, not changed in place
    third = inference_forward(model, "cpu", sample, precision="fp32")
    assert third is not second
    with torch.inference_mode():
        assert_logits_close(third(sample), model(sample))


@pytest.mark.slow
def test_bf16_path_stays_close(crops):
    torch.manual_seed(0)
    model = YeastResNet(8).eval()  # default init: well conditioned, as trained models are
    fwd = inference_forward(model, "cpu", torch.from_numpy(crops[:32]), precision="bf16")
    if fwd.precision == "fp32":
        # oneDNN has no bf16 kernels on this CPU (it needs AVX512-BW/VL/DQ or AVX-NE-CONVERT): the
        # property checked is then that the copy falls back to fp32 and says why
        assert fwd.path != "eager" and any("bf16" in note for note in fwd.describe()["notes"])
        return
    assert (fwd.path, fwd.precision) == ("onednn-blocked", "bf16")
    with torch.inference_mode():
        fast = torch.softmax(fwd(torch.from_numpy(crops)), dim=1).numpy()
    ref = eager_probs(model, crops)
    assert np.abs(fast - ref).max() < 0.02
    assert (fast.argmax(1) == ref.argmax(1)).mean() >= 0.95


@pytest.mark.slow
def test_bf16_is_refused_for_a_model_it_does_not_suit(model, crops):
    """Random weights under BatchNorm statistics of real crops amplify rounding: bf16 changes the
    top class of many crops there, so the model gets the fast fp32 copy instead."""
    fwd = inference_forward(model, "cpu", torch.from_numpy(crops[:32]), precision="bf16")
    assert fwd.precision == "fp32" and fwd.path != "eager"
    assert any("bf16" in note for note in fwd.describe()["notes"])
    with torch.inference_mode():
        fast = torch.softmax(fwd(torch.from_numpy(crops)), dim=1).numpy()
    assert np.abs(fast - eager_probs(model, crops)).max() < FAST_TOLERANCE


def test_precision_choice(monkeypatch):
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("bf16", "mps") == "fp32"  # bf16 for the CPU and CUDA copies only
    with pytest.raises(Exception, match="auto, fp32 or bf16"):
        resolve_precision("half-ish", "cpu")
    # environment variables only give the defaults of the config
    monkeypatch.setenv("NAPARI_YEAST_PHENOTYPES_PRECISION", "fp32")
    monkeypatch.setenv("NAPARI_YEAST_PHENOTYPES_FAST_INFERENCE", "0")
    assert (ClassifyConfig().precision, ClassifyConfig().fast_path) == ("fp32", False)
    assert ClassifyConfig(precision="bf16").precision == "bf16"
    monkeypatch.setenv("NAPARI_YEAST_PHENOTYPES_PRECISION", "half-ish")
    with pytest.raises(InputError, match="NAPARI_YEAST_PHENOTYPES_PRECISION"):
        ClassifyConfig()


@pytest.mark.slow
def test_broken_fast_path_falls_back_to_the_model(model, crops, monkeypatch):
    def broken(m, precision):
        raise RuntimeError("no oneDNN here")

    def wrong(m, precision):
        return lambda x: m(x) + torch.arange(8.0)

    monkeypatch.setattr(cpu_inference, "_BUILDERS", (("broken", broken), ("wrong", wrong)))
    with pytest.warns(RuntimeWarning, match="plain model"):
        fwd = inference_forward(model, "cpu", torch.from_numpy(crops[:8]), precision="fp32")
    assert fwd.path == "eager"
    with torch.inference_mode():
        assert torch.equal(fwd(torch.from_numpy(crops[:4])), model(torch.from_numpy(crops[:4])))


def test_fast_inference_can_be_turned_off(model, crops):
    assert inference_forward(model, "cpu", torch.from_numpy(crops[:8]), fast_path=False).path == "eager"


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_classify_iter_equals_plain_prediction(movie, model, batch_size):
    """Batches that straddle chunks keep every crop's probabilities on its own row."""
    clf = Classifier(model)
    config = ClassifyConfig(relink="no", chunk_frames=2, batch_size=batch_size, precision="fp32")
    table = run_to_end(classify_iter(movie.image, movie.labels, clf, config))
    ref_crops = movie_crops(movie.image, movie.labels, table, clf.crop_settings)
    cols = [c for c in table.columns if c.startswith("p_")]
    assert np.abs(table[cols].to_numpy() - eager_probs(model, ref_crops)).max() < FAST_TOLERANCE
    assert table.attrs["inference"]["precision"] == "fp32"


# ------------------------------------------------------------------------------------------- crops

def point_sampled_crops(image, labels, cells, settings, stats):
    """The reference: bilinear sampling point by point on the (size*k)^2 grid, then k x k means."""
    img = np.asarray(image, np.float64)
    img = np.where(np.isfinite(img), (img - stats.low) / (stats.high - stats.low), 0.0)
    ny, nx = labels.shape
    cy, cx, side = window_geometry(cells, settings, stats)
    s = settings.size
    out = np.zeros((len(cells), 1, s, s))
    for i, own in enumerate(cells["label"].to_numpy()):
        k = int(np.clip(np.ceil(side[i] / s), 1, settings.max_supersample))
        g = (np.arange(s * k) + 0.5) / (s * k) - 0.5
        ys, xs = cy[i] + side[i] * g - 0.5, cx[i] + side[i] * g - 0.5
        acc = np.zeros((s * k, s * k))
        for u, y in enumerate(ys):
            y0 = int(np.floor(y))
            for v, x in enumerate(xs):
                x0 = int(np.floor(x))
                for py, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                    for px, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                        if not (0 <= py < ny and 0 <= px < nx):
                            continue
                        lv = labels[py, px]
                        if settings.mask == "outside" and lv != own:
                            continue
                        if settings.mask == "others" and lv not in (own, 0):
                            continue
                        acc[u, v] += wy * wx * img[py, px]
        out[i, 0] = acc.reshape(s, k, s, k).mean(axis=(1, 3))
    return out


@pytest.mark.parametrize("settings", [
    CropSettings(size=12),
    CropSettings(size=12, scale="cell", mask="outside", margin=0.4),
    CropSettings(size=9, scale="cell", mask="none", min_side=30),  # k = 4 supersampling
])
def test_extract_crops_equals_point_sampling(settings):
    movie = simulate_movie(n_frames=1, size=96, n_cells=6, seed=2)
    image = movie.image[0].astype(np.float32)
    image[3:9, 3:9] = np.nan  # non-finite pixels count as background
    labels = movie.labels[0].copy()
    labels[:14, 80:] = 77  # a cell cut by the frame border
    cells = measure_frame(labels)
    stats = movie_stats(image, labels, settings)
    got = extract_crops(image, labels, cells, settings, stats, chunk=3)
    ref = point_sampled_crops(image, labels, cells, settings, stats)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-5


def test_extract_crops_empty_table():
    labels = np.zeros((32, 32), np.uint16)
    out = extract_crops(np.zeros((32, 32)), labels, measure_frame(labels), CropSettings(), movie_stats(
        np.ones((32, 32)), np.pad(np.ones((4, 4), np.uint16), 14)))
    assert out.shape == (0, 1, 40, 40)


def test_extract_crops_keeps_row_order(movie):
    cells = measure_frame(movie.labels[2], 2)
    stats = movie_stats(movie.image, movie.labels)
    whole = extract_crops(movie.image[2], movie.labels[2], cells, CropSettings(), stats)
    shuffled = cells.sample(frac=1.0, random_state=0)
    again = extract_crops(movie.image[2], movie.labels[2], shuffled, CropSettings(), stats, chunk=4)
    order = pd.Index(cells.index).get_indexer(shuffled.index)
    np.testing.assert_allclose(again, whole[order], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("builder", [name for name, _ in cpu_inference._BUILDERS])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_building_a_copy_leaves_the_model_alone(model, crops, builder, precision):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    types = [type(m) for m in model.modules()]
    try:
        fn = dict(cpu_inference._BUILDERS)[builder](model, precision)
    except RuntimeError as exc:  # no bf16 kernels on this CPU: building fails, and must not touch the model
        assert precision == "bf16", exc  # noqa: PT017 - the model must be untouched either way
        fn = None
    if fn is not None:
        with torch.inference_mode():
            fn(torch.from_numpy(crops[:4]))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert flags == {k: p.requires_grad for k, p in model.named_parameters()}
    assert types == [type(m) for m in model.modules()]
    assert not any(t.is_mkldnn for t in after.values())
