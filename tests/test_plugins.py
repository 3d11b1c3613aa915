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
from spawnkit._registry import _load, plugins

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


def cli_status(root: Path, *args: str, env: Mapping[str, str] | None = None) -> int:
    """The exit status of ``python -m spawnkit ARGS``."""
    return python(root, "-m", "spawnkit", *args, env=env).returncode


def at(root: Path, module: str, text: str) -> str:
    """``path:line`` of the first line of ``module`` (laid out by add_dist) that holds ``text``."""
    path = root / f"{module}.py"
    lines = path.read_text().splitlines()
    return f"{path}:{next(n for n, line in enumerate(lines, 1) if text in line)}"


def rows(lines: list[str]) -> dict[str, dict[str, str]]:
    """``name -> {column: value}`` from the table, cut at the header's column starts."""
    header = lines[0]
    columns = ["NAME", "STATUS", "DISTRIBUTION", "DESCRIPTION"]
    starts = [header.index(column) for column in columns]
    table = {}
    for line in lines[1:]:
        if line.startswith(("conflict: ", "broken: ")):
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        table[cells[0]] = dict(zip([c.lower() for c in columns[1:]], cells[1:], strict=True))
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


def shellwrap_job(
    root: Path, env: Mapping[str, str] | None = None, backend: str = "shellwrap"
) -> str:
    """Run a two-rank shellwrap job in a fresh interpreter; its printed results."""
    (root / "shelljob.py").write_text(JOB)
    result = run_code(
        root,
        f"""
        import spawnkit, shelljob
        print(spawnkit.spawn(shelljob.tag, nprocs=2, backend={backend!r}))
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
        "backend 'shellwrap' does not take option(s) shel; it accepts: shell; "
        "did you mean 'shell' instead of 'shel'?"
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
    assert cli_status(tmp_path, "backends", "--check") == 0
    assert cli_status(tmp_path, "watches", "--check") == 0


def test_disable_plugins_hides_the_plugin(tmp_path: Path) -> None:
    lines = backends_cli(tmp_path, {"SPAWNKIT_DISABLE_PLUGINS": "shellwrap"})
    assert "shellwrap" not in rows(lines)
    assert "spawn" in rows(lines)  # the others still load
    error = spawn_error(tmp_path, "shellwrap", {"SPAWNKIT_DISABLE_PLUGINS": "fork, shellwrap"})
    assert error["type"] == "UnknownBackendError"
    assert "'shellwrap'" not in error["installed"]
    assert "'fork'" not in error["installed"]
    assert error["message"] == (
        "backend 'shellwrap' is disabled by SPAWNKIT_DISABLE_PLUGINS=fork,shellwrap; take "
        f"'shellwrap' out of it to use the backend; installed: {error['installed']}"
    )


def test_disable_plugins_warns_of_a_name_no_entry_point_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPAWNKIT_DISABLE_PLUGINS", "shellwrp, fork")
    with pytest.warns(UserWarning, match="^SPAWNKIT_DISABLE_PLUGINS names 'shellwrp'") as record:
        loaded = _load()  # what plugins() does once per process, here with this environment
    [warning] = record
    message = str(warning.message)
    assert message.startswith(
        "SPAWNKIT_DISABLE_PLUGINS names 'shellwrp', which is no installed plugin's entry point "
        "(did you mean 'shellwrap'?), so it disables nothing; the entry points are 'fork', "
    )
    for builtin in ("fork", "forkserver", "spawn", "subprocess", "shellwrap"):
        assert repr(builtin) in message
    assert loaded.disabled == ("fork",)
    assert "shellwrap" in loaded.backends
    assert "fork" not in loaded.backends
    installed = ", ".join(repr(name) for name in sorted(loaded.backends))
    with pytest.raises(spawnkit.UnknownBackendError) as disabled:
        loaded.backend("fork")
    assert str(disabled.value) == (
        "backend 'fork' is disabled by SPAWNKIT_DISABLE_PLUGINS=fork; take 'fork' out of it to "
        f"use the backend; installed: {installed}"
    )
    with pytest.raises(spawnkit.UnknownBackendError) as unknown:
        loaded.backend("shellwrp")
    assert str(unknown.value) == (
        f"unknown backend 'shellwrp' (did you mean 'shellwrap'?); installed: {installed}"
    )


def test_a_backend_is_also_found_as_distribution_colon_name() -> None:
    loaded = plugins()
    assert loaded.backend("spawnkit:spawn") is loaded.backend("spawn")
    assert loaded.backend("spawnkit-shellwrap:shellwrap") is loaded.backends["shellwrap"]
    assert "spawnkit:spawn" not in loaded.backends  # listed once, by its plain name
    with pytest.raises(
        spawnkit.UnknownBackendError, match=r"^unknown backend 'spawnkit:shellwrap'"
    ):
        loaded.backend("spawnkit:shellwrap")  # the name exists, from another distribution


@needs_sh
def test_a_job_runs_on_a_backend_named_by_distribution_colon_name() -> None:
    results = spawnkit.spawn(shell_tag, nprocs=2, backend="spawnkit-shellwrap:shellwrap")
    assert results == [("0", os.getpid()), ("1", os.getpid())]


# -- a plugin and a built-in, one backend name ---------------------------------------------


def test_a_plugin_taking_a_builtin_name_leaves_the_builtin_in_place(tmp_path: Path) -> None:
    add_dist(
        tmp_path,
        "spawnkit-imposter",
        {"imposter": "imposter_plugin"},
        imposter_plugin=registering("spawn"),
    )
    lines = backends_cli(tmp_path)
    assert rows(lines)["spawn"]["distribution"] == "spawnkit"
    assert rows(lines)["spawnkit:spawn"]["distribution"] == "spawnkit"
    assert rows(lines)["spawnkit-imposter:spawn"] == {
        "status": "available",
        "distribution": "spawnkit-imposter",
        "description": "a throwaway plugin",
    }
    assert (
        "conflict: backend 'spawn' is registered by 'spawnkit' and 'spawnkit-imposter'; "
        "'spawn' stays spawnkit's own, reach the plugin's as 'spawnkit-imposter:spawn'"
    ) in lines
    assert cli_status(tmp_path, "backends", "--check") == 1
    assert cli_status(tmp_path, "watches", "--check") == 0  # a backend's clash, not a watch's
    # The default backend still runs jobs, and the plugin's backend is one name away.
    result = run_code(
        tmp_path,
        """
        import operator, spawnkit
        from spawnkit._registry import plugins

        print(spawnkit.spawn(operator.neg, nprocs=2))
        print(plugins().backend("spawnkit-imposter:spawn").factory is object)
        print([(c.kind, c.name, c.claimants, c.builtin_kept) for c in plugins().conflicts])
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[0, -1]",
        "True",
        "[('backend', 'spawn', (('spawnkit', 'spawn'), ('spawnkit-imposter', 'imposter')), True)]",
    ]


