import pickle
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.files.fingerprint import file_sha256
from napari_yeast_phenotypes.core.network import base_weights as weights_mod
from napari_yeast_phenotypes.core.network.base_weights import WeightsUnavailable, build_model
from napari_yeast_phenotypes.core.network.checkpoint import load_classifier, save_checkpoint
from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet
from napari_yeast_phenotypes.core.network.predict import predict_crops


@pytest.fixture(scope="module")
def crops():
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 1, 40, 40, generator=g).numpy()


def rgb_resnet50_state():
    torch.manual_seed(5)
    return torchvision.models.resnet50(weights=None).state_dict()


def test_adaptation_averages_rgb_conv1_from_a_local_file(tmp_path):
    state = rgb_resnet50_state()
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    m = build_model(8, base_weights=path)
    assert m.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.allclose(m.conv1.weight, state["conv1.weight"].mean(dim=1, keepdim=True))
    assert torch.equal(m.layer3[0].conv2.weight, state["layer3.0.conv2.weight"])
    assert m.fc.out_features == 8
    assert m(torch.zeros(2, 1, 40, 40)).shape == (2, 8)


def test_imagenet_weights_come_from_torchvision_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = weights_mod.imagenet_weights_path()
    assert str(path).startswith(str(tmp_path)) and path.name.startswith("resnet50-")
    path.parent.mkdir(parents=True)
    torch.save(rgb_resnet50_state(), path)
    # the stand-in file is not the real one (these machines cannot download it): let its name's hash be its own
    monkeypatch.setattr(weights_mod, "expected_sha256_prefix", lambda p: file_sha256(p)[:8])
    m = build_model(8, base_weights="imagenet")
    assert torch.allclose(m.conv1.weight, rgb_resnet50_state()["conv1.weight"].mean(dim=1, keepdim=True))


def test_offline_imagenet_message_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailable) as err:
        build_model(8, base_weights="imagenet")
    msg = str(err.value)
    assert str(weights_mod.imagenet_weights_path()) in msg
    assert "--base-weights none --trainable all" in msg and "--base-weights PATH" in msg
    assert "yeast-phenotypes install-weights resnet50-11ad3fa6.pth" in msg  # the command that installs it


def test_default_policy_trains_only_conv1_and_fc():
    m = YeastResNet(8)
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"conv1", "fc"}
    assert {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad} == {"conv1", "fc"}
    m.set_trainable("all")
    assert all(p.requires_grad for p in m.parameters())
    with pytest.raises(InputError, match="conv1,fc"):
        m.set_trainable("conv1,head")


def bn_buffers(m):
    return {n: b.clone() for n, b in m.named_buffers() if "running" in n}


def one_step(m):
    m.train()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(8, 1, 40, 40) * 3 + 1  # statistics unlike the running ones
    loss = torch.nn.functional.cross_entropy(m(x), torch.arange(8))
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.slow
def test_frozen_batchnorm_statistics_do_not_drift():
    torch.manual_seed(0)
    m = YeastResNet(8)
    before = bn_buffers(m)
    params = {n: p.clone() for n, p in m.named_parameters()}
    one_step(m)
    after = bn_buffers(m)
    assert all(torch.equal(before[k], after[k]) for k in before)
    changed = {n.split(".")[0] for n, p in m.named_parameters() if not torch.equal(p, params[n])}
    assert changed == {"conv1", "fc"}
    # the same step with every layer trainable does move them: the check above can fail
    m.set_trainable("all")
    one_step(m)
    assert not all(torch.equal(before[k], v) for k, v in bn_buffers(m).items())


@pytest.mark.slow
def test_checkpoint_round_trip_keeps_predictions(tmp_path, crops):
    torch.manual_seed(2)
    clf = Classifier(YeastResNet(8).eval())
    path = save_checkpoint(tmp_path / "m.pt", clf, note="x")
    # a checkpoint is tensors and plain values only
    raw = torch.load(path, weights_only=True)
    assert raw["class_names"][7] == "Senescent" and raw["metadata"]["note"] == "x"
    loaded = load_classifier(path)
    assert np.array_equal(predict_crops(clf.model, crops), predict_crops(loaded.model, crops))
    assert loaded.crop_settings == clf.crop_settings


def notebook_state():
    """What the original notebook saved: torchvision resnet50, 1-channel conv1, 8-way fc."""
    torch.manual_seed(3)
    net = torchvision.models.resnet50(weights=None)
    net.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    net.fc = torch.nn.Linear(2048, 8)
    return net.eval()


