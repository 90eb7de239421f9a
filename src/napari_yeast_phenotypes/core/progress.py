"""Long jobs are generators that yield progress; these drive them (to the end, or into a progress bar).

The napari docks run the same generators in a ``thread_worker`` and pass the yields to a progress
bar; the command line and scripts use :func:`run_to_end` with one of the tqdm bars below.
"""

from __future__ import annotations

from collections.abc import Callable, Generator


def run_to_end(gen: Generator, progress: Callable | None = None):
    """Drive a progress generator to its end and return its return value.

    ``progress`` gets every yielded value: ``(done, total)`` for a movie, a dict for training.
    """
    while True:
        try:
            value = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            if isinstance(value, tuple):
                progress(*value)
            else:
                progress(value)


def frames_bar(desc: str, unit: str = "frame") -> Callable[[int, int], None]:
    """A tqdm bar driven by ``(done, total)`` callbacks."""
    from tqdm import tqdm

    state = {}

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit=unit, leave=True, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def training_bar(desc: str = "training") -> Callable[[dict], None]:
    """A tqdm bar driven by the progress dicts of :func:`napari_yeast_phenotypes.core.network.train.train_iter`."""
    from tqdm import tqdm

    state = {}

    def update(p: dict) -> None:
        bar = state.get("bar")
        phase = "folds" if "fold" in p else "training"
        if bar is not None and state.get("phase") != phase:  # folds chose when to stop: now the training
            bar.close()
            bar = None
        if bar is None:
            state["phase"] = phase
            bar = state["bar"] = tqdm(total=p["epochs"] * p.get("steps", 1), unit="batch", dynamic_ncols=True,
                                      desc=f"{desc}: choosing when to stop on {p['folds']} folds" if "fold" in p
                                      else desc)
        if p.get("done_epoch"):
            msg = f"epoch {p['epoch']}/{p['epochs']} loss {p['train_loss']:.3f}"
            if "val_balanced_accuracy" in p:
                msg += f" val acc {p['val_accuracy']:.3f} bal {p['val_balanced_accuracy']:.3f}"
            bar.set_postfix_str(msg)
            if p["epoch"] == p["epochs"]:
                bar.close()
        else:
            bar.update(1)

    return update


__all__ = ["frames_bar", "run_to_end", "training_bar"]
