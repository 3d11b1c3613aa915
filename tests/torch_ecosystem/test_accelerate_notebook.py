"""accelerate's notebook_launcher and debug_launcher in a real Jupyter kernel, on spawnkit.

notebook_launcher goes through torch.distributed.elastic (elastic_launch, its agent, its
MultiprocessContext, which calls torch.multiprocessing.start_processes); debug_launcher calls
start_processes itself. Both ask for fork: the functions live in the notebook's cells. A
failure must come out as it does under torch: elastic's ChildFailedError from
notebook_launcher, torch's ProcessRaisedException from debug_launcher (tox -e torch).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="tox -e torch installs torch's CPU build")
pytest.importorskip("accelerate", reason="tox -e torch installs accelerate")
nbformat = pytest.importorskip("nbformat", reason="tox -e torch installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="tox -e torch installs nbclient")
pytest.importorskip("ipykernel", reason="tox -e torch installs ipykernel")

SETUP = """\
import json, os, socket
import spawnkit
from accelerate import debug_launcher, notebook_launcher
switch = spawnkit.use_for_torch(grace_period=2)

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])

def train(out_dir):
    import torch
    from accelerate import Accelerator
    accelerator = Accelerator(cpu=True)
    total = accelerator.reduce(torch.tensor([accelerator.process_index + 1.0]), "sum")
    # spawnkit's ranks lead their own process group; torch's do not.
    record = {"total": float(total), "group_leader": os.getpgrp() == os.getpid()}
    with open(os.path.join(out_dir, f"rank{accelerator.process_index}"), "w") as f:
        json.dump(record, f)

def fail(out_dir):
    if int(os.environ["RANK"]) == 1:
        raise ValueError("rank 1 fails in the notebook")

def report(call):
    import torch.multiprocessing as mp
    try:
        call()
        print("ok")
    except mp.ProcessRaisedException as exc:  # what accelerate's own callers catch
        print("raised torch's ProcessRaisedException, rank", exc.error_index)
    except BaseException as exc:
        print("raised", type(exc).__module__, type(exc).__name__)
"""


def _cells(out_dir: Path) -> list[str]:
    notebook_dir, debug_dir = out_dir / "notebook", out_dir / "debug"
    return [
        SETUP,
        f"report(lambda: notebook_launcher(train, args=({str(notebook_dir)!r},), "
        "num_processes=2, use_port=free_port()))",
        "report(lambda: notebook_launcher(fail, args=('',), num_processes=2, "
        "use_port=free_port()))",
        f"report(lambda: debug_launcher(train, args=({str(debug_dir)!r},), num_processes=2))",
        "report(lambda: debug_launcher(fail, args=('',), num_processes=2))",
        "switch.undo()\nimport torch.multiprocessing as mp\nprint(mp.start_processes.__module__)",
        # The ranks are the kernel's children, out of the suite's sight: none may be left.
        "tasks = os.listdir('/proc/self/task')\n"
        "print('children:', [c for t in tasks for c in "
        "open(f'/proc/self/task/{t}/children').read().split()])",
    ]


def _last_line(cell: dict) -> str:  # type: ignore[type-arg]
    text = "".join(o.get("text", "") for o in cell["outputs"] if o["output_type"] == "stream")
    errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
    assert not errors, errors
    return text.strip().splitlines()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.timeout(300)
def test_accelerate_launchers_run_on_spawnkit_in_a_notebook(tmp_path: Path) -> None:
    for sub in ("notebook", "debug"):
        (tmp_path / sub).mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in _cells(tmp_path)]
    client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3")
    client.execute(cwd=str(tmp_path))
    outcomes = [_last_line(cell) for cell in notebook.cells[1:]]
    assert outcomes == [
        "ok",
        "raised torch.distributed.elastic.multiprocessing.errors ChildFailedError",
        "ok",
        "raised torch's ProcessRaisedException, rank 1",
        "torch.multiprocessing.spawn",
        "children: []",
    ]
    for sub in ("notebook", "debug"):
        records = [json.loads((tmp_path / sub / f"rank{r}").read_text()) for r in range(2)]
        assert records == [{"total": 3.0, "group_leader": True}] * 2, sub
