import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_yeast_phenotypes.cli import main
from napari_yeast_phenotypes.core.data.cropfolder import load_image_folder
from napari_yeast_phenotypes.core.data.crops import CropSettings, movie_crops
from napari_yeast_phenotypes.core.data.curated import (
    LEGACY_COLUMNS,
    CuratedSet,
    cell_key,
    crops_for_annotations,
    movie_identity,
    read_annotations,
)
from napari_yeast_phenotypes.core.data.tracking import build_cell_table
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.jobs import curate_movie
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES


@pytest.fixture
def movie_files(tmp_path, small_movie):
    from napari_yeast_phenotypes.core.data.simulate import write_movie

    return write_movie(small_movie, tmp_path / "exp_a")


def test_curate_round_trips_a_truth_table(tmp_path, movie_files, small_movie):
    truth = small_movie.truth
    ann = truth.iloc[::2].copy()
    # whole tracks to one split (the set would keep a track on one side anyway)
    ann["split"] = np.where(ann["label"] % 4 == 0, "val", "train")
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
        assert m["movie_path"] == str(movie_files["image"].resolve())
        assert m["movie_id"] == movie_identity(small_movie.image, small_movie.labels)
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


def test_second_import_adds_and_skips_duplicates(tmp_path, movie_files, small_movie, capsys):
    truth = small_movie.truth
    out = tmp_path / "curated"
    first, second = truth.iloc[:20], truth.iloc[10:40]
    for i, part in enumerate([first, second]):
        part.to_csv(tmp_path / f"a{i}.csv", index=False)
        assert main(["curate", "--image", str(movie_files["image"]), "--labels", str(movie_files["labels"]),
                     "--annotations", str(tmp_path / f"a{i}.csv"), "--out", str(out)]) == 0
    assert "added 20 crops" in capsys.readouterr().out
    cs = CuratedSet(out)
    assert len(cs) == 40
    assert not cs.manifest.duplicated(["movie_id", "frame", "label"]).any()
    # the same movie under another experiment name is the same movie: nothing new
    assert main(["curate", "--image", str(movie_files["image"]), "--labels", str(movie_files["labels"]),
                 "--annotations", str(tmp_path / "a0.csv"), "--out", str(out), "--experiment", "exp_b"]) == 0
    assert "added 0 crops" in capsys.readouterr().out
    assert len(CuratedSet(out)) == 40


def test_a_movie_is_known_by_its_content_not_its_name(tmp_path, small_movie):
    """Issue 12.2: day2/exp_a/image.tif after exp_a/image.tif is another movie; a copy elsewhere is the same."""
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie, write_movie

    other = simulate_movie(n_frames=6, size=128, n_cells=8, seed=4)
    a = write_movie(small_movie, tmp_path / "exp_a")
    b = write_movie(other, tmp_path / "day2" / "exp_a")
    copy = write_movie(small_movie, tmp_path / "elsewhere" / "renamed")
    out = tmp_path / "set"
    ann = small_movie.truth.iloc[:15]
    ann_other = other.truth.iloc[:15]
    cs, rep = curate_movie(a["image"], a["labels"], _csv(tmp_path / "a.csv", ann), out)
    assert rep.added == 15
    cs, rep = curate_movie(b["image"], b["labels"], _csv(tmp_path / "b.csv", ann_other), out)
    assert (rep.added, rep.already) == (15, 0)
    cs, rep = curate_movie(copy["image"], copy["labels"], _csv(tmp_path / "a.csv", ann), out)
    assert (rep.added, rep.already) == (0, 15)
    assert len(cs) == 30 and cs.manifest["movie_id"].nunique() == 2


def _csv(path, df):
    df.to_csv(path, index=False)
    return path


def test_crop_ids_are_unique_by_construction(tmp_path, small_movie):
    """Issue 12.3: experiments 'a b' and 'a-b' used to give one file name for two cells."""
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie

    other = simulate_movie(n_frames=6, size=128, n_cells=8, seed=4)
    cs = CuratedSet(tmp_path / "set")
    for movie, exp in ((small_movie, "a b"), (other, "a-b")):
        ann = movie.truth.iloc[:10].assign(experiment=exp)
        cs.add(*crops_for_annotations(movie.image, movie.labels, ann, cs.crop_settings, "image.tif"))
    m = CuratedSet(tmp_path / "set").manifest
    assert len(m) == 20 and m["crop_id"].is_unique and m["path"].is_unique
    assert len(list((tmp_path / "set").glob("*/*/*.tif"))) == 20
    assert set(m["experiment"]) == {"a b", "a-b"}


