"""A real notebook runs a job: cells define the function, a cell spawns it (tox -e notebook).

Functions defined in a notebook live in a ``__main__`` that a new interpreter cannot import;
with the cloudpickle extra they travel by value.
"""

from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook env installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the notebook env installs nbclient")
pytest.importorskip("ipykernel", reason="the notebook env installs ipykernel")

CELLS = [
    "import spawnkit",
    "OFFSET = 100\n\ndef work(rank, scale):\n    return OFFSET + rank * scale",
    'print(spawnkit.spawn(work, args=(10,), nprocs=2, backend="spawn"))',
    'print(spawnkit.spawn(lambda rank: rank + 1, nprocs=2, backend="subprocess"))',
    "try:\n"
    '    spawnkit.spawn(work, args=("x",), nprocs=2, backend="spawn")\n'
    "except spawnkit.ProcessRaisedException as exc:\n"
    "    print('failed:', type(exc.exception).__name__)",
]


def _outputs(cell: dict) -> str:  # type: ignore[type-arg]
    return "".join(o.get("text", "") for o in cell["outputs"] if o["output_type"] == "stream")


@pytest.mark.timeout(300)
def test_a_notebook_spawns_functions_defined_in_its_cells(tmp_path: object) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3")
    client.execute(cwd=str(tmp_path))
    assert _outputs(notebook.cells[2]).strip() == "[100, 110]"
    assert _outputs(notebook.cells[3]).strip() == "[1, 2]"
    assert "failed: TypeError" in _outputs(notebook.cells[4]).splitlines()
