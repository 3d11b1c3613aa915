"""Third-party plugins: discovery, listing, blocking, conflicts, broken plugins, lazy loading.

The well-behaved plugin is the fixture distribution in tests/plugin_fixture (``shellwrap``),
installed into the test environment as a user would install a plugin. Broken and duplicate
plugins are never installed: each test lays a throwaway distribution (``NAME-1.0.dist-info``
plus its module) in ``tmp_path`` and runs a fresh interpreter with it on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
import spawnkit

SHELLWRAP_DIST = "spawnkit-shellwrap"
SHELLWRAP_DESCRIPTION = "each rank exec'd by a POSIX shell, tagged SPAWNKIT_SHELLWRAP_RANK"
needs_sh = pytest.mark.skipif(os.name != "posix", reason="the shellwrap backend needs /bin/sh")

# The job module for fresh interpreters (written to tmp_path): each rank returns its shell tag.
JOB = """
import os

def tag(rank):
    return os.environ["SPAWNKIT_SHELLWRAP_RANK"]
"""


def shell_tag(rank: int) -> tuple[str, int]:
    """Module-level, so a shellwrap worker imports it from here: the tag and the parent."""
    return os.environ["SPAWNKIT_SHELLWRAP_RANK"], os.getppid()


def add_dist(root: Path, dist: str, entry_points: Mapping[str, str], **modules: str) -> None:
    """Lay out an installed distribution ``dist`` in ``root``: metadata, entry points, modules."""
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("[spawnkit]\n" + "\n".join(lines) + "\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


def registering(backend: str) -> str:
    """Source of a plugin module that registers ``backend`` (never started in these tests)."""
    return f"""
        import spawnkit

        @spawnkit.hookimpl
        def spawnkit_register_backends(registry):
            registry.add({backend!r}, object, description="a throwaway plugin")
        """


def python(
    root: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a fresh interpreter that sees the distributions laid out in ``root``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPAWNKIT_")}
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, *args],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_code(
    root: Path, code: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return python(root, "-c", textwrap.dedent(code), env=env)


def backends_cli(root: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """The lines ``python -m spawnkit backends`` prints."""
    result = python(root, "-m", "spawnkit", "backends", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def rows(lines: list[str]) -> dict[str, dict[str, str]]:
    """``name -> {column: value}`` from the table, cut at the header's column starts."""
    header = lines[0]
    columns = ["NAME", "STATUS", "DISTRIBUTION", "DESCRIPTION"]
    starts = [header.index(column) for column in columns]
    table = {}
    for line in lines[1:]:
        if line.startswith(("conflict: ", "broken: ")):
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
        table[cells[0]] = dict(zip([c.lower() for c in columns[1:]], cells[1:]))
    return table


