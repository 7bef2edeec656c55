"""``make gpu-check``: the GPU paths, checked in one go on a machine with CUDA (under 8 minutes).

``python -m workbench.bench.gpu_check [--out DIR] [--only NAME,...] [--list]``

Each check runs in its own process (its own CUDA context and memory, a timeout of its own) and
prints ONE JSON line: ``{"check", "ok", "wall_s", ...the numbers...}``; a failed check carries
``"error"`` (the last lines it printed) and the others still run. The last line is a summary
``{"check": "summary", "ok", "passed", "failed", ...}``; the exit code is 1 when a check failed.

The checks:

* ``fl_dense_20k`` -- ``bench fl`` on the GPU, n 20,000 x 64, dense cosine kernel, budget 2,000;
* ``fl_knn_100k`` -- ``bench fl`` on the GPU, n 100,000 x 64, k-NN kernel (k 10), budget 10,000;
* ``train_bf16_bert_small`` -- ``bench train --size bert-small`` in bf16 autocast;
* ``probe_cuda`` -- ``bench probe`` on the GPU (naive against batched prober);
* ``smoke_<recipe>`` -- every notebook's recipe at ``smoke`` scale (``recipe.run(P)``, the
  notebook's whole computation without the kernel and the views), which must have put tensors on
  the GPU (``torch.cuda.max_memory_allocated() > 0``);
* ``ddp_torchrun`` -- ``torchrun --nproc_per_node 1`` of the budget-BERT entry point at ``smoke``
  (NCCL, one GPU);
* ``deepspeed`` -- the same with ``-p backend=deepspeed`` (a real ``deepspeed.initialize`` engine).

On a machine without CUDA it prints one line saying so and exits 0: nothing here can be checked
on a CPU that the test suite does not already check.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_PY = sys.executable


def _checks(out: Path) -> list[tuple[str, list[str], int]]:
    """(name, command, timeout in seconds) for every check, in the order they run."""
    from ..recipes import available
    bench = [_PY, "-m", "workbench", "bench"]
    checks = [
        ("fl_dense_20k", bench + ["fl", "--n", "20000", "--dim", "64", "--budget", "2000", "--kernel", "dense",
                                  "--device", "cuda", "--gpu-only", "--json"], 120),
        ("fl_knn_100k", bench + ["fl", "--n", "100000", "--dim", "64", "--budget", "10000", "--kernel", "knn",
                                 "--device", "cuda", "--gpu-only", "--json"], 150),
        ("train_bf16_bert_small", bench + ["train", "--size", "bert-small", "--device", "cuda", "--precision", "bf16",
                                           "--corpus", "pydocs:numpy", "--json"], 150),
        ("probe_cuda", bench + ["probe", "--device", "cuda", "--json"], 120),
    ]
    for name in available():
        checks.append((f"smoke_{name}", [_PY, "-m", "workbench.bench.gpu_check", "--smoke", name,
                                         "--out", str(out / "smoke")], 180))
    entry = ["-m", "workbench.recipes.budget_bert", "--schedule", "step-linear", "--scale", "smoke", "--no-downstream"]
    torchrun = [_PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    checks.append(("ddp_torchrun", torchrun + entry + ["--out", str(out / "ddp")], 120))
    checks.append(("deepspeed", torchrun + entry + ["--out", str(out / "deepspeed"), "-p", "backend=deepspeed"], 150))
    return checks


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


# numbers worth a line in the cards, per check (the whole JSON is in OUT/gpu_check.jsonl)
_KEEP = {
    "fl": ("n", "dim", "budget", "kernel", "device", "workbench_s", "workbench_wall_s", "kernel_s",
           "optimize_s", "objective", "peak_gpu_mb"),
    "train": ("size", "precision", "device", "workbench_tokens_per_s", "hf_tokens_per_s", "hf_sparse_tokens_per_s",
              "ratio", "ratio_vs_hf_sparse", "recipe_ratio", "workbench_mfu", "peak_flops_measured"),
    "probe": ("device", "candidates", "naive_probes_per_s", "batched_probes_per_s", "speedup", "max_abs_diff"),
}


def run_check(name: str, cmd: list[str], timeout: int, log) -> dict:
    t0 = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc = 124
        text = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")) + \
               ((e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or ""))
        text += f"\ntimed out after {timeout} s"
    wall = time.perf_counter() - t0
    log.write(f"===== {name} (rc {rc}, {wall:.1f} s): {' '.join(cmd)}\n{text}\n")
    log.flush()
    res = {"check": name, "ok": rc == 0, "wall_s": round(wall, 1)}
    got = _last_json(text) if rc == 0 else None
    if got is not None:
        res["full"] = got            # written to OUT/gpu_check.jsonl; the printed line keeps the numbers below
        kind = got.get("bench")
        keep = _KEEP.get(kind)
        res.update({k: got[k] for k in keep if k in got} if keep else got)
    if rc != 0:
        res["error"] = " | ".join(line for line in text.strip().splitlines()[-4:])[-600:]
    return res


def smoke(name: str, out: Path) -> dict:
    """One recipe at ``smoke`` scale on this machine's GPU; returns its headline numbers."""
    import torch

    from ..config import load_yaml, parse
    from ..recipes import params_file, recipe
    mod = recipe(name)
    raw = {**load_yaml(params_file(name, "smoke")), "scale": "smoke", "out_dir": str(out / name)}
    P = parse(mod.Params, raw)
    t0 = time.perf_counter()
    result = mod.run(P)
    s = mod.write_summary(P, result)
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    if peak <= 0:
        raise SystemExit(f"smoke {name}: nothing was allocated on the GPU (the recipe ran on the CPU)")
    return {"bench": "smoke", "paper": name, "metric": s.metric, "baseline": s.baseline.value,
            "method": s.method.value, "run_s": round(time.perf_counter() - t0, 1), "peak_gpu_mb": round(peak / 2**20)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workbench.bench.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="where runs and the full log go (default: a temporary folder)")
    ap.add_argument("--only", default="", help="comma-separated check names (default: all)")
    ap.add_argument("--list", action="store_true", help="list the checks and exit")
    ap.add_argument("--smoke", metavar="RECIPE", help=argparse.SUPPRESS)   # one smoke check, in its own process
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.smoke:
        print(json.dumps(smoke(a.smoke, Path(a.out or tempfile.mkdtemp(prefix="wb-gpu-")))))
        return 0
    import torch
    out = Path(a.out or tempfile.mkdtemp(prefix="wb-gpu-check-")).resolve()
    checks = _checks(out)
    if a.list:
        for name, cmd, timeout in checks:
            print(f"{name:<24} {timeout:>4} s  {' '.join(cmd[1:])}")
        return 0
    if not torch.cuda.is_available():
        print(f"gpu-check: skipped, no CUDA device here (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda or 'none'})")
        return 0
    only = {s for s in a.only.split(",") if s}
    unknown = only - {c[0] for c in checks}
    if unknown:
        print(f"error: unknown check(s) {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WORKBENCH_CACHE", str(out / "cache"))   # one corpus/tokenizer cache for every check
    print(json.dumps({"check": "device", "ok": True, "name": torch.cuda.get_device_name(0), "torch": torch.__version__,
                      "cuda": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported()}), flush=True)
    t0 = time.perf_counter()
    results = []
    with open(out / "gpu_check.log", "w") as log, open(out / "gpu_check.jsonl", "w") as jl:
        for name, cmd, timeout in checks:
            if only and name not in only:
                continue
            r = run_check(name, cmd, timeout, log)
            results.append(r)
            jl.write(json.dumps(r) + "\n")
            jl.flush()
            r.pop("full", None)
            print(json.dumps(r), flush=True)
    failed = [r["check"] for r in results if not r["ok"]]
    print(json.dumps({"check": "summary", "ok": not failed, "passed": len(results) - len(failed), "failed": failed,
                      "wall_s": round(time.perf_counter() - t0, 1), "log": str(out / "gpu_check.log")}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
