"""examples/like_x.ipynb runs top to bottom, so it never rots."""

import os
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).parents[1]
NOTEBOOK = ROOT / "examples" / "like_x.ipynb"


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    # the kernel imports this checkout's likex, whatever an installed one says
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "896 of 50257 tokens" in text and "loss " in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "<mark>" in html  # x-tokens highlighted in the sample after training
    assert (tmp_path / "runs" / "notebook" / "model.safetensors").is_file()
