"""``reproduce NAME|all``: execute paper notebooks with papermill and collect their summaries.

Parameters come from ``papers/NAME/<scale>.yaml`` plus ``-p key=value`` overrides, validated against
the notebook's dataclass first (every notebook's, before the first kernel starts). Each notebook
runs into ``OUT/NAME/``: the executed notebook ``NAME.ipynb`` (every figure also a PNG, the live
widget views left to a kernel: :mod:`workbench.reproduce.compact`), its
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

``reproduce NAME`` runs its notebook in this process. ``reproduce all`` runs the notebooks as
parallel processes (``--jobs``, default: the cores this process may use), each with one compute
thread unless ``--threads`` says otherwise (set through ``OMP_NUM_THREADS`` and friends, which the
notebook's kernel inherits: on a shared 2-core machine two OpenMP threads per tiny model were 5-10x
slower than one); every progress line is prefixed with its notebook's name. ``--seeds 0-4`` makes a
study (:mod:`workbench.reproduce.study`): each (notebook, seed) in its own process into
``OUT/NAME/seed-S/``, a seed already complete with the same parameters and scale skipped, then
``OUT/NAME/study.json`` with the paired statistics and a study table on stdout and in the report.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path

from ..config import load_yaml, parse
from ..errors import ConfigError, RunError, WorkbenchError
from ..bench.common import cpu_count
from ..recipes import (EXACT_ENV, SCALES, available, notebook_path, param_defaults, params_class, params_file,
                       repo_root)
from ..runs import atomic_write, dumps
from .compact import compact_notebook
from .report import write_report
from .study import build_study, seed_dir, write_study
from .table import fmt_seconds, print_comparison, print_studies


class NotebookError(WorkbenchError):
    """A notebook failed while executing."""


def resolve_params(name: str, scale: str, overrides: dict, out_dir: Path, full: bool = False) -> dict:
    """The validated parameters for ``name`` at ``scale``, as plain values for papermill (those
    given by the parameter file and the overrides; with ``full``, every field)."""
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
    return {f.name: getattr(p, f.name) for f in fields(cls) if full or f.name in given}


def _comparable(params: dict) -> dict:
    """Parameters as JSON values, without ``out_dir`` (a study's seed folder may move with OUT)."""
    return json.loads(json.dumps({k: v for k, v in params.items() if k != "out_dir"}, default=str))


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
                 progress: bool = True, heartbeat: float = 30.0, dest: str | Path | None = None,
                 label: str | None = None, record_params: bool = False, keep_checkpoints: bool = False) -> dict:
    """Execute ``notebooks/NAME.ipynb`` into ``OUT/NAME/`` (or the folder ``dest``); returns its
    summary dict, with ``notebook_wall_s`` (kernel start to last cell) added, and with
    ``record_params`` every resolved parameter as ``params`` (a study compares them to resume).
    Once the notebook has run to its end, the resume checkpoints of its runs are deleted
    (:func:`prune_checkpoints`) unless ``keep_checkpoints``."""
    import papermill as pm
    out_dir = (Path(dest) if dest is not None else Path(out) / name).resolve()
    # every parameter, resolved: the notebook takes them as they are (EXACT_ENV), whatever its cell shows
    params = resolve_params(name, scale, dict(overrides or {}), out_dir, full=True)
    # papermill writes a tuple as a string; a list is a literal the notebook's parse turns back into a tuple
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    os.environ[EXACT_ENV] = "1"
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
    tracker = CellProgress(label or name, heartbeat=heartbeat) if progress else None
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(notebook_path(name)), str(out_dir / f"{name}.ipynb"), parameters=params,
                            kernel_name="python3", progress_bar=False, log_output=False, cwd=str(Path.cwd()),
                            engine_name=_engine(), wb_progress=tracker)
    except pm.PapermillExecutionError as e:
        raise NotebookError(f"notebook {name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}"
                            f" (see {out_dir / (name + '.ipynb')})") from None
    wall = time.perf_counter() - t0
    compact_notebook(out_dir / f"{name}.ipynb")     # every figure a PNG, no 5 MB widget state (compact.py)
    sp = out_dir / "summary.json"
    if not sp.exists():
        raise NotebookError(f"notebook {name} finished without writing {sp}")
    if not keep_checkpoints:
        prune_checkpoints(out_dir)
    s = json.loads(sp.read_text())
    s["notebook_wall_s"] = wall
    if record_params:
        s["params"] = _comparable(resolve_params(name, scale, dict(overrides or {}), out_dir, full=True))
    atomic_write(sp, dumps(s))      # so the report and the cards see the wall time the user waited
    return s