# -- two plugins, one backend name --------------------------------------------------------

CONFLICT = (
    "backend 'shellwrap' is registered by more than one plugin: entry point 'shellwrap' of "
    "distribution 'spawnkit-shellwrap' and entry point 'shellwrap_clone' of distribution "
    "'shellwrap-clone'; pick one by its full name ('spawnkit-shellwrap:shellwrap' or "
    "'shellwrap-clone:shellwrap'), uninstall one of them or block one with "
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
    assert rows(lines)["spawnkit-shellwrap:shellwrap"]["distribution"] == SHELLWRAP_DIST
    assert rows(lines)["shellwrap-clone:shellwrap"] == {
        "status": "available",
        "distribution": "shellwrap-clone",
        "description": "a throwaway plugin",
    }
    assert (
        "conflict: backend 'shellwrap' is registered by 'spawnkit-shellwrap' and "
        "'shellwrap-clone'; pick one by its full name: 'spawnkit-shellwrap:shellwrap' or "
        "'shellwrap-clone:shellwrap'"
    ) in lines
    assert cli_status(tmp_path, "backends", "--check") == 1


@needs_sh
def test_each_plugin_of_a_conflict_stays_reachable_by_its_full_name(tmp_path: Path) -> None:
    add_clone(tmp_path)
    assert shellwrap_job(tmp_path, backend="spawnkit-shellwrap:shellwrap") == "['0', '1']\n"


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
        f"plugin 'gpu' from distribution 'spawnkit-gpu' failed at {tmp_path / 'gpu_plugin.py'}:1: "
        "import failed: ImportError('libcuda.so.1: cannot open shared object file')"
    )
    lines = backends_cli(tmp_path)
    assert lines[-1] == f"broken: {report}"
    assert rows(lines)["shellwrap"]["distribution"] == SHELLWRAP_DIST
    assert cli_status(tmp_path, "backends", "--check") == 1
    assert cli_status(tmp_path, "watches", "--check") == 1  # its watches are missing too
    error = spawn_error(tmp_path, "gpu")
    assert error["type"] == "UnknownBackendError"
    assert error["message"] == f"unknown backend 'gpu'; installed: {error['installed']}; {report}"
    assert shellwrap_job(tmp_path) == "['0', '1']\n"


