"""``bench fl``: facility-location selection, the workbench against its strongest peers, same data, same run.

Data: seeded Gaussian blobs (``--clusters`` centres drawn from N(0, I), points = centre +
``--spread`` * N(0, I)), float32, ``--n`` x ``--dim``.

Sides, measured in this one process, **interleaved** (repetition r runs every side once, in turn,
before repetition r + 1 starts, so a change in the machine's load hits them all); for each side
the best of ``--repeat`` is reported, as process CPU seconds (``*_cpu_s``) and wall seconds
(``*_wall_s``):

* **workbench** -- :func:`workbench.selection.facility_location` end to end (kernel + lazy greedy).
* **submodlib fast** -- its fastest documented path: the kernel from
  ``submodlib.helper.create_kernel(X, metric, mode="dense", method="sklearn")`` (``mode="sparse"``,
  ``num_neigh=--knn`` for ``--kernel knn``), then ``FacilityLocationFunction(n, mode="dense",
  sijs=K, separate_rep=False)`` (``mode="sparse"``, ``num_neighbors``) and ``maximize(budget,
  optimizer="LazyGreedy", stopIfZeroGain=False, stopIfNegativeGain=False)``.  Its time counts the
  kernel.
* **apricot** (apricot-select, the ``bench`` extra) -- ``FacilityLocationSelection(budget,
  metric="precomputed", optimizer="lazy").fit(K)`` on *the same* kernel (apricot wants
  similarities: its gain is ``sum(max(K[j], cur)) - sum(cur)`` with ``cur`` starting at 0, i.e.
  the same objective ``sum_i max(0, max_S sim)``; it refuses negative entries, so it is given
  ``max(K, 0)`` -- the same objective -- the clamp counted as its time).  The kernel is computed once per repetition
  and its time is counted for both submodlib fast and apricot.  apricot compiles its numba gain
  function on every ``fit`` (an explicit signature, no disk cache): that compilation (about a
  second) is part of its time, as it is for any user of it.
* **submodlib data=** -- ``FacilityLocationFunction(n, mode="dense", data=X, metric=...)`` (its
  constructor passes X as a Python list of lists to C++, builds the kernel there and copies it
  back), then the same ``maximize``.  Slow (tens of seconds at n 10,000): skipped above
  ``--submodlib-data-max-n`` or with ``--skip-submodlib-data``, and said so.
* **GEMM bound** -- one ``torch.mm(A, A.T)`` of the float32 (n, d) data: the n x n x d product
  every exact dense kernel needs, on the same threads; no facility-location code can beat it.

Every selection's objective ``f(S)`` is evaluated by one float64 evaluator on the exact dense
kernel (:func:`~workbench.selection.facility_location.evaluate_objective`), whatever kernel the
side optimised; ``objective_ratio`` = workbench / the best peer objective.

Threads: ``--threads`` (default 1) for torch and, through threadpoolctl, the BLAS that sklearn's
kernel uses; submodlib and apricot's lazy greedy are single-threaded.  The headline is the CPU-time
ratio to the fastest peer measured (:func:`workbench.bench.common.headline`, with the load
average); the ratios to submodlib fast and to the GEMM bound are printed beside it.

The last line printed is one JSON object (``--json`` prints only that).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys

import numpy as np
import torch

from ..selection.facility_location import evaluate_objective, facility_location
from . import options as _options
from .common import CpuTimer, cpu_count, headline, load_avg

_SUBMODLIB_MAX_N = 30000  # its dense kernel is n x n float64 (7 GB at 30k)
_APRICOT_PIN = "apricot-select==0.6.1"
_PEERS = ("submodlib_fast", "apricot", "submodlib_data")


add_arguments = _options.fl   # the options live in .options (the CLI reads them without torch)

def make_blobs(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    """Seeded Gaussian blobs, float32 (n, dim)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, clusters), dim))
    labels = rng.integers(0, len(centres), size=n)
    return (centres[labels] + spread * rng.standard_normal((n, dim))).astype(np.float32)


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _blas_threads(threads: int):
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _gemm(A: torch.Tensor) -> tuple[float, float]:
    dev = A.device
    _sync(dev)
    with CpuTimer() as t:
        C = torch.mm(A, A.T)
        _sync(dev)
    del C
    return t.cpu, t.wall


