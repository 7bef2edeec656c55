"""``bench probe``: naive vs batched MATES oracle probing on one checkpoint.

Builds a tiny GPT-2 (random init, fixed seed), trains it for a few steps so the
optimizer carries real state (AdamW moments and step count, or SGD momentum),
draws ``--candidates`` random token blocks and a ``--ref-size`` reference
batch, then times `naive_probe` (restore, real ``optimizer.step()``, evaluate,
per candidate) against `batched_probe` (vmapped per-sample gradients,
closed-form update, vmapped reference evaluation) on the same checkpoint and
candidates.  Each prober is warmed up once and timed ``--repeats`` times
(interleaved); the best wall time of each is reported, plus process CPU
time (less sensitive to other jobs on a shared machine; with several threads it
also counts spin-waiting).

What to expect: both probers do the same FLOPs.  The bench also measures this machine's float32
GEMM peak (a large square matmul, same threads) and prints ``speedup_bound = peak / naive GFLOP/s``:
the most that *any* exact prober doing the same arithmetic could gain here.  The batched one wins by
amortising per-call overhead (Python, dispatch, optimizer bookkeeping,
restores) and by running large batched kernels, so its advantage is largest
for small models / small reference batches and shrinks as the reference
forward (``ref_size * seq_len`` tokens per candidate) becomes compute-bound.

The last line printed is one JSON object (``--json`` prints only that).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from ..selection.mates import batched_probe, naive_probe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--candidates", type=int, default=64, help="number of candidates probed (default 64)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per candidate / reference block")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--ref-size", type=int, default=4, help="reference batch rows (default 4)")
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    parser.add_argument("--train-steps", type=int, default=3, help="steps taken before probing (optimizer state)")
    parser.add_argument("--chunk-size", type=int, default=16, help="candidates per batched pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per prober; best is reported")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")


def _setup(args: argparse.Namespace):
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
    model = GPT2LMHeadModel(cfg)
    if args.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    for _ in range(args.train_steps):
        x = torch.randint(0, args.vocab, (8, args.seq_len), generator=gen)
        opt.zero_grad(set_to_none=True)
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    cands = torch.randint(0, args.vocab, (args.candidates, args.seq_len), generator=gen)
    ref = torch.randint(0, args.vocab, (args.ref_size, args.seq_len), generator=gen)
    return model, opt, cands, ref


def main(args: argparse.Namespace) -> dict:
    threads_before = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads_before)


def _gflop_per_probe(args: argparse.Namespace) -> float:
    """Matmul FLOPs of one probe: fwd+bwd (3x fwd) on T tokens + fwd on R*T reference tokens.

    Per token forward: 12*L*h^2 (QKV, out-proj, 4h MLP) + 2*L*T*h (attention
    scores and mixing) + V*h (LM head) multiply-adds.  Both probers do this
    much arithmetic; it bounds the speedup any exact batching can reach.
    """
    h, layers, t, v = args.hidden, args.layers, args.seq_len, args.vocab
    macs_per_token = 12 * layers * h * h + 2 * layers * t * h + v * h
    return 2 * macs_per_token * t * (3 + args.ref_size) / 1e9


def peak_matmul_gflops(seconds: float = 1.0, n: int = 1024) -> float:
    """The float32 matmul rate this machine reaches right now, GFLOP/s (best of repeated n x n x n GEMMs).

    A large square GEMM is the best case for the BLAS; no prober built from the same arithmetic can
    run faster than this.  So ``peak / naive_gflops`` bounds the speedup *any* exact batched prober can
    show over the naive one on this machine, with these threads.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def _run(args: argparse.Namespace) -> dict:
    model, opt, cands, ref = _setup(args)
    n = len(cands)
    naive = lambda c: naive_probe(model, opt, c, ref)  # noqa: E731
    batched = lambda c: batched_probe(model, opt, c, ref, chunk_size=args.chunk_size)  # noqa: E731
    naive(cands[:2])  # warm-up: lazy inits, allocator, kernels
    batched(cands[: min(n, args.chunk_size)])
    t_naive, t_batched, c_naive, c_batched = [], [], [], []
    for _ in range(max(1, args.repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        a = naive(cands)
        t1, c1 = time.perf_counter(), time.process_time()
        b = batched(cands)
        t2, c2 = time.perf_counter(), time.process_time()
        t_naive.append(t1 - t0)
        t_batched.append(t2 - t1)
        c_naive.append(c1 - c0)
        c_batched.append(c2 - c1)
    tn, tb = min(t_naive), min(t_batched)
    peak = peak_matmul_gflops()
    gflop = _gflop_per_probe(args)
    result = {
        "bench": "probe",
        "optimizer": args.optimizer,
        "candidates": n,
        "layers": args.layers,
        "hidden": args.hidden,
        "seq_len": args.seq_len,
        "vocab": args.vocab,
        "ref_size": args.ref_size,
        "chunk_size": args.chunk_size,
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "naive_s": tn,
        "batched_s": tb,
        "naive_probes_per_s": n / tn,
        "batched_probes_per_s": n / tb,
        "speedup": tn / tb,
        "max_abs_diff": float(np.max(np.abs(a - b))),
        "influence_abs_max": float(np.max(np.abs(a))),
        "naive_runs_s": t_naive,
        "batched_runs_s": t_batched,
        # process CPU seconds (all threads): a load-robust measure of work on a shared machine
        "naive_cpu_s": min(c_naive),
        "batched_cpu_s": min(c_batched),
        "cpu_speedup": min(c_naive) / max(min(c_batched), 1e-9),
        "gflop_per_probe": gflop,
        "naive_gflops": gflop * n / tn,
        "batched_gflops": gflop * n / tb,
        # the machine's best float32 GEMM rate, measured now, and the speedup it allows over the naive prober
        "peak_gflops": peak,
        "speedup_bound": peak / (gflop * n / tn),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if not args.json:
        print(f"MATES probe bench: GPT-2 {args.layers}L h{args.hidden} V{args.vocab} T{args.seq_len}, "
              f"{n} candidates, ref {args.ref_size}x{args.seq_len}, {args.optimizer}, {result['threads']} threads")
        print(f"{'prober':<10}{'best s':>10}{'probes/s':>12}{'GFLOP/s':>10}")
        print(f"{'naive':<10}{tn:>10.3f}{n / tn:>12.1f}{result['naive_gflops']:>10.1f}")
        print(f"{'batched':<10}{tb:>10.3f}{n / tb:>12.1f}{result['batched_gflops']:>10.1f}")
        print(f"speedup {tn / tb:.2f}x wall, {result['cpu_speedup']:.2f}x CPU time   "
              f"max|naive-batched| {result['max_abs_diff']:.2e}   max|influence| {result['influence_abs_max']:.2e}   "
              f"(load avg {result['load_avg_1m']})")
        print(f"this machine's float32 GEMM peak now: {peak:.1f} GFLOP/s, so no exact prober can beat the naive "
              f"one by more than {result['speedup_bound']:.1f}x here (same FLOPs per probe)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(_parser)
    main(_parser.parse_args())
