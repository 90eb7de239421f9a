"""Where the real third-party data lives (../shared/data/real), and skipping where it does not."""

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def real_data(*parts: str) -> Path:
    """Path under ../shared/data/real, or skip the test when it is absent (a user's clone)."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path
