"""The import graph runs one way: tools/code_shape.py finds cycles and upward imports, and the
library has none."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "tools" / "code_shape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "dcac_plugin" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_finds_a_cycle_a_root_import_and_a_parent_import(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "__version__ = '0'\n",
        "a/__init__.py": "X = 1\n",
        "a/one.py": "from dcac_plugin.b import two\n",
        "a/three.py": "from dcac_plugin.a import X\n",
        "b/__init__.py": "",
        "b/two.py": "def f():\n    from dcac_plugin.a.one import g  # local imports count\n",
        "c.py": "from dcac_plugin import __version__\n",
    })
    problems = _tool().scan(root)["problems"]
    assert problems == [
        "dcac_plugin.a.three imports its own parent package dcac_plugin.a",
        "dcac_plugin.c imports the package root dcac_plugin",
        "import cycle between modules: dcac_plugin.a.one, dcac_plugin.b.two",
        "import cycle between packages: a, b",
    ]


def test_submodule_imports_and_a_package_reexporting_its_modules_are_fine(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "from dcac_plugin.a import one\n",
        "a/__init__.py": "from dcac_plugin.a.one import f\n",
        "a/one.py": "def f():\n    pass\n",
        "b.py": "from dcac_plugin import a\nfrom dcac_plugin.a import one\n",
    })
    assert _tool().scan(root)["problems"] == []


def test_longest_functions_are_measured(tmp_path):
    root = _package(tmp_path, {"__init__.py": "", "m.py": "def f():\n" + "    x = 1\n" * 9})
    functions = _tool().scan(root)["modules"]["dcac_plugin.m"]["functions"]
    assert functions == [(10, "f", 1)]


def test_the_library_imports_run_one_way():
    """No cycle between modules or first-level packages, no import of the root or a parent."""
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "code_shape.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[out.stdout.find("import problems"):]


def test_model_families_decide_not_booleans():
    """``is_plugin`` survives only in the legacy shims of engine/build.py and the extractor."""
    count = sum(path.read_text(encoding="utf-8").count("is_plugin")
                for path in (ROOT / "dcac_plugin").rglob("*.py"))
    assert count <= 8, f"{count} mentions of is_plugin in the library: ask the model family instead"
