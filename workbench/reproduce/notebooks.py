"""``reproduce NAME|all``: execute paper notebooks with papermill and collect their summaries.

Parameters come from ``papers/NAME/<scale>.yaml`` plus ``-p key=value`` overrides, validated against
the notebook's dataclass first (every notebook's, before the first kernel starts). Each notebook
runs into ``OUT/NAME/``: the executed notebook ``NAME.ipynb`` (outputs and widget state kept), its
``summary.json`` and the run directories it made. Then:

* a comparison table on stdout -- paper, the claim tested, what the paper itself reported, the
  metric, baseline and method values, their ratio, and the notebook's wall time;
* ``OUT/report.html`` -- one self-contained page (plotly.js inline, no network) with each paper's
  headline figure, numbers and a link to its executed notebook (:mod:`workbench.reproduce.report`).

Progress goes to stderr while it runs: a line when a notebook starts and ends, a line for every
cell that took more than a few seconds, and every ``heartbeat`` seconds inside a long cell the
time spent so far and the last line that cell printed. With ``all``, a notebook that fails is
reported (its partly executed notebook is kept) and the others still run; the command then exits
with an error naming the failures.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

from ..config import load_yaml, parse
from ..errors import ConfigError, RunError, WorkbenchError
from ..recipes import SCALES, available, notebook_path, params_class, params_file
from ..runs import atomic_write, dumps
from .report import write_report
from .table import fmt_seconds, print_table, summary_row


class NotebookError(WorkbenchError):
    """A notebook failed while executing."""


def resolve_params(name: str, scale: str, overrides: dict, out_dir: Path) -> dict:
    """The validated parameters for ``name`` at ``scale``, as plain values for papermill."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    for key, flag in (("scale", "--scale"), ("out_dir", "--out")):
        if key in overrides:   # they would be silently replaced below
            raise ConfigError(f"parameter {key!r} is set with {flag}, not with -p")
    cls = params_class(name)
    pf = params_file(name, scale)
    if not pf.exists():
        raise ConfigError(f"no parameter file {pf.relative_to(pf.parents[2])} for {name} at scale {scale}")
    raw = {**load_yaml(pf), **overrides, "scale": scale, "out_dir": str(out_dir)}
    p = parse(cls, raw)
    given = set(raw)
    return {f.name: getattr(p, f.name) for f in fields(cls) if f.name in given}


# ------------------------------------------------------------------------------------- progress
def _last_line(cell) -> str:
    """The last non-empty line a cell printed so far (after the last carriage return: tqdm bars)."""
    for out in reversed(cell.get("outputs", [])):
        if out.get("output_type") == "stream":
            text = out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            for line in reversed(text.replace("\r\n", "\n").split("\n")):
                line = line.split("\r")[-1].strip()
                if line:
                    return line[:100]
    return ""


class CellProgress:
    """Prints a notebook's progress, one line at a time, to ``stream``.

    Hooks papermill's cell_start / cell_complete: a line per code cell slower than ``min_cell_s``
    and, while a cell runs, a heartbeat line every ``heartbeat`` seconds. Lines, not a redrawn bar,
    so the output reads the same in a terminal, a CI log or a file.
    """

    def __init__(self, label: str, stream=None, heartbeat: float = 30.0, min_cell_s: float = 3.0):
        self.label, self.stream, self.heartbeat, self.min_cell_s = label, stream or sys.stderr, heartbeat, min_cell_s
        self.t0 = time.perf_counter()
        self.cell = None
        self.cell_t0 = 0.0
        self.index = 0
        self.total = 0
        self._stop = threading.Event()
        self._thread = None

    def say(self, msg: str) -> None:
        print(f"  {self.label} {fmt_seconds(time.perf_counter() - self.t0):>6}  {msg}", file=self.stream, flush=True)

    def attach(self, nb_man) -> None:
        code = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
        self.total, self._code = len(code), {i: k + 1 for k, i in enumerate(code)}
        start, complete = nb_man.cell_start, nb_man.cell_complete

        def cell_start(cell, cell_index=None, **kw):
            self.cell, self.cell_t0 = cell, time.perf_counter()
            self.index = self._code.get(cell_index, 0)
            return start(cell, cell_index, **kw)

        def cell_complete(cell, cell_index=None, **kw):
            dt = time.perf_counter() - self.cell_t0
            self.cell = None
            if cell.cell_type == "code" and dt >= self.min_cell_s:
                last = _last_line(cell)
                self.say(f"cell {self.index}/{self.total} done in {fmt_seconds(dt)}" + (f" | {last}" if last else ""))
            return complete(cell, cell_index, **kw)

        nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            cell = self.cell
            if cell is not None and cell.cell_type == "code":
                last = _last_line(cell)
                self.say(f"cell {self.index}/{self.total} running for {fmt_seconds(time.perf_counter() - self.cell_t0)}"
                         + (f" | {last}" if last else ""))

    def close(self) -> None:
        self._stop.set()