def prune_checkpoints(folder: str | Path) -> int:
    """Delete the resume checkpoints below ``folder``: the ``checkpoints/`` folder of every run
    directory (one with a ``config.json``); returns the bytes freed.

    A checkpoint (weights and optimizer state, every ``checkpoint_every`` steps) exists so that an
    interrupted run can continue. Once a notebook has run to its end its runs are finished: each keeps
    its final weights (``model.safetensors``, ``hf/``), metrics, scores and summary, and the
    checkpoints would only double the folder (about 70 of a smoke ``reproduce all``'s MB).
    ``reproduce --keep-checkpoints`` keeps them."""
    import shutil
    freed = 0
    for ck in sorted(Path(folder).rglob("checkpoints")):
        if ck.is_dir() and not ck.is_symlink() and (ck.parent / "config.json").exists():
            freed += sum(f.stat().st_size for f in ck.rglob("*") if f.is_file())
            shutil.rmtree(ck, ignore_errors=True)
    return freed


# ------------------------------------------------------------------------------------- processes
#: environment variables that cap a process's compute threads (OpenMP: torch, MKL, OpenBLAS; Rust: tokenizers)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")
_RESULT = "@@workbench-notebook-result "
_KERNEL_NOISE = "Kernel is running over TCP without encryption"   # ipykernel says this for every local kernel
_WORKER = "import sys; from workbench.reproduce.notebooks import _worker; sys.exit(_worker(sys.argv[1]))"


def default_jobs() -> int:
    """Parallel notebook processes by default: the cores this process may use."""
    return cpu_count()


def thread_env(threads: int) -> dict:
    """The environment that gives a process (and the notebook kernel it starts) ``threads`` compute
    threads: torch reads ``OMP_NUM_THREADS`` when it starts, so the kernel needs no code for it."""
    return {v: str(threads) for v in THREAD_VARS}


def _terminate_as_interrupt() -> None:
    """Let SIGTERM (``kill``, a job scheduler's stop) take the path Ctrl-C takes: KeyboardInterrupt, so
    the notebook processes this command started and their kernels are stopped, not left running."""
    if threading.current_thread() is threading.main_thread():
        def _raise(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, _raise)


def _worker(arg: str) -> int:
    """The body of one notebook process (``python -c``): run one notebook, report on stdout."""
    spec = json.loads(arg)
    _terminate_as_interrupt()           # a stopped worker shuts its kernel down (papermill), as on Ctrl-C
    try:
        run_notebook(spec["name"], spec["scale"], spec["out"], spec["overrides"], progress=spec["progress"],
                     heartbeat=spec["heartbeat"], dest=spec["dest"], label=spec["label"],
                     record_params=spec["record"], keep_checkpoints=spec.get("keep", False))
    except WorkbenchError as e:
        print(_RESULT + json.dumps({"error": str(e).splitlines()[0] if str(e) else type(e).__name__}), flush=True)
        return 2
    except KeyboardInterrupt:
        print(_RESULT + json.dumps({"error": "interrupted"}), flush=True)
        return 130
    print(_RESULT + json.dumps({"ok": True}), flush=True)
    return 0


@dataclass
class _Task:
    name: str               # the notebook
    label: str              # how its lines are prefixed: NAME, or NAME/seed-S
    dest: Path              # its folder
    overrides: dict
    k: int                  # its number in [k/total]
    total: int