# Where an import failed: the plugin's own line, also when the error comes from deeper down.
IMPORT_FAILURES = {
    "in-a-library-it-imports": (
        "import os\nimport fakecuda  # the plugin's line\n",
        "import fakecuda",
        "ImportError('libcuda.so.1')",
    ),
    "syntax-error": (
        "import os\ndef spawnkit_register_backends(registry:\n",
        "def spawnkit_register_backends",
        "SyntaxError(",
    ),
}


@pytest.mark.parametrize("case", sorted(IMPORT_FAILURES))
def test_an_import_failure_is_reported_at_the_plugins_own_line(tmp_path: Path, case: str) -> None:
    source, line, error = IMPORT_FAILURES[case]
    # fakecuda belongs to no plugin: the failure's innermost frame, but not the plugin's.
    (tmp_path / "fakecuda.py").write_text("import os\nraise ImportError('libcuda.so.1')\n")
    add_dist(tmp_path, "spawnkit-gpu", {"gpu": "gpu_plugin"}, gpu_plugin=source)
    broken = backends_cli(tmp_path)[-1]
    prefix = "broken: plugin 'gpu' from distribution 'spawnkit-gpu' failed at "
    assert broken.startswith(f"{prefix}{at(tmp_path, 'gpu_plugin', line)}: import failed: {error}")


def test_an_entry_point_naming_no_module_is_reported_at_the_innermost_line(
    tmp_path: Path,
) -> None:
    add_dist(tmp_path, "spawnkit-gone", {"gone": "gone_plugin.plugins"})
    broken = backends_cli(tmp_path)[-1]
    # No line of the plugin's own ran: the import system's line that gave up is the one left.
    assert broken.startswith(
        "broken: plugin 'gone' from distribution 'spawnkit-gone' failed at <frozen importlib."
    )
    assert broken.endswith(
        ": import failed: ModuleNotFoundError(\"No module named 'gone_plugin'\")"
    )


# pluggy's verdict on a hook, and after it what spawnkit adds: where, and the hooks it knows.
HOOKS = "spawnkit_register_backends(registry), spawnkit_register_watches(registry)"


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
        "plugin 'extra' from distribution 'spawnkit-extra' failed at "
        f"{at(tmp_path, 'extra_plugin', '@spawnkit.hookimpl')}: Plugin 'extra' for hook "
        "'spawnkit_register_backends'; hookimpl definition: spawnkit_register_backends("
        "registry, options); Argument(s) {'options'} are declared in the hookimpl but can not "
        f"be found in the hookspec; the hooks spawnkit knows are {HOOKS}"
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
    module = run_code(tmp_path, "import typo_plugin; print(repr(typo_plugin), end='')").stdout
    assert lines[-1] == (
        "broken: plugin 'typo' from distribution 'spawnkit-typo' failed at "
        f"{at(tmp_path, 'typo_plugin', '@spawnkit.hookimpl')}: unknown hook "
        f"'spawnkit_register_backend' in plugin {module} (did you mean "
        f"'spawnkit_register_backends'?); the hooks spawnkit knows are {HOOKS}"
    )


