"""Saving figures so that nothing is cut: one helper for every PNG l2o writes.

``fig.tight_layout()`` places the axes, but ignores what lies outside them: a figure title
(``suptitle``) over a single panel, a figure-level legend wider than the figure. Saved as is,
those are clipped at the canvas's edge. :func:`save_figure` lays the axes out, then saves the
bounding box of *every* artist (``bbox_inches="tight"``) plus a margin, so the canvas grows to
hold whatever sticks out. :func:`artists_outside` is the check behind it, for tests: the
artists of a drawn figure that reach past its canvas.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

#: Margin around the artists' bounding box, in inches.
PAD_INCHES = 0.12


def save_figure(fig, path: str | os.PathLike, dpi: int = 100, close: bool = True, layout: bool = True) -> Path:
    """Lay ``fig`` out and save it to ``path`` with every artist inside the saved canvas.

    The axes are placed by the figure's layout engine when it has one, else by ``tight_layout``
    (if the caller has not placed them already with it, doing it again is harmless); then the
    saved area is the bounding box of all artists (titles, figure legends, tick labels), with a
    margin of :data:`PAD_INCHES`. The parent directory is created. ``close``: close the figure.
    ``layout=False``: the caller has laid the axes out already (e.g. ``tight_layout(rect=...)``
    to leave room for a figure legend).
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    if layout and fig.get_layout_engine() is None:
        with warnings.catch_warnings():  # "not compatible with tight_layout" for odd axes: the bbox covers it
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=PAD_INCHES)
    if close:
        plt.close(fig)
    return path


def artists_outside(fig, renderer=None, tolerance: float = 1.0) -> list[str]:
    """Artists of ``fig`` whose drawn extent reaches past the figure's canvas by more than
    ``tolerance`` pixels: the figure's title and legends, and each axes with its title, labels
    and legend. Empty when nothing is cut. Call it on a drawn figure, e.g. from a
    ``draw_event`` callback (during :func:`save_figure`, the canvas is the saved area)."""
    renderer = renderer or fig.canvas.get_renderer()
    canvas = fig.bbox
    candidates = [("figure title", getattr(fig, "_suptitle", None))]
    candidates += [(f"figure legend {i}", legend) for i, legend in enumerate(fig.legends)]
    for i, ax in enumerate(fig.axes):
        if ax.get_visible() and ax.axison:
            candidates.append((f"axes {i} ({ax.get_title() or 'untitled'})", ax))
    outside = []
    for name, artist in candidates:
        if artist is None or not artist.get_visible():
            continue
        box = artist.get_tightbbox(renderer) if hasattr(artist, "get_tightbbox") else artist.get_window_extent(renderer)
        if box is None or box.width == 0:
            continue
        if (box.x0 < canvas.x0 - tolerance or box.y0 < canvas.y0 - tolerance or box.x1 > canvas.x1 + tolerance
                or box.y1 > canvas.y1 + tolerance):
            outside.append(f"{name}: {tuple(round(v) for v in box.extents)} outside {tuple(round(v) for v in canvas.extents)}")
    return outside


__all__ = ["save_figure", "artists_outside", "PAD_INCHES"]
