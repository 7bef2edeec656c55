"""Notebooks: parameter cells parse into their dataclasses; every parameter file is valid; the
quickstart runs end to end through papermill at smoke scale."""
import ast
import json
from dataclasses import fields

import nbformat
import pytest

from workbench.cli import main
from workbench.config import load_yaml, parse
from workbench.recipes import (SCALES, available, notebook_cell, notebook_defaults, notebook_path, parameters_cell,
                               params_class, params_file)


def _param_cell(name):
    nb = nbformat.read(notebook_path(name), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}: exactly one cell tagged 'parameters'"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    return cells[0]


@pytest.mark.parametrize("name", available())
def test_parameters_cell_matches_dataclass(name):
    cell = _param_cell(name)
    tree = ast.parse(cell.source)
    values = {}
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign), f"{name}: parameters must be annotated assignments"
        values[node.target.id] = ast.literal_eval(node.value)   # literals only: no derived values
    cls = params_class(name)
    assert set(values) == {f.name for f in fields(cls)}
    for line in cell.source.splitlines():
        assert "#" in line, f"{name}: every parameter has a comment: {line!r}"
    parse(cls, values)
    # papermill's own reader (what `papermill --help-notebook` and JupyterLab extensions show) sees every
    # parameter with its help text; it skips a line it cannot parse (e.g. a comment holding "=")
    import papermill
    seen = papermill.inspect_notebook(str(notebook_path(name)))
    assert set(seen) == set(values), f"{name}: papermill cannot read {set(values) - set(seen)}"
    assert all(p["help"] for p in seen.values())


@pytest.mark.parametrize("name", available())
def test_every_recipe_has_the_one_shape(name):
    """Params (a RecipeParams), CLAIM, PAPER_RESULT, run(P) -> Result, summary(P, result) -> Summary,
    write_summary(P, result); the notebook calls them and builds no summary of its own."""
    import dataclasses
    import inspect

    from workbench.recipes import RecipeParams, recipe
    mod = recipe(name)
    assert issubclass(mod.Params, RecipeParams) and mod.Params.__dataclass_params__.frozen
    assert isinstance(mod.CLAIM, str) and mod.CLAIM and isinstance(mod.PAPER_RESULT, str)
    assert dataclasses.is_dataclass(mod.Result)
    for fn in ("run", "summary", "write_summary"):
        assert list(inspect.signature(getattr(mod, fn)).parameters)[:1] == ["P"], fn
    src = nbformat.read(notebook_path(name), as_version=4)
    code = [c.source for c in src.cells if c.cell_type == "code"]
    assert any("recipe.run(P" in c for c in code), f"{name}: the notebook does not call recipe.run(P)"
    assert "recipe.write_summary(P, result)" in code[-1], f"{name}: the last cell must write the summary"
    assert not any("summary.json" in c for c in code[1:]), f"{name}: the notebook writes summary.json itself"


@pytest.mark.parametrize("name", available())
def test_parameters_cell_is_the_generated_one(name):
    """The dataclass is the one source: the cell must equal what ``python -m workbench.recipes`` writes
    (the dataclass with the smoke values, so a first Run All takes about a minute)."""
    assert 'scale: str = "smoke"' in _param_cell(name).source
    assert _param_cell(name).source == notebook_cell(name), \
        f"{name}: the parameters cell differs from its Params; run `python -m workbench.recipes`"


def test_generated_cell_carries_types_defaults_and_comments():
    from dataclasses import dataclass

    from workbench.recipes import RecipeParams

    @dataclass(frozen=True)
    class P(RecipeParams):
        out_dir: str = "runs/x"             # where it goes
        names: tuple = ("a", "b")           # two names
        rate: float = 0.5                   # a share in [0, 1]

    assert parameters_cell(P).splitlines() == [
        'scale: str = "tiny"        # smoke | tiny | cpu | small | paper',
        'out_dir: str = "runs/x"    # where it goes',
        'seed: int = 0              # seeds model init, data order, masking and sampling',
        'names: tuple = ("a", "b")  # two names',
        'rate: float = 0.5          # a share in [0, 1]']


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("scale", SCALES)
def test_parameter_files_valid(name, scale):
    raw = load_yaml(params_file(name, scale))
    parse(params_class(name), {**raw, "scale": scale})


def test_notebook_params_scale_selects_yaml_and_changes_win(tmp_path, monkeypatch):
    """In a notebook, `scale` selects papers/NAME/SCALE.yaml; a value changed in the cell wins; run from
    notebooks/, a relative out_dir lands in the repository's runs/; under reproduce the values are exact."""
    from workbench.recipes import EXACT_ENV, notebook_params, repo_root
    monkeypatch.delenv(EXACT_ENV, raising=False)
    shown = notebook_defaults("ingenious")
    tiny = load_yaml(params_file("ingenious", "tiny"))
    P = notebook_params("ingenious", {**shown, "scale": "tiny"})
    assert P.scale == "tiny" and P.max_steps == tiny["max_steps"] != shown["max_steps"]
    P = notebook_params("ingenious", {**shown, "scale": "tiny", "max_steps": 77})
    assert P.max_steps == 77 and P.partitions == tiny["partitions"]
    assert notebook_params("ingenious", shown).max_steps == shown["max_steps"]        # smoke as shown
    monkeypatch.chdir(repo_root() / "notebooks")
    monkeypatch.delenv("WORKBENCH_CACHE", raising=False)
    P = notebook_params("ingenious", shown)
    assert P.out_dir == str(repo_root() / shown["out_dir"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(EXACT_ENV, "1")
    P = notebook_params("ingenious", {**shown, "scale": "tiny"})                     # taken as given
    assert P.scale == "tiny" and P.max_steps == shown["max_steps"] and P.out_dir == shown["out_dir"]


def test_quickstart_smoke_through_papermill(tmp_path, capsys):
    assert main(["reproduce", "quickstart", "--scale", "smoke", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "quickstart" / "summary.json").read_text())
    assert set(s) >= {"paper", "scale", "claim", "metric", "baseline", "method", "extra", "wall_s"}
    assert s["scale"] == "smoke" and s["method"]["value"] < s["baseline"]["value"]
    nb = nbformat.read(tmp_path / "quickstart" / "quickstart.ipynb", as_version=4)
    assert any(o.get("data", {}).get("application/vnd.plotly.v1+json") for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
    assert "quickstart" in capsys.readouterr().out


def test_reproduce_rejects_bad_input(capsys):
    assert main(["reproduce", "quickstart", "--scale", "smoke", "-p", "bogus=1"]) == 2
    assert "unknown parameter" in capsys.readouterr().err
    assert main(["reproduce", "nope", "--scale", "smoke"]) == 2
    assert main(["reproduce", "quickstart", "--scale", "huge"]) == 2