def _peer_kernel(X: np.ndarray, args):
    from submodlib.helper import create_kernel  # noqa: PLC0415

    if args.kernel == "dense":
        return create_kernel(X, metric=args.metric, mode="dense", method="sklearn")
    return create_kernel(X, metric=args.metric, mode="sparse", num_neigh=args.knn, method="sklearn")


def _submodlib_maximize(fl, budget: int) -> np.ndarray:
    out = fl.maximize(budget=budget, optimizer="LazyGreedy", stopIfZeroGain=False, stopIfNegativeGain=False,
                      verbose=False, show_progress=False)
    return np.array([int(i) for i, _ in out], dtype=np.int64)


def _submodlib_fast(K, args) -> np.ndarray:
    from submodlib import FacilityLocationFunction  # noqa: PLC0415

    n = K.shape[0]
    if args.kernel == "dense":
        fl = FacilityLocationFunction(n=n, mode="dense", sijs=K, separate_rep=False)
    else:
        fl = FacilityLocationFunction(n=n, mode="sparse", sijs=K, num_neighbors=args.knn)
    return _submodlib_maximize(fl, args.budget)


def _submodlib_data(X: np.ndarray, args) -> np.ndarray:
    from submodlib import FacilityLocationFunction  # noqa: PLC0415

    data = X.astype(np.float64)
    fl = FacilityLocationFunction(n=X.shape[0], mode="dense", data=data, metric=args.metric)
    return _submodlib_maximize(fl, args.budget)


def _apricot(K, args) -> np.ndarray:
    from apricot import FacilityLocationSelection  # noqa: PLC0415

    # apricot refuses negative similarities; max(K, 0) leaves the objective unchanged (coverage
    # starts at 0, so a negative similarity never counts) and is counted as apricot's time
    data = K.data if hasattr(K, "tocsr") else K
    np.maximum(data, 0, out=data)
    sel = FacilityLocationSelection(args.budget, metric="precomputed", optimizer="lazy", verbose=False)
    sel.fit(K)
    return np.asarray(sel.ranking, dtype=np.int64)


def _apricot_version() -> str | None:
    try:
        import apricot  # noqa: PLC0415
    except Exception:
        return None
    return getattr(apricot, "__version__", "?")


