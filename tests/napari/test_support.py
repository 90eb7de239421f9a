"""Remembered model path, demo-model offer, and the guard that keeps triton out next to Mesa's LLVM."""

from __future__ import annotations

import os
import sys

import pytest

from napari_yeast_phenotypes._napari import _safe_torch, _settings


def test_settings_round_trip_in_the_config_dir(tmp_path):
    assert _settings.config_dir() == tmp_path / "config"  # set by conftest
    assert _settings.load_settings() == {}
    _settings.save_settings(model_path="/x/m.pt", other=1)
    _settings.save_settings(other=2)
    assert _settings.load_settings() == {"model_path": "/x/m.pt", "other": 2}


def test_unreadable_settings_are_ignored():
    path = _settings.settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert _settings.load_settings() == {}
    path.write_text("[1, 2]")
    assert _settings.load_settings() == {}


def test_default_model_last_used_then_newest_demo(tmp_path):
    assert _settings.default_model() is None
    cache = tmp_path / "cache"
    cache.mkdir()
    old, new = cache / "demo-model-old.pt", cache / "demo-model-new.pt"
    old.write_bytes(b"1")
    new.write_bytes(b"2")
    os.utime(old, (1_000, 1_000))
    assert _settings.default_model() == new
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"3")
    _settings.remember_model(mine)
    assert _settings.default_model() == mine
    mine.unlink()  # a remembered file that is gone falls back to the demo model
    assert _settings.default_model() == new


def test_system_llvm_detection(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00 r-xp /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1\n")
    assert _safe_torch.system_llvm_loaded(maps)
    maps.write_text("7f00 r-xp /usr/lib/libc.so.6\n")
    assert not _safe_torch.system_llvm_loaded(maps)
    assert not _safe_torch.system_llvm_loaded(tmp_path / "missing")


def test_triton_is_kept_out_only_within_the_block(monkeypatch):
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    monkeypatch.setattr(_safe_torch, "system_llvm_loaded", lambda: True)
    with _safe_torch.triton_kept_out() as blocked:
        assert blocked
        with pytest.raises(ImportError):
            import triton  # noqa: F401
    assert "triton" not in sys.modules
    monkeypatch.setattr(_safe_torch, "system_llvm_loaded", lambda: False)
    with _safe_torch.triton_kept_out() as blocked:
        assert not blocked
