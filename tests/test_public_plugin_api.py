"""The plugin API is what docs/plugins.md lists, and the built-in backends use nothing else."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import spawnkit
import spawnkit.plugin

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "spawnkit_backends"
BACKENDS = sorted(PACKAGE.rglob("*.py"))
GUIDE = ROOT / "docs" / "plugins.md"


def private_imports(path: Path) -> list[str]:
    """``spawnkit._x`` names that a module imports, by any import form."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [f"line {node.lineno}: {n}" for n in names if _is_private(n)]
    return found


def _is_private(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == "spawnkit" and any(p.startswith("_") for p in parts[1:])


@pytest.mark.parametrize("path", BACKENDS, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_a_builtin_backend_imports_no_private_spawnkit_name(path: Path) -> None:
    assert private_imports(path) == []


def test_the_import_check_sees_every_form_of_a_private_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import spawnkit._child\n"
        "from spawnkit import _fds\n"
        "from spawnkit._boot import fresh_worker\n"
        "def f():\n    from spawnkit.plugin import run_worker\n"
    )
    assert private_imports(module) == [
        "line 1: spawnkit._child",
        "line 2: spawnkit._fds",
        "line 3: spawnkit._boot.fresh_worker",
    ]


def documented_names() -> list[str]:
    """The names the guide's API table lists (``<!-- plugin API -->`` up to the next blank line)."""
    text = GUIDE.read_text()
    table = text.split("<!-- plugin API -->", 1)[1].strip().split("\n\n", 1)[0]
    return sorted(set(re.findall(r"`([A-Za-z_]+)`", "\n".join(table.splitlines()[2:]))))


def test_the_plugin_api_is_exactly_what_the_guide_lists() -> None:
    assert sorted(spawnkit.plugin.__all__) == documented_names()
    assert spawnkit.plugin.__all__ == sorted(spawnkit.plugin.__all__)


def test_every_public_name_resolves() -> None:
    for name in spawnkit.plugin.__all__:
        assert getattr(spawnkit.plugin, name) is not None, name


@pytest.mark.parametrize(
    ("module", "name", "instead"),
    [
        (spawnkit.plugin, "OWN_FATE_SHARING", "watches='own'"),
        (spawnkit, "WorkerSpec", "spawnkit.plugin.WorkerSpec"),
        (spawnkit, "signal_process_group", "stopped by core"),
        (spawnkit.plugin, "FreshInterpreterBackend", "from spawnkit_backends"),
    ],
)
def test_an_old_name_still_works_and_names_its_replacement(
    module: object, name: str, instead: str
) -> None:
    with pytest.warns(DeprecationWarning, match=re.escape(instead)):
        assert getattr(module, name) is not None


def test_names_only_core_used_are_gone() -> None:
    for name in ("LocalWorker", "BackendInfo", "WatchInfo"):
        assert not hasattr(spawnkit.plugin, name), name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spawnkit.hookimpl is spawnkit.plugin.hookimpl  # the root's marker stays


def test_load_main_still_takes_the_old_form_of_a_reference(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        "def fn():\n    return 'defined in the script'\n\n"
        "if __name__ == '__main__':\n    raise SystemExit('the guarded block ran')\n"
    )
    code = (
        "import sys\nfrom spawnkit import plugin\n"
        f"plugin.load_main(('path', {str(script)!r}))\n"
        "import __main__\nprint(__main__.fn(), '|', sys.modules['__mp_main__'].__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"defined in the script | {script}\n"