def _best(runs: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    if not runs:
        return None, None
    return min(c for c, _ in runs), min(w for _, w in runs)


def _ratio(a, b):
    return a / b if a is not None and b else None


def main(args: argparse.Namespace) -> dict:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    X = make_blobs(args.n, args.dim, args.clusters, args.spread, args.seed)
    dev = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    notes: list[str] = []

    # ---- which peers run -------------------------------------------------------------------
    run = {p: not args.gpu_only for p in _PEERS}
    if args.skip_submodlib:
        run["submodlib_fast"] = run["submodlib_data"] = False
    if args.skip_submodlib_data:
        run["submodlib_data"] = False
    if args.skip_apricot:
        run["apricot"] = False
    if run["submodlib_data"] and args.kernel != "dense":
        run["submodlib_data"] = False
        notes.append("submodlib data= skipped: measured for --kernel dense only")
    if run["submodlib_data"] and args.n > args.submodlib_data_max_n:
        run["submodlib_data"] = False
        notes.append(f"submodlib data= skipped: n {args.n} > --submodlib-data-max-n {args.submodlib_data_max_n} "
                     "(its Python list-of-lists constructor takes tens of seconds)")
    if (run["submodlib_fast"] or run["apricot"]) and args.n > _SUBMODLIB_MAX_N:
        run["submodlib_fast"] = run["apricot"] = run["submodlib_data"] = False
        notes.append(f"peers skipped: n > {_SUBMODLIB_MAX_N} (their n x n float64 kernel does not fit)")
    if args.budget >= args.n and any(run.values()):
        run["submodlib_fast"] = run["submodlib_data"] = run["apricot"] = False
        notes.append("peers skipped: submodlib needs budget < n")
    apricot_version = _apricot_version()
    if run["apricot"] and apricot_version is None:
        run["apricot"] = False
        notes.append(f"apricot-select is not installed: pip install '.[bench]' (or pip install {_APRICOT_PIN})")

    # ---- interleaved repetitions -------------------------------------------------------------
    A = torch.from_numpy(X).to(dev)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in ("workbench", "gemm", "kernel", *_PEERS)}
    picks: dict[str, np.ndarray] = {}
    best_sel = None
    la_samples = [load_avg()]
    gpu_peak = 0
    kw = dict(metric=args.metric, kernel=args.kernel, knn=args.knn, optimizer=args.optimizer, device=args.device,
              seed=args.seed, memory_limit_gb=args.memory_limit_gb, epsilon=args.epsilon)
    if dev.type == "cpu":  # untimed warm-up: first-call costs (allocator, JIT caches) are nobody's work
        facility_location(X[: min(args.n, 512)], min(args.budget, 64), **kw)
    with _blas_threads(max(1, args.threads)):
        for _ in range(max(1, args.repeat)):
            times["gemm"].append(_gemm(A))
            _sync(dev)
            if dev.type == "cuda":   # the workbench's own peak, not the bound's n x n GEMM output
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            with CpuTimer() as t:
                sel = facility_location(X, args.budget, **kw)
            times["workbench"].append((t.cpu, t.wall))
            if dev.type == "cuda":
                gpu_peak = max(gpu_peak, torch.cuda.max_memory_allocated(dev))
            if best_sel is None or t.wall < best_sel[1]:
                best_sel = (sel, t.wall)
            if run["submodlib_fast"] or run["apricot"]:
                with CpuTimer() as t:
                    K = _peer_kernel(X, args)
                times["kernel"].append((t.cpu, t.wall))
                kc, kwall = t.cpu, t.wall
                if run["submodlib_fast"]:
                    with CpuTimer() as t:
                        picks["submodlib_fast"] = _submodlib_fast(K, args)
                    times["submodlib_fast"].append((kc + t.cpu, kwall + t.wall))
                if run["apricot"]:
                    with CpuTimer() as t:
                        picks["apricot"] = _apricot(K, args)
                    times["apricot"].append((kc + t.cpu, kwall + t.wall))
                del K
            if run["submodlib_data"]:
                with CpuTimer() as t:
                    picks["submodlib_data"] = _submodlib_data(X, args)
                times["submodlib_data"].append((t.cpu, t.wall))
            la_samples.append(load_avg())
    sel = best_sel[0]
    rss = _peak_rss_mb()

    # ---- one evaluator for every selection ---------------------------------------------------
    obj = {"workbench": evaluate_objective(X, sel.indices, args.metric)}
    for p, idx in picks.items():
        obj[p] = evaluate_objective(X, idx, args.metric)

    wb_cpu, wb_wall = _best(times["workbench"])
    gemm_cpu, gemm_wall = _best(times["gemm"])
    on_gpu = dev.type == "cuda"
    gemm_ref = gemm_wall if on_gpu else gemm_cpu
    wb_ref = wb_wall if on_gpu else wb_cpu
    result = {
        "bench": "fl",
        "n": args.n, "dim": args.dim, "budget": args.budget, "kernel": args.kernel,
        "knn": args.knn if args.kernel == "knn" else None, "metric": args.metric, "optimizer": args.optimizer,
        "clusters": args.clusters, "spread": args.spread, "seed": args.seed, "repeat": max(1, args.repeat),
        "interleaved": True, "threads": threads, "cpu_count": cpu_count(),
        "device": sel.stats.get("device"), "engine": sel.stats.get("engine"),
        "workbench_cpu_s": wb_cpu, "workbench_wall_s": wb_wall,
        "workbench_s": wb_wall,  # kept for gpu_check
        "kernel_s": sel.kernel_s, "optimize_s": sel.optimize_s,
        "workbench_kernel_s": sel.kernel_s, "workbench_optimize_s": sel.optimize_s,
        "workbench_evaluations": sel.stats.get("evaluations"), "workbench_compactions": sel.stats.get("compactions"),
        "gemm_bound_s": gemm_ref, "gemm_bound_cpu_s": gemm_cpu, "gemm_bound_wall_s": gemm_wall,
        "ratio_to_gemm_bound": _ratio(wb_ref, gemm_ref),
        "peer_kernel_cpu_s": _best(times["kernel"])[0], "peer_kernel_wall_s": _best(times["kernel"])[1],
        "apricot_version": apricot_version,
        "objective": obj["workbench"], "workbench_objective": obj["workbench"],
        "peak_rss_mb": rss,
        "peak_gpu_mb": (gpu_peak / 2**20) if on_gpu else None,   # the workbench side alone
    }
    for p in _PEERS:
        c, w = _best(times[p])
        result[f"{p}_cpu_s"], result[f"{p}_wall_s"] = c, w
        result[f"{p}_objective"] = obj.get(p)
        result[f"speedup_vs_{p}"] = _ratio(c, wb_cpu)
        result[f"{p}_runs_cpu_s"] = [round(x, 4) for x, _ in times[p]] or None
    result["workbench_runs_cpu_s"] = [round(x, 4) for x, _ in times["workbench"]]
    result["gemm_runs_cpu_s"] = [round(x, 4) for x, _ in times["gemm"]]
    peer_objs = [obj[p] for p in picks]
    result["objective_ratio"] = obj["workbench"] / max(peer_objs) if peer_objs and max(peer_objs) else None
    if "submodlib_fast" in picks:
        m = min(len(sel.indices), len(picks["submodlib_fast"]))
        result["picks_equal_fraction"] = float(np.mean(sel.indices[:m] == picks["submodlib_fast"][:m])) if m else None
    else:
        result["picks_equal_fraction"] = None
    measured = [p for p in _PEERS if result[f"{p}_cpu_s"] is not None]
    strongest = min(measured, key=lambda p: result[f"{p}_cpu_s"]) if measured else None
    result["strongest_peer"] = strongest
    result["speedup_vs_strongest"] = result[f"speedup_vs_{strongest}"] if strongest else None
    la = [x for x in la_samples if x is not None]
    result["load_avg"] = max(la) if la else None  # the highest 1-minute load seen during the run
    result["load_avg_samples"] = la_samples
    result["note"] = "; ".join(notes) or None
    what = f"bench fl (n {args.n}, d {args.dim}, budget {args.budget}, {args.kernel}, {threads} thread(s), CPU time)"
    result["headline"] = headline(what, result["speedup_vs_strongest"], strongest or "any peer", interleaved=True)

    if not args.json:
        _print_table(result)
    print(json.dumps(result))
    return result


