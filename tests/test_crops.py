import numpy as np
import pytest
from realdata import real_data

from napari_yeast_phenotypes.core.data.crops import CropSettings, MovieStats, extract_crops, movie_crops, movie_stats
from napari_yeast_phenotypes.core.data.tracking import build_cell_table, measure_frame
from napari_yeast_phenotypes.core.errors import InputError

CELL = CropSettings(scale="cell", margin=0.25)


def two_cells():
    img = np.zeros((100, 100), np.float32)
    lab = np.zeros((100, 100), np.uint16)
    lab[30:50, 30:50] = 1
    img[30:50, 30:50] = 10.0
    lab[30:50, 52:70] = 2  # a bright neighbour that must not leak into cell 1's crop
    img[30:50, 52:70] = 50.0
    return img, lab


def test_crop_of_a_known_cell():
    img, lab = two_cells()
    cells = measure_frame(lab)
    crop = extract_crops(img, lab, cells.iloc[:1], CELL, MovieStats(0.0, 10.0, 20.0))[0, 0]
    assert crop.shape == (40, 40) and crop.dtype == np.float32
    # 20-px cell, window 20 * 1.5 = 30 px -> cell spans the middle 2/3 of the crop
    inner = crop[8:32, 8:32]
    assert np.allclose(crop[10:30, 10:30], 1.0, atol=1e-5)
    assert inner.max() <= 1.0 + 1e-6  # the neighbour at 5x brightness is masked out
    assert np.allclose(crop[:5], 0) and np.allclose(crop[-5:], 0) and np.allclose(crop[:, :5], 0)
    # symmetric about the centre
    assert np.allclose(crop, crop[::-1, ::-1], atol=1e-5)


def test_mask_modes():
    img, lab = two_cells()
    img = img + 2.0  # background 2 -> visible with mask='none' and 'others', not with 'outside'
    cells = measure_frame(lab).iloc[:1]
    stats = MovieStats(0.0, 10.0, 20.0)
    none = extract_crops(img, lab, cells, CropSettings(scale="cell", margin=0.5, mask="none"), stats)[0, 0]
    others = extract_crops(img, lab, cells, CropSettings(scale="cell", margin=0.5, mask="others"), stats)[0, 0]
    outside = extract_crops(img, lab, cells, CropSettings(scale="cell", margin=0.5, mask="outside"), stats)[0, 0]
    assert none.max() > 4.9  # the neighbour is there
    assert others.max() <= 1.2 + 1e-6 and others[0, 0] == pytest.approx(0.2)
    assert outside[0, 0] == 0.0 and outside[20, 20] == pytest.approx(1.2)


def test_movie_scale_keeps_relative_size():
    lab = np.zeros((200, 200), np.uint16)
    img = np.zeros((200, 200), np.float32)
    for i, (y, x) in enumerate([(20, 20), (20, 80), (20, 140), (100, 20)]):
        lab[y:y + 20, x:x + 20] = i + 1
    lab[100:140, 100:140] = 9  # a cell twice as large as the others
    img[lab > 0] = 1.0
    table = measure_frame(lab)
    stats = movie_stats(img, lab, CropSettings())
    assert stats.cell_side == 20
    crops = extract_crops(img, lab, table, CropSettings(), stats)
    filled = (crops[:, 0] > 0.5).mean(axis=(1, 2))
    assert filled[-1] > 1.3 * filled[0]  # the big cell fills more of its crop
    cell_crops = extract_crops(img, lab, table, CELL, stats)
    filled_cell = (cell_crops[:, 0] > 0.5).mean(axis=(1, 2))
    assert filled_cell[-1] == pytest.approx(filled_cell[0], abs=0.02)  # per-cell scaling hides size


def test_downscaling_is_antialiased():
    # a fine checkerboard inside a large cell must average out, not alias into stripes
    lab = np.zeros((300, 300), np.uint16)
    lab[50:250, 50:250] = 1
    yy, xx = np.mgrid[:300, :300]
    img = ((yy + xx) % 2).astype(np.float32)
    crop = extract_crops(img, lab, measure_frame(lab), CELL, MovieStats(0.0, 1.0, 200.0))[0, 0]
    centre = crop[12:28, 12:28]
    assert centre.std() < 0.05 and centre.mean() == pytest.approx(0.5, abs=0.05)


def test_intensity_scaling_does_not_change_crops(small_movie):
    table = build_cell_table(small_movie.labels)
    base = movie_crops(small_movie.image, small_movie.labels, table)
    as_float = small_movie.image.astype(np.float64) * 0.01 + 5
    as_u8 = (small_movie.image.astype(np.float64) / small_movie.image.max() * 255).round().astype(np.uint8)
    # float32 rounding of the rescaled pixels, relative to the crops' magnitude
    assert np.allclose(movie_crops(as_float, small_movie.labels, table), base, atol=1e-4 * max(1.0, np.abs(base).max()))
    assert np.abs(movie_crops(as_u8, small_movie.labels, table) - base).mean() < 0.02


