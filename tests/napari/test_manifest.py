"""The npe2 manifest: valid, every python_name importable, and none of them imports torch."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")

import napari_yeast_phenotypes  # noqa: E402 - after the importorskips
from napari_yeast_phenotypes._napari import PLUGIN  # noqa: E402

MANIFEST = Path(napari_yeast_phenotypes.__file__).with_name("napari.yaml")


def _python_names() -> list[str]:
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    return [c.python_name for c in manifest.contributions.commands or [] if c.python_name]


def test_manifest_is_found_through_the_entry_point_and_valid():
    manifest = npe2.PluginManifest.from_distribution(PLUGIN)  # validates the schema
    assert manifest.name == PLUGIN
    assert {w.display_name for w in manifest.contributions.widgets} == {"Classify phenotypes", "Annotate phenotypes",
                                                                           "Train phenotype model"}
    assert [s.key for s in manifest.contributions.sample_data] == ["yeast-timelapse"]
    assert manifest.contributions.writers[0].layer_types == ["labels"]


@pytest.mark.slow
def test_npe2_validate_command_passes():
    npe2_cli = Path(sys.executable).with_name("npe2")
    if not npe2_cli.exists():
        pytest.skip("the npe2 command is not installed next to this Python")
    out = subprocess.run([str(npe2_cli), "validate", "--imports", PLUGIN], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("python_name", _python_names())
def test_every_python_name_imports(python_name):
    module, _, attr = python_name.partition(":")
    assert callable(getattr(import_module(module), attr))


@pytest.mark.parametrize("module", sorted({n.partition(":")[0] for n in _python_names()}))
def test_importing_the_plugin_does_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr[-2000:]
