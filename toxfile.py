"""tox plugin: py314 and py315 run in a Debian sid chroot on a Linux machine that lacks them.

tox looks the interpreter of `py314` up by the env's name and fails when the machine has none.
Python 3.14 and 3.15 are current, yet a Debian stable machine cannot install them without
replacing its libc; tools/sid-chroot holds them instead. Where `python3.14` (or `python3.15`)
is on PATH, as on CI's setup-python, these envs are plain virtualenv envs like `py313`.
Without it, on Linux, the env gets the Python running tox, and its command
(tools/sid-pytest) runs the tests with the chroot's Python against the same wheel and
requirements.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

from tox.config.loader.memory import MemoryLoader
from tox.plugin import impl
from tox.tox_env.python.virtual_env.runner import VirtualEnvRunner

# Env name -> the interpreter the chroot has for it (tools/sid-chroot installs both).
SID_PYTHONS = {"py314": "python3.14", "py315": "python3.15"}


def _in_chroot(env_name: str) -> bool:
    python = SID_PYTHONS.get(env_name)
    return python is not None and sys.platform == "linux" and shutil.which(python) is None


class SidChrootRunner(VirtualEnvRunner):
    """A virtualenv env whose name may name a Python that only the sid chroot has."""

    @staticmethod
    def id() -> str:
        return "spawnkit-sid"

    @classmethod
    def _validate_base_python(cls, env_name: str, base_pythons: list[str], *rest: Any) -> list[str]:
        # The env's name says 3.14 while its own interpreter is the machine's: that is the
        # point of the chroot, not the misconfiguration tox guards against.
        if _in_chroot(env_name):
            return base_pythons
        result: list[str] = super()._validate_base_python(env_name, base_pythons, *rest)
        return result


@impl
def tox_register_tox_env(register: Any) -> None:
    register.add_run_env(SidChrootRunner)


@impl
def tox_add_env_config(env_conf: Any, state: Any) -> None:
    # Packaging envs come here too, and have no runner.
    if _in_chroot(env_conf.name) and env_conf["runner"] == SidChrootRunner.id():
        env_conf.loaders.insert(0, MemoryLoader(base_python=[sys.executable]))
