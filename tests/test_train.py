import numpy as np
import pytest
import torch

from napari_yeast_phenotypes.core.cropset import CropSet
from napari_yeast_phenotypes.core.io import InputError
from napari_yeast_phenotypes.core.model import load_classifier
from napari_yeast_phenotypes.core.train import (
    TrainConfig,
    augment_batch,
    group_folds,
    metrics,
    train,
    train_iter,
)
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    targets = np.arange(16) % 8
    crops = rng.random((16, 1, 40, 40)) + targets[:, None, None, None] * 0.1  # float64: made float32
    return CropSet(crops, targets, CLASS_NAMES)


CFG = TrainConfig(epochs=3, batch_size=8, base_weights="none", seed=1)


def test_cancel_keeps_the_last_good_checkpoint(tmp_path, tiny):
    out = tmp_path / "m.pt"
    stop = {"now": False}
    gen = train_iter(tiny, tiny, CFG, out=out, should_stop=lambda: stop["now"])
    for p in gen:
        if p.get("done_epoch"):
            stop["now"] = True  # the user presses Cancel after the first epoch
    clf = load_classifier(out)
    assert clf.metadata["best_epoch"] == 1 and len(clf.metadata["history"]) == 1


def test_a_crash_mid_training_leaves_the_saved_checkpoint_whole(tmp_path, tiny):
    out = tmp_path / "m.pt"

    def crash(p):
        if p["epoch"] == 2 and p.get("step") == 1:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(tiny, tiny, CFG, out=out, progress=crash)
    assert load_classifier(out).metadata["best_epoch"] == 1


def test_validation_is_never_augmented(tiny, monkeypatch):
    from napari_yeast_phenotypes.core import train as train_mod

    seen = []
    real = train_mod.augment_batch
    monkeypatch.setattr(train_mod, "augment_batch", lambda x, g: seen.append(x.shape[0]) or real(x, g))
    evaluated = []
    real_eval = train_mod.evaluate

    def spy(model, data, **kw):
        evaluated.append(data.crops.copy())
        return real_eval(model, data, **kw)

    monkeypatch.setattr(train_mod, "evaluate", spy)
    train(tiny, tiny, TrainConfig(epochs=1, batch_size=8, base_weights="none"))
    assert sum(seen) == 16  # every training crop, once per epoch
    assert all(np.array_equal(e, tiny.crops) for e in evaluated)


def test_augmentation_is_a_symmetry_plus_mild_intensity_change():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    # sorted pixel values are those of x up to gain and offset: the same picture, turned or flipped
    flat = out.flatten(1)
    gain = (flat.max(1).values - flat.min(1).values) / 15
    assert ((gain > 0.8) & (gain < 1.25)).all()
    d8 = {tuple(torch.rot90(x[0, 0], k).flatten().tolist()) for k in range(4)}
    d8 |= {tuple(torch.rot90(x[0, 0], k).flip(1).flatten().tolist()) for k in range(4)}
    restored = ((out - flat.min(1).values[:, None, None, None]) / gain[:, None, None, None]).round()
    assert all(tuple(r.flatten().tolist()) in d8 for r in restored)
    assert len({tuple(r.flatten().tolist()) for r in restored}) > 4


def test_metrics_per_class():
    t = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    m = metrics(t, p, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["c"]["recall"] == 0.0 and m["per_class"]["c"]["precision"] is None
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_group_folds_never_split_a_group():
    groups = np.repeat(np.arange(7), 5)
    folds = group_folds(groups, 3, seed=0)
    assert sorted(np.concatenate(folds)) == list(range(35))
    for f in folds:
        assert all(set(groups[f]).isdisjoint(groups[g]) for g in folds if g is not f)
    with pytest.raises(InputError, match="folds"):
        group_folds(np.zeros(10), 2)


def test_bad_training_options():
    with pytest.raises(InputError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(InputError, match="conv1,fc"):
        TrainConfig(trainable="layer9")
