"""A long synthetic movie on disk, read back lazily: what the memory sections classify and show."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_yeast_phenotypes.core.data.simulate import simulate_movie

REPEAT = 24  # a long movie repeats the first REPEAT frames of one simulation


def write_long_movie(folder: Path, n_frames: int, size: int, n_cells: int) -> dict:
    """A (n_frames, size, size) uint16 image and labels as plain TIFF stacks, written frame by frame.

    Frame t is frame ``t % REPEAT`` of one simulation, so a long movie is quick to make.
    """
    import tifffile

    base = simulate_movie(min(n_frames, REPEAT), size, n_cells, seed=3, births=False, drift=False)
    paths = {}
    for name, arr in (("image", base.image), ("labels", base.labels)):
        path = Path(folder) / f"{name}.tif"
        out = tifffile.memmap(path, shape=(n_frames, size, size), dtype=arr.dtype)
        for t in range(n_frames):
            out[t] = arr[t % len(arr)]
        out.flush()
        del out
        paths[name] = str(path)
    return paths


class TiffFrames:
    """A (T, Y, X) array-like over a contiguous TIFF stack that reads with plain file reads (no
    memory map), so that what a process holds is only what it asked for."""

    def __init__(self, path: str):
        import tifffile

        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            self.shape, self.dtype, self.offset = tuple(series.shape), np.dtype(series.dtype), series.dataoffset
        if self.offset is None:
            raise RuntimeError(f"{path} is not a contiguous TIFF stack")
        self.path, self.ndim = path, len(self.shape)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        frames = range(self.shape[0])[key[0]]
        items = int(np.prod(self.shape[1:]))
        if isinstance(frames, int):
            frames = [frames]
        out = np.stack([np.fromfile(self.path, self.dtype, items, offset=self.offset + t * items * self.dtype.itemsize)
                        .reshape(self.shape[1:]) for t in frames]) if len(frames) else np.zeros((0,) + self.shape[1:],
                                                                                                 self.dtype)
        out = out[(slice(None),) + key[1:]]
        return out[0] if isinstance(key[0], (int, np.integer)) else out


def lazy_stack(path: str):
    """The stack as a dask array with one chunk per frame, as napari readers make them."""
    import dask.array as da

    frames = TiffFrames(path)
    return da.from_array(frames, chunks=(1,) + frames.shape[1:], asarray=True, fancy=False)


def has_dask() -> bool:
    try:
        import dask  # noqa: F401
    except ImportError:
        return False
    return True
