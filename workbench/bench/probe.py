"""``bench probe``: naive vs batched MATES oracle probing on one checkpoint, at the MATES notebook's sizes.

Builds a GPT-2 (random init, fixed seed) of the MATES ``tiny`` notebook's probe sizes by default
(``gpt2-tiny``: 2 layers, hidden 128, 2 heads, FFN 512; vocabulary 4096, 64-token blocks, 8
reference blocks: ``papers/mates/tiny.yaml``, :class:`workbench.recipes.mates.MatesParams`), trains it
for a few steps so the optimizer carries real state (AdamW moments and step count, or SGD momentum),
draws ``--candidates`` random token blocks and a ``--ref-size`` reference batch, then times
`naive_probe` (restore, real ``optimizer.step()``, evaluate, per candidate) against `batched_probe`
(vmapped per-sample gradients, closed-form update, vmapped reference evaluation) on the same
checkpoint and candidates, in three settings:

* **one thread** -- naive and batched interleaved (``--repeats`` times, best wall time of each;
  process CPU time next to it);
* **all cores** -- the same, with ``--threads`` torch threads (default: every core);
* **naive, one process per core** -- ``--processes`` spawned processes (default: every core), one
  torch thread each, each probing all the candidates, started together; the aggregate probes/s is
  what a machine gets from running independent probes (or independent runs) side by side.

The bound: both probers do the same FLOPs per probe (:func:`_gflop_per_probe`), so no exact prober can
run faster than this machine's float32 GEMM peak allows. The peak is measured per core (one thread,
a large square matmul) and on all cores; ``gemm_bound_probes_per_s_per_core`` = per-core peak /
GFLOP per probe, and ``speedup_bound`` = per-core peak / the naive one-thread GFLOP/s: the most any
exact prober can gain over the naive one, per core. (A bound taken against the naive loop at several
threads would grow with that loop's threading overhead, not with anything a prober could win.)

With ``--device cuda`` both probers run on the GPU (interleaved), the peak is the GPU's, and the
thread and process settings are skipped.

The headline (batched over naive, one thread, interleaved in this process) goes through
:func:`workbench.bench.common.headline`; the printed verdict says in which settings the batched
prober wins and where it loses. The last line printed is one JSON object (``--json`` prints only that).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ..selection.mates import batched_probe, naive_probe
from . import options as _options
from .common import cpu_count, headline, load_avg


add_arguments = _options.probe   # the options live in .options (the CLI reads them without torch)

def _setup(args, device: str = "cpu"):
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    cfg = GPT2Config(
        n_layer=args.layers,
        n_embd=args.hidden,
        n_head=args.heads,
        vocab_size=args.vocab,
        n_positions=args.seq_len,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(cfg).to(device)
    if args.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    for _ in range(args.train_steps):
        x = torch.randint(0, args.vocab, (8, args.seq_len), generator=gen).to(device)
        opt.zero_grad(set_to_none=True)
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    cands = torch.randint(0, args.vocab, (args.candidates, args.seq_len), generator=gen).to(device)
    ref = torch.randint(0, args.vocab, (args.ref_size, args.seq_len), generator=gen).to(device)
    return model, opt, cands, ref


def main(args: argparse.Namespace) -> dict:
    threads_before = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads_before)


def _gflop_per_probe(args) -> float:
    """Matmul FLOPs of one probe: fwd+bwd (3x fwd) on T tokens + fwd on R*T reference tokens.

    Per token forward: 12*L*h^2 (QKV, out-proj, 4h MLP) + 2*L*T*h (attention
    scores and mixing) + V*h (LM head) multiply-adds.  Both probers do this
    much arithmetic; it bounds the speedup any exact batching can reach.
    """
    h, layers, t, v = args.hidden, args.layers, args.seq_len, args.vocab
    macs_per_token = 12 * layers * h * h + 2 * layers * t * h + v * h
    return 2 * macs_per_token * t * (3 + args.ref_size) / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_matmul_gflops(seconds: float = 1.0, n: int = 1024, device: str = "cpu") -> float:
    """The float32 matmul rate this machine reaches right now with the current threads, GFLOP/s (best of
    repeated n x n x n GEMMs).

    A large square GEMM is the best case for the BLAS; no prober built from the same arithmetic can
    run faster than this.
    """
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    _sync(device)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def _interleaved(args, model, opt, cands, ref, device: str):
    """Best wall and CPU seconds of naive and batched, timed alternately ``--repeats`` times."""
    n = len(cands)
    naive = lambda c: naive_probe(model, opt, c, ref)  # noqa: E731
    batched = lambda c: batched_probe(model, opt, c, ref, chunk_size=args.chunk_size)  # noqa: E731
    naive(cands[:2])  # warm-up: lazy inits, allocator, kernels
    batched(cands[: min(n, args.chunk_size)])
    runs = {"naive": [], "batched": []}
    cpu = {"naive": [], "batched": []}
    out = {}
    for r in range(max(1, args.repeats)):
        for name, fn in ((("naive", naive), ("batched", batched)) if r % 2 == 0 else
                         (("batched", batched), ("naive", naive))):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            out[name] = fn(cands)
            _sync(device)
            runs[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {"naive_s": min(runs["naive"]), "batched_s": min(runs["batched"]),
            "naive_cpu_s": min(cpu["naive"]), "batched_cpu_s": min(cpu["batched"]),
            "naive_runs_s": runs["naive"], "batched_runs_s": runs["batched"],
            "max_abs_diff": float(np.max(np.abs(out["naive"] - out["batched"]))),
            "influence_abs_max": float(np.max(np.abs(out["naive"])))}


def _naive_worker(argd: dict, barrier, queue) -> None:
    """One process of the 'one process per core' line: one thread, the same setup, naive on every candidate."""
    torch.set_num_threads(1)
    args = argparse.Namespace(**argd)
    model, opt, cands, ref = _setup(args)
    naive_probe(model, opt, cands[:2], ref)          # warm-up
    barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    naive_probe(model, opt, cands, ref)
    queue.put((time.perf_counter() - t0, time.process_time() - c0))


def naive_per_process(args, processes: int) -> dict:
    """Aggregate probes/s of ``processes`` one-thread naive probers started together (spawned)."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes + 1), ctx.Queue()
    argd = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}
    procs = [ctx.Process(target=_naive_worker, args=(argd, barrier, queue), daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=600)
        t0 = time.perf_counter()
        res = [queue.get(timeout=600) for _ in procs]
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
    return {"processes": processes, "wall_s": wall, "per_process_s": [r[0] for r in res],
            "cpu_s": sum(r[1] for r in res), "probes_per_s": processes * args.candidates / wall}


def _run(args: argparse.Namespace) -> dict:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device.startswith("cuda")
    cores = cpu_count()
    all_threads = args.threads if args.threads > 0 else cores
    n, gflop = args.candidates, _gflop_per_probe(args)
    settings: dict[str, dict] = {}

    if cuda:
        model, opt, cands, ref = _setup(args, device)
        settings["device"] = _interleaved(args, model, opt, cands, ref, device)
        peak_core = peak = peak_matmul_gflops(args.peak_seconds, device=device)
    else:
        torch.set_num_threads(1)
        model, opt, cands, ref = _setup(args)
        settings["1t"] = _interleaved(args, model, opt, cands, ref, device)
        peak_core = peak_matmul_gflops(args.peak_seconds)
        torch.set_num_threads(all_threads)
        settings["allcore"] = _interleaved(args, model, opt, cands, ref, device)
        peak = peak_matmul_gflops(args.peak_seconds)
    procs = cores if args.processes < 0 else args.processes
    per_proc = naive_per_process(args, procs) if procs > 0 and not cuda else None

    main_key = "device" if cuda else "1t"
    m = settings[main_key]
    rate = lambda s: n / s  # noqa: E731
    result = {
        "bench": "probe", "device": device, "optimizer": args.optimizer, "candidates": n,
        "layers": args.layers, "hidden": args.hidden, "heads": args.heads, "seq_len": args.seq_len,
        "vocab": args.vocab, "ref_size": args.ref_size, "chunk_size": args.chunk_size,
        "cores": cores, "threads": 1 if not cuda else torch.get_num_threads(), "all_core_threads": all_threads,
        "params": sum(p.numel() for p in model.parameters()),
        # the main (one-thread; on a GPU: the device's) setting, under today's keys
        "naive_s": m["naive_s"], "batched_s": m["batched_s"],
        "naive_probes_per_s": rate(m["naive_s"]), "batched_probes_per_s": rate(m["batched_s"]),
        "speedup": m["naive_s"] / m["batched_s"],
        "max_abs_diff": max(s["max_abs_diff"] for s in settings.values()),
        "influence_abs_max": m["influence_abs_max"],
        "naive_runs_s": m["naive_runs_s"], "batched_runs_s": m["batched_runs_s"],
        # process CPU seconds (all threads): a load-robust measure of work on a shared machine
        "naive_cpu_s": m["naive_cpu_s"], "batched_cpu_s": m["batched_cpu_s"],
        "cpu_speedup": m["naive_cpu_s"] / max(m["batched_cpu_s"], 1e-9),
        "gflop_per_probe": gflop,
        "naive_gflops": gflop * rate(m["naive_s"]),
        "batched_gflops": gflop * rate(m["batched_s"]),
        # the GEMM bound per core (one thread; on a GPU: the device), measured now
        "peak_gflops": peak_core,
        "peak_gflops_all": peak,
        "gemm_bound_probes_per_s_per_core": peak_core / gflop,
        "gemm_bound_probes_per_s": peak / gflop if cuda else cores * peak_core / gflop,
        "speedup_bound": peak_core / (gflop * rate(m["naive_s"])),
        "interleaved": True,
    }
    if not cuda:
        a = settings["allcore"]
        result.update({
            "naive_1t_probes_per_s": rate(m["naive_s"]), "batched_1t_probes_per_s": rate(m["batched_s"]),
            "naive_1t_cpu_s": m["naive_cpu_s"], "batched_1t_cpu_s": m["batched_cpu_s"],
            "naive_allcore_probes_per_s": rate(a["naive_s"]), "batched_allcore_probes_per_s": rate(a["batched_s"]),
            "naive_allcore_cpu_s": a["naive_cpu_s"], "batched_allcore_cpu_s": a["batched_cpu_s"],
            "speedup_allcore": a["naive_s"] / a["batched_s"],
        })
    if per_proc is not None:
        result.update({"naive_per_process_probes_per_s": per_proc["probes_per_s"],
                       "naive_per_process_processes": per_proc["processes"],
                       "naive_per_process_wall_s": per_proc["wall_s"], "naive_per_process_cpu_s": per_proc["cpu_s"]})
    la = load_avg()
    result["load_avg"] = result["load_avg_1m"] = la

    # where each prober wins: the best per setting, and the best overall machine rate
    rows = []   # (label, probes/s, wall s, cpu s, note)
    if cuda:
        rows += [(f"naive, {device}", rate(m["naive_s"]), m["naive_s"], m["naive_cpu_s"]),
                 (f"batched, {device}", rate(m["batched_s"]), m["batched_s"], m["batched_cpu_s"])]
    else:
        a = settings["allcore"]
        rows += [("naive, 1 thread", rate(m["naive_s"]), m["naive_s"], m["naive_cpu_s"]),
                 ("batched, 1 thread", rate(m["batched_s"]), m["batched_s"], m["batched_cpu_s"]),
                 (f"naive, {all_threads} threads", rate(a["naive_s"]), a["naive_s"], a["naive_cpu_s"]),
                 (f"batched, {all_threads} threads", rate(a["batched_s"]), a["batched_s"], a["batched_cpu_s"])]
        if per_proc is not None:
            rows.append((f"naive, one process per core ({procs} x 1 thread)", per_proc["probes_per_s"],
                         per_proc["wall_s"], per_proc["cpu_s"]))
    best = max(rows, key=lambda r: r[1])
    result["best_setting"] = best[0]
    verdict = []
    if cuda:
        verdict.append(f"on {device} the batched prober is {result['speedup']:.2f}x the naive one "
                       f"({'wins' if result['speedup'] > 1 else 'loses'})")
    else:
        s1, sa = result["speedup"], result["speedup_allcore"]
        verdict.append(f"at one thread the batched prober {'wins' if s1 > 1 else 'loses'} ({s1:.2f}x the naive one)")
        verdict.append(f"at {all_threads} threads it {'wins' if sa > 1 else 'loses'} ({sa:.2f}x)")
        if per_proc is not None:
            bb = max(rate(a["batched_s"]), rate(m["batched_s"]))
            pp = bb / per_proc["probes_per_s"]
            result["batched_best_vs_naive_per_process"] = pp
            verdict.append(f"against the naive prober run in one process per core it {'wins' if pp > 1 else 'loses'} "
                           f"(batched's best in-process rate is {pp:.2f}x that aggregate)")
    result["verdict"] = "; ".join(verdict)
    if not args.json:
        print(f"MATES probe bench: GPT-2 {args.layers}L h{args.hidden} {args.heads} heads V{args.vocab} "
              f"T{args.seq_len}, {n} candidates, ref {args.ref_size}x{args.seq_len}, {args.optimizer}, "
              f"chunk {args.chunk_size}, {device}, {cores} cores ({result['gflop_per_probe']:.3f} GFLOP per probe)")
        print(f"  {'setting':<46}{'probes/s':>10}{'wall s':>9}{'CPU s':>9}{'GFLOP/s':>9}")
        for label, r, w, c in rows:
            print(f"  {label:<46}{r:>10.1f}{w:>9.3f}{c:>9.3f}{r * gflop:>9.1f}")
        if cuda:
            print(f"  GEMM bound on {device}: peak {peak:.0f} GFLOP/s -> {peak / gflop:.0f} probes/s")
        else:
            print(f"  GEMM bound per core: peak {peak_core:.1f} GFLOP/s on one thread -> "
                  f"{result['gemm_bound_probes_per_s_per_core']:.1f} probes/s per core, "
                  f"{result['gemm_bound_probes_per_s']:.1f} on {cores} cores (measured {all_threads}-thread peak "
                  f"{peak:.1f} GFLOP/s); the naive one-thread prober is at 1/{result['speedup_bound']:.1f} of it")
        print(f"  max|naive-batched| {result['max_abs_diff']:.2e}   max|influence| {result['influence_abs_max']:.2e}")
        print("  " + headline(f"batched vs naive prober ({'on ' + device if cuda else 'one thread'})",
                              result["speedup"], "the naive prober", interleaved=True).replace("workbench", "batched"))
        print(f"  where batched wins and loses: {result['verdict']}; fastest here: {best[0]} "
              f"({best[1]:.1f} probes/s) (load avg {la})")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(_parser)
    main(_parser.parse_args())