def _stop(proc) -> None:
    """Interrupt a notebook process this command started (its kernel is shut down by papermill)."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    except (subprocess.TimeoutExpired, OSError):
        proc.kill()
        proc.wait()


def run_parallel(tasks: list[_Task], scale: str, out: str | Path, jobs: int, threads: int = 1,
                 progress: bool = True, heartbeat: float = 30.0, record_params: bool = False,
                 keep_checkpoints: bool = False) -> dict[str, dict]:
    """Run each task's notebook in its own process, at most ``jobs`` at a time, each with
    ``threads`` compute threads (``keep_checkpoints``: see :func:`run_notebook`). Every line a
    process prints goes to stderr prefixed with its label; returns ``{label: summary}`` (a failure as ``{"paper", "scale", "failed", ...}``)."""
    stream = sys.stderr
    lock = threading.Lock()

    def say(msg: str) -> None:
        with lock:
            print(msg, file=stream, flush=True)

    env = {**os.environ, **thread_env(threads), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(repo_root())] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    pending, running, results = list(tasks), {}, {}
    finished: queue.Queue = queue.Queue()

    def pump(t: _Task, proc, t0: float) -> None:
        outcome, tail = {}, deque(maxlen=3)
        for line in proc.stdout:
            line = line.rstrip("\r\n")
            if line.startswith(_RESULT):
                try:
                    outcome.update(json.loads(line[len(_RESULT):]))
                except json.JSONDecodeError:
                    pass
                continue
            if not line.strip() or _KERNEL_NOISE in line:   # the kernel's local-TCP warning, once per kernel
                continue
            tail.append(line.strip())
            say(line if line.lstrip().startswith(t.label + " ") else f"  {t.label}  {line}")
        finished.put((t, proc.wait(), outcome, list(tail), time.perf_counter() - t0))

    _terminate_as_interrupt()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                t = pending.pop(0)
                say(f"[{t.k}/{t.total}] {t.label} ({scale}) -> {t.dest}/{t.name}.ipynb")
                spec = {"name": t.name, "scale": scale, "out": str(out), "overrides": t.overrides,
                        "progress": progress, "heartbeat": heartbeat, "dest": str(t.dest), "label": t.label,
                        "record": record_params, "keep": keep_checkpoints}
                proc = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(spec, default=str)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, errors="replace", bufsize=1, env=env, cwd=os.getcwd())
                th = threading.Thread(target=pump, args=(t, proc, time.perf_counter()), daemon=True)
                running[t.label] = (proc, th)
                th.start()
            t, rc, outcome, tail, wall = finished.get()
            running.pop(t.label)[1].join()
            sp = t.dest / "summary.json"
            if rc == 0 and outcome.get("ok") and sp.exists():
                results[t.label] = json.loads(sp.read_text())
                say(f"[{t.k}/{t.total}] {t.label} done in {fmt_seconds(wall)}")
            else:
                err = outcome.get("error") or (f"notebook {t.name} stopped: its process exited with code {rc}"
                                               + (f" ({tail[-1][:200]})" if tail else ""))
                results[t.label] = {"paper": t.name, "scale": scale, "failed": err, "notebook_wall_s": wall}
                say(f"[{t.k}/{t.total}] {t.label} FAILED after {fmt_seconds(wall)}: {err}")
    except BaseException:
        for proc, _ in running.values():
            _stop(proc)
        raise
    return results


def _complete_seed(dest: Path, name: str, scale: str, overrides: dict) -> dict | None:
    """The summary of a seed already run with these parameters at this scale, else None."""
    try:
        s = json.loads((dest / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(s, dict) or s.get("failed") or s.get("scale") != scale or "params" not in s:
        return None
    want = _comparable(resolve_params(name, scale, overrides, dest.resolve(), full=True))
    have = s["params"]
    if not isinstance(have, dict) or set(have) - set(want):
        return None
    # a parameter added to the recipe since the seed ran counts as matching when it is at its default
    # (the seed ran with the behaviour that default keeps); any other difference reruns the seed
    new = set(want) - set(have)
    if new and any(want[k] != v for k, v in _comparable(param_defaults(name)).items() if k in new):
        return None
    return s if all(have[k] == want[k] for k in have) else None


def _threads_or_jobs(value, flag: str):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{flag} must be a whole number >= 1, got {value!r}")
    return value


def reproduce(name: str, scale: str, out: str | Path, overrides: dict | None = None, report: bool = True,
              progress: bool = True, seeds: list[int] | None = None, jobs: int | None = None,
              threads: int | None = None, keep_checkpoints: bool = False) -> list[dict]:
    """Run one notebook or ``all`` of them; print the comparison table, write ``OUT/report.html``;
    return the summaries (failed notebooks, under ``all``, as ``{"paper", "failed", ...}``).

    ``reproduce NAME`` runs in this process, into ``OUT/NAME/``. ``all`` runs the notebooks as
    parallel processes (``jobs``, default: the cores this process may use), each with ``threads``
    compute threads (default 1). With ``seeds``, every notebook runs once per seed, in parallel
    processes, into ``OUT/NAME/seed-S/`` (a seed already complete with the same parameters is not
    rerun), and ``OUT/NAME/study.json`` gets the paired statistics (:mod:`workbench.reproduce.study`);
    returns the studies then. The runs' resume checkpoints are deleted once their notebook has
    finished, unless ``keep_checkpoints`` (:func:`prune_checkpoints`).
    """
    overrides = dict(overrides or {})
    names = available() if name == "all" else [name]
    # the checks that need no recipe first: they answer before torch is imported
    jobs, threads = _threads_or_jobs(jobs, "--jobs"), _threads_or_jobs(threads, "--threads")
    if seeds is not None:
        if "seed" in overrides:
            raise ConfigError("parameter 'seed' is set with --seeds, not with -p")
        if not seeds:
            raise ConfigError("--seeds names no seed")
    if name != "all":
        params_class(name)  # unknown names fail here
        if not notebook_path(name).exists():
            raise ConfigError(f"notebook {name!r} does not exist yet")
    for n in names:  # validate everything before running anything
        for s in seeds if seeds is not None else [None]:
            ov = overrides if s is None else {**overrides, "seed": s}
            resolve_params(n, scale, ov, Path(out) / n if s is None else seed_dir(out, n, s))
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create output directory {out}: {e.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunError(f"output directory {out} is not writable")
    if seeds is not None:
        return _study(names, scale, out, overrides, seeds, jobs or default_jobs(), threads or 1, report, progress,
                      keep_checkpoints)
    summaries, failed = [], []
    t_all = time.perf_counter()
    if name != "all":     # one notebook, in this process, as it always was
        if threads is not None:
            os.environ.update(thread_env(threads))
        print(f"[1/1] {name} ({scale}) -> {Path(out) / name}/{name}.ipynb", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        summaries.append(run_notebook(name, scale, out, overrides, progress=progress, keep_checkpoints=keep_checkpoints))
        print(f"[1/1] {name} done in {fmt_seconds(time.perf_counter() - t0)}", file=sys.stderr, flush=True)
    else:
        tasks = [_Task(n, n, (Path(out) / n), overrides, k, len(names)) for k, n in enumerate(names, 1)]
        results = run_parallel(tasks, scale, out, jobs or default_jobs(), threads or 1, progress,
                               keep_checkpoints=keep_checkpoints)
        for t in tasks:
            summaries.append(results[t.label])
            if results[t.label].get("failed"):
                failed.append(t.name)
    total = time.perf_counter() - t_all
    print_comparison(summaries)
    print(f"total wall time {fmt_seconds(total)} ({total:.0f}s) for {len(names)} notebook(s) at scale {scale}")
    if report:
        path = write_report(out, summaries, total_wall_s=total)
        print(f"report: {path}")
    if failed:
        raise NotebookError(f"{len(failed)} of {len(names)} notebooks failed: {', '.join(failed)} "
                            f"(their partly executed notebooks are in {out})")
    return summaries


def _study(names: list[str], scale: str, out: str | Path, overrides: dict, seeds: list[int], jobs: int,
           threads: int, report: bool, progress: bool, keep_checkpoints: bool = False) -> list[dict]:
    """Every (notebook, seed) not yet complete, in parallel processes; then each ``study.json``."""
    t_all = time.perf_counter()
    total = len(names) * len(seeds)
    tasks, got, k = [], {n: {} for n in names}, 0
    for n in names:
        for s in seeds:
            k += 1
            d, ov = seed_dir(out, n, s), {**overrides, "seed": s}
            prev = _complete_seed(d, n, scale, ov)
            if prev is not None:
                got[n][s] = prev
                print(f"[{k}/{total}] {n}/seed-{s} ({scale}) is complete in {d}: not rerun", file=sys.stderr, flush=True)
            else:
                tasks.append(_Task(n, f"{n}/seed-{s}", d, ov, k, total))
    results = (run_parallel(tasks, scale, out, jobs, threads, progress, record_params=True,
                            keep_checkpoints=keep_checkpoints) if tasks else {})
    for t in tasks:
        got[t.name][t.overrides["seed"]] = results[t.label]
    wall = time.perf_counter() - t_all
    studies, failed = [], []
    for n in names:
        failures = {s: v["failed"] for s, v in got[n].items() if v.get("failed")}
        failed += [f"{n}/seed-{s}" for s in failures]
        st = build_study(n, scale, seeds, got[n], failures, wall_s=wall)
        print(f"study: {write_study(out, st)}", file=sys.stderr, flush=True)
        studies.append(st)
    print_studies(studies)
    print(f"total wall time {fmt_seconds(wall)} ({wall:.0f}s) for {len(names)} notebook(s) x {len(seeds)} seed(s) "
          f"at scale {scale}: {len(tasks)} run, {total - len(tasks)} already complete (jobs {jobs}, threads {threads})")
    if report:
        print(f"report: {write_report(out, names=names, total_wall_s=wall)}")
    if failed:
        raise NotebookError(f"{len(failed)} of {total} notebook runs failed: {', '.join(failed[:8])}"
                            f"{' ...' if len(failed) > 8 else ''} (their partly executed notebooks are in {out})")
    return studies