def test_plugins_broken_in_every_way_at_once_are_each_reported_and_the_rest_load(
    tmp_path: Path,
) -> None:
    # All plugins load in one pass of pluggy's, which stops at each failing one: each is
    # named for its own failure (at import, at registration, at the check for hooks without
    # a spec), and those after it in the pass still load.
    add_dist(tmp_path, "spawnkit-zeta", {"zeta": "zeta_plugin"}, zeta_plugin="import nowhere\n")
    signature = "@spawnkit.hookimpl\ndef spawnkit_register_backends(registry, options): pass\n"
    add_dist(
        tmp_path,
        "spawnkit-alpha",
        {"alpha": "alpha_plugin"},
        alpha_plugin="import spawnkit\n" + signature,
    )
    unknown = "@spawnkit.hookimpl\ndef spawnkit_register_backend(registry): pass\n"
    add_dist(
        tmp_path, "spawnkit-mid", {"mid": "mid_plugin"}, mid_plugin="import spawnkit\n" + unknown
    )
    add_dist(tmp_path, "spawnkit-good", {"good": "good_plugin"}, good_plugin=registering("good"))
    lines = backends_cli(tmp_path)
    assert rows(lines)["good"]["distribution"] == "spawnkit-good"
    assert rows(lines)["shellwrap"]["distribution"] == SHELLWRAP_DIST
    broken = [line for line in lines if line.startswith("broken: ")]
    assert [line.split("'")[1] for line in broken] == ["alpha", "mid", "zeta"], broken
    assert "Argument(s) {'options'} are declared in the hookimpl" in broken[0]
    assert "unknown hook 'spawnkit_register_backend'" in broken[1]
    assert "import failed: ModuleNotFoundError(\"No module named 'nowhere'\")" in broken[2]


@pytest.mark.parametrize("hook", ["spawnkit_register_backends", "spawnkit_register_watches"])
def test_a_hook_function_without_the_marker_is_reported_naming_the_fix(
    tmp_path: Path, hook: str
) -> None:
    add_dist(
        tmp_path,
        "spawnkit-unmarked",
        {"unmarked": "unmarked_plugin"},
        unmarked_plugin=f"""
            import spawnkit

            def {hook}(registry):
                registry.add("unmarked", object)
            """,
    )
    lines = backends_cli(tmp_path)
    assert "unmarked" not in rows(lines)
    assert lines[-1] == (
        "broken: plugin 'unmarked' from distribution 'spawnkit-unmarked' failed at "
        f"{at(tmp_path, 'unmarked_plugin', 'def ')}: its function {hook} is not marked as a "
        "hook, so spawnkit would never call it; mark it with @spawnkit.hookimpl"
    )
    assert cli_status(tmp_path, "backends", "--check") == 1


def test_a_wrapper_that_never_yields_is_rejected(tmp_path: Path) -> None:
    add_dist(
        tmp_path,
        "spawnkit-flat",
        {"flat": "flat_plugin"},
        flat_plugin="""
            import spawnkit

            @spawnkit.hookimpl(wrapper=True)
            def spawnkit_register_backends(registry):
                registry.add("flat", object)
            """,
    )
    lines = backends_cli(tmp_path)
    assert "flat" not in rows(lines)
    assert lines[-1] == (
        "broken: plugin 'flat' from distribution 'spawnkit-flat' failed at "
        f"{at(tmp_path, 'flat_plugin', '@spawnkit.hookimpl')}: Plugin 'flat' for hook "
        "'spawnkit_register_backends'; hookimpl definition: spawnkit_register_backends("
        "registry); Declared as wrapper=True or hookwrapper=True but function is not a "
        f"generator function; the hooks spawnkit knows are {HOOKS}"
    )


def test_what_pluggy_accepts_of_a_hook_is_accepted(tmp_path: Path) -> None:
    add_dist(
        tmp_path,
        "spawnkit-options",
        {"options": "options_plugin"},
        options_plugin="""
            import spawnkit
            from spawnkit.hookspecs import spawnkit_register_watches  # the spec, not a hook

            @spawnkit.hookimpl(specname="spawnkit_register_backends")
            def register(registry, unused=None):
                registry.add("specnamed", object, description="by specname")

            @spawnkit.hookimpl(optionalhook=True)
            def spawnkit_register_gpus(registry):
                raise AssertionError("spawnkit has no such hook to call")
            """,
    )
    lines = backends_cli(tmp_path)
    assert rows(lines)["specnamed"]["distribution"] == "spawnkit-options"
    assert not [line for line in lines if line.startswith(("broken: ", "conflict: "))]


