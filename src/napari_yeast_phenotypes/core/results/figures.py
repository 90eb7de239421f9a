"""Figures that draw every text literally, and are drawn whole before anything is written.

Condition, group, movie and class names come from users. Matplotlib reads text between two ``$``
as mathematics (and, where a user's ``matplotlibrc`` asks for it, hands all text to LaTeX), so a
condition called ``$5 and $10`` or a title with ``$\\frac`` would fail to draw, after all the
work, or draw something else. Every figure the package makes is therefore drawn with the math
parser and LaTeX off (:func:`literal_text`, :func:`make_literal`), and a figure meant for a file
is rendered into memory first (:func:`png_bytes`), so that a figure that cannot be drawn stops
the job before any of its files is written.
"""

from __future__ import annotations

import io
from contextlib import contextmanager

#: what :func:`literal_text` sets while a figure is built and drawn
LITERAL = {"text.parse_math": False, "text.usetex": False}


@contextmanager
def literal_text():
    """While it lasts, new texts of matplotlib are drawn as written (no mathtext, no LaTeX)."""
    import matplotlib

    with matplotlib.rc_context(LITERAL):
        yield


def make_literal(fig) -> None:
    """Every text of ``fig`` drawn as written, also the tick labels and texts already made."""
    from matplotlib.text import Text

    for ax in fig.get_axes():  # tick labels are made on demand: make them now, to set them
        ax.get_xticklabels()
        ax.get_yticklabels()
    for text in fig.findobj(Text):
        text.set_parse_math(False)
        text.set_usetex(False)


def png_bytes(fig, dpi: int = 110) -> bytes:
    """``fig`` drawn as a PNG in memory, every text literal: nothing is written if it cannot be drawn."""
    buf = io.BytesIO()
    with literal_text():
        make_literal(fig)
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(fig, path, dpi: int = 110) -> None:
    """Draw ``fig`` whole in memory, then write it to ``path`` atomically."""
    from ..files.atomic import atomic_write

    data = png_bytes(fig, dpi)
    with atomic_write(path, "wb") as fh:
        fh.write(data)


__all__ = ["LITERAL", "literal_text", "make_literal", "png_bytes", "save_png"]
