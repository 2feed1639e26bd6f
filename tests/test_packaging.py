"""The architecture rules that packaging and imports must keep."""

from __future__ import annotations

import ast
import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

PARTS = ("train", "export", "runtime", "benchmarks")


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory) -> tuple[Path, str]:
    """The wheel, and everything pip and the build backend printed while making it."""
    # Build from a copy of the tracked files: pip wheel leaves build/ behind in its source.
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    # --quiet, as `make setup` installs: setuptools' warnings still come through it.
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = out.glob("cifar_edge-*.whl")
    return path, build.stdout + build.stderr


@pytest.fixture(scope="module")
def wheel(wheel_build) -> Path:
    return wheel_build[0]


def test_building_prints_no_setuptools_warning(wheel_build):
    # `pip install .` and `pip install ".[runtime]"` build this same wheel (extras change only what
    # is installed beside it), so this covers both first installs.
    _, output = wheel_build
    warnings = [line.strip() for line in output.splitlines() if "Warning" in line or "deprecated" in line.lower()]
    assert not warnings, "\n".join(warnings)


def test_wheel_installs_one_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"cifar_edge", next(t for t in top_level if t.endswith(".dist-info"))}
    for part in PARTS:
        assert f"cifar_edge/{part}/__init__.py" in names


def test_runtime_extra_pulls_no_tensorflow(wheel):
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))))
    requirements = metadata.get_all("Requires-Dist")
    base_and_runtime = [r for r in requirements if "extra ==" not in r or 'extra == "runtime"' in r]
    assert base_and_runtime, requirements
    assert not [r for r in base_and_runtime if r.lower().startswith(("tensorflow", "keras", "tf2onnx"))]
    assert any(r.startswith("ai-edge-litert") for r in base_and_runtime)
    assert any(r.startswith("onnxruntime") for r in base_and_runtime)


@pytest.mark.parametrize("script, module", [("cifar-train", "train.cli"), ("cifar-export", "export.cli"), ("cifar-run", "runtime.cli"),
                                            ("cifar-bench", "benchmarks.cli"), ("cifar-tune", "train.tune_cli")])
def test_console_scripts_are_declared(wheel, script, module):
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(next(n for n in archive.namelist() if n.endswith("entry_points.txt"))).decode()
    assert f"{script} = cifar_edge.{module}:main" in entry_points


def test_wheel_ships_the_packaged_models(wheel):
    from cifar_edge.runtime.classifier import packaged_models

    names = set(zipfile.ZipFile(wheel).namelist())
    assert packaged_models()
    for name, folder in packaged_models().items():
        for file in folder.iterdir():
            assert f"cifar_edge/runtime/models/{name}/{file.name}" in names


@pytest.mark.parametrize("source", sorted((REPO / "runtime").rglob("*.py")), ids=lambda p: p.name)
def test_runtime_imports_none_of_the_other_parts_nor_tensorflow(source):
    tree = ast.parse(source.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    forbidden = [m for m in imported if m.split(".")[0] in ("tensorflow", "keras", *PARTS) or
                 any(m.startswith(f"cifar_edge.{part}") for part in PARTS if part != "runtime")]
    assert not forbidden, f"{source.name} imports {forbidden}"


def test_loading_data_imports_no_tensorflow(image_tree):
    code = (
        "import sys\n"
        "from cifar_edge.runtime.data import load_cifar10\n"
        f"load_cifar10({str(image_tree)!r})\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