@pytest.mark.parametrize("split", ["..", "../../x", "train/../..", "holdout", ""])
def test_split_names_from_files_are_checked(tmp_path, small_movie, split):
    """Issue 12.4: a split is a folder, so only the fixed names are taken."""
    ann = small_movie.truth.iloc[:3].assign(split=split)
    path = _csv(tmp_path / "ann.csv", ann)
    if split == "":  # an empty cell is a missing value: the default split
        assert set(read_annotations(path)["split"]) == {"train"}
        return
    with pytest.raises(InputError, match="unknown split"):
        read_annotations(path)
    cs = CuratedSet(tmp_path / "set")
    crops, rows = crops_for_annotations(small_movie.image, small_movie.labels, ann.assign(split="train"),
                                        cs.crop_settings, "m.tif")
    with pytest.raises(InputError, match="unknown split"):
        cs.add(crops, rows.assign(split=split))
    assert not any((tmp_path / "set").parent.glob("*.tif")) and len(CuratedSet(tmp_path / "set")) == 0


def test_split_names_are_matched_without_case(tmp_path, small_movie):
    ann = small_movie.truth.iloc[:4].assign(split=["Train", "VAL", "Validation", "test"])
    assert list(read_annotations(_csv(tmp_path / "a.csv", ann))["split"]) == ["train", "val", "val", "test"]


@pytest.mark.parametrize("names", [["Nuclear", "../evil"], ["Nuclear", "nuclear"], ["Nuclear", ".hidden"]])
def test_class_names_from_the_settings_file_are_checked(tmp_path, names):
    CuratedSet(tmp_path / "s")
    settings = tmp_path / "s" / "settings.json"
    d = json.loads(settings.read_text())
    d["class_names"] = names
    settings.write_text(json.dumps(d))
    with pytest.raises(InputError, match="class names"):
        CuratedSet(tmp_path / "s")


def test_a_hand_edited_manifest_that_points_outside_is_refused(tmp_path, small_movie):
    cs = CuratedSet(tmp_path / "s")
    ann = small_movie.truth.iloc[:2]
    cs.add(*crops_for_annotations(small_movie.image, small_movie.labels, ann, cs.crop_settings, "m.tif"))
    m = pd.read_csv(tmp_path / "s" / "manifest.csv", keep_default_na=False)
    m.loc[0, "path"] = "../../outside.tif"
    m.to_csv(tmp_path / "s" / "manifest.csv", index=False)
    with pytest.raises(InputError, match="path"):
        CuratedSet(tmp_path / "s")


def test_conflicting_annotations_are_reported(tmp_path, small_movie, capsys):
    """Issue 12.9: two classes for one cell-frame are a conflict, in the file and against the set."""
    from napari_yeast_phenotypes.core.data.simulate import write_movie

    files = write_movie(small_movie, tmp_path / "exp")
    t = small_movie.truth.iloc[:6].reset_index(drop=True)
    other = "Triple" if t.loc[0, "phenotype"] != "Triple" else "Circular"
    torn = pd.concat([t, t.iloc[[0]].assign(phenotype=other), t.iloc[[1]]])  # row 1 repeated exactly: fine
    out = tmp_path / "set"
    args = ["curate", "--image", str(files["image"]), "--labels", str(files["labels"]), "--out", str(out)]
    assert main([*args, "--annotations", str(_csv(tmp_path / "torn.csv", torn))]) == 0
    printed = capsys.readouterr().out
    assert "added 5 crops" in printed and "1 conflicting" in printed
    assert f"frame {t.loc[0, 'frame']} label {t.loc[0, 'label']}" in printed
    # now the set says one thing and a second file another: reported, the set's label kept
    changed = t.iloc[[2]].assign(phenotype="Senescent" if t.loc[2, "phenotype"] != "Senescent" else "Nuclear")
    assert main([*args, "--annotations", str(_csv(tmp_path / "b.csv", changed)), "--annotator", "bob"]) == 0
    printed = capsys.readouterr().out
    assert "added 0 crops" in printed and "1 conflicting" in printed and f"kept {t.loc[2, 'phenotype']}" in printed
    cs = CuratedSet(out)
    row = cs.manifest[(cs.manifest["frame"] == t.loc[2, "frame"]) & (cs.manifest["label"] == t.loc[2, "label"])]
    assert row["phenotype"].item() == t.loc[2, "phenotype"] and "by bob" in row["conflict"].item()
    assert any("conflicting" in w for w in cs.warnings())


def test_a_missing_experiment_value_keeps_the_column(tmp_path, small_movie):
    ann = small_movie.truth.iloc[:3].assign(experiment=["e1", None, "e3"])
    read = read_annotations(_csv(tmp_path / "a.csv", ann))
    crops, rows = crops_for_annotations(small_movie.image, small_movie.labels, read, CropSettings(), "m.tif",
                                        experiment="default")
    assert list(rows["experiment"]) == ["e1", "default", "e3"]


