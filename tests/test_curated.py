import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_yeast_phenotypes.cli import main
from napari_yeast_phenotypes.core.crops import CropSettings, movie_crops
from napari_yeast_phenotypes.core.curated import CuratedSet, crops_for_annotations, read_annotations
from napari_yeast_phenotypes.core.io import InputError
from napari_yeast_phenotypes.core.tracking import build_cell_table
from napari_yeast_phenotypes.core.train import load_image_folder
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES


@pytest.fixture
def movie_files(tmp_path, small_movie):
    from napari_yeast_phenotypes.core.simulate import write_movie

    return write_movie(small_movie, tmp_path / "exp_a")


def test_curate_round_trips_a_truth_table(tmp_path, movie_files, small_movie):
    truth = small_movie.truth
    ann = truth.iloc[::2].copy()
    ann["split"] = np.where(np.arange(len(ann)) % 4 == 0, "val", "train")
    ann.to_csv(tmp_path / "ann.csv", index=False)
    out = tmp_path / "curated"
    rc = main(["curate", "--image", str(movie_files["image"]), "--labels", str(movie_files["labels"]),
               "--annotations", str(tmp_path / "ann.csv"), "--out", str(out)])
    assert rc == 0
    cs = CuratedSet(out)
    assert len(cs) == len(ann)
    # one crop per row, in the right split/class folder, with provenance
    for (_, a), (_, m) in zip(ann.sort_values(["frame", "label"]).iterrows(),
                              cs.manifest.sort_values(["frame", "label"]).iterrows()):
        keys = ["frame", "label", "phenotype", "split"]
        assert [m[k] for k in keys] == [a[k] for k in keys]
        assert m["path"] == f"{a['split']}/{a['phenotype']}/{m['crop_id']}.tif"
        assert (out / m["path"]).exists()
        assert m["experiment"] == "exp_a" and m["source"] == "image.tif" and m["annotated_at"]
    files = sorted(out.glob("*/*/*.tif"))
    assert len(files) == len(ann)
    # the stored crops are exactly what the crop function makes at inference time
    table = build_cell_table(small_movie.labels)
    row = cs.manifest.iloc[0]
    idx = np.flatnonzero((table["frame"] == row["frame"]) & (table["label"] == row["label"]))
    expected = movie_crops(small_movie.image, small_movie.labels, table)[idx[0], 0]
    assert np.array_equal(tifffile.imread(out / row["path"]), expected)
    # torchvision-ImageFolder compatible: the train split loads as class folders
    folder = load_image_folder(out / "train")
    assert len(folder) == int((ann["split"] == "train").sum())


def test_second_import_adds_and_skips_duplicates(tmp_path, movie_files, small_movie):
    truth = small_movie.truth
    out = tmp_path / "curated"
    first, second = truth.iloc[:20], truth.iloc[10:40]
    for i, part in enumerate([first, second]):
        part.to_csv(tmp_path / f"a{i}.csv", index=False)
        assert main(["curate", "--image", str(movie_files["image"]), "--labels", str(movie_files["labels"]),
                     "--annotations", str(tmp_path / f"a{i}.csv"), "--out", str(out)]) == 0
    cs = CuratedSet(out)
    assert len(cs) == 40
    assert not cs.manifest.duplicated(["experiment", "source", "frame", "label"]).any()
    # the same movie under another experiment name is another source
    assert main(["curate", "--image", str(movie_files["image"]), "--labels", str(movie_files["labels"]),
                 "--annotations", str(tmp_path / "a0.csv"), "--out", str(out), "--experiment", "exp_b"]) == 0
    assert len(CuratedSet(out)) == 60


def test_relabel_moves_the_crop_and_undo_restores(tmp_path, small_movie):
    cs = CuratedSet(tmp_path / "set", CropSettings())
    ann = small_movie.truth.iloc[:5].assign(split="train", experiment="e")
    crops, rows = crops_for_annotations(small_movie.image, small_movie.labels, ann, cs.crop_settings, "m.tif")
    assert cs.add(crops, rows) == (5, 0)
    row = cs.manifest.iloc[0]
    new = "Triple" if row["phenotype"] != "Triple" else "Circular"
    cs.relabel(row["crop_id"], new)
    moved = tmp_path / "set" / f"train/{new}/{row['crop_id']}.tif"
    assert moved.exists() and not (tmp_path / "set" / row["path"]).exists()
    assert CuratedSet(tmp_path / "set").manifest.iloc[0]["phenotype"] == new
    assert cs.undo() == "relabel"
    assert (tmp_path / "set" / row["path"]).exists() and not moved.exists()
    cs.remove(row["crop_id"])
    assert len(cs) == 4 and cs.undo() == "remove" and len(cs) == 5
    assert (tmp_path / "set" / row["path"]).exists()
    assert cs.undo() == "add" and len(CuratedSet(tmp_path / "set")) == 0
    assert cs.undo() is None