def _fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


_LABELS = {"workbench": "workbench " , "submodlib_fast": "submodlib sijs= (fast)", "apricot": "apricot lazy",
           "submodlib_data": "submodlib data="}


def _print_table(r: dict) -> None:
    kern = f"knn (k={r['knn']})" if r["kernel"] == "knn" else "dense"
    print(f"facility location bench: n={r['n']} d={r['dim']} budget={r['budget']} kernel={kern} "
          f"metric={r['metric']} | {r['clusters']} blobs, spread {r['spread']}, seed {r['seed']} | "
          f"{r['device']}, {r['threads']} thread(s), best of {r['repeat']} interleaved")
    print(f"{'':<26}{'cpu s':>9}{'wall s':>9}{'objective (float64)':>22}{'workbench faster by':>21}")
    wb = f"workbench {r['optimizer']}"
    print(f"{wb:<26}{_fmt(r['workbench_cpu_s']):>9}{_fmt(r['workbench_wall_s']):>9}"
          f"{_fmt(r['workbench_objective'], '.4f'):>22}{'':>21}")
    for p in _PEERS:
        if r[f"{p}_cpu_s"] is None:
            continue
        print(f"{_LABELS[p]:<26}{_fmt(r[f'{p}_cpu_s']):>9}{_fmt(r[f'{p}_wall_s']):>9}"
              f"{_fmt(r[f'{p}_objective'], '.4f'):>22}{_fmt(r[f'speedup_vs_{p}'], '.2f') + 'x':>21}")
    print(f"{'one GEMM (torch.mm) bound':<26}{_fmt(r['gemm_bound_cpu_s']):>9}{_fmt(r['gemm_bound_wall_s']):>9}")
    if r["peer_kernel_cpu_s"] is not None:
        print(f"(the peers' kernel, helper.create_kernel sklearn: {r['peer_kernel_cpu_s']:.3f} s CPU, counted for both)")
    print(f"workbench kernel {r['workbench_kernel_s']:.3f} s + optimisation {r['workbench_optimize_s']:.3f} s wall; "
          f"{r['workbench_evaluations']} gain evaluations, {r['workbench_compactions']} kernel compactions; "
          f"peak RSS {r['peak_rss_mb']:.0f} MB")
    if r["note"]:
        print(r["note"])
    print(r["headline"])
    print(f"  vs submodlib fast path: {_fmt(r['speedup_vs_submodlib_fast'], '.2f')}x | "
          f"workbench / one-GEMM bound: {_fmt(r['ratio_to_gemm_bound'], '.2f')}x (1 = the bound) | "
          f"objective ratio (workbench / best peer): {_fmt(r['objective_ratio'], '.6f')} | load avg {r['load_avg']}")


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(_parser)
    main(_parser.parse_args())
