"""The one plotting setup and atomic figure save of every command (figures, ``violations``' Fig. 1, sweep reports).

Plots are drawn from tidy tables only (the numbers are computed before); this module only makes matplotlib
headless and writes the image atomically, so a killed run never leaves half a PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._io import write_atomic


def pyplot() -> Any:
    """matplotlib.pyplot with the non-interactive Agg backend (imported lazily: keeps the CLI import cheap)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "font.size": 9, "axes.titlesize": 9})
    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int | None = None, tight: bool = True) -> Path:
    """Save a matplotlib figure atomically (through :func:`dpocheck._io.write_atomic`), close it, return the path.

    The image format comes from the suffix; ``dpi`` overrides the default of :func:`pyplot`; ``tight`` crops to
    the drawn content (``bbox_inches="tight"``).
    """
    path = Path(path)
    kwargs: dict[str, Any] = {"format": path.suffix.lstrip(".")}
    if tight:
        kwargs["bbox_inches"] = "tight"
    if dpi is not None:
        kwargs["dpi"] = dpi
    write_atomic(path, lambda tmp: fig.savefig(tmp, **kwargs))
    fig.clf()
    pyplot().close(fig)
    return path
