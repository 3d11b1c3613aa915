"""The relay of the ranks' output and the failure report, on input that used to break them:
an exception that cannot be shown, a console nobody reads, ``\\r\\n`` across reads, a prefix
that is not text.

Every job runs real worker processes; a program whose console matters runs as a real
interpreter with real pipes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import spawnkit
from spawnkit.testing import backend_params

import _output_targets as ot

LOCAL_BACKENDS = backend_params(["fork", "spawn", "forkserver", "subprocess"])
TESTS = Path(__file__).resolve().parent
# Far above what a program here needs on a loaded machine: past it, it hangs.
PROGRAM_WAIT = 60.0
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FIONREAD on pipes")


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _program(tmp_path: Path, code: str) -> str:
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(code))
    return str(script)


def _run(tmp_path: Path, argv: list[str | bytes]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        argv, capture_output=True, timeout=PROGRAM_WAIT, cwd=tmp_path, env=_env(), check=False
    )


# -- an exception that cannot be shown -------------------------------------------------------


@pytest.mark.parametrize("kind", ["raises", "not a string"])
@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_an_exception_whose_str_fails_is_still_the_ranks_failure(backend: str, kind: str) -> None:
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        spawnkit.spawn(ot.raise_unprintable, args=(kind,), nprocs=1, backend=backend)
    err = info.value
    assert type(err.exception).__name__ in ("StrRaises", "StrNotAString")
    assert err.report is not None
    root = err.report.root_cause
    assert root is not None
    assert root.error is not None
    assert root.error.startswith(f"{type(err.exception).__name__}: <exception str() failed: ")
    assert "str() failed" in err.report.format()
    assert "raise {" in err.remote_traceback  # the rank's own traceback came home


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_a_result_that_can_neither_travel_nor_be_shown_is_a_type_error(backend: str) -> None:
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        spawnkit.spawn(ot.return_unprintable, nprocs=1, backend=backend)
    assert isinstance(info.value.exception, TypeError)
    message = str(info.value.exception)
    assert "<ReprRaises repr() failed: RuntimeError: this __repr__ is broken>" in message
    assert "cannot be pickled back to the parent (<exception str() failed: " in message


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_an_exit_code_that_cannot_be_printed_exits_1(
    backend: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(spawnkit.ProcessExitedException) as info:
        spawnkit.spawn(ot.exit_unprintable, nprocs=1, backend=backend)
    assert info.value.exit_code == 1
    err = capfd.readouterr().err
    assert "<ExitCodeStrRaises str() failed: RuntimeError:" in err
    assert "Traceback" not in err


# -- a console nobody reads ------------------------------------------------------------------

STALLED = """
import json, os, sys
import spawnkit
import _output_targets as ot

if __name__ == "__main__":
    lines, options = int(sys.argv[1]), json.loads(sys.argv[2])
    # The rank fails once it has written it all, without waiting for the console: the job
    # ends with the console still full. A rank the console stalled would meet the deadline
    # instead, far past the milliseconds the writes take: a failure with its report.
    try:
        spawnkit.spawn(
            ot.fill_then_fail, args=(lines, "done"), nprocs=1, backend="fork", timeout=30,
            **options,
        )
    except spawnkit.ProcessRaisedException as exc:
        print("written before the failure:", os.path.exists("done"), file=sys.stderr)
        print(exc.report.format(), file=sys.stderr)
        sys.exit(0)
    sys.exit(3)
