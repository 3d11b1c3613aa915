"""spawnkit.use_for_torch and $SPAWNKIT_TORCH: what they replace, restore and refuse.

The switch replaces ``spawn`` and ``start_processes`` on ``torch.multiprocessing`` and on its
``spawn`` submodule, the names Lightning, Fabric, elastic and accelerate call (tox -e torch).
"""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="tox -e torch installs torch's CPU build")
import _switch_targets as targets  # noqa: E402
import spawnkit  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from spawnkit._torch_switch import parse_environment  # noqa: E402

SUBMODULE = sys.modules["torch.multiprocessing.spawn"]
HERE = str(Path(__file__).resolve().parent)
# A fresh interpreter that imports torch: seconds on a loaded 2-core machine.
CHILD_TIMEOUT = 100


def _names() -> list[object]:
    return [mp.spawn, mp.start_processes, SUBMODULE.spawn, SUBMODULE.start_processes]


def _ppids(start_method: str) -> list[int]:
    ctx = mp.start_processes(targets.parent, nprocs=2, join=False, start_method=start_method)
    assert isinstance(ctx, spawnkit.ProcessContext)
    while not ctx.join():
        pass
    return ctx.results()  # type: ignore[no-any-return]


def test_the_switch_replaces_torchs_four_names_and_undo_restores_them() -> None:
    torchs = _names()
    switch = spawnkit.use_for_torch()
    try:
        assert switch.active
        ours = _names()
        assert all(o is not t for o, t in zip(ours, torchs, strict=True))
        assert ours[0] is ours[2]
        assert ours[1] is ours[3]
    finally:
        switch.undo()
    assert _names() == torchs
    assert not switch.active
    switch.undo()  # a second undo changes nothing
    assert _names() == torchs


def test_switches_nest_and_the_most_recent_active_one_decides() -> None:
    torchs = _names()
    with spawnkit.use_for_torch("forkserver") as outer:
        inner = spawnkit.use_for_torch()  # follows start_method: spawn is the parent's child
        assert _ppids("spawn") == [os.getpid()] * 2
        inner.undo()
        assert all(ppid != os.getpid() for ppid in _ppids("spawn"))  # the fork server's
        with spawnkit.use_for_torch("forkserver"):  # the same again: safe
            pass
        assert outer.active
        assert _names() != torchs
    assert _names() == torchs


def test_a_call_asking_for_fork_stays_fork_under_a_chosen_backend() -> None:
    # Its caller may hand the ranks a fork context's queue, usable only by a forked child.
    with spawnkit.use_for_torch("forkserver"):
        assert _ppids("fork") == [os.getpid()] * 2


def test_a_reference_kept_past_undo_calls_torchs_own() -> None:
    with spawnkit.use_for_torch():
        kept = mp.start_processes
    ctx = kept(targets.parent, nprocs=1, join=False, start_method="fork")
    assert type(ctx) is SUBMODULE.ProcessContext
    while not ctx.join():
        pass


def test_torchs_spawn_keeps_its_signature_result_and_warning() -> None:
    with spawnkit.use_for_torch():
        assert mp.spawn(targets.parent, nprocs=1) is None
        with pytest.warns(FutureWarning, match="only supports start_method=spawn"):
            mp.spawn(targets.parent, nprocs=1, start_method="fork")


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("forkserve",), {}, spawnkit.UnknownBackendError, "did you mean 'forkserver'"),
        ((), {"preload": ["torch"]}, spawnkit.ConfigError, "but none is chosen"),
        (("spawn",), {"preload": ["torch"]}, spawnkit.UnknownOptionError, "backend='forkserver'"),
        ((3,), {}, spawnkit.InvalidArgumentError, "backend name"),
        ((), {"grace_period": "2"}, spawnkit.InvalidArgumentError, "number of seconds"),
    ],
    ids=["unknown-backend", "options-without-backend", "foreign-option", "not-a-name", "seconds"],
)
def test_bad_input_is_refused_before_anything_changes(
    args: tuple[object, ...], kwargs: dict[str, object], error: type, message: str
) -> None:
    torchs = _names()
    with pytest.raises(error, match=message):
        spawnkit.use_for_torch(*args, **kwargs)
    assert _names() == torchs


def _installed_from_a_wheel() -> bool:
    from importlib.metadata import distribution

    direct = distribution("spawnkit").read_text("direct_url.json")
    return not (direct and json.loads(direct).get("dir_info", {}).get("editable"))


