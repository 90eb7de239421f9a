"""What is written after the work, faster and the same: the CSV writer (pandas' bytes), the input hashes made
while the movie is classified, the plotting libraries imported ahead."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest

from napari_yeast_phenotypes.core.files.tables import csv_text, neutralise_table


def pandas_text(df: pd.DataFrame, header: bool = True) -> str:
    safe = neutralise_table(df)
    crlf = any(safe[c].astype(str).str.contains("\r", regex=False).any()
               for c in safe.columns if safe[c].dtype == object)
    return safe.to_csv(index=False, header=header, float_format="%.6g", lineterminator="\r\n" if crlf else "\n")


@pytest.mark.parametrize("n", [0, 1, 257])
@pytest.mark.parametrize("header", [True, False])
def test_csv_text_is_pandas_bytes(n, header):
    rng = np.random.default_rng(n)
    names = np.array(["Nuclear", "with, comma", 'with "quotes"', "multi\nline", "", "=HYPERLINK(1)", "-3", "'x"])
    df = pd.DataFrame({
        "track_id": rng.integers(-5, 10**12, n), "frame": rng.integers(0, 300, n).astype(np.uint16),
        "y": rng.normal(0, 1e3, n), "p_a": rng.random(n).astype(np.float32),
        "tiny": rng.normal(0, 1e-9, n), "huge": rng.normal(0, 1e20, n),
        "phenotype": names[rng.integers(0, len(names), n)] if n else np.array([], object),
        "annotated": rng.random(n) < 0.5,
        "ood_score": np.where(rng.random(n) < 0.3, np.nan, rng.random(n)),
        "odd": np.where(rng.random(n) < 0.5, np.inf, -0.0),
    })
    df["phenotype"] = df["phenotype"].astype(object)
    assert csv_text(df, header) == pandas_text(df, header)
    cr = df.assign(phenotype=["a\rb"] * n)
    assert csv_text(cr, header) == pandas_text(cr, header)


def test_csv_text_leaves_other_kinds_to_pandas():
    df = pd.DataFrame({"sen": pd.array([3, None, 7], dtype="Int64"), "cat": pd.Categorical(["a", "b", "a"]),
                       "mixed": ["a", None, 1.5], "when": pd.to_datetime(["2024-01-01"] * 3)})
    assert csv_text(df) == pandas_text(df)


@pytest.mark.slow
def test_classify_job_hashes_while_it_works_and_imports_ahead(tmp_path, small_movie, random_checkpoint,
                                                             monkeypatch):
    """The files' hashes of run.json are the files' SHA-256 (made in a thread while the movie is classified),
    and summary.png's libraries are imported in a thread once the first frames are done, joined before writing."""
    import tifffile

    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.files.fingerprint import file_sha256
    from napari_yeast_phenotypes.core.jobs import classify as classify_mod

    tifffile.imwrite(tmp_path / "image.tif", small_movie.image)
    tifffile.imwrite(tmp_path / "labels.tif", small_movie.labels)
    started = []
    real = classify_mod._import_plot_libraries
    monkeypatch.setattr(classify_mod, "_import_plot_libraries",
                        lambda: started.append(threading.current_thread().name) or real())
    seen = []
    before = set(threading.enumerate())  # another test's abandoned job may still hold its threads
    job = classify_mod.classify_movie(tmp_path / "image.tif", tmp_path / "labels.tif", random_checkpoint,
                                      ClassifyConfig(device="cpu", precision="fp32", chunk_frames=2), tmp_path / "out",
                                      progress=lambda d, n: seen.append((d, n, len(started))))
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    for name in ("image", "labels"):
        assert run["inputs"][name]["sha256"] == file_sha256(tmp_path / f"{name}.tif")
    assert run["model"]["sha256"] == file_sha256(random_checkpoint)
    assert started == ["yeast-phenotypes imports"]
    assert seen[0][2] == 0 and seen[1][0] > 0  # not before the first frames were done
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("yeast-phenotypes")]
    assert job.run["inference"]["batch_size"] == 128
