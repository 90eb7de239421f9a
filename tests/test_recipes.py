"""Training recipes: the study's and the robust one (weights averaged along the run, crops as if from another
microscope), their augmentations, and the deterministic CUDA settings. What they do to the demo's accuracy over
seeds is measured by ``benchmarks/demo_seeds.py`` (docs/training.md), not here."""

import numpy as np
import pytest
import torch

from napari_yeast_phenotypes.core.config import RECIPES, TrainConfig, recipe_config
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.network.train_steps import (
    WeightAverage,
    augment_batch,
    deterministic_cuda,
    gaussian_blur,
)


def test_the_study_recipe_is_the_defaults_and_the_robust_one_says_what_it_changes():
    assert recipe_config("study") == TrainConfig()
    robust = recipe_config("robust", epochs=3)
    assert robust.recipe == "robust" and robust.averaging == "ema" and robust.epochs == 3
    assert set(robust.augmentations) >= {"blur", "microscope", "noise", "flips", "rot90"}
    assert {k for k, v in robust.to_dict().items() if v != TrainConfig().to_dict()[k]} == \
        set(RECIPES["robust"]) | {"recipe", "epochs"}
    assert TrainConfig.from_dict(robust.to_dict()) == robust
    with pytest.raises(InputError, match="unknown training recipe 'fast'"):
        recipe_config("fast")
    with pytest.raises(InputError, match="weight averaging"):
        TrainConfig(averaging="swa")


def test_the_cli_recipe_with_options_on_top():
    from napari_yeast_phenotypes.cli import _train_config, build_parser

    parse = lambda *a: _train_config(build_parser().parse_args(["train", "--train", "t", "--out", "m.pt", *a]))
    assert parse() == TrainConfig()
    assert parse("--recipe", "robust") == recipe_config("robust")
    c = parse("--recipe", "robust", "--augment", "flips", "--averaging", "none", "--label-smoothing", "0")
    assert (c.recipe, c.augment, c.averaging, c.label_smoothing) == ("robust", "flips", "none", 0.0)
    assert parse("--recipe", "robust", "--no-augment").augment == "none"


def test_blur_is_a_normalised_gaussian_per_crop():
    x = torch.zeros(3, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    out = gaussian_blur(x, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(out[0], x[0], atol=1e-6)  # sigma 0: as it is
    assert torch.allclose(out.sum(dim=(1, 2, 3)), torch.ones(3), atol=1e-5)  # brightness kept
    assert out[2, 0, 4, 4] < out[1, 0, 4, 4] < 1  # wider for a larger sigma
    assert torch.allclose(out[2, 0], out[2, 0].T, atol=1e-6) and torch.allclose(out[2, 0], out[2, 0].flip(0))
    flat = torch.ones(2, 1, 6, 6)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([1.0, 0.3])), flat, atol=1e-6)  # edges repeated


def test_microscope_changes_gain_gamma_and_offset_but_not_the_picture():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 8, 8)
    out = augment_batch(x, gen, "microscope")
    # a monotone change per crop: the order of the pixels is kept
    assert all(torch.equal(torch.argsort(x[i].flatten()), torch.argsort(out[i].flatten())) for i in range(256))
    ratio = (out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))) / (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
    assert ratio.min() < 0.75 and ratio.max() > 1.35  # wider than the study's mild gain (x0.82-1.22)
    # the study's augmentations draw the same numbers as before: new ones only draw when asked for
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1), "flips,rot90,intensity")
    assert torch.equal(a, b)


def test_weight_average_follows_the_weights_and_batchnorm_statistics():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    avg = WeightAverage(model, total_steps=400)
    assert avg.decay == pytest.approx(0.99)
    start = {k: v.clone() for k, v in avg.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model[1].running_mean.add_(2.0)
    model[1].num_batches_tracked.add_(5)
    avg.update(model)  # the first steps weigh the new weights much (warm-up): d = 2/11
    state = avg.model.state_dict()
    d = 2 / 11
    w = "0.weight"
    assert torch.allclose(state[w], start[w] * d + model.state_dict()[w] * (1 - d))
    assert torch.allclose(state["1.running_mean"], start["1.running_mean"] * d + 2.0 * (1 - d))
    assert int(state["1.num_batches_tracked"]) == 5
    for _ in range(2000):
        avg.update(model)
    assert torch.allclose(avg.model.state_dict()[w], model.state_dict()[w], atol=1e-5)  # converges to it


def test_deterministic_settings_only_on_cuda():
    assert deterministic_cuda("cpu") is False
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.slow
def test_a_robust_training_keeps_the_averaged_weights(tmp_path):
    from napari_yeast_phenotypes.core.data.cropset import CropSet
    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier
    from napari_yeast_phenotypes.core.network.train import train
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    rng = np.random.default_rng(0)
    t = np.arange(32) % 8
    data = CropSet(rng.random((32, 1, 40, 40), dtype=np.float32) + t[:, None, None, None] * 0.1, t, CLASS_NAMES,
                   tracks=np.arange(32).astype(object))
    cfg = recipe_config("robust", epochs=2, batch_size=8, base_weights="none", small_data="off")
    clf = train(data.subset(np.arange(8, 32)), data.subset(np.arange(8)), cfg, out=tmp_path / "m.pt")
    saved = load_classifier(tmp_path / "m.pt")
    assert saved.metadata["training"]["recipe"] == "robust" and saved.metadata["training"]["averaging"] == "ema"
    for k, v in clf.model.state_dict().items():
        assert torch.equal(v.cpu(), saved.model.state_dict()[k].cpu())