def test_two_entry_points_naming_one_module_load_it_once(tmp_path: Path) -> None:
    add_dist(
        tmp_path,
        "spawnkit-twice",
        {"twice": "twice_plugin", "twice_again": "twice_plugin"},
        twice_plugin=registering("twice"),
    )
    lines = backends_cli(tmp_path)
    assert rows(lines)["twice"]["distribution"] == "spawnkit-twice"  # no conflict with itself
    assert lines[-1] == (
        "broken: plugin 'twice_again' from distribution 'spawnkit-twice' failed: its entry "
        "point names the object of plugin 'twice' again; keep one of the two entry points"
    )


# Where a hook failed: the plugin's own line, also when spawnkit raised the error.
HOOK_FAILURES = {
    "raises": (
        'raise RuntimeError("no licence server")',
        "RuntimeError('no licence server')",
    ),
    "bad-name": (
        'registry.add("auto", object)',
        "PluginError(\"backend name 'auto' from distribution 'spawnkit-raises' is invalid; use "
        "a non-empty string other than 'auto' and without ':' (which separates a distribution "
        'from a name)")',
    ),
}


@pytest.mark.parametrize("case", sorted(HOOK_FAILURES))
def test_a_hook_that_raises_is_reported_and_the_others_still_work(
    tmp_path: Path, case: str
) -> None:
    statement, error = HOOK_FAILURES[case]
    add_dist(
        tmp_path,
        "spawnkit-raises",
        {"raises": "raising_plugin"},
        raising_plugin=f"""
            import spawnkit

            @spawnkit.hookimpl
            def spawnkit_register_backends(registry):
                registry.add("raises", object)
                {statement}
            """,
    )
    lines = backends_cli(tmp_path)
    assert lines[-1] == (
        "broken: plugin 'raises' from distribution 'spawnkit-raises' failed at "
        f"{at(tmp_path, 'raising_plugin', statement)}: spawnkit_register_backends: {error}"
    )
    assert rows(lines)["shellwrap"]["distribution"] == SHELLWRAP_DIST
    assert rows(lines)["raises"]["distribution"] == "spawnkit-raises"  # added before it failed


# -- the order pluggy calls hooks in --------------------------------------------------------


def hook_printing(word: str, options: str = "") -> str:
    """Source of a plugin whose backends hook prints ``word`` and registers it as a backend."""
    return f"""
        import spawnkit

        @spawnkit.hookimpl({options})
        def spawnkit_register_backends(registry):
            print({word!r})
            registry.add({word!r}, object)
        """


WRAPPER = """
    import spawnkit

    @spawnkit.hookimpl(wrapper=True)
    def spawnkit_register_backends(registry):
        print("wrap before")
        result = yield
        print("wrap after")
        registry.add("wrapped", object)
        return result
    """

OLD_STYLE_WRAPPER = """
    import spawnkit

    @spawnkit.hookimpl(hookwrapper=True)
    def spawnkit_register_backends(registry):
        print("old before")
        outcome = yield
        outcome.get_result()
        print("old after")
    """

LOADED = """
    from spawnkit._registry import plugins

    loaded = plugins()
    for name in ("early", "plain", "late", "wrapped"):
        print(name, loaded.backends[name].distribution)
    for broken in loaded.broken:
        print(broken.name, broken.filename, broken.lineno)
    """