def assert_same_probabilities(got: np.ndarray, net, crops: np.ndarray) -> None:
    """``got`` are ``net``'s softmax probabilities, up to the float32 rounding of the network.

    The two sides may run in different batch sizes, so the CPU's kernels (oneDNN, its SIMD width)
    may add the same terms in another order: each logit then differs by a few float32 roundings of
    the magnitudes summed into it, which the logits' own magnitude bounds (with the 2048-term sum of
    the last layer, about 2048 x 6e-8 = 1.2e-4 relative at worst). A softmax moves no probability by
    more than the largest change of a logit, so that bound, relative to the logits, is the tolerance.
    A wrong weight or class order gives differences of order one.
    """
    with torch.inference_mode():
        logits = net(torch.from_numpy(crops)).double()
    expected = torch.softmax(logits, 1).numpy()
    tol = 2e-4 * max(1.0, float(logits.abs().max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)


def test_bare_notebook_state_dict_loads(tmp_path, crops):
    net = notebook_state()
    path = tmp_path / "notebook.pth"
    torch.save(net.state_dict(), path)
    clf = load_classifier(path)
    assert_same_probabilities(predict_crops(clf.model, crops), net, crops)
    custom = load_classifier(path, class_names=list("ABCDEFGH"))
    assert custom.class_names == tuple("ABCDEFGH")
    with pytest.raises(InputError, match="8 classes"):
        load_classifier(path, class_names=["a", "b"])


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_state": {"fc.weight": torch.zeros(8, 2048)}, "x": Evil(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(InputError, match="trust-model-file"):
        load_classifier(path)
    assert not marker.exists()
    # a plain pickle (not a torch zip) is refused as well
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(Evil(str(marker))))
    with pytest.raises(InputError):
        load_classifier(plain)
    assert not marker.exists()


def test_whole_pickled_model_only_when_trusted(tmp_path, crops):
    net = notebook_state()
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    with pytest.raises(InputError, match="trust"):
        load_classifier(path)
    clf = load_classifier(path, trust=True)
    assert_same_probabilities(predict_crops(clf.model, crops), net, crops)


def test_truncated_empty_and_foreign_files(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", Classifier(YeastResNet(8)))
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello, I am not a model")
    for name, pattern in [("cut.pt", "truncated"), ("empty.pt", "empty"), ("text.pt", "not a readable model"),
                          ("missing.pt", "not found")]:
        with pytest.raises(InputError, match=pattern):
            load_classifier(tmp_path / name)
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="no model weights"):
        load_classifier(tmp_path / "other.pt")


def test_model_for_another_number_of_classes(tmp_path):
    path = save_checkpoint(tmp_path / "five.pt", Classifier(YeastResNet(5), class_names=tuple("VWXYZ")))
    assert load_classifier(path).class_names == tuple("VWXYZ")
    bare = tmp_path / "five_bare.pt"
    torch.save(YeastResNet(5).state_dict(), bare)
    with pytest.raises(InputError, match="classifies into 5 classes but 8 class names"):
        load_classifier(bare)


# ------------------------------------------------------------------------------ install-weights

def fake_resnet50_file(folder, value=0.5, name=None):
    """A small stand-in for torchvision's ResNet50 weights: every tensor of the right name and shape, each one
    value broadcast (stride 0: a few bytes each), saved under the name torchvision would give it (its own
    SHA-256 prefix)."""
    shapes = weights_mod._resnet50_shapes()
    state = {k: (torch.zeros((), dtype=torch.int64) if k.endswith("num_batches_tracked")
                 else torch.full((1,) * max(len(s), 1), value).expand(s) if s else torch.tensor(value))
             for k, s in shapes.items()}
    tmp = folder / "download.tmp"
    torch.save(state, tmp)
    path = folder / (name or f"resnet50-{file_sha256(tmp)[:8]}.pth")
    tmp.rename(path)
    return path


def test_install_weights_checks_the_hash_and_installs_atomically_where_training_finds_them(tmp_path, monkeypatch,
                                                                                             capsys):
    from napari_yeast_phenotypes.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fake = fake_resnet50_file(tmp_path, 0.5)
    assert fake.stat().st_size < 1_000_000  # small: the tensors are broadcast
    assert not weights_mod.imagenet_weights_available()
    assert main(["install-weights", str(fake)]) == 0
    out = capsys.readouterr().out
    dest = tmp_path / "torch" / "hub" / "checkpoints" / fake.name
    assert f"installed {fake} as {dest}" in out and "SHA-256" in out
    assert dest.read_bytes() == fake.read_bytes() and not list(dest.parent.glob(".*tmp"))
    assert weights_mod.imagenet_weights_available()
    # training from "imagenet" now starts from them (conv1 averaged over RGB, fc new)
    m = build_model(8, base_weights="imagenet")
    assert torch.all(m.conv1.weight == 0.5) and torch.all(m.layer1[0].conv1.weight == 0.5)
    # again: the same file is there already
    assert main(["install-weights", str(fake)]) == 0
    assert "already this file" in capsys.readouterr().out