def _hook_installed() -> bool:
    paths = {*site.getsitepackages(), site.getusersitepackages()}
    return any(os.path.exists(os.path.join(p, "spawnkit_torch.pth")) for p in paths)


def test_the_wheel_installs_the_start_up_hook() -> None:
    if not _installed_from_a_wheel():
        pytest.skip("an editable install: the wheel's contents are tox's to check")
    assert _hook_installed()


needs_hook = pytest.mark.skipif(
    not _hook_installed(),
    reason="this install of spawnkit predates spawnkit_torch.pth: reinstall it (pip install -e .)",
)


def _run(code: str, value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SPAWNKIT_TORCH"}
    if value is not None:
        env["SPAWNKIT_TORCH"] = value
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )


LOADED = (
    "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('spawnkit', 'torch')))"
)


def test_unset_the_start_up_hook_loads_nothing() -> None:
    assert _run(LOADED, None).stdout.strip() == "[]"
    assert _run(LOADED, "0").stdout.strip() == "[]"


@needs_hook
def test_set_the_start_up_hook_never_imports_torch_itself() -> None:
    done = _run(LOADED, "forkserver?preload=torch,")
    assert done.stdout.strip() == "['spawnkit', 'spawnkit._torch_switch']", done.stderr


SWITCHED = """
    import os
    import torch.multiprocessing as mp
    import spawnkit, _switch_targets
    assert mp.start_processes is spawnkit._torch_switch.start_processes
    ctx = mp.start_processes(_switch_targets.parent, nprocs=2, join=False)
    while not ctx.join():
        pass
    print(all(p != os.getpid() for p in ctx.results()))
"""


@needs_hook
def test_the_environment_switches_torch_over_when_it_is_imported() -> None:
    done = _run(SWITCHED, "forkserver?preload=torch,")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"  # forkserver's ranks: children of the server


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("1", (None, {})),
        ("forkserver", ("forkserver", {})),
        ("forkserver?preload=torch,numpy", ("forkserver", {"preload": ["torch", "numpy"]})),
        ("forkserver?preload=torch,", ("forkserver", {"preload": ["torch"]})),
        (
            'forkserver?preload=["torch"]&grace_period=2',
            ("forkserver", {"preload": ["torch"], "grace_period": 2}),
        ),
        ("subprocess?cwd=/data", ("subprocess", {"cwd": "/data"})),
        ('{"backend": "forkserver", "preload": ["torch"]}', ("forkserver", {"preload": ["torch"]})),
        ('{"prefix": "[{rank}] "}', (None, {"prefix": "[{rank}] "})),
    ],
)
def test_the_environment_spellings(value: str, parsed: tuple[object, object]) -> None:
    assert parse_environment(value) == parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("forkserver?preload", "'preload' is not NAME=VALUE; write it as BACKEND"),
        ("forkserver?preload=a&preload=b", "option 'preload' is given twice"),
        ("?preload=torch,", "'' is not a backend name"),
        ("{bad json", "not valid JSON"),
        ("[1]", "is not a backend name"),
        ('{"backend": 1}', '"backend" must be a backend name'),
    ],
)
def test_a_malformed_value_is_named_with_the_spellings(value: str, message: str) -> None:
    with pytest.raises(spawnkit.ConfigError, match=re.escape(message)) as caught:
        parse_environment(value)
    assert str(caught.value).startswith(f"$SPAWNKIT_TORCH={value!r}: ")


@needs_hook
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "forkserve",
            r"UnknownBackendError: \$SPAWNKIT_TORCH='forkserve': unknown backend 'forkserve' "
            r"\(did you mean",
        ),
        (
            "forkserver?preload",
            r"ConfigError: \$SPAWNKIT_TORCH='forkserver\?preload': 'preload' is not",
        ),
    ],
    ids=["unknown-backend", "malformed"],
)
def test_a_bad_value_fails_the_import_of_torch_saying_why(value: str, message: str) -> None:
    done = _run("import torch", value)
    assert done.returncode == 1
    assert re.search(message, done.stderr), done.stderr


@needs_hook
def test_a_text_where_a_list_belongs_is_refused_with_the_list_spelling() -> None:
    done = _run(SWITCHED, "forkserver?preload=torch")
    assert done.returncode == 1
    assert "preload must be a list" in done.stderr
    assert "a list of one name is written with a comma: preload=NAME," in done.stderr
