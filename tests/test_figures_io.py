"""The one atomic-write helper (dpocheck._io) and figures saved through it: the final file appears complete or not
at all, and a failed write leaves neither a partial file nor a temporary one."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpocheck._io import write_atomic, write_json_atomic, write_text_atomic
from dpocheck._plot import pyplot, save_figure


def test_write_text_atomic_round_trip(tmp_path: Path) -> None:
    """Text is written byte for byte (UTF-8, newlines untranslated), parents created, old content replaced."""
    p = tmp_path / "a" / "b.txt"
    write_text_atomic(p, "old\n")
    assert write_text_atomic(p, "δ = 1\r\nx\n") == p
    assert p.read_bytes() == "δ = 1\r\nx\n".encode()
    assert sorted(x.name for x in p.parent.iterdir()) == ["b.txt"]
    write_json_atomic(tmp_path / "c.json", {"a": [1, 2]})
    assert (tmp_path / "c.json").read_text() == '{\n "a": [\n  1,\n  2\n ]\n}\n'


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        write_atomic(p, half_then_fail)
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["out.bin"]
    with pytest.raises(ValueError, match="bad JSON"):
        write_atomic(p, lambda tmp: (_ for _ in ()).throw(ValueError("bad JSON")))
    assert [x.name for x in tmp_path.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("fmt", ["png", "pdf"])
def test_save_figure_is_atomic_and_closes(tmp_path: Path, fmt: str) -> None:
    """The figure lands at its path in the requested format (magic bytes), no temporary is left, and it is closed."""
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "figs" / f"f.{fmt}")
    magic = {"png": b"\x89PNG", "pdf": b"%PDF"}[fmt]
    assert out.read_bytes().startswith(magic)
    assert [x.name for x in out.parent.iterdir()] == [f"f.{fmt}"]
    assert fig.number not in plt.get_fignums()
