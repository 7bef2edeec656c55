"""``bench fl``: facility-location selection, the workbench engine against submodlib, same data, same run.

Data: seeded Gaussian blobs (``--clusters`` centres drawn from N(0, I), points = centre +
``--spread`` * N(0, I)), float32, ``--n`` x ``--dim``.

What is timed, per repetition (the best of ``--repeat`` is reported for each side):

* **workbench** -- :func:`workbench.selection.facility_location` end to end: the kernel (dense
  similarity matrix, or k-NN search) plus the greedy optimisation; the split comes from the
  returned :class:`~workbench.selection.facility_location.Selection`.
* **submodlib end to end** -- ``FacilityLocationFunction(n, mode="dense", data=X, metric=...)``
  (its constructor builds the kernel: that part is reported as ``submodlib_kernel_s``) followed
  by ``maximize(budget, optimizer="LazyGreedy", stopIfZeroGain=False,
  stopIfNegativeGain=False)`` (reported as ``submodlib_maximize_s`` -- the maximize-only time:
  the kernel already lives in the function object, exactly as with the precomputed
  ``sijs=`` path).  With ``--kernel knn`` submodlib runs ``mode="sparse"`` with
  ``num_neighbors=--knn``.
* **submodlib kernel only** -- the precomputed-kernel path's kernel,
  ``submodlib.helper.create_kernel(X, metric, mode="dense", method="sklearn")``, for reference
  (dense only).

Ratios: ``speedup_end_to_end`` = submodlib end to end / workbench end to end;
``speedup_vs_maximize_only`` = submodlib maximize alone / workbench end to end (submodlib is
given its kernel for free); ``speedup_optimizer_only`` = submodlib maximize / workbench
optimisation.  ``objective_ratio`` = workbench objective / submodlib objective, both evaluated
by the same float64 code on the exact dense kernel (``--kernel dense``) or taken from each
side on its own k-NN kernel (``--kernel knn``; both build the same symmetric k-NN kernel).

``peak_rss_mb`` is the process's peak resident memory right after the workbench runs (before
submodlib runs), from ``resource.getrusage``; it includes the interpreter, torch, faiss and the
data.  ``--threads`` (default 1) sets torch's CPU threads for the workbench run; submodlib is
single-threaded, and one thread is what a shared 2-core machine can fairly give each side.

The last line printed is one JSON object (``--json`` prints only that).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch

from ..selection.facility_location import evaluate_objective, facility_location

_SUBMODLIB_MAX_N = 30000  # its dense kernel is an n x n float64 list of lists (72 GB at 100k)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=10000, help="number of points (default 10000)")
    parser.add_argument("--dim", type=int, default=64, help="features per point (default 64)")
    parser.add_argument("--budget", type=int, default=2500, help="points to select (default 2500)")
    parser.add_argument("--kernel", choices=["dense", "knn"], default="dense")
    parser.add_argument("--knn", type=int, default=10, help="neighbours per point for --kernel knn")
    parser.add_argument("--optimizer", choices=["lazy", "naive", "stochastic"], default="lazy",
                        help="workbench optimizer (default lazy); submodlib always runs LazyGreedy")
    parser.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    parser.add_argument("--clusters", type=int, default=50, help="Gaussian blobs in the data (default 50)")
    parser.add_argument("--spread", type=float, default=0.5, help="blob standard deviation (centres ~ N(0, I))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per side; the best is reported")
    parser.add_argument("--device", default=None, help="torch device for the workbench (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the workbench (default 1)")
    parser.add_argument("--epsilon", type=float, default=0.01, help="stochastic greedy epsilon")
    parser.add_argument("--memory-limit-gb", type=float, default=4.0)
    parser.add_argument("--skip-submodlib", action="store_true", help="time the workbench only")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")


def make_blobs(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    """Seeded Gaussian blobs, float32 (n, dim)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, clusters), dim))
    labels = rng.integers(0, len(centres), size=n)
    return (centres[labels] + spread * rng.standard_normal((n, dim))).astype(np.float32)


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _run_submodlib(X: np.ndarray, args) -> dict:
    from submodlib import FacilityLocationFunction

    n = X.shape[0]
    data = X.astype(np.float64)
    t0 = time.perf_counter()
    if args.kernel == "dense":
        fl = FacilityLocationFunction(n=n, mode="dense", data=data, metric=args.metric)
    else:
        fl = FacilityLocationFunction(n=n, mode="sparse", data=data, metric=args.metric, num_neighbors=args.knn)
    t1 = time.perf_counter()
    out = fl.maximize(budget=args.budget, optimizer="LazyGreedy", stopIfZeroGain=False,
                      stopIfNegativeGain=False, verbose=False, show_progress=False)
    t2 = time.perf_counter()
    del fl
    return {
        "kernel_s": t1 - t0,
        "maximize_s": t2 - t1,
        "total_s": t2 - t0,
        "indices": np.array([int(i) for i, _ in out], dtype=np.int64),
        "gains": np.array([float(g) for _, g in out], dtype=np.float64),
    }


def _submodlib_kernel_only(X: np.ndarray, metric: str) -> float:
    from submodlib.helper import create_kernel

    t0 = time.perf_counter()
    K = create_kernel(X.astype(np.float64), metric=metric, mode="dense", method="sklearn")
    dt = time.perf_counter() - t0
    del K
    return dt