def test_an_old_manifest_without_the_new_columns_still_opens(tmp_path, small_movie):
    cs = CuratedSet(tmp_path / "s")
    ann = small_movie.truth.iloc[:4]
    crops, rows = crops_for_annotations(small_movie.image, small_movie.labels, ann, cs.crop_settings, "m.tif",
                                        experiment="e")
    cs.add(crops, rows.drop(columns=["movie_id"]))  # as an older version wrote it: no content identity
    m = pd.read_csv(tmp_path / "s" / "manifest.csv", keep_default_na=False)
    m[LEGACY_COLUMNS].to_csv(tmp_path / "s" / "manifest.csv", index=False)
    old = CuratedSet(tmp_path / "s")
    assert len(old) == 4 and (old.manifest["movie_id"] == "").all()
    assert old.load_split("train").crops.shape == (4, 1, 40, 40)
    # the same cells, now with their movie's identity: recognised as the cells already there
    rep = old.add(crops, rows)
    assert (rep.added, rep.already) == (0, 4)


def test_marked_cells_are_kept_but_not_trained_on(tmp_path, small_movie):
    cs = CuratedSet(tmp_path / "s")
    ann = small_movie.truth.iloc[:6].copy()
    ann["mark"] = ["", "unsure", "bad segmentation", "", "", ""]
    crops, rows = crops_for_annotations(small_movie.image, small_movie.labels, ann, cs.crop_settings, "m.tif")
    assert cs.add(crops, rows).added == 6
    assert cs.mark_counts() == {"unsure": 1, "bad_segmentation": 1}
    assert len(cs.load_split("train")) == 4 and int(cs.counts().to_numpy().sum()) == 4
    assert (tmp_path / "s" / "_marked" / "unsure").is_dir()
    assert len(load_image_folder(tmp_path / "s" / "train")) == 4  # ImageFolder sees no marked crop


def test_a_track_stays_in_one_split(tmp_path, small_movie):
    cs = CuratedSet(tmp_path / "s")
    t = small_movie.truth
    track = t[t["label"] == t["label"].iloc[0]]
    first = track.iloc[:2].assign(split="val")
    later = track.iloc[2:4].assign(split="train")
    for part in (first, later):
        rep = cs.add(*crops_for_annotations(small_movie.image, small_movie.labels, part, cs.crop_settings, "m.tif"))
    assert rep.split_kept == 2
    assert set(cs.manifest["split"]) == {"val"}


def test_undo_and_redo_are_per_writer(tmp_path, small_movie):
    root = tmp_path / "s"
    mine, theirs = CuratedSet(root), CuratedSet(root)
    ann = small_movie.truth.iloc[:3]
    crops, rows = crops_for_annotations(small_movie.image, small_movie.labels, ann, mine.crop_settings, "m.tif")
    mine.add(crops[:2], rows.iloc[:2])
    theirs.add(crops[2:], rows.iloc[2:])
    assert len(mine.reload()) == 3  # each writer sees the other's rows
    assert mine.undo() == "add" and len(CuratedSet(root)) == 1  # only my two went
    assert mine.redo() == "add" and len(CuratedSet(root)) == 3
    assert (root / mine.manifest["path"].iloc[0]).exists()
    # a change that another writer has overwritten since is not undone behind their back
    m = mine.manifest
    key = cell_key(m[(m["frame"] == rows["frame"].iloc[0]) & (m["label"] == rows["label"].iloc[0])].iloc[0])
    assert theirs.remove_cells([key]) == 1
    with pytest.raises(InputError, match="changed since by another writer"):
        mine.undo()
    assert len(CuratedSet(root)) == 2


def test_relabel_moves_the_crop_and_undo_restores(tmp_path, small_movie):
    cs = CuratedSet(tmp_path / "set", CropSettings())
    ann = small_movie.truth.iloc[:5].assign(split="train", experiment="e")
    crops, rows = crops_for_annotations(small_movie.image, small_movie.labels, ann, cs.crop_settings, "m.tif")
    assert cs.add(crops, rows).added == 5
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


