"""visualization.ipynb runs end to end and draws its figures: on the small fixture model, and
offline without the paper's weights, where it falls back to the learnt model."""
from __future__ import annotations

import json
import os
import sys

import nbclient
import nbformat
import pytest

from tests.helpers import GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS, ROOT

NOTEBOOK = ROOT / "visualization.ipynb"
KERNEL_NAME = "agcam-test"


def _kernel_in_this_interpreter(tmp_path, monkeypatch) -> None:
    """A kernel spec running ``sys.executable``, found first through ``JUPYTER_PATH``: the kernel
    imports the packages of the environment running the tests, whatever kernels are installed."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "agcam tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["fixture", "offline"])
def test_notebook_runs_and_draws_figures(tmp_path, monkeypatch, model):
    _kernel_in_this_interpreter(tmp_path, monkeypatch)
    if model == "fixture":
        monkeypatch.setenv("AGCAM_MODEL", GOLDEN_MODEL_NAME)
        monkeypatch.setenv("AGCAM_CHECKPOINT", str(GOLDEN_WEIGHTS))
    else:  # the paper's weights cannot be had: the learnt model
        monkeypatch.delenv("AGCAM_MODEL", raising=False)
        monkeypatch.delenv("AGCAM_CHECKPOINT", raising=False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=600,
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError naming the cell on any error

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code_cells:
        assert cell.execution_count is not None, f"cell did not run: {cell.source[:60]}"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{cell.source[:60]}: {errors}"
    figures = {c.id: sum("image/png" in o.get("data", {}) for o in c.outputs)
               for c in code_cells}
    if model == "fixture":
        samples = len(list((ROOT / "samples" / "ILSVRC" / "Annotations" / "CLS-LOC" / "val")
                           .glob("*.xml")))
    else:
        model_cell = next(c for c in code_cells if c.id == "model")
        printed = "".join(o.get("text", "") for o in model_cell.outputs)
        assert "using the learnt model vit_agcam_learnt" in printed, printed
        samples = 4      # one held-out image in 40
    assert figures["samples"] == samples, figures
    assert figures["class-specific"] == 1, figures
    # every registered method is shown, the paper's three first
    from agcam import available_methods
    methods_cell = next(c for c in code_cells if c.id == "methods")
    printed = "".join(o.get("text", "") for o in methods_cell.outputs).strip()
    shown = printed.split("methods: ", 1)[1].split(", ")
    assert shown[:3] == ["agcam", "lrp", "rollout"]
    assert sorted(shown) == sorted(available_methods())
