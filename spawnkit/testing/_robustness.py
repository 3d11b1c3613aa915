"""Conformance tests that try to break the promises: nothing lost, nothing hung, no stray write.

Each one plays, as a real job, something a program or its environment does to spawnkit:
closing descriptors, a closed stdin, a missing ``__main__`` guard, a signal at the worst
moment, a grandchild left behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import spawnkit

from . import _targets as t
from ._behaviour import Checks, _has_cloudpickle, _pickles, _run_script
from ._processes import wait_for_files, wait_gone
from ._tiers import local_process, part

__all__ = ["DropInTests", "RobustnessTests"]

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptors and signals")
# A rank runs beside its worker's own threads (the parent watch, SIGTERM handling): Python
# 3.12+ warns when it forks, and a `fork` worker keeps the test process's filters, which may
# make that warning an error (3.15 checks before the fork). The warning is Python's to give
# (README: "Supported Pythons"); what these tests check is something else.
forks_beside_threads = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)
linux_only = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="lists descriptors through /proc"
)


def _fresh_interpreter(backend: str) -> bool:
    """Whether the backend's workers start a new interpreter (and import ``__main__``)."""
    return _pickles(backend)


class RobustnessTests(Checks):
    """What no program may break, whatever its workers do."""

    # -- the result channel -------------------------------------------------------------

    @posix_only
    @local_process("the result descriptor")
    def test_a_worker_that_closes_every_descriptor_loses_no_result_silently(
        self, backend: str, tmp_path: Path
    ) -> None:
        log = tmp_path / "user.log"
        log.touch()
        with pytest.raises(spawnkit.ProcessExitedException) as info:
            spawnkit.spawn(
                t.close_fds_and_return,
                args=(str(log),),
                nprocs=2,
                backend=backend,
                **self.backend_options,
            )
        # Not a success with value None, not a rank "killed by SIGTERM" through a watch
        # descriptor that now names the log: a failure that says what happened.
        assert info.value.exit_code == 85, str(info.value)
        assert "closed or replaced spawnkit's result channel" in str(info.value)
        # Nothing of spawnkit's went into the file that took the channel's number.
        lines = sorted(log.read_bytes().splitlines())
        assert lines in ([b"rank 0 wrote this"], [b"rank 1 wrote this"]) or lines == [
            b"rank 0 wrote this",
            b"rank 1 wrote this",
        ], lines

    @part("failures")
    def test_a_value_whose_unpickling_raises_system_exit_is_that_ranks_failure(
        self, backend: str
    ) -> None:
        for kind in ("SystemExit", "KeyboardInterrupt"):
            with pytest.raises(spawnkit.ProcessRaisedException) as info:
                spawnkit.spawn(
                    t.return_exploding, args=(kind,), backend=backend, **self.backend_options
                )
            assert "returned a value the parent cannot unpickle" in str(info.value)
            assert kind in str(info.value)

    @part("failures")
    def test_an_error_whose_unpickling_raises_keyboard_interrupt_keeps_its_text(
        self, backend: str
    ) -> None:
        for kind in ("SystemExit", "KeyboardInterrupt"):
            with pytest.raises(spawnkit.ProcessRaisedException) as info:
                spawnkit.spawn(
                    t.raise_exploding, args=(kind,), backend=backend, **self.backend_options
                )
            assert info.value.exception is None
            assert info.value.remote_traceback.rstrip().endswith(f"ExplodingError: {kind}")

    # -- a rank stopped while its own error is on the way ----------------------------------

    @posix_only
    @local_process("SIGTERM in the worker")
    def test_an_error_raised_just_before_terminate_is_still_reported(
        self, backend: str, tmp_path: Path
    ) -> None:
        ctx = spawnkit.spawn(
            t.raise_reported_after_the_stop,
            args=(str(tmp_path), False),
            nprocs=2,
            join=False,
            backend=backend,
            **self.backend_options,
        )
        wait_for_files(tmp_path / "raised")
        ctx.terminate(grace_period=30)
        with pytest.raises(spawnkit.ProcessRaisedException) as info:
            ctx.join()
        assert info.value.error_index == 0
        assert isinstance(info.value.exception, t.ReportedAfterTheStopError)
        assert [f.error_index for f in info.value.failures] == [0]

    @posix_only
    @local_process("SIGTERM in the worker")
    def test_an_error_raised_just_before_a_siblings_failure_stops_it_is_kept(
        self, backend: str, tmp_path: Path
    ) -> None:
        with pytest.raises(spawnkit.ProcessRaisedException) as info:
            spawnkit.spawn(
                t.raise_reported_after_the_stop,
                args=(str(tmp_path), True),
                nprocs=2,
                backend=backend,
                **self.backend_options,
                grace_period=30,
            )
        assert sorted(f.error_index for f in info.value.failures) == [0, 1]

    # -- signals -------------------------------------------------------------------------

    @posix_only
    @local_process("SIGTERM in the worker")
    def test_sigterm_right_after_the_start_reaches_every_ranks_main_thread(
        self, backend: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        # Stopped at once, every rank must end on SIGTERM: one whose SIGTERM landed on a
        # helper thread would sleep on in signal.pause() until the SIGKILL. A few jobs: more,
        # to find a rarer race, is tools/stress's work.
        caplog.set_level(logging.WARNING, logger="spawnkit")
        for _ in range(3):
            ctx = spawnkit.spawn(
                t.block, nprocs=4, join=False, backend=backend, **self.backend_options
            )
            ctx.terminate(grace_period=30)
        forced = [r.getMessage() for r in caplog.records if "SIGKILL" in r.getMessage()]
        assert forced == []

    @part("starting and results")
    @posix_only
    def test_sigpipe_at_its_default_does_not_kill_the_parent(self, backend: str) -> None:
        if not _pickles(backend):
            pytest.skip(f"{backend!r} hands the arguments over in memory: nothing to write")
        # A big argument goes down a pipe while the worker reads it; the worker is
        # killed before it has read it all.
        out = _run_script(
            f"""
            import signal, spawnkit
            from spawnkit.testing import _targets as t
            if __name__ == "__main__":
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                for _ in range(3):
                    ctx = spawnkit.spawn(t.big_payload, args=(b"x" * (16 << 20),), nprocs=2,
                                         join=False, {self._backend_source(backend)})
                    ctx.terminate(grace_period=0)
                print("alive")
            """
        )
        assert out.strip() == "alive"

    @posix_only
    @local_process("SIGTERM in the worker")
    def test_a_signal_during_the_stop_after_a_failure_takes_its_course(
        self, backend: str, tmp_path: Path
    ) -> None:
        out = _run_script(
            f"""
            import os, spawnkit
            from spawnkit.testing import _targets as t

            if __name__ == "__main__":
                try:
                    spawnkit.spawn(t.fail_while_sibling_lingers,
                                   args=({str(tmp_path)!r}, os.getpid()),
                                   nprocs=2, {self._backend_source(backend)}, grace_period=1)
                except KeyboardInterrupt as exc:
                    print("interrupted after", type(exc.__cause__).__name__)
                except spawnkit.ProcessException:
                    print("the signal was lost")
            """
        )
        assert out.strip() == "interrupted after ProcessRaisedException", out

    # -- process groups ------------------------------------------------------------------

    @part("stopping")
    @posix_only
    @forks_beside_threads
    @pytest.mark.parametrize("ignore_sigterm", [False, True], ids=["obeys", "ignores-sigterm"])
    def test_a_successful_rank_leaves_no_grandchild(
        self, backend: str, tmp_path: Path, ignore_sigterm: bool
    ) -> None:
        got = spawnkit.spawn(
            t.leave_grandchild_and_return,
            args=(str(tmp_path), ignore_sigterm),
            nprocs=2,
            backend=backend,
            **self.backend_options,
            grace_period=1,
        )
        assert got == [0, 1]
        grandchildren = [int((tmp_path / f"{r}.grandchild").read_text()) for r in range(2)]
        assert wait_gone(grandchildren, timeout=10) == set()

    # -- descriptors ---------------------------------------------------------------------

    @posix_only
    @pytest.mark.parametrize("watch_name", ["pidfd", "pipe", "auto"])
    @local_process("parent watches")
    def test_a_parent_with_stdin_closed(
        self, backend: str, watch_name: str, tmp_path: Path
    ) -> None:
        from .._registry import plugins

        watch = watch_name
        if watch != "auto" and plugins().watches[watch].unavailable:
            pytest.skip(f"watch {watch!r} cannot run here")
        script = tmp_path / "job.py"
        script.write_text(
            textwrap.dedent(
                f"""
                import spawnkit
                from spawnkit.testing import _targets as t
                if __name__ == "__main__":
                    print(spawnkit.spawn(t.times, args=(5,), nprocs=2, watch={watch!r},
                                         {self._backend_source(backend)}))
                """
            )
        )
        proc = subprocess.run(
            ["/bin/sh", "-c", f'exec "{sys.executable}" "{script}" <&-'],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "[0, 5]"

    # -- __main__ ------------------------------------------------------------------------

    @posix_only
    @local_process("the main module imported by each worker")
    def test_a_script_without_the_main_guard_fails_once_naming_it(
        self, backend: str, tmp_path: Path
    ) -> None:
        if not _fresh_interpreter(backend):
            pytest.skip(f"{backend!r} workers do not import the main script")
        script = tmp_path / "unguarded.py"
        script.write_text(
            textwrap.dedent(
                f"""
                import spawnkit

                def work(rank):
                    return rank

                print("starting", flush=True)
                spawnkit.spawn(work, nprocs=2, {self._backend_source(backend)})
                """
            )
        )
        proc = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=tmp_path,
            check=False,
        )
        assert proc.returncode != 0
        # The parent and each worker ran the script once; no worker started a job.
        assert proc.stdout.count("starting") <= 3, proc.stdout
        # The exception's own line (the job's report follows it, on Python 3.11+).
        raised = [line for line in proc.stderr.splitlines() if line.startswith("spawnkit.")]
        assert raised, proc.stderr[-3000:]
        assert 'if __name__ == "__main__":' in raised[-1], proc.stderr[-3000:]

    @part("starting and results")
    @posix_only
    def test_a_program_read_from_stdin(self, backend: str, tmp_path: Path) -> None:
        program = textwrap.dedent(
            f"""
            import spawnkit
            from spawnkit.testing import _targets as t

            def here(rank):
                return rank

            if __name__ == "__main__":
                print(spawnkit.spawn(t.times, args=(2,), nprocs=2, {self._backend_source(backend)}))
                try:
                    print(spawnkit.spawn(here, nprocs=2, {self._backend_source(backend)}))
                except spawnkit.NotPicklableError as exc:
                    print("refused:", exc)
            """
        )
        proc = subprocess.run(
            [sys.executable, "-"],
            input=program,
            capture_output=True,
            text=True,
            timeout=90,
            cwd=tmp_path,
            check=False,
        )
        if not _fresh_interpreter(backend):
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.splitlines() == ["[0, 2]", "[0, 1]"]
            return
        if proc.returncode != 0:
            # multiprocessing re-runs the main file in every worker: refused up front.
            assert "read from standard input" in proc.stderr, proc.stderr[-3000:]
            assert "'fork'" in proc.stderr
            return
        first, second = proc.stdout.splitlines()
        assert first == "[0, 2]"
        if _has_cloudpickle():
            assert second == "[0, 1]"  # sent by value
            return
        assert second.startswith("refused:")
        assert "standard input" in second
        assert "'fork'" in second

    @part("starting and results")
    @linux_only
    def test_fork_workers_hold_no_job_descriptor_yet_keep_the_programs_files(
        self, backend: str, tmp_path: Path
    ) -> None:
        if _pickles(backend):
            pytest.skip(f"{backend!r} workers start a new interpreter: they inherit nothing")
        # Another job's descriptors (its pidfds, its result pipe) are the parent's alone; a
        # file the program opened is the program's, and a fork child keeps it, as under
        # multiprocessing (a log file opened at import time, say).
        other = spawnkit.spawn(
            t.block, nprocs=1, join=False, backend=backend, **self.backend_options
        )
        theirs = {p.sentinel for p in other.processes}
        log = tmp_path / "program.log"
        mine = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            (seen,) = spawnkit.spawn(t.descriptors, backend=backend, **self.backend_options)
            assert spawnkit.spawn(
                t.write_to, args=(mine, "from a worker\n"), backend=backend, **self.backend_options
            )
        finally:
            os.close(mine)
            other.terminate()
        assert not theirs & set(seen), (theirs, seen)
        assert mine in seen
        assert log.read_text() == "from a worker\n"

    @posix_only
    @forks_beside_threads
    @local_process("process groups")
    def test_a_worker_may_stop_its_own_children(self, backend: str) -> None:
        # The worker's signal machinery stays the worker's: a child it forks and stops with
        # SIGTERM dies of it, and the worker goes on.
        assert spawnkit.spawn(
            t.stop_own_child, nprocs=2, backend=backend, **self.backend_options
        ) == [
            -signal.SIGTERM,
            -signal.SIGTERM,
        ]


class DropInTests(Checks):
    """What code written for ``torch.multiprocessing.spawn`` and ``multiprocessing`` expects."""

    @posix_only
    @local_process("descriptors in the arguments")
    def test_multiprocessing_objects_cross_into_the_workers(self, backend: str) -> None:
        import multiprocessing

        mp = multiprocessing.get_context("spawn")
        with mp.Manager() as manager:
            queue, event, lock = mp.SimpleQueue(), mp.Event(), mp.Lock()
            value, array = mp.Value("i", 0), mp.Array("i", 3)
            reader, writer = mp.Pipe(duplex=False)
            proxy = manager.dict()
            ctx = spawnkit.spawn(
                t.use_multiprocessing_objects,
                args=(queue, event, value, array, lock, writer, proxy),
                nprocs=3,
                join=False,
                backend=backend,
                **self.backend_options,
            )
            try:
                queued = sorted(queue.get() for _ in range(3))
                sent = sorted(reader.recv() for _ in range(3))
                event.set()
                assert ctx.results() == [0, 1, 2]
            finally:
                ctx.terminate()
            assert queued == [("queued", 0), ("queued", 1), ("queued", 2)]
            assert sent == [0, 1, 2]
            assert value.value == 1 + 2 + 3
            assert array[:] == [0, 10, 20]
            assert dict(proxy) == {r: f"rank {r}" for r in range(3)}

    @posix_only
    @local_process("descriptors in the arguments")  # the tracker's travels as theirs do
    def test_shared_memory_outlives_the_ranks_that_use_it(self, backend: str) -> None:
        from multiprocessing import resource_tracker, shared_memory

        segment = shared_memory.SharedMemory(create=True, size=8)
        made: list[str] = []
        try:
            got = spawnkit.spawn(
                t.use_shared_memory,
                args=(segment,),
                nprocs=2,
                backend=backend,
                **self.backend_options,
            )
            made = [name for name, _ in got]
            # A rank's own tracker would unlink what the rank used once the rank ended.
            ours = resource_tracker._resource_tracker._pid  # type: ignore[attr-defined]
            assert {tracker for _, tracker in got} <= {None, ours}
            assert _read_shared_memory(segment.name, 2) == bytes([1, 2])
            assert [_read_shared_memory(name, 1) for name in made] == [bytes([100]), bytes([101])]
        finally:
            for name in [segment.name, *made]:
                _unlink_shared_memory(name)
            segment.close()

    @part("starting and results")
    def test_reducers_registered_with_forking_pickler_apply_both_ways(self, backend: str) -> None:
        from multiprocessing.reduction import ForkingPickler

        ForkingPickler.register(t.Reduced, t.reduce_reduced)
        try:
            got = spawnkit.spawn(
                t.bounce_reduced,
                args=(t.Reduced(10),),
                nprocs=2,
                backend=backend,
                **self.backend_options,
            )
        finally:
            ForkingPickler._extra_reducers.pop(t.Reduced, None)  # type: ignore[attr-defined]
        assert [g.value for g in got] == [10, 11]
        for g in got:
            if _pickles(backend):
                # Into the worker through the reducer, back through it again.
                assert g.via[0].startswith("rebuilt in ")
                assert g.via[-1] == f"rebuilt in {os.getpid()}"
            else:  # a fork worker had the object in memory; only the way back is pickled
                assert g.via[-1] == f"rebuilt in {os.getpid()}"

    @part("starting and results")
    def test_lambdas_and_closures_run_when_cloudpickle_is_installed(self, backend: str) -> None:
        pytest.importorskip("cloudpickle", reason="the cloudpickle extra is not installed")
        scale = 3

        def closure(rank: int) -> int:
            return rank * scale

        assert spawnkit.spawn(closure, nprocs=2, backend=backend, **self.backend_options) == [0, 3]
        assert spawnkit.spawn(
            lambda rank: rank + 1, nprocs=2, backend=backend, **self.backend_options
        ) == [1, 2]

    @part("starting and results")
    def test_functions_of_a_program_without_a_file_run_with_cloudpickle(
        self, backend: str, tmp_path: Path
    ) -> None:
        pytest.importorskip("cloudpickle", reason="the cloudpickle extra is not installed")
        out = _run_script(
            f"""
            import spawnkit

            def here(rank):
                return rank * 5

            if __name__ == "__main__":
                print(spawnkit.spawn(here, nprocs=2, {self._backend_source(backend)}))
            """
        )
        assert out.strip() == "[0, 5]"

    @posix_only
    @local_process("pids and sentinels")
    def test_processes_behave_like_multiprocessing_processes(self, backend: str) -> None:
        ctx = spawnkit.spawn(
            t.finish_unless,
            args=(1,),
            nprocs=2,
            join=False,
            backend=backend,
            **self.backend_options,
        )
        try:
            first, second = ctx.processes
            first.join(timeout=60)  # rank 0 returns at once
            assert first.exitcode == 0
            assert not first.is_alive()
            assert second.is_alive()
            assert second.exitcode is None
            second.join(timeout=0.05)  # still running: returns after the timeout
            assert second.is_alive()
            assert [p.pid for p in ctx.processes] == ctx.pids()
            assert [p.name for p in ctx.processes] == ["spawnkit-rank-0", "spawnkit-rank-1"]
            assert all(p.daemon is False for p in ctx.processes)
            assert isinstance(second.sentinel, int)
            second.terminate()
            second.join(timeout=60)
            assert second.exitcode == -signal.SIGTERM
            assert not second.is_alive()
        finally:
            ctx.terminate()
        # A rank stopped through its process is a failure, as under torch.
        with pytest.raises(spawnkit.ProcessExitedException, match="signal SIGTERM"):
            ctx.join()
        assert not any(p.is_alive() for p in ctx.processes)  # still answers after the job

    @posix_only
    @local_process("pids and signals")
    def test_kill_through_the_process_view(self, backend: str, tmp_path: Path) -> None:
        ctx = spawnkit.spawn(
            t.note_sigterm_and_block, args=(str(tmp_path),), join=False, backend=backend
        )
        try:
            wait_for_files(tmp_path / "0.ready")
            (process,) = ctx.processes
            process.kill()
            process.join(timeout=60)
            assert process.exitcode == -int(getattr(signal, "SIGKILL", 9))
        finally:
            ctx.terminate()
        with pytest.raises(spawnkit.ProcessExitedException, match="signal SIGKILL"):
            ctx.join()


def _read_shared_memory(name: str, size: int) -> bytes:
    """The first ``size`` bytes of segment ``name``; ``FileNotFoundError`` once it is unlinked."""
    from multiprocessing import shared_memory

    segment = shared_memory.SharedMemory(name=name)
    try:
        return bytes(segment.buf[:size])
    finally:
        segment.close()


def _unlink_shared_memory(name: str) -> None:
    from multiprocessing import shared_memory

    try:
        segment = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return
    segment.close()
    segment.unlink()