def test_install_weights_refuses_a_wrong_file_in_plain_words(tmp_path, monkeypatch, capsys):
    from napari_yeast_phenotypes.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"

    def refused(path, *words):
        assert main(["install-weights", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        for w in words:
            assert w in err, err
        assert not cache.exists() or not list(cache.iterdir())  # nothing (and no half file) in the cache

    good = fake_resnet50_file(tmp_path, 0.25)
    # a download cut short, under the name it was to have
    cut = tmp_path / "cut" / good.name
    cut.parent.mkdir()
    cut.write_bytes(good.read_bytes()[:-1000])
    refused(cut, "damaged or not the file its name says", f"not {good.name[9:17]}", "Download it again")
    # a file with no hash in its name that is none of torchvision's
    plain = tmp_path / "weights.pth"
    plain.write_bytes(good.read_bytes())
    refused(plain, "none of torchvision's ResNet50 ImageNet weights files", "resnet50-11ad3fa6.pth")
    # its hash is right, but it is no ResNet50: another network's state dict
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.tmp")
    r18 = tmp_path / f"resnet50-{file_sha256(tmp_path / 'r18.tmp')[:8]}.pth"
    (tmp_path / "r18.tmp").rename(r18)
    refused(r18, "is not torchvision's ResNet50 ImageNet weights", "missing")
    # not a weights file at all (an HTML error page saved under the name)
    html = tmp_path / "html"
    html.mkdir()
    page = html / "x.pth"
    page.write_bytes(b"<html>proxy error</html>")
    page = page.rename(html / f"resnet50-{file_sha256(page)[:8]}.pth")
    refused(page, "cannot be read as a weights file without running code")
    refused(tmp_path / "missing.pth", "is not a file")


def test_install_weights_knows_a_renamed_download_by_its_content(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fake = fake_resnet50_file(tmp_path, 0.75)
    real_files = weights_mod.imagenet_files
    # let the stand-in be "torchvision's V2 file" (these machines cannot download the real one)
    monkeypatch.setattr(weights_mod, "imagenet_files",
                        lambda: [(real_files()[0][0].with_name(fake.name), "url"), *real_files()[1:]])
    renamed = fake.rename(tmp_path / "resnet50 (1).pth")  # a browser's name for a second download
    dest, already = weights_mod.install_imagenet_weights(renamed)
    assert dest.name == fake.name and not already and dest.read_bytes() == renamed.read_bytes()


def test_a_copy_that_fails_midway_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fake = fake_resnet50_file(tmp_path)

    def full_disk(src, dst, length=0):
        dst.write(src.read(100))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full_disk)
    with pytest.raises(InputError, match="No space left"):
        weights_mod.install_imagenet_weights(fake)
    assert not list((tmp_path / "torch" / "hub" / "checkpoints").iterdir())


def test_own_resnet50_is_torchvisions():
    """The package's ResNet50 (no torchvision import on the classify path) has torchvision's modules, keys and
    shapes, computes the same outputs from the same weights, and a seed gives it the same random weights."""
    from torchvision.models.resnet import Bottleneck, ResNet

    from napari_yeast_phenotypes.core.network.resnet import ResNet50

    torch.manual_seed(3)
    ours = ResNet50(num_classes=8)
    torch.manual_seed(3)
    theirs = ResNet(Bottleneck, [3, 4, 6, 3], num_classes=8)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)  # same initialisation, in order
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [type(m).__name__ for m in ours.modules()][1:] == [type(m).__name__ for m in theirs.modules()][1:]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for mode in ("eval", "train"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        with torch.no_grad():
            assert torch.equal(ours(x), theirs(x))
    # the adapted model: the same weights as YeastResNet was built from torchvision's class
    torch.manual_seed(4)
    yeast = YeastResNet(8)
    torch.manual_seed(4)
    ref = ResNet(Bottleneck, [3, 4, 6, 3], num_classes=8)
    ref.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    torch.nn.init.kaiming_normal_(ref.conv1.weight, mode="fan_out", nonlinearity="relu")
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in yeast.state_dict().items())


@pytest.mark.slow
def test_classify_path_imports_no_torchvision(tmp_path):
    """Loading a checkpoint and classifying a movie import neither torchvision (1.6 s) nor lifelines, matplotlib
    or dask (imported when summary.png is drawn, or a cluster used), nor torch._dynamo (with triton: 1.5 s, and a
    crash next to Mesa's LLVM in napari, _napari/_safe_torch.py)."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet\n"
        "from napari_yeast_phenotypes.core.network.checkpoint import save_checkpoint, load_classifier\n"
        "from napari_yeast_phenotypes.core.data.simulate import simulate_movie\n"
        "from napari_yeast_phenotypes.core.pipeline import analyse\n"
        "from napari_yeast_phenotypes.core.config import ClassifyConfig\n"
        f"p = {str(tmp_path / 'm.pt')!r}\n"
        "save_checkpoint(p, Classifier(YeastResNet(8).eval()))\n"
        "mv = simulate_movie(n_frames=2, size=96, n_cells=3, seed=0)\n"
        "analyse(mv.image, mv.labels, load_classifier(p), ClassifyConfig(device='cpu', batch_size=8))\n"
        "print(sorted(m for m in ('torchvision', 'lifelines', 'matplotlib', 'dask', 'torch._dynamo') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
