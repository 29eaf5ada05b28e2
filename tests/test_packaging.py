"""What `pip install .` (not editable) ships: the package list in pyproject.toml must match cdt/ on disk.

An editable install finds every module from the source tree, so a subpackage missing from the list only
shows up in a wheel, where `cdt sample` then fails with ModuleNotFoundError.
"""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def _source_dir(package: str, package_dir: dict) -> Path:
    """Where setuptools reads `package` from: its own package-dir entry, else the dotted path from the root."""
    return ROOT / package_dir[package] if package in package_dir else ROOT.joinpath(*package.split("."))


def test_every_directory_of_python_code_under_cdt_is_a_listed_package():
    listed = set(_setuptools_table()["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cdt").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert on_disk, "found no Python files under cdt/"
    assert on_disk <= listed, f"not in pyproject.toml's packages, so missing from a wheel: {sorted(on_disk - listed)}"


def test_every_listed_package_has_its_files():
    table = _setuptools_table()
    package_dir, data = table.get("package-dir", {}), table.get("package-data", {})
    for package in table["packages"]:
        src = _source_dir(package, package_dir)
        patterns = data.get(package, []) + ["*.py"]
        shipped = [f for pattern in patterns for f in src.glob(pattern)]
        assert shipped, f"package {package} would ship no files from {src}"
    presets = {p.stem for p in _source_dir("cdt.configs", package_dir).glob("*.yaml")}
    assert {"tiny", "small", "base"} <= presets