def test_orphan_files_are_set_aside_not_deleted(tmp_path, small_movie):
    root = tmp_path / "set"
    cs = CuratedSet(root, CropSettings())
    ann = small_movie.truth.iloc[:3].assign(split="train", experiment="e")
    cs.add(*crops_for_annotations(small_movie.image, small_movie.labels, ann, cs.crop_settings, "m.tif"))
    stray = root / "train" / "Nuclear" / "stray.tif"
    stray.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(stray, np.zeros((40, 40), np.float32))  # as if a crash came before the manifest
    again = CuratedSet(root)
    assert len(again) == 3 and not stray.exists()
    assert (root / ".orphans" / "train" / "Nuclear" / "stray.tif").exists()


def test_other_crop_settings_cannot_join(tmp_path):
    CuratedSet(tmp_path / "s", CropSettings())
    with pytest.raises(InputError, match="other crop settings"):
        CuratedSet(tmp_path / "s", CropSettings(margin=0.4))


def test_bad_annotations(tmp_path, small_movie):
    bad = pd.DataFrame({"frame": [0], "label": [1], "phenotype": ["Nucleus"]})
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="unknown phenotypes"):
        read_annotations(tmp_path / "bad.csv")
    pd.DataFrame({"frame": [0], "cell": [1]}).to_csv(tmp_path / "cols.csv", index=False)
    with pytest.raises(InputError, match="lacks the columns"):
        read_annotations(tmp_path / "cols.csv")
    codes = pd.DataFrame({"frame": [0, 0], "label": [1, 2], "phenotype": ["n", "S"]})
    codes.to_csv(tmp_path / "codes.csv", index=False)
    assert list(read_annotations(tmp_path / "codes.csv")["phenotype"]) == ["Nuclear", "Senescent"]
    missing = pd.DataFrame({"frame": [0, 99], "label": [999, 1], "phenotype": ["Nuclear", "Nuclear"]})
    with pytest.raises(InputError, match="frames"):
        crops_for_annotations(small_movie.image, small_movie.labels, missing.assign(split="train"),
                              CropSettings(), "m.tif")
    with pytest.raises(InputError, match="not in the labels"):
        crops_for_annotations(small_movie.image, small_movie.labels, missing.iloc[:1].assign(split="train"),
                              CropSettings(), "m.tif")


def test_image_folder_checks(tmp_path):
    root = tmp_path / "crops"
    for cls in ("Nuclear", "Cytoplasm"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            tifffile.imwrite(root / cls / f"{i}.tif", np.random.rand(40, 40).astype(np.float32))
    (root / "Nuclear" / "notes.txt").write_text("not an image")
    tifffile.imwrite(root / "Cytoplasm" / "big.tif", np.random.rand(64, 64).astype(np.float32))
    tifffile.imwrite(root / "Cytoplasm" / "u16.tif", (np.random.rand(40, 40) * 4000).astype(np.uint16))
    data = load_image_folder(root)
    assert data.crops.shape == (8, 1, 40, 40) and np.isfinite(data.crops).all()
    assert data.counts()["Nuclear"] == 3 and data.counts()["Cytoplasm"] == 5
    notes = " ".join(data.notes)
    assert "resized" in notes and "not images" in notes and "no crops for" in notes
    with pytest.raises(InputError, match="no crops for"):
        load_image_folder(root, require_all=True)
    (root / "Cytoplasma").mkdir()
    with pytest.raises(InputError, match="did you mean 'Cytoplasm'"):
        load_image_folder(root)
    (root / "Cytoplasma").rmdir()
    rgb = np.random.rand(40, 40, 3).astype(np.float32)
    tifffile.imwrite(root / "Nuclear" / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(InputError, match="colour channels"):
        load_image_folder(root)
    gray3 = np.repeat(np.random.rand(40, 40, 1).astype(np.float32), 3, axis=2)
    tifffile.imwrite(root / "Nuclear" / "rgb.tif", gray3, photometric="rgb")
    assert len(load_image_folder(root)) == 9
    assert CLASS_NAMES[0] == "Nuclear"