def main(args: argparse.Namespace) -> dict:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    X = make_blobs(args.n, args.dim, args.clusters, args.spread, args.seed)

    # ---- workbench ------------------------------------------------------------------------
    ours = []
    for _ in range(max(1, args.repeat)):
        ours.append(facility_location(X, args.budget, metric=args.metric, kernel=args.kernel, knn=args.knn,
                                      optimizer=args.optimizer, device=args.device, seed=args.seed,
                                      memory_limit_gb=args.memory_limit_gb, epsilon=args.epsilon))
    best = min(ours, key=lambda s: s.wall_s)
    rss = _peak_rss_mb()

    result = {
        "bench": "fl",
        "n": args.n,
        "dim": args.dim,
        "budget": args.budget,
        "kernel": args.kernel,
        "knn": args.knn if args.kernel == "knn" else None,
        "metric": args.metric,
        "optimizer": args.optimizer,
        "clusters": args.clusters,
        "spread": args.spread,
        "seed": args.seed,
        "repeat": max(1, args.repeat),
        "threads": torch.get_num_threads(),
        "device": best.stats.get("device"),
        "engine": best.stats.get("engine"),
        "ours_total_s": best.wall_s,
        "ours_kernel_s": best.kernel_s,
        "ours_optimize_s": best.optimize_s,
        "ours_runs_s": [s.wall_s for s in ours],
        "ours_objective": best.objective,
        "ours_evaluations": best.stats.get("evaluations"),
        "ours_compactions": best.stats.get("compactions"),
        "peak_rss_mb": rss,
        "submodlib_total_s": None,
        "submodlib_kernel_s": None,
        "submodlib_maximize_s": None,
        "submodlib_kernel_only_s": None,
        "submodlib_runs_s": None,
        "submodlib_objective": None,
        "speedup_end_to_end": None,
        "speedup_vs_maximize_only": None,
        "speedup_optimizer_only": None,
        "objective_ratio": None,
        "picks_equal_fraction": None,
        "note": None,
    }

    skip = args.skip_submodlib
    if not skip and args.n > _SUBMODLIB_MAX_N:
        skip = True
        result["note"] = f"submodlib skipped: n > {_SUBMODLIB_MAX_N} (its n x n kernel does not fit)"
    if not skip and args.budget >= args.n:
        skip = True
        result["note"] = "submodlib skipped: it needs budget < n"
    if not skip:
        subs = [_run_submodlib(X, args) for _ in range(max(1, args.repeat))]
        sub = min(subs, key=lambda r: r["total_s"])
        sub_max = min(r["maximize_s"] for r in subs)
        result["submodlib_total_s"] = sub["total_s"]
        result["submodlib_kernel_s"] = sub["kernel_s"]
        result["submodlib_maximize_s"] = sub_max
        result["submodlib_runs_s"] = [r["total_s"] for r in subs]
        if args.kernel == "dense":
            result["submodlib_kernel_only_s"] = _submodlib_kernel_only(X, args.metric)
            ours_obj = evaluate_objective(X, best.indices, args.metric)
            sub_obj = evaluate_objective(X, sub["indices"], args.metric)
            result["ours_objective"] = ours_obj
        else:
            ours_obj, sub_obj = best.objective, float(sub["gains"].sum())
        result["submodlib_objective"] = sub_obj
        result["speedup_end_to_end"] = sub["total_s"] / best.wall_s
        result["speedup_vs_maximize_only"] = sub_max / best.wall_s
        result["speedup_optimizer_only"] = sub_max / best.optimize_s
        result["objective_ratio"] = ours_obj / sub_obj if sub_obj else None
        m = min(len(best.indices), len(sub["indices"]))
        result["picks_equal_fraction"] = float(np.mean(best.indices[:m] == sub["indices"][:m])) if m else None

    if not args.json:
        _print_table(result)
    print(json.dumps(result))
    return result


def _fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def _print_table(r: dict) -> None:
    kern = f"knn (k={r['knn']})" if r["kernel"] == "knn" else "dense"
    print(f"facility location bench: n={r['n']} d={r['dim']} budget={r['budget']} kernel={kern} "
          f"metric={r['metric']} | {r['clusters']} blobs, spread {r['spread']}, seed {r['seed']} | "
          f"{r['device']}, {r['threads']} thread(s), best of {r['repeat']}")
    print(f"{'':<28}{'kernel s':>10}{'optimize s':>12}{'total s':>10}{'objective':>16}")
    print(f"{'workbench ' + r['optimizer']:<28}{_fmt(r['ours_kernel_s']):>10}{_fmt(r['ours_optimize_s']):>12}"
          f"{_fmt(r['ours_total_s']):>10}{_fmt(r['ours_objective'], '.6f'):>16}")
    if r["submodlib_total_s"] is not None:
        print(f"{'submodlib LazyGreedy':<28}{_fmt(r['submodlib_kernel_s']):>10}{_fmt(r['submodlib_maximize_s']):>12}"
              f"{_fmt(r['submodlib_total_s']):>10}{_fmt(r['submodlib_objective'], '.6f'):>16}")
        if r["submodlib_kernel_only_s"] is not None:
            print(f"submodlib kernel only (helper.create_kernel, sklearn): {r['submodlib_kernel_only_s']:.3f} s")
        print(f"speedup end to end {r['speedup_end_to_end']:.1f}x | vs submodlib maximize only "
              f"{r['speedup_vs_maximize_only']:.1f}x | optimizer only {r['speedup_optimizer_only']:.1f}x | "
              f"objective ratio {r['objective_ratio']:.7f} | same pick at {100 * r['picks_equal_fraction']:.1f}% "
              f"of positions")
    if r["note"]:
        print(r["note"])
    print(f"gain evaluations {r['ours_evaluations']}, kernel compactions {r['ours_compactions']}, "
          f"peak RSS {r['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(_parser)
    main(_parser.parse_args())
