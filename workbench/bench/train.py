"""``bench train``: the workbench's training step against Hugging Face ``BertForMaskedLM``'s, same run.

Both sides train a model of the same size (``--size``: layers / hidden / heads / FFN of the preset,
``--vocab-size``) on the **same batches**: the first ``--warmup + --steps`` micro-batches of the
seeded data stream of the MLM task over ``--corpus`` (``--batch-size`` documents truncated to
``--seq-len`` tokens, padding trimmed to the longest document of each batch, 15% of the real tokens
masked). Tokens/s counts the real (non-padding) tokens of those batches, the same for both.

* **hf** -- ``BertForMaskedLM`` with its defaults: post-LN, dropout 0.1, the dense MLM head (the
  vocabulary decoder runs on every position), its own loss (``labels=``), ``torch.optim.AdamW``
  with torch's default implementation, gradient clipping at 1.0: what a ``Trainer`` step does.
* **workbench** -- the step of :func:`workbench.train` with the budget recipe's model: the pre-LN
  encoder (``prelnbert-<size>``), no dropout (Cramming), the sparse MLM head (the decoder runs on
  the masked ~15% of positions only), torch's fused AdamW, clipping at 1.0, run
  through the loop's own :class:`~workbench.training.backends.TorchBackend`.

Same arithmetic where it matters: both compute the mean cross-entropy over the same masked targets
of the same batches; the savings are work the dense head and dropout do that the loss does not need.

Timing interleaves the two sides step by step (alternating which goes first), so a change in the
machine's load hits both; the first ``--warmup`` steps of each are not counted. ``ratio`` is the
workbench's tokens/s over HF's from the summed step times, ``ratio_median`` from median step times.
MFU = model FLOPs per second / the device's peak, measured in the same run as the best of a few
dense fp32 (or ``--precision``) matmuls of ``--peak-size`` (an achievable peak, not a data-sheet one);
model FLOPs per token are 6 x the parameters a token touches plus attention
(:func:`workbench.models.flops_per_token`), with the head counted on the positions each side
decodes (every position for HF, the masked share for the workbench).

The last line printed is one JSON object (``--json`` prints only that).
"""
from __future__ import annotations

import argparse

