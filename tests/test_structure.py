"""The package's layout rules: module size, one-way imports, package maps, no issue numbers in the code.

These are the rules a newcomer relies on to find their way in (see README "Layout"): every module readable in
one sitting, imports flowing theory → sims / llm / proofs_check → figures (never back), and every package's
``__init__`` saying what lives where.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "dpocheck"
MAX_LINES = 600
# which top-level parts of the package each part may import (besides itself); "cli" is the entry point only
ALLOWED = {
    "_io": set(),
    "_plot": {"_io"},
    "errors": set(),
    "theory": {"_io", "_plot", "errors"},
    "sims": {"_io", "_plot", "errors", "theory"},
    "llm": {"_io", "_plot", "errors", "theory"},
    "proofs_check": {"_io", "_plot", "errors", "theory"},
    "figures": {"_io", "_plot", "errors", "theory", "sims", "proofs_check"},
    "cli": {"_io", "_plot", "errors", "theory", "sims", "llm", "proofs_check", "figures"},
}


def _modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def _part(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_parts(path: Path, text: str | None = None) -> set[str]:
    """Top-level parts of dpocheck that a module imports (absolute and relative imports resolved)."""
    here = list(path.relative_to(PKG).parts[:-1])  # the module's package, as parts below dpocheck
    out: set[str] = set()
    source = path.read_text(encoding="utf-8") if text is None else text
    for node in ast.walk(ast.parse(source)):
        names: list[list[str]] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                mod = base + (node.module.split(".") if node.module else [])
                if not mod:  # "from . import x" at the top: x is the part
                    mod = [a.name for a in node.names]
                    names.extend([[m] for m in mod])
                    continue
                names.append(mod)
            elif node.module and node.module.split(".")[0] == "dpocheck":
                parts = node.module.split(".")[1:]
                names.extend([parts] if parts else [[a.name] for a in node.names])
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "dpocheck" and len(parts) > 1:
                    names.append(parts[1:])
        out.update(n[0] for n in names if n)
    return out


def test_no_module_above_the_size_limit():
    too_big = {str(p.relative_to(PKG)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not too_big, f"modules above {MAX_LINES} lines: {too_big}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_flow_one_way(path: Path):
    part = _part(path)
    if part == "__init__" or part == "__main__":
        return
    assert part in ALLOWED, f"{part} is a new top-level part: add it to ALLOWED with its place in the layering"
    bad = _imported_parts(path) - ALLOWED[part] - {part}
    assert not bad, f"{path.relative_to(PKG)} ({part}) imports {sorted(bad)} against the layering"


# the layers of dpocheck.llm, bottom to top (the package map in dpocheck/llm/__init__.py): a module may import its own
# layer and the layers below it, never one above
LLM_LAYERS = ("manifest", "data", "models", "preflight", "scoring", "analysis", "generation", "train", "cli")


def _llm_layer(path: Path) -> str:
    rel = path.relative_to(PKG / "llm")
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_llm_layers(path: Path, text: str | None = None) -> set[str]:
    """The layers of dpocheck.llm a module imports (absolute and relative imports resolved)."""
    here = list(path.relative_to(PKG).parts[:-1])
    out: set[str] = set()
    source = path.read_text(encoding="utf-8") if text is None else text
    for node in ast.walk(ast.parse(source)):
        mods: list[list[str]] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                mod = base + (node.module.split(".") if node.module else [])
                mods += [mod + [a.name] for a in node.names] if not node.module else [mod]
            elif node.module and node.module.startswith("dpocheck"):
                mod = node.module.split(".")[1:]
                mods += [mod + [a.name] for a in node.names] if mod == ["llm"] else [mod]
        elif isinstance(node, ast.Import):
            mods += [a.name.split(".")[1:] for a in node.names if a.name.startswith("dpocheck.")]
        out.update(m[1] for m in mods if len(m) > 1 and m[0] == "llm")
    return out


@pytest.mark.parametrize("path", sorted((PKG / "llm").rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_llm_imports_flow_down_the_layers(path: Path):
    layer = _llm_layer(path)
    if layer == "__init__":
        return
    assert layer in LLM_LAYERS, f"{layer} is a new part of dpocheck.llm: add it to LLM_LAYERS and the package map"
    rank = LLM_LAYERS.index(layer)
    above = {m for m in _imported_llm_layers(path) if m in LLM_LAYERS and LLM_LAYERS.index(m) > rank}
    assert not above, f"{path.relative_to(PKG)} ({layer}) imports {sorted(above)} from above its layer"


def test_llm_layer_checker_sees_an_upward_import():
    probe = PKG / "llm" / "scoring" / "probe.py"
    text = "from ..analysis import scores\nfrom dpocheck.llm.train import run\nfrom . import kernels\n"
    assert _imported_llm_layers(probe, text) == {"analysis", "train", "scoring"}
    assert _imported_llm_layers(PKG / "llm" / "probe.py", "from . import manifest\nfrom .data import load\n") == {
        "manifest",
        "data",
    }


def test_the_llm_package_map_lists_every_layer():
    doc = ast.get_docstring(ast.parse((PKG / "llm" / "__init__.py").read_text(encoding="utf-8")))
    positions = [doc.index(f"``{name}") for name in LLM_LAYERS]
    assert positions == sorted(positions), "the package map lists the layers in another order than LLM_LAYERS"
    on_disk = {p.stem if p.is_file() else p.name for p in (PKG / "llm").iterdir() if not p.name.startswith("_")}
    assert on_disk - {"__pycache__"} == set(LLM_LAYERS)


def test_llm_core_does_not_import_the_trainer():
    """The scorer and the violations analysis work without the optional ``train`` extra."""
    for p in (PKG / "llm").rglob("*.py"):
        if _llm_layer(p) in ("train", "cli"):
            continue
        text = p.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from \.+train|from dpocheck\.llm\.train|import trl)", text, re.M), p.name


def test_layer_checker_sees_a_back_import():
    """The checker is not vacuous: back imports from a (hypothetical) theory module are all reported."""
    probe = PKG / "theory" / "probe.py"
    text = (
        "from ..sims import trainer\nfrom dpocheck.llm import scores\nimport dpocheck.figures.common\n"
        "from . import losses\n"
    )
    assert _imported_parts(probe, text) == {"sims", "llm", "figures", "theory"}
    assert _imported_parts(PKG / "llm" / "train" / "probe.py", "from ...figures import x\nfrom .. import scores\n") == {
        "figures",
        "llm",
    }


def test_every_package_says_what_lives_where():
    for init in PKG.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 8, f"{init.relative_to(PKG)} has no package map docstring"


def test_code_speaks_of_the_project_not_of_issue_numbers():
    hits = [
        f"{p.relative_to(PKG)}:{i}"
        for p in _modules()
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bissue\s*#?\d+", line, re.I)
    ]
    assert not hits, hits