def test_the_manifest_file_says_what_the_set_holds_after_every_kind_of_change(tmp_path, small_movie):
    # adds write only the new rows' CSV after the text kept from the last write: the file must
    # stay exactly what the whole manifest turned into CSV is, whatever came before
    root = tmp_path / "set"
    mine, theirs = CuratedSet(root), CuratedSet(root)
    ann = small_movie.truth.iloc[:12].assign(split="train", experiment="e")
    crops, rows = crops_for_annotations(small_movie.image, small_movie.labels, ann, mine.crop_settings, "m.tif")

    def same():
        text = (root / "manifest.csv").read_text()
        assert text == mine.manifest.to_csv(index=False, lineterminator="\n")
        fresh = CuratedSet(root).manifest
        pd.testing.assert_frame_equal(fresh, mine.manifest.reset_index(drop=True), check_dtype=False)

    for j in range(4):  # one label at a time, as in the viewer
        mine.add(crops[j:j + 1], rows.iloc[j:j + 1])
        same()
    mine.add(crops[4:7], rows.iloc[4:7])  # a fill
    same()
    row = mine.manifest.iloc[1]
    mine.relabel(row["crop_id"], "Triple" if row["phenotype"] != "Triple" else "Circular")  # changes a row
    same()
    mine.add(crops[7:8], rows.iloc[7:8])
    same()
    mine.remove(mine.manifest.iloc[0]["crop_id"])
    same()
    mine.add(crops[8:9], rows.iloc[8:9])
    same()
    theirs.add(crops[9:10], rows.iloc[9:10])  # another writer: read again, then appended to
    mine.add(crops[10:11], rows.iloc[10:11])
    same()
    assert len(mine.manifest) == 10
    assert mine.undo() == "add" and mine.undo() == "add"
    same()
    assert mine.redo() == "add"
    mine.add(crops[11:12], rows.iloc[11:12])
    same()


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


WRITER = textwrap.dedent('''
    import sys, time, numpy as np, pandas as pd
    from napari_yeast_phenotypes.core.data.curated import CuratedSet
    root, movie, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cs = CuratedSet(root)
    print("ready", flush=True)
    rng = np.random.default_rng(abs(hash(movie)) % 1000)
    for i in range(n):
        rows = pd.DataFrame({"frame": i, "label": [1, 2, 3], "phenotype": ["Nuclear", "Triple", "Senescent"],
                             "split": "train", "experiment": movie, "source": "image.tif", "movie_id": movie,
                             "track_id": [1, 2, 3]})
        cs.add(rng.random((3, 1, 40, 40), dtype=np.float32), rows, annotator=movie)
        if i % 3 == 2:
            cs.relabel(cs.labels_of_movie(movie)["crop_id"].iloc[-1], "Circular")
    print("done", flush=True)
''')


def _start_writer(tmp_path, root, movie, n):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen([sys.executable, str(script), str(root), movie, str(n)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _check_whole(root):
    cs = CuratedSet(root)  # opening sets aside files the manifest does not name
    assert cs.manifest["crop_id"].is_unique
    assert all((root / p).is_file() for p in cs.manifest["path"])
    named = set(cs.manifest["path"])
    assert all(p.relative_to(root).as_posix() in named for p in root.glob("*/*/*.tif"))
    return cs


@pytest.mark.slow
def test_two_curate_commands_into_one_set_at_once_keep_both(tmp_path, movie_files, small_movie):
    """Issue 12.1: two `curate` runs into one set at once both keep their rows."""
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie, write_movie

    other = simulate_movie(n_frames=6, size=128, n_cells=8, seed=4)
    files_b = write_movie(other, tmp_path / "day2" / "exp_a")
    out = tmp_path / "set"
    CuratedSet(out)  # the set exists, so both runs go straight to writing
    procs = []
    for files, truth, exp in ((movie_files, small_movie.truth, "A"), (files_b, other.truth, "B")):
        ann = _csv(tmp_path / f"{exp}.csv", truth)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "napari_yeast_phenotypes.cli", "curate", "--image", str(files["image"]),
             "--labels", str(files["labels"]), "--annotations", str(ann), "--out", str(out), "--experiment", exp],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
    cs = _check_whole(out)
    assert (cs.manifest["experiment"] == "A").sum() == len(small_movie.truth)
    assert (cs.manifest["experiment"] == "B").sum() == len(other.truth)


@pytest.mark.slow
def test_two_writers_at_once_lose_nothing(tmp_path):
    root = tmp_path / "set"
    CuratedSet(root)
    procs = [_start_writer(tmp_path, root, m, 25) for m in ("movieA", "movieB")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.split() == ["ready", "done"], err
    cs = _check_whole(root)
    for m in ("movieA", "movieB"):
        rows = cs.labels_of_movie(m)
        assert len(rows) == 75 and (rows["annotator"] == m).all()
        assert (rows["phenotype"] == "Circular").sum() == 8  # every relabel of each writer is there


@pytest.mark.slow
def test_a_writer_killed_while_another_writes(tmp_path):
    """SIGKILL one writer at random moments (holding the lock or not); the other loses nothing."""
    root = tmp_path / "set"
    CuratedSet(root)
    rng = np.random.default_rng(1)
    steady = _start_writer(tmp_path, root, "steady", 60)
    assert steady.stdout.readline().strip() == "ready"
    for trial in range(8):
        victim = _start_writer(tmp_path, root, f"victim{trial}", 1000)
        assert victim.stdout.readline().strip() == "ready", victim.stderr.read()
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        _check_whole(root)
    out, err = steady.communicate(timeout=300)
    assert steady.returncode == 0, err
    cs = _check_whole(root)
    assert len(cs.labels_of_movie("steady")) == 180