def spawn_error(root: Path, backend: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What ``spawn(..., backend=backend)`` raises in a fresh interpreter, and what is installed."""
    result = run_code(
        root,
        f"""
        import json, spawnkit
        from spawnkit._registry import plugins
        try:
            spawnkit.spawn(print, backend={backend!r})
        except spawnkit.SpawnError as exc:
            error = {{"type": type(exc).__name__, "message": str(exc)}}
        error["installed"] = ", ".join(repr(n) for n in sorted(plugins().backends))
        print(json.dumps(error))
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def shellwrap_job(root: Path, env: Mapping[str, str] | None = None) -> str:
    """Run a two-rank shellwrap job in a fresh interpreter; its printed results."""
    (root / "shelljob.py").write_text(JOB)
    result = run_code(
        root,
        """
        import spawnkit, shelljob
        print(spawnkit.spawn(shelljob.tag, nprocs=2, backend="shellwrap"))
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- the installed fixture plugin ---------------------------------------------------------


def test_the_fixture_plugin_is_found_by_name() -> None:
    assert "shellwrap" in spawnkit.available_backends()


@needs_sh
def test_spawn_runs_each_rank_through_the_plugins_shell() -> None:
    # Only the shell script sets the tag, and `exec` leaves the job as the worker's parent.
    results = spawnkit.spawn(shell_tag, nprocs=3, backend="shellwrap")
    assert results == [("0", os.getpid()), ("1", os.getpid()), ("2", os.getpid())]


@needs_sh
def test_backend_options_reach_the_plugins_factory() -> None:
    with pytest.raises(spawnkit.ConfigError) as info:
        spawnkit.spawn(shell_tag, backend="shellwrap", shell="/nonexistent/sh")
    assert str(info.value) == (
        "backend 'shellwrap': shell='/nonexistent/sh' is not an executable file; "
        "pass the path of a POSIX shell, such as shell='/bin/sh'"
    )
    with pytest.raises(spawnkit.UnknownOptionError) as unknown:
        spawnkit.spawn(shell_tag, backend="shellwrap", shel="/bin/sh")
    assert str(unknown.value) == (
        "backend 'shellwrap' does not take option(s) shel; it accepts: shell"
    )


@needs_sh
def test_a_function_from_the_users_script_runs_in_the_plugins_workers(tmp_path: Path) -> None:
    # Pickled as `__main__.work`: the worker must load the script, without re-running its job.
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import spawnkit

            def work(rank, scale):
                return rank * scale

            if __name__ == "__main__":
                print(spawnkit.spawn(work, args=(10,), nprocs=3, backend="shellwrap"))
            """
        )
    )
    result = python(tmp_path, str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[0, 10, 20]\n"


def test_spawnkit_backends_lists_the_plugin_with_its_distribution(tmp_path: Path) -> None:
    lines = backends_cli(tmp_path)
    status = "available"
    if os.name != "posix":
        status = f"unavailable: needs a POSIX system with /bin/sh (this is {os.name!r})"
    assert rows(lines)["shellwrap"] == {
        "status": status,
        "distribution": SHELLWRAP_DIST,
        "description": SHELLWRAP_DESCRIPTION,
    }
    assert rows(lines)["spawn"]["distribution"] == "spawnkit"
    assert not [line for line in lines if line.startswith(("broken: ", "conflict: "))]


def test_disable_plugins_hides_the_plugin(tmp_path: Path) -> None:
    lines = backends_cli(tmp_path, {"SPAWNKIT_DISABLE_PLUGINS": "shellwrap"})
    assert "shellwrap" not in rows(lines)
    assert "spawn" in rows(lines)  # the others still load
    error = spawn_error(tmp_path, "shellwrap", {"SPAWNKIT_DISABLE_PLUGINS": "other, shellwrap"})
    assert error["type"] == "UnknownBackendError"
    assert "'shellwrap'" not in error["installed"]
    assert error["message"] == f"unknown backend 'shellwrap'; installed: {error['installed']}"


# -- two plugins, one backend name --------------------------------------------------------

CONFLICT = (
    "backend 'shellwrap' is registered by more than one plugin: entry point 'shellwrap' of "
    "distribution 'spawnkit-shellwrap' and entry point 'shellwrap_clone' of distribution "
    "'shellwrap-clone'; uninstall one of them or block one with "
    "SPAWNKIT_DISABLE_PLUGINS=<entry point>"
)


def add_clone(tmp_path: Path) -> None:
    """A second distribution that registers the fixture's backend name."""
    add_dist(
        tmp_path,
        "shellwrap-clone",
        {"shellwrap_clone": "clone_plugin"},
        clone_plugin=registering("shellwrap"),
    )


def test_two_plugins_with_one_backend_name_name_both_distributions(tmp_path: Path) -> None:
    add_clone(tmp_path)
    error = spawn_error(tmp_path, "shellwrap")
    assert error["type"] == "PluginError"
    assert error["message"] == CONFLICT
    lines = backends_cli(tmp_path)
    assert "shellwrap" not in rows(lines)  # neither one is picked silently
    assert (
        "conflict: backend 'shellwrap' is registered by 'spawnkit-shellwrap' and 'shellwrap-clone'"
    ) in lines


@needs_sh
def test_blocking_one_entry_point_resolves_a_conflict(tmp_path: Path) -> None:
    add_clone(tmp_path)
    blocked = {"SPAWNKIT_DISABLE_PLUGINS": "shellwrap_clone"}
    assert rows(backends_cli(tmp_path, blocked))["shellwrap"]["distribution"] == SHELLWRAP_DIST
    assert shellwrap_job(tmp_path, blocked) == "['0', '1']\n"


# -- broken plugins -----------------------------------------------------------------------


@needs_sh
def test_a_plugin_whose_import_fails_is_reported_and_the_others_still_work(
    tmp_path: Path,
) -> None:
    add_dist(
        tmp_path,
        "spawnkit-gpu",
        {"gpu": "gpu_plugin"},
        gpu_plugin="raise ImportError('libcuda.so.1: cannot open shared object file')\n",
    )
    report = (
        "plugin 'gpu' from distribution 'spawnkit-gpu' failed: import failed: "
        "ImportError('libcuda.so.1: cannot open shared object file')"
    )
    lines = backends_cli(tmp_path)
    assert lines[-1] == f"broken: {report}"
    assert rows(lines)["shellwrap"]["distribution"] == SHELLWRAP_DIST
    error = spawn_error(tmp_path, "gpu")
    assert error["type"] == "UnknownBackendError"
    assert error["message"] == f"unknown backend 'gpu'; installed: {error['installed']}; {report}"
    assert shellwrap_job(tmp_path) == "['0', '1']\n"


def test_a_hookimpl_with_a_wrong_signature_is_rejected_showing_the_expected_one(
    tmp_path: Path,
) -> None:
    add_dist(
        tmp_path,
        "spawnkit-extra",
        {"extra": "extra_plugin"},
        extra_plugin="""
            import spawnkit

            @spawnkit.hookimpl
            def spawnkit_register_backends(registry, options):
                registry.add("extra", object)
            """,
    )
    lines = backends_cli(tmp_path)
    assert "extra" not in rows(lines)
    assert rows(lines)["shellwrap"]["distribution"] == SHELLWRAP_DIST
    assert "\n".join(lines).split("\nbroken: ", 1)[1] == (
        "plugin 'extra' from distribution 'spawnkit-extra' failed: its hook "
        "spawnkit_register_backends(registry, options) asks for options, which spawnkit does "
        "not pass; the hookspec is spawnkit_register_backends(registry)"
    )


def test_a_hookimpl_for_an_unknown_hook_is_rejected_listing_the_real_ones(
    tmp_path: Path,
) -> None:
    add_dist(
        tmp_path,
        "spawnkit-typo",
        {"typo": "typo_plugin"},
        typo_plugin="""
            import spawnkit

            @spawnkit.hookimpl
            def spawnkit_register_backend(registry):
                registry.add("typo", object)
            """,
    )
    lines = backends_cli(tmp_path)
    assert "typo" not in rows(lines)
    assert lines[-1] == (
        "broken: plugin 'typo' from distribution 'spawnkit-typo' failed: unknown hook "
        "'spawnkit_register_backend' (did you mean 'spawnkit_register_backends'?); the hooks "
        "spawnkit knows are spawnkit_register_backends(registry), "
        "spawnkit_register_watches(registry)"
    )


def test_a_hook_that_raises_is_reported_and_the_others_still_work(tmp_path: Path) -> None:
    add_dist(
        tmp_path,
        "spawnkit-raises",
        {"raises": "raising_plugin"},
        raising_plugin="""
            import spawnkit

            @spawnkit.hookimpl
            def spawnkit_register_backends(registry):
                raise RuntimeError("no licence server")
            """,
    )
    lines = backends_cli(tmp_path)
    assert lines[-1] == (
        "broken: plugin 'raises' from distribution 'spawnkit-raises' failed: "
        "spawnkit_register_backends: RuntimeError('no licence server')"
    )
    assert rows(lines)["shellwrap"]["distribution"] == SHELLWRAP_DIST


# -- loading ------------------------------------------------------------------------------


def test_plugins_load_lazily_and_once(tmp_path: Path) -> None:
    add_dist(
        tmp_path,
        "spawnkit-counted",
        {"counted": "counted_plugin"},
        counted_plugin="""
            import spawnkit

            print("imported counted_plugin")

            @spawnkit.hookimpl
            def spawnkit_register_backends(registry):
                print("registered counted")
                registry.add("counted", object)
            """,
    )
    result = run_code(
        tmp_path,
        """
        import sys
        import spawnkit

        def loaded():
            names = ("pluggy", "spawnkit._registry", "spawnkit_shellwrap.plugin")
            print([name for name in names if name in sys.modules])

        loaded()
        spawnkit.WorkerSpec, spawnkit.LaunchError, spawnkit.signal_process_group
        loaded()
        first = spawnkit.available_backends()
        loaded()
        print(spawnkit.available_backends() == first, "counted" in first)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[]",
        "[]",
        "imported counted_plugin",
        "registered counted",
        "['pluggy', 'spawnkit._registry', 'spawnkit_shellwrap.plugin']",
        "True True",
    ]