def test_hooks_run_in_pluggys_order_and_one_that_raises_stops_none(tmp_path: Path) -> None:
    # Entry points load in name order, and pluggy calls the later-loaded first: without
    # tryfirst, "early" would run last; without trylast, "late" would run first.
    add_dist(
        tmp_path,
        "spawnkit-early",
        {"a_early": "early"},
        early=hook_printing("early", "tryfirst=True"),
    )
    add_dist(tmp_path, "spawnkit-plain", {"m_plain": "plain"}, plain=hook_printing("plain"))
    add_dist(
        tmp_path,
        "spawnkit-boom",
        {"n_boom": "boom"},
        boom="""
            import spawnkit

            @spawnkit.hookimpl
            def spawnkit_register_backends(registry):
                print("boom")
                raise RuntimeError("boom")
            """,
    )
    add_dist(tmp_path, "spawnkit-oldwrap", {"o_oldwrap": "oldwrap"}, oldwrap=OLD_STYLE_WRAPPER)
    add_dist(tmp_path, "spawnkit-wrap", {"w_wrap": "wrap"}, wrap=WRAPPER)
    add_dist(
        tmp_path, "spawnkit-late", {"z_late": "late"}, late=hook_printing("late", "trylast=True")
    )
    result = run_code(tmp_path, LOADED)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no PluggyTeardownRaisedWarning or any other
    boom_line = at(tmp_path, "boom", "raise RuntimeError").rpartition(":")[2]
    assert result.stdout.splitlines() == [
        "wrap before",
        "old before",
        "early",
        "boom",
        "plain",
        "late",
        "old after",
        "wrap after",
        "early spawnkit-early",
        "plain spawnkit-plain",
        "late spawnkit-late",
        "wrapped spawnkit-wrap",  # added after the yield, still credited to the wrapper's plugin
        f"n_boom {tmp_path / 'boom.py'} {boom_line}",
    ]


# A wrapper that fails in each of its parts; the hooks it wraps still run.
WRAPPER_FAILURES = {
    "before-its-yield": (
        'raise RuntimeError("before")\n    yield',
        "RuntimeError('before')",
        'raise RuntimeError("before")',
    ),
    "after-its-yield": (
        'yield\n    raise RuntimeError("after")',
        "RuntimeError('after')",
        'raise RuntimeError("after")',
    ),
    "at-a-second-yield": (
        "yield\n    yield",
        "RuntimeError('the wrapper yielded a second time')",
        "@spawnkit.hookimpl",
    ),
    "returning-before-its-yield": (
        "return\n    yield",
        "RuntimeError('the wrapper returned without yielding')",
        "@spawnkit.hookimpl",
    ),
}


@pytest.mark.parametrize("style", ["wrapper", "hookwrapper"])
@pytest.mark.parametrize("case", sorted(WRAPPER_FAILURES))
def test_a_wrapper_that_raises_is_reported_and_the_hooks_it_wraps_still_run(
    tmp_path: Path, case: str, style: str
) -> None:
    body, error, line = WRAPPER_FAILURES[case]
    source = f"import spawnkit\n\n@spawnkit.hookimpl({style}=True)\n"
    source += f"def spawnkit_register_backends(registry):\n    {body}\n"
    add_dist(tmp_path, "spawnkit-wrap", {"wrap": "wrap"}, wrap=source)
    add_dist(tmp_path, "spawnkit-plain", {"plain": "plain"}, plain=registering("plain"))
    lines = backends_cli(tmp_path)  # and nothing on stderr: no warning from pluggy either
    assert rows(lines)["plain"]["distribution"] == "spawnkit-plain"
    assert lines[-1] == (
        f"broken: plugin 'wrap' from distribution 'spawnkit-wrap' failed at "
        f"{at(tmp_path, 'wrap', line)}: spawnkit_register_backends: {error}"
    )


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


def test_the_ray_backend_without_ray_says_how_to_install_it() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is not None:
        pytest.skip("Ray is installed here (tox -e ray tests the backend itself)")
    from spawnkit._registry import plugins

    info = plugins().backends["ray"]
    assert info.unavailable == "Ray is not installed: pip install 'spawnkit[ray]'"
    with pytest.raises(spawnkit.BackendUnavailableError, match=r"spawnkit\[ray\]"):
        spawnkit.spawn(print, nprocs=1, backend="ray")


# -- factories: what a backend's factory raises, and `spawnkit backends --check` -------------

