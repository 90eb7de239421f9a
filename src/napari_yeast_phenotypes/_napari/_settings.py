"""The remembered model file, and the demo model offered when none is remembered.

Settings live in a small JSON file under the user's config folder
(:func:`napari_yeast_phenotypes.core.files.paths.config_dir`; ``NAPARI_YEAST_PHENOTYPES_CONFIG_DIR``
overrides it, tests use that).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.files.paths import config_dir, demo_models

SETTINGS_FILE = "napari-settings.json"
NO_MODEL_HINT = (
    "No model yet. Pick a model file (.pt), or make the demo model with "
    "`yeast-phenotypes demo --out DIR` in a terminal (a few minutes on a CPU); "
    "it is then offered here."
)


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def load_settings() -> dict:
    """The saved settings, or ``{}`` when there are none or they cannot be read."""
    try:
        from ..core.files.jsonfile import loads_json

        data = loads_json(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_settings(**values) -> None:
    """Merge ``values`` into the saved settings. A failure to write is not worth an error."""
    from ..core.files.atomic import atomic_write

    data = {**load_settings(), **values}
    try:
        with atomic_write(settings_path()) as fh:
            json.dump(data, fh, indent=2)
    except OSError:
        pass  # a read-only home folder only means the choice is not remembered


def newest_demo_model() -> Path | None:
    """The newest cached demo model (``demo-model-*.pt`` in the package's cache folder), if any."""
    found = demo_models()
    return found[0] if found else None


def default_model() -> Path | None:
    """The last model used, if it still exists; else the newest demo model; else ``None``."""
    last = load_settings().get("model_path")
    if last and Path(last).is_file():
        return Path(last)
    return newest_demo_model()


def remember_model(path: str | os.PathLike) -> None:
    save_settings(model_path=str(Path(path).resolve()))