def _engine():
    """A papermill engine: nbclient's, with :class:`CellProgress` attached (registered once)."""
    from papermill.engines import NBClientEngine, papermill_engines

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, wb_progress=None, **kwargs):
            if wb_progress is not None:
                wb_progress.attach(nb_man)
            try:
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
            finally:
                if wb_progress is not None:
                    wb_progress.close()

    if "workbench" not in papermill_engines._engines:
        papermill_engines.register("workbench", ProgressEngine)
    return "workbench"


# ------------------------------------------------------------------------------------- running
def run_notebook(name: str, scale: str, out: str | Path, overrides: dict | None = None,
                 progress: bool = True, heartbeat: float = 30.0) -> dict:
    """Execute ``notebooks/NAME.ipynb`` into ``OUT/NAME/``; returns its summary dict, with
    ``notebook_wall_s`` (kernel start to last cell) added."""
    import papermill as pm
    out_dir = (Path(out) / name).resolve()
    params = resolve_params(name, scale, dict(overrides or {}), out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create output directory {out_dir}: {e.strerror}") from None
    (out_dir / "summary.json").unlink(missing_ok=True)
    env_path = os.path.dirname(sys.executable)
    os.environ["PATH"] = env_path + os.pathsep + os.environ.get("PATH", "")   # the kernel is this python
    os.environ.setdefault("WORKBENCH_CACHE", str(Path.cwd().resolve() / "runs" / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # OpenMP threads that spin while waiting for work starve each other when the cores are shared
    # (measured here: a bert-tiny step went from 0.2 s to 1-4 s with 2 threads on a busy 2-core
    # machine); passive waiting costs little when the machine is idle. Set it to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tracker = CellProgress(name, heartbeat=heartbeat) if progress else None
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(notebook_path(name)), str(out_dir / f"{name}.ipynb"), parameters=params,
                            kernel_name="python3", progress_bar=False, log_output=False, cwd=str(Path.cwd()),
                            engine_name=_engine(), wb_progress=tracker)
    except pm.PapermillExecutionError as e:
        raise NotebookError(f"notebook {name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}"
                            f" (see {out_dir / (name + '.ipynb')})") from None
    wall = time.perf_counter() - t0
    sp = out_dir / "summary.json"
    if not sp.exists():
        raise NotebookError(f"notebook {name} finished without writing {sp}")
    s = json.loads(sp.read_text())
    s["notebook_wall_s"] = wall
    atomic_write(sp, dumps(s))      # so the report and the cards see the wall time the user waited
    return s


def reproduce(name: str, scale: str, out: str | Path, overrides: dict | None = None, report: bool = True,
              progress: bool = True) -> list[dict]:
    """Run one notebook or ``all`` of them; print the comparison table, write ``OUT/report.html``;
    return the summaries (failed notebooks, under ``all``, as ``{"paper", "failed", ...}``)."""
    import pandas as pd
    names = available() if name == "all" else [name]
    if name != "all":
        params_class(name)  # unknown names fail here
        if not notebook_path(name).exists():
            raise ConfigError(f"notebook {name!r} does not exist yet")
    for n in names:  # validate everything before running anything
        resolve_params(n, scale, dict(overrides or {}), Path(out) / n)
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create output directory {out}: {e.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunError(f"output directory {out} is not writable")
    summaries, failed = [], []
    t_all = time.perf_counter()
    for k, n in enumerate(names, 1):
        print(f"[{k}/{len(names)}] {n} ({scale}) -> {Path(out) / n}/{n}.ipynb", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            s = run_notebook(n, scale, out, overrides, progress=progress)
        except NotebookError as e:
            if name != "all":
                raise
            failed.append(n)
            s = {"paper": n, "scale": scale, "failed": str(e), "notebook_wall_s": time.perf_counter() - t0}
            print(f"[{k}/{len(names)}] {n} FAILED after {fmt_seconds(time.perf_counter() - t0)}: {e}",
                  file=sys.stderr, flush=True)
        else:
            print(f"[{k}/{len(names)}] {n} done in {fmt_seconds(time.perf_counter() - t0)}", file=sys.stderr, flush=True)
        summaries.append(s)
    total = time.perf_counter() - t_all
    print_table(pd.DataFrame([summary_row(s) for s in summaries]))
    print(f"total wall time {fmt_seconds(total)} ({total:.0f}s) for {len(names)} notebook(s) at scale {scale}")
    if report:
        path = write_report(out, summaries, total_wall_s=total)
        print(f"report: {path}")
    if failed:
        raise NotebookError(f"{len(failed)} of {len(names)} notebooks failed: {', '.join(failed)} "
                            f"(their partly executed notebooks are in {out})")
    return summaries