KAPUT = """
    import spawnkit

    def kaput(address=None):
        return {}["address"]  # the plugin's bug: a KeyError, no word of the backend

    def strict(address=None):
        if address is None:
            raise spawnkit.ConfigError("backend 'strict' needs address='host:port'")
        return kaput()

    @spawnkit.hookimpl
    def spawnkit_register_backends(registry):
        registry.add("kaput", kaput, options=["address"], description="raises")
        registry.add("strict", strict, options=["address"], description="needs an option")
        registry.add("odd", object, description="makes no backend")
    """

KAPUT_ERROR = (
    "backend 'kaput' from distribution 'spawnkit-kaput' is broken: its factory raised "
    "KeyError('address'); report it to the plugin's authors, or pick another backend "
    "('spawnkit backends --check' tries each one)"
)


def test_a_factory_that_raises_is_a_plugin_error_naming_the_backend(tmp_path: Path) -> None:
    add_dist(tmp_path, "spawnkit-kaput", {"kaput": "kaput_plugin"}, kaput_plugin=KAPUT)
    result = run_code(
        tmp_path,
        """
        import spawnkit

        for backend in ("kaput", "odd"):
            try:
                spawnkit.spawn(print, backend=backend)
            except spawnkit.PluginError as exc:
                print(str(exc).replace(repr(exc.__cause__ or ""), "CAUSE", 1))
                print(repr(exc.__cause__))
        """,
    )
    assert result.returncode == 0, result.stderr
    kaput, cause, odd, no_cause = result.stdout.splitlines()
    assert kaput == KAPUT_ERROR.replace("KeyError('address')", "CAUSE")
    assert cause == "KeyError('address')"  # chained, with its traceback
    assert odd.startswith(
        "backend 'odd' from distribution 'spawnkit-kaput' is broken: its factory returned "
        "<object object at "
    )
    assert odd.endswith(
        ">, which is no spawnkit.Backend (one has start() and close()); report it to the "
        "plugin's authors, or pick another backend ('spawnkit backends --check' tries each one)"
    )
    assert no_cause == "None"


def test_backends_check_runs_each_factory_once_and_names_what_raises(tmp_path: Path) -> None:
    add_dist(tmp_path, "spawnkit-kaput", {"kaput": "kaput_plugin"}, kaput_plugin=KAPUT)
    assert cli_status(tmp_path, "backends") == 0  # listing alone runs no factory
    result = python(tmp_path, "-m", "spawnkit", "backends", "--check")
    assert result.returncode == 1, result.stderr
    checks = [line for line in result.stdout.splitlines() if line.startswith("check: ")]
    assert checks[0] == f"check: {KAPUT_ERROR}"
    assert checks[1].startswith("check: backend 'odd' from distribution 'spawnkit-kaput' is ")
    assert checks[2:] == [
        "check: backend 'strict' from 'spawnkit-kaput', with no options: ConfigError: backend "
        "'strict' needs address='host:port'"
    ]  # and nothing of the backends whose factories work
    assert rows(result.stdout.splitlines())["kaput"]["status"] == "available"


# -- the built-in parent watches are entry points -------------------------------------------


def test_a_builtin_watch_is_blocked_by_its_entry_point_name(tmp_path: Path) -> None:
    result = python(tmp_path, "-m", "spawnkit", "watches", env={"SPAWNKIT_DISABLE_PLUGINS": "poll"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # "poll" names an installed entry point: no warning
    watches = rows(result.stdout.splitlines())
    assert "poll" not in watches
    assert watches["pipe"]["distribution"] == "spawnkit"


def test_one_entry_point_name_in_two_distributions_loads_one_and_names_the_other(
    tmp_path: Path,
) -> None:
    add_dist(tmp_path, "spawnkit-one", {"twin": "one_plugin"}, one_plugin=registering("one"))
    add_dist(tmp_path, "spawnkit-two", {"twin": "two_plugin"}, two_plugin=registering("two"))
    lines = backends_cli(tmp_path)
    [loaded] = {"one", "two"} & set(rows(lines))
    other = "two" if loaded == "one" else "one"
    assert lines[-1] == (
        f"broken: plugin 'twin' from distribution 'spawnkit-{other}' failed: distribution "
        f"'spawnkit-{loaded}' has an entry point 'twin' too; only one loads: rename one of them"
    )