def test_translation_does_not_change_crops(small_movie):
    img, lab = small_movie.image, small_movie.labels
    # a roll keeps the pixel values (so the movie's statistics) and moves every cell by (3, 2)
    rolled_img, rolled_lab = np.roll(img, (3, 2), axis=(1, 2)), np.roll(lab, (3, 2), axis=(1, 2))
    a_tab, b_tab = build_cell_table(lab), build_cell_table(rolled_lab)
    assert np.allclose(b_tab["y"] - a_tab["y"], 3) and np.allclose(b_tab["x"] - a_tab["x"], 2)
    # windows that stay inside the frame in both cases
    ok = ((a_tab[["bbox_y0", "bbox_x0"]] > 30).all(axis=1)
          & (a_tab[["bbox_y1", "bbox_x1"]] < 95).all(axis=1)).to_numpy()
    assert ok.sum() >= 5
    a = movie_crops(img, lab, a_tab)[ok]
    b = movie_crops(rolled_img, rolled_lab, b_tab)[ok]
    # the same pixels in the same order: equal up to the rounding of the resampling sums (relative)
    assert np.allclose(a, b, atol=1e-5 * max(1.0, np.abs(a).max()))


def test_nan_pixels_and_constant_images_give_finite_crops(small_movie):
    img = small_movie.image.astype(np.float32)
    img[0, 10:30, 10:30] = np.nan
    img[1] = np.inf
    table = build_cell_table(small_movie.labels)
    assert np.isfinite(movie_crops(img, small_movie.labels, table)).all()
    const = np.full(small_movie.image.shape, 7.0)
    assert np.isfinite(movie_crops(const, small_movie.labels, table)).all()


def test_settings_round_trip_and_validation():
    s = CropSettings(margin=0.3, mask="outside")
    assert CropSettings.from_dict(s.to_dict()) == s
    with pytest.raises(InputError, match="unknown crop settings"):
        CropSettings.from_dict({**s.to_dict(), "colour": "red"})
    with pytest.raises(InputError, match="mask"):
        CropSettings(mask="everything")


def test_real_movie_crops_are_centred_on_their_cell():
    import tifffile

    img = tifffile.imread(real_data("yeastvision-sample-movie", "cdc_fluorescence.tif"))[:3]
    lab = tifffile.imread(real_data("yeastvision-sample-movie", "masks.tif"))[:3]
    table = build_cell_table(lab)
    crops = movie_crops(img, lab, table)
    assert crops.shape == (len(table), 1, 40, 40) and np.isfinite(crops).all()
    # the cell itself: a crop of the label image through the same geometry
    own = movie_crops((lab > 0).astype(np.float32), lab, table,
                      stats=MovieStats(0.0, 1.0, movie_stats(img, lab).cell_side),
                      settings=CropSettings(mask="outside"))
    filled = (own[:, 0] > 0.5).mean(axis=(1, 2))
    big = table["area"].to_numpy() > 100
    # a typical cell covers a good part of its crop: not mostly background, not cut off
    assert 0.25 < np.median(filled[big]) < 0.75
    centre = own[:, 0, 15:25, 15:25].mean(axis=(1, 2))
    assert np.median(centre[big]) > 0.95


def test_context_patch_shows_the_cell_in_its_surroundings_on_the_movie_contrast():
    from napari_yeast_phenotypes.core.data.crops import context_patch
    from napari_yeast_phenotypes.core.results.schema import MovieStats

    img = np.full((60, 60), 100.0, np.float32)
    lab = np.zeros((60, 60), np.int32)
    lab[25:35, 25:35] = 7
    lab[25:35, 35:45] = 8  # a neighbour touching it
    img[lab == 7] = 300.0
    img[30, 25] = 500.0  # a focus on the cell's edge
    stats = MovieStats(low=100.0, high=300.0, cell_side=10.0)
    patch, outline = context_patch(img, lab, 29.4, 29.4, 7, stats, cells_wide=3)
    assert patch.shape == outline.shape == (31, 31)  # 3 cells of 10 pixels, centred (rows and columns 14..44)
    assert patch.min() == 0.0 and patch.max() == 1.0  # one contrast: the movie's range, clipped
    inside = lab[14:45, 14:45] == 7
    assert not (outline & inside).any()  # drawn just outside: a focus on the edge stays visible
    assert patch[30 - 14, 25 - 14] == 1.0 and not outline[30 - 14, 25 - 14]
    ring = np.zeros_like(inside)
    ring[1:, :] |= inside[:-1, :]
    ring[:-1, :] |= inside[1:, :]
    ring[:, 1:] |= inside[:, :-1]
    ring[:, :-1] |= inside[:, 1:]
    assert np.array_equal(outline, ring & ~inside)
    # at the image's border the window is cut, not padded
    patch, outline = context_patch(img, lab, 0, 0, 7, stats)
    assert patch.shape == (16, 16) and not outline.any()
