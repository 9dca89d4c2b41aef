"""The distribution maps the design card's folders under sparseforge.* and leaks no top-level names."""

import subprocess
import sys
import zipfile


def test_wheel_maps_folders_under_sparseforge(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), "."], check=True)
    (wheel,) = tmp_path.glob("sparseforge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("hw", "compiler", "compiler/compress", "sim", "sim/reference", "boards"):
        assert f"sparseforge/{package}/__init__.py" in names
    top_levels = {name.split("/")[0] for name in names}
    assert top_levels == {"sparseforge", wheel.name.removesuffix("-py3-none-any.whl") + ".dist-info"}


def test_subpackages_import_from_the_installed_distribution():
    code = "import sparseforge.hw, sparseforge.compiler, sparseforge.sim, sparseforge.boards"
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
