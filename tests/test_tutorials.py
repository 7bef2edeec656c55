"""The tutorials (notebooks/tutorials/*.ipynb) run top to bottom through papermill.

Each runs with smaller parameters than its defaults (its tagged parameters cell), so the four
together stay around a minute of compute; the notebooks check their own claims inline (e.g. the
hand-written greedy equals ``facility_location``), so a failed assert fails the test.
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "notebooks" / "tutorials"
FAST = {
    "01_facility_location": {"n": 240, "budget": 10, "duplicates": 40},
    "02_reducible_loss": {"n_train": 800, "steps": 120},
    "03_growth_operators": {"ligo_steps": 6},
    "04_time_schedules": {"budget_s": 3.0},
}


def test_every_tutorial_has_fast_parameters():
    assert sorted(p.stem for p in TUTORIALS.glob("*.ipynb")) == sorted(FAST)


@pytest.mark.parametrize("name", sorted(FAST))
def test_tutorial_runs(name, tmp_path):
    import papermill as pm
    src = TUTORIALS / f"{name}.ipynb"
    nb = nbformat.read(src, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and all(f"{k}:" in params[0].source for k in FAST[name])
    out = tmp_path / f"{name}.ipynb"
    pm.execute_notebook(str(src), str(out), parameters=FAST[name], kernel_name="python3", progress_bar=False,
                        cwd=str(TUTORIALS.parents[1]))
    done = json.loads(out.read_text())
    outputs = [o for c in done["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs)