"""


@pytest.mark.parametrize(
    "options",
    [{"prefix": "[{rank}] "}, {"log_dir": "logs", "tee": "out"}],
    ids=["prefix", "tee"],
)
def test_a_console_nobody_reads_does_not_stall_the_job(
    tmp_path: Path, options: dict[str, str]
) -> None:
    # Many times what the pipe holds, and more than the relay keeps for the console.
    lines = 1500
    unread, console = os.pipe()
    try:
        with open(tmp_path / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, _program(tmp_path, STALLED), str(lines), json.dumps(options)],
                stdout=console,
                stderr=err,
                cwd=tmp_path,
                env=_env(),
            )
        os.close(console)
        console = -1
        try:
            status = proc.wait(timeout=PROGRAM_WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        os.close(unread)
        if console >= 0:
            os.close(console)
    said = (tmp_path / "stderr").read_text()
    assert status == 0, said
    assert "written before the failure: True" in said
    assert "of the ranks' output were not shown: the console" in said  # the log
    assert "not shown: " in said  # the report
    if "log_dir" in options:
        assert "the rank logs have them" in said
        logged = (tmp_path / "logs" / "0" / "stdout.log").read_bytes()
        assert logged == b"".join(ot.out_line(i) for i in range(lines))


# -- lines across reads ----------------------------------------------------------------------

SAMPLE = b"one\r\ntwo\rthree\n\r\n\nfour\r\r\nfive"
SHOWN = b"".join(
    b"[0] " + line
    for line in (b"one\r\n", b"two\r", b"three\n", b"\r\n", b"\n", b"four\r", b"\r\n", b"five\n")
)


def _shown(reads: list[bytes]) -> bytes:
    from spawnkit._output import _Lines, prefixed

    lines = _Lines()
    batches = [lines.feed(read) for read in reads] + [lines.end()]
    return b"".join(prefixed(b"[0] ", batch) for batch in batches)


def test_lines_stay_whole_wherever_the_reads_split_them() -> None:
    for i in range(len(SAMPLE) + 1):
        for j in range(i, len(SAMPLE) + 1):
            reads = [SAMPLE[:i], SAMPLE[i:j], SAMPLE[j:]]
            assert _shown(reads) == SHOWN, reads


def test_a_line_too_long_to_wait_for_ends_once() -> None:
    from spawnkit._output import _Lines

    # Shown in pieces, each ended on the console: its own end, coming right after a piece
    # (even split across reads), ends nothing more.
    for ending in (b"\n", b"\r\n", b"\r"):
        for cut in range(len(ending)):
            lines = _Lines(longest=4)
            reads = [b"abcdefgh" + ending[:cut], ending[cut:] + b"ij" + ending, b"k"]
            shown = b"".join([*(lines.feed(read) for read in reads), lines.end()])
            assert shown == b"abcdefgh\nij" + ending + b"k\n", reads


CRLF = """
import sys
import spawnkit
import _output_targets as ot

if __name__ == "__main__":
    spawnkit.spawn(ot.crlf_across_reads, nprocs=1, backend="fork", prefix="[{rank}] ")
"""


@linux_only
def test_crlf_across_two_reads_of_a_real_rank_is_one_line_end(tmp_path: Path) -> None:
    done = _run(tmp_path, [sys.executable, _program(tmp_path, CRLF)])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    long_line = b"y" * (ot.READ_SIZE - 5 * 1000 - 1)
    assert done.stdout == b"[0] one\r\n" * 1000 + b"[0] " + long_line + b"\r\n[0] after\r\n"


# -- a prefix that is not text ---------------------------------------------------------------

PREFIXED = """
import sys
import spawnkit
import _output_targets as ot

if __name__ == "__main__":
    spawnkit.spawn(ot.hello, nprocs=1, backend="fork", prefix="\\udcff[{rank}] ")
"""


def test_a_prefix_of_escaped_bytes_prints_those_bytes(tmp_path: Path) -> None:
    done = _run(tmp_path, [sys.executable, _program(tmp_path, PREFIXED)])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout == b"\xff[0] hello 0\n"


def test_a_prefix_from_the_command_line_prints_as_its_bytes(tmp_path: Path) -> None:
    argv: list[str | bytes] = [sys.executable, "-m", "spawnkit", "run", "-n", "1"]
    argv += ["-b", "fork", "--prefix", b"\xff[{rank}] ", "_output_targets:hello"]
    done = _run(tmp_path, argv)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout == b"\xff[0] hello 0\n"


def test_a_prefix_that_stands_for_no_bytes_is_refused_before_any_process_starts() -> None:
    with pytest.raises(spawnkit.ConfigError, match=r"prefix .* lone surrogate") as info:
        spawnkit.spawn(ot.hello, nprocs=1, backend="fork", prefix="\ud800[{rank}] ")
    assert "launch" not in {f.name for f in info.traceback}


@pytest.mark.parametrize("prefix", ["[{rank.real.x}] ", "[{rank[0]}] "])
def test_a_prefix_whose_field_fails_on_the_rank_is_a_config_error(prefix: str) -> None:
    # str.format raises AttributeError or TypeError here, not only KeyError and ValueError.
    with pytest.raises(spawnkit.ConfigError, match=r"is not a valid format") as info:
        spawnkit.spawn(ot.hello, nprocs=1, backend="fork", prefix=prefix)
    assert info.value.parameter == "prefix"
    assert "launch" not in {f.name for f in info.traceback}
