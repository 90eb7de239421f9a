"""Where the package keeps things between runs: the one cache folder and the one settings folder.

The cache holds the demo's trained models (the viewer offers the newest one) and whatever the
benchmark needs to keep; the settings folder holds what the napari docks remember. Both follow the
platform's conventions through ``platformdirs`` (``$XDG_CACHE_HOME`` / ``$XDG_CONFIG_HOME`` on
Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows); the environment variables
``NAPARI_YEAST_PHENOTYPES_CACHE`` and ``NAPARI_YEAST_PHENOTYPES_CONFIG_DIR`` override them.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "napari-yeast-phenotypes"
CACHE_ENV = "NAPARI_YEAST_PHENOTYPES_CACHE"
CONFIG_ENV = "NAPARI_YEAST_PHENOTYPES_CONFIG_DIR"


def cache_dir() -> Path:
    """The package's cache folder (not created here)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    """The folder holding the napari docks' remembered settings (not created here)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME, appauthor=False))


def demo_models() -> list[Path]:
    """The demo models in the cache, newest first."""
    try:
        found = [p for p in cache_dir().glob("demo-model-*.pt") if p.is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


__all__ = ["cache_dir", "config_dir", "demo_models"]