from ..data.prepare import prepare
from ..errors import ConfigError
from ..models import SIZES, flops_per_token, model as make_model, param_count
from ..recipes.budget_bert import resolve_precision
from ..training.backends import autocast, make_backend
from ..training.hooks import FullSampler
from ..training.loop import make_optimizer, resolve_device, to_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="tiny",
                        help="preset size: tiny | mini | small | medium | base (default tiny)")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per step (default 32)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per document (default 128)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="WordPiece vocabulary (default 8192)")
    parser.add_argument("--corpus", default="pydocs:numpy,sklearn", help="corpus spec (default pydocs:numpy,sklearn)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side first (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's default)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                        help="autocast for both sides (auto: bf16 on a bf16 GPU, else fp32)")
    parser.add_argument("--peak-size", type=int, default=1024, help="matmul size for the measured peak (default 1024)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_peak(device, precision: str, n: int = 1024, reps: int = 5) -> float:
    """FLOP/s of the best of ``reps`` ``n x n`` matmuls (bf16 when ``precision`` is bf16, else fp32)."""
    import time

    import torch
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    best = float("inf")
    for _ in range(reps + 1):
        _sync(device)
        t = time.perf_counter()
        (a @ b).sum()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def main(args) -> dict:
    import json
    import os
    import statistics
    import time

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from tqdm import tqdm


    if args.size not in SIZES or args.size[0].isdigit():
        raise ConfigError(f"--size {args.size!r} is not one of tiny, mini, small, medium, base")
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        raise ConfigError("--steps and --batch-size must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(None if args.device == "auto" else args.device)
    precision = resolve_precision(args.precision, device)
    quiet = args.json

    prep = prepare(args.corpus, f"prelnbert-{args.size}", seq_len=args.seq_len, vocab_size=args.vocab_size,
                   seed=args.seed, dropout=0.0)
    task, V = prep.train, len(prep.tokenizer)
    sampler = FullSampler()
    sampler.setup(task, seed=args.seed)
    n = args.warmup + args.steps
    batches = [to_device(task.collate(sampler.next(args.batch_size), step=k), device) for k in range(n)]
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    targets = [int((b["labels"] != -100).sum()) for b in batches]
    mask_share = sum(targets) / sum(tokens)

    # ---- Hugging Face: BertForMaskedLM, defaults (dropout 0.1, dense head), torch AdamW, clip 1.0
    hf = make_model(f"bert-{args.size}", vocab_size=V, max_positions=max(args.seq_len, 128), seed=args.seed).to(device)
    hf.train()
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4)

    def hf_step(b):
        with autocast(device, precision):
            loss = hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)
        return loss

    # ---- workbench: pre-LN, no dropout, sparse head, fused AdamW, the loop's backend step
    wb = prep.model.to(device)
    wb.train()
    wb_opt = make_optimizer(wb, 1e-4, fused=True)
    backend = make_backend("torch", wb, task, wb_opt, device, precision)

    def wb_step(b):
        with backend.accumulate(last=True):
            with backend.autocast():
                loss = backend.loss(b)
            backend.backward(loss)
        backend.step(1.0)
        return loss

    times = {"hf": [], "workbench": []}
    first_loss = {}
    sides = [("hf", hf_step), ("workbench", wb_step)]
    for k in tqdm(range(n), disable=quiet, desc="bench train", leave=False):
        for name, fn in (sides if k % 2 == 0 else sides[::-1]):
            _sync(device)
            t = time.perf_counter()
            loss = fn(batches[k])
            _sync(device)
            dt = time.perf_counter() - t
            first_loss.setdefault(name, float(loss.detach()))
            if k >= args.warmup:
                times[name].append(dt)
    timed_tokens = sum(tokens[args.warmup:])
    tps = {s: timed_tokens / sum(times[s]) for s in times}
    med_tok = statistics.median(tokens[args.warmup:])
    tps_med = {s: med_tok / statistics.median(times[s]) for s in times}
    peak = measured_peak(device, precision, args.peak_size)
    fpt = {"hf": flops_per_token(hf, args.seq_len, head_fraction=1.0),
           "workbench": flops_per_token(wb, args.seq_len, head_fraction=mask_share)}
    L, H, A, I = SIZES[args.size]
    result = {
        "bench": "train",
        "size": args.size, "layers": L, "hidden": H, "heads": A, "ffn": I,
        "vocab_size": V, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "corpus": args.corpus, "steps": args.steps, "warmup": args.warmup,
        "device": str(device), "threads": torch.get_num_threads(), "precision": precision,
        "hf_params": param_count(hf), "workbench_params": param_count(wb),
        "real_tokens_per_step": timed_tokens / args.steps,
        "padded_tokens_per_step": sum(b["input_ids"].numel() for b in batches[args.warmup:]) / args.steps,
        "masked_share": mask_share,
        "hf_first_loss": first_loss["hf"], "workbench_first_loss": first_loss["workbench"],
        "hf_step_s_median": statistics.median(times["hf"]),
        "workbench_step_s_median": statistics.median(times["workbench"]),
        "hf_tokens_per_s": tps["hf"],
        "workbench_tokens_per_s": tps["workbench"],
        "ratio": tps["workbench"] / tps["hf"],
        "ratio_median": tps_med["workbench"] / tps_med["hf"],
        "hf_flops_per_token": fpt["hf"], "workbench_flops_per_token": fpt["workbench"],
        "peak_flops_measured": peak,
        "hf_mfu": fpt["hf"] * tps["hf"] / peak,
        "workbench_mfu": fpt["workbench"] * tps["workbench"] / peak,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if not quiet:
        print(f"{args.size}: {L} layers, hidden {H}, vocab {V}, seq {args.seq_len}, batch {args.batch_size} "
              f"({result['real_tokens_per_step']:.0f} real tokens/step), {device}, {result['threads']} threads, "
              f"{precision}")
        print(f"  hf BertForMaskedLM (dense head, dropout 0.1): {tps['hf']:9.0f} tokens/s  "
              f"MFU {result['hf_mfu']:.1%}")
        print(f"  workbench (pre-LN, sparse head, no dropout):  {tps['workbench']:9.0f} tokens/s  "
              f"MFU {result['workbench_mfu']:.1%}")
        print(f"  ratio {result['ratio']:.2f}x (median steps: {result['ratio_median']:.2f}x); "
              f"measured peak {peak / 1e9:.0f} GFLOP/s")
    print(json.dumps(result))
    return result
