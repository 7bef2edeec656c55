"""``reproduce NAME|all``: execute paper notebooks with papermill and collect their summaries.

Parameters come from ``papers/NAME/<scale>.yaml`` plus ``-p key=value`` overrides, validated against
the notebook's dataclass first. Each notebook runs into ``OUT/NAME/``: the executed notebook
``NAME.ipynb`` (outputs and widget state kept), its ``summary.json`` and the run directories it made.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from .config import load_yaml, parse
from .errors import ConfigError, WorkbenchError
from .notebooks import SCALES, available, notebook_path, params_class, params_file


class NotebookError(WorkbenchError):
    """A notebook failed while executing."""


def resolve_params(name: str, scale: str, overrides: dict, out_dir: Path) -> dict:
    """The validated parameters for ``name`` at ``scale``, as plain values for papermill."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    cls = params_class(name)
    pf = params_file(name, scale)
    if not pf.exists():
        raise ConfigError(f"no parameter file {pf.relative_to(pf.parents[2])} for {name} at scale {scale}")
    raw = {**load_yaml(pf), **overrides, "scale": scale, "out_dir": str(out_dir)}
    p = parse(cls, raw)
    given = set(raw)
    return {f.name: getattr(p, f.name) for f in fields(cls) if f.name in given}


def run_notebook(name: str, scale: str, out: str | Path, overrides: dict | None = None) -> dict:
    """Execute ``notebooks/NAME.ipynb`` into ``OUT/NAME/``; returns its summary dict."""
    import papermill as pm
    out_dir = (Path(out) / name).resolve()
    params = resolve_params(name, scale, dict(overrides or {}), out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output directory {out_dir}: {e.strerror}") from None
    (out_dir / "summary.json").unlink(missing_ok=True)
    env_path = os.path.dirname(sys.executable)
    os.environ["PATH"] = env_path + os.pathsep + os.environ.get("PATH", "")   # the kernel is this python
    os.environ.setdefault("WORKBENCH_CACHE", str(Path.cwd().resolve() / "runs" / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(notebook_path(name)), str(out_dir / f"{name}.ipynb"), parameters=params,
                            kernel_name="python3", progress_bar=sys.stderr.isatty(), log_output=False,
                            cwd=str(Path.cwd()))
    except pm.PapermillExecutionError as e:
        raise NotebookError(f"notebook {name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}"
                            f" (see {out_dir / (name + '.ipynb')})") from None
    wall = time.perf_counter() - t0
    sp = out_dir / "summary.json"
    if not sp.exists():
        raise NotebookError(f"notebook {name} finished without writing {sp}")
    s = json.loads(sp.read_text())
    s.setdefault("notebook_wall_s", wall)
    return s


def print_table(df) -> None:
    if df is None or len(df) == 0:
        print("(no runs)")
        return
    import pandas as pd
    with pd.option_context("display.max_columns", 20, "display.width", 160, "display.max_colwidth", 40):
        print(df.to_string(index=False))


def summary_row(s: dict) -> dict:
    b, m = s.get("baseline") or {}, s.get("method") or {}
    bv, mv = b.get("value"), m.get("value")
    ratio = (mv / bv) if isinstance(bv, (int, float)) and isinstance(mv, (int, float)) and bv else None
    return {"paper": s.get("paper"), "scale": s.get("scale"), "claim": (s.get("claim") or "")[:60],
            "metric": s.get("metric"), "baseline": f"{b.get('name')}={_fmt(bv)}",
            "method": f"{m.get('name')}={_fmt(mv)}", "ratio": _fmt(ratio), "wall_s": _fmt(s.get("wall_s"))}


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


def reproduce(name: str, scale: str, out: str | Path, overrides: dict | None = None) -> list[dict]:
    """Run one notebook or ``all`` of them; print the comparison table; return the summaries."""
    import pandas as pd
    names = available() if name == "all" else [name]
    if name != "all":
        params_class(name)  # unknown names fail here
        if not notebook_path(name).exists():
            raise ConfigError(f"notebook {name!r} does not exist yet")
    for n in names:  # validate everything before running anything
        resolve_params(n, scale, dict(overrides or {}), Path(out) / n)
    summaries = []
    for k, n in enumerate(names, 1):
        print(f"[{k}/{len(names)}] {n} ({scale}) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        s = run_notebook(n, scale, out, overrides)
        print(f"[{k}/{len(names)}] {n} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        summaries.append(s)
    print_table(pd.DataFrame([summary_row(s) for s in summaries]))
    return summaries
