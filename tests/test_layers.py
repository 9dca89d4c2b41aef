"""The layer order of docs/architecture.md, enforced with import-linter's contracts.

The contracts live in pyproject.toml (``[tool.importlinter]``).  import-linter finds a
package's modules by walking its folder, and sparseforge's stages are folders of their own
mapped into the package (``package-dir``), so the sources are staged as one package tree first,
exactly as the mapping lays them out.
"""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def stage_package(into: Path) -> Path:
    """Copy every mapped folder's Python files to where its package name puts it."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in sorted(mapping["package-dir"].items()):
        target = into.joinpath(*package.split("."))
        shutil.copytree(ROOT / folder, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")
    return into


def lint_imports(staged: Path) -> subprocess.CompletedProcess:
    # Run from the staged tree, which lint-imports puts first on sys.path, so that it reads
    # the staged package and not the source folders.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "pyproject.toml"], cwd=staged,
                          env={"PYTHONPATH": str(staged), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    return stage_package(tmp_path_factory.mktemp("layers"))


def test_the_layer_contracts_hold(staged):
    result = lint_imports(staged)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_reach_back_breaks_them(tmp_path):
    # The compiler importing the golden model (a stage above it) must fail the contracts.
    staged = stage_package(tmp_path)
    encode = staged / "sparseforge" / "compiler" / "encode.py"
    encode.write_text(encode.read_text() + "\nfrom sparseforge.sim.reference import golden\n")
    result = lint_imports(staged)
    assert result.returncode != 0
    assert "sparseforge.compiler.encode -> sparseforge.sim.reference.golden" in result.stdout
