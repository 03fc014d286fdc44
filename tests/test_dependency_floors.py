"""pyproject.toml's dependency floors are true: every imported package is declared, and APIs that need a newer
version than a declared floor are not used. `.ci/floors` installs the floors themselves and runs the tests."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTION = {  # import name -> distribution name where they differ
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "faster_coco_eval": "faster-coco-eval",
}
# code pattern -> (distribution, the first version that has it)
VERSIONED_APIS = {
    r"\bnp\.trapezoid\b": ("numpy", (2, 0)),
    r"\bnumpy\.(strings|_core)\b(?!\.multiarray)": ("numpy", (2, 0)),
    r"\btorch\.amp\.GradScaler\b": ("torch", (2, 3)),
    r"\btorch\.utils\.flop_counter\b": ("torch", (2, 1)),
    r"\btorch\.accelerator\b": ("torch", (2, 6)),
    r"\btorch\.nn\.attention\.flex_attention\b": ("torch", (2, 5)),
    r"\bUnidentifiedImageError\b": ("pillow", (7, 0)),
    r"\bImageOps\.exif_transpose\b": ("pillow", (6, 0)),
}


def _floors() -> dict[str, tuple[int, ...]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    requirements += [r for extra in project.get("optional-dependencies", {}).values() for r in extra]
    floors = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*(>=\s*([0-9.]+))?.*", requirement)
        assert match, requirement
        version = tuple(int(v) for v in match.group(4).split(".")) if match.group(4) else (0,)
        floors[match.group(1).lower()] = version
    return floors


def _sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted((REPO / "yolo_transfer").rglob("*.py"))}


def _third_party_imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "yolo_transfer"}


def test_every_imported_package_is_declared():
    floors = _floors()
    undeclared = {
        f"{name} ({path.relative_to(REPO)})"
        for path, source in _sources().items()
        for name in _third_party_imports(source)
        if DISTRIBUTION.get(name, name).lower() not in floors
    }
    assert not undeclared, f"imported but not in pyproject.toml: {sorted(undeclared)}"


def test_no_api_newer_than_the_declared_floor():
    floors = _floors()
    too_new = [
        f"{path.relative_to(REPO)}: {pattern} needs {dist}>={'.'.join(map(str, needed))}"
        for path, source in _sources().items()
        for pattern, (dist, needed) in VERSIONED_APIS.items()
        if re.search(pattern, source) and floors.get(dist, (0,)) < needed
    ]
    assert not too_new, "; ".join(too_new)


def test_the_checks_catch_a_false_floor():
    assert "PIL" in _third_party_imports("from PIL import Image\nimport os\n")
    assert re.search(next(iter(VERSIONED_APIS)), "area = np.trapezoid(y, x)")
    assert _floors()["numpy"] < VERSIONED_APIS[r"\bnp\.trapezoid\b"][1]  # so np.trapezoid would be refused
