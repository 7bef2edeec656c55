"""``bench train``: the workbench's training step against Hugging Face ``BertForMaskedLM``'s, same run.

All sides train a model of the same size (``--size``: layers / hidden / heads / FFN of the preset,
``tiny`` or ``bert-tiny``; ``--vocab-size``) on the **same batches**: the first ``--warmup + --steps``
micro-batches of the seeded data stream of the MLM task over ``--corpus`` (``--batch-size``
documents truncated to ``--seq-len`` tokens, padding trimmed to the longest document of each batch,
15% of the real tokens masked). Tokens/s counts the real (non-padding) tokens of those batches, the
same for every side.

* **hf** -- stock ``BertForMaskedLM`` with its defaults: post-LN, dropout 0.1, the dense MLM head (the
  vocabulary decoder runs on every position), its own loss (``labels=``), ``torch.optim.AdamW``
  with torch's default implementation, gradient clipping at 1.0: what a ``Trainer`` step does.
* **hf_nodrop_fused** -- the same stock ``BertForMaskedLM`` with dropout 0 and fused AdamW (where
  torch has it on the device; else its default), still the dense head and its own loss.
* **hf_sparse** -- the same stock ``BertForMaskedLM``, dropout 0, fused AdamW, trained on the
  workbench's sparse-head MLM loss (:func:`workbench.models.heads.mlm_loss`: the decoder runs on the
  masked ~15% of positions only). This is the academic-budget recipe written by hand around stock
  HF: the strongest peer of the workbench's step.
* **workbench** -- the step of :func:`workbench.train` with the budget recipe's model: the pre-LN
  encoder (``prelnbert-<size>``), no dropout (Cramming), the sparse MLM head, fused AdamW, clipping
  at 1.0, run through the loop's own :class:`~workbench.training.backends.TorchBackend`.

Two ratios, not one. The **headline** is workbench / ``hf_sparse``: what the loop (and the pre-LN
model) adds over the same recipe written around stock HF (goal: no slower than 0.97x). The
**recipe** ratio, ``hf_sparse`` / ``hf`` (and workbench / ``hf``, kept as ``ratio``), is what the
sparse head + no dropout + fused AdamW buy over a stock ``Trainer``-style step: a property of the
recipe, not of the loop; ``hf_nodrop_fused`` splits it into dropout+fused and the sparse head.

Same arithmetic where it matters: all compute the mean cross-entropy over the same masked targets
of the same batches; the savings are work the dense head and dropout do that the loss does not need.

Timing interleaves the sides step by step (rotating which goes first), so a change in the machine's
load hits all of them; the first ``--warmup`` steps of each are not counted. Tokens/s come from the
summed step times (``ratio_median`` from median step times); process CPU seconds per side are
reported next to wall seconds. ``--precision auto`` (the default) autocasts every side to bf16 on a
GPU with bf16 and runs fp32 elsewhere; ``--bf16`` is ``--precision bf16``.
MFU = model FLOPs per second / the device's peak, measured in the same run as the best of a few
dense fp32 (or bf16) matmuls of ``--peak-size`` (an achievable peak, not a data-sheet one);
model FLOPs per token are 6 x the parameters a token touches plus attention
(:func:`workbench.models.flops_per_token`), with the head counted on the positions each side
decodes (every position for the dense head, the masked share for the sparse one).

The last line printed is one JSON object (``--json`` prints only that).
"""
from __future__ import annotations

import argparse

from ..data.prepare import prepare
from ..errors import ConfigError
from ..models import SIZES, flops_per_token, model as make_model, param_count
from ..models.heads import mlm_loss
from ..recipes.budget_bert import resolve_precision
from ..training.backends import autocast, make_backend
from ..training.hooks import FullSampler
from ..training.loop import make_optimizer, resolve_device, to_device
from . import options as _options
from .common import cpu_count, headline, load_avg

#: the sides, in the order of the first step (the order rotates by one every step)
SIDES = ("hf", "hf_nodrop_fused", "hf_sparse", "workbench")


add_arguments = _options.train   # the options live in .options (the CLI reads them without torch)

def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fused_adamw_ok(device) -> bool:
    """Whether this torch has a fused AdamW for ``device`` (tried on one small parameter)."""
    import torch
    try:
        p = torch.nn.Parameter(torch.zeros(2, device=device))
        p.grad = torch.ones_like(p)
        torch.optim.AdamW([p], lr=1e-3, fused=True).step()
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


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


def _size(size: str) -> str:
    """``tiny`` or ``bert-tiny`` -> ``tiny`` (a BERT size), else a ConfigError."""
    s = size[len("bert-"):] if size.startswith("bert-") else size
    if s not in SIZES or s[0].isdigit():
        raise ConfigError(f"--size {size!r} is not one of tiny, mini, small, medium, base (or bert-<size>)")
    return s


def main(args) -> dict:
    import json
    import os
    import statistics
    import time

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from tqdm import tqdm

    size = _size(args.size)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        raise ConfigError("--steps and --batch-size must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(None if args.device == "auto" else args.device)
    precision = resolve_precision(args.precision, device)
    quiet = args.json

    prep = prepare(args.corpus, f"prelnbert-{size}", seq_len=args.seq_len, vocab_size=args.vocab_size,
                   seed=args.seed, dropout=0.0)
    task, V = prep.train, len(prep.tokenizer)
    sampler = FullSampler()
    sampler.setup(task, seed=args.seed)
    n = args.warmup + args.steps
    batches = [to_device(task.collate(sampler.next(args.batch_size), step=k), device) for k in range(n)]
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    targets = [int((b["labels"] != -100).sum()) for b in batches]
    mask_share = sum(targets) / sum(tokens)
    fused = fused_adamw_ok(device)
    max_pos = max(args.seq_len, 128)

    def hf_model(dropout: float):
        m = make_model(f"bert-{size}", vocab_size=V, max_positions=max_pos, seed=args.seed, dropout=dropout)
        return m.to(device).train()

    def hf_stepper(m, opt, sparse: bool):
        def step(b):
            with autocast(device, precision):
                if sparse:
                    loss = mlm_loss(m, b, sparse=True)
                else:
                    loss = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
        return step

    # ---- stock HF: BertForMaskedLM, defaults (dropout 0.1, dense head), torch's default AdamW, clip 1.0
    hf = hf_model(0.1)
    # ---- stock HF, dropout 0, fused AdamW (where torch has it here), dense head
    hf_nf = hf_model(0.0)
    # ---- stock HF, dropout 0, fused AdamW, the workbench's sparse-head MLM loss: the recipe around stock HF
    hf_sp = hf_model(0.0)
    fkw = {"fused": True} if fused else {}
    steps = {"hf": hf_stepper(hf, torch.optim.AdamW(hf.parameters(), lr=1e-4), sparse=False),
             "hf_nodrop_fused": hf_stepper(hf_nf, torch.optim.AdamW(hf_nf.parameters(), lr=1e-4, **fkw), sparse=False),
             "hf_sparse": hf_stepper(hf_sp, torch.optim.AdamW(hf_sp.parameters(), lr=1e-4, **fkw), sparse=True)}

    # ---- workbench: pre-LN, no dropout, sparse head, fused AdamW, the loop's backend step
    wb = prep.model.to(device)
    wb.train()
    wb_opt = make_optimizer(wb, 1e-4, fused=True if fused else None)
    backend = make_backend("torch", wb, task, wb_opt, device, precision)

    def wb_step(b):
        with backend.accumulate(last=True):
            with backend.autocast():
                loss = backend.loss(b)
            backend.backward(loss)
        backend.step(1.0)
        return loss
    steps["workbench"] = wb_step

    times = {s: [] for s in SIDES}
    cpu = {s: 0.0 for s in SIDES}
    first_loss = {}
    for k in tqdm(range(n), disable=quiet, desc="bench train", leave=False):
        r = k % len(SIDES)
        for name in SIDES[r:] + SIDES[:r]:          # rotate who goes first, step by step
            _sync(device)
            t, c = time.perf_counter(), time.process_time()
            loss = steps[name](batches[k])
            _sync(device)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            first_loss.setdefault(name, float(loss.detach()))
            if k >= args.warmup:
                times[name].append(dt)
                cpu[name] += dc
    timed_tokens = sum(tokens[args.warmup:])
    tps = {s: timed_tokens / sum(times[s]) for s in SIDES}
    med_tok = statistics.median(tokens[args.warmup:])
    tps_med = {s: med_tok / statistics.median(times[s]) for s in SIDES}
    peak = measured_peak(device, precision, args.peak_size)
    fpt = {"hf": flops_per_token(hf, args.seq_len, head_fraction=1.0),
           "hf_nodrop_fused": flops_per_token(hf_nf, args.seq_len, head_fraction=1.0),
           "hf_sparse": flops_per_token(hf_sp, args.seq_len, head_fraction=mask_share),
           "workbench": flops_per_token(wb, args.seq_len, head_fraction=mask_share)}
    L, H, A, I = SIZES[size]
    la = load_avg()
    result = {
        "bench": "train",
        "size": size, "layers": L, "hidden": H, "heads": A, "ffn": I,
        "vocab_size": V, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "corpus": args.corpus, "steps": args.steps, "warmup": args.warmup,
        "device": str(device), "threads": torch.get_num_threads(), "cores": cpu_count(), "precision": precision,
        "fused_adamw": fused, "interleaved": True,
        "hf_params": param_count(hf), "workbench_params": param_count(wb),
        "real_tokens_per_step": timed_tokens / args.steps,
        "padded_tokens_per_step": sum(b["input_ids"].numel() for b in batches[args.warmup:]) / args.steps,
        "masked_share": mask_share,
    }
    for s in SIDES:
        result.update({f"{s}_first_loss": first_loss[s], f"{s}_step_s_median": statistics.median(times[s]),
                       f"{s}_tokens_per_s": tps[s], f"{s}_wall_s": sum(times[s]), f"{s}_cpu_s": cpu[s],
                       f"{s}_flops_per_token": fpt[s], f"{s}_mfu": fpt[s] * tps[s] / peak})
    result.update({
        # today's ratio: the whole recipe + loop against a stock Trainer-style step
        "ratio": tps["workbench"] / tps["hf"],
        "ratio_median": tps_med["workbench"] / tps_med["hf"],
        # the headline: what the loop adds over the same recipe around stock HF
        "ratio_vs_hf_sparse": tps["workbench"] / tps["hf_sparse"],
        "ratio_vs_hf_sparse_median": tps_med["workbench"] / tps_med["hf_sparse"],
        # the recipe in stock HF: sparse head + no dropout + fused AdamW, and its two parts
        "recipe_ratio": tps["hf_sparse"] / tps["hf"],
        "nodrop_fused_ratio": tps["hf_nodrop_fused"] / tps["hf"],
        "sparse_head_ratio": tps["hf_sparse"] / tps["hf_nodrop_fused"],
        "peak_flops_measured": peak,
        "load_avg": la, "load_avg_1m": la,
    })
    if not quiet:
        print(f"{size}: {L} layers, hidden {H}, vocab {V}, seq {args.seq_len}, batch {args.batch_size} "
              f"({result['real_tokens_per_step']:.0f} real tokens/step), {device}, {result['threads']} threads "
              f"of {result['cores']} cores, {precision}, fused AdamW {'yes' if fused else 'not on this device'}")
        labels = {"hf": "hf BertForMaskedLM (dense head, dropout 0.1, AdamW)",
                  "hf_nodrop_fused": "hf, dropout 0, fused AdamW (dense head)",
                  "hf_sparse": "hf, dropout 0, fused AdamW, sparse head",
                  "workbench": "workbench (pre-LN, sparse head, no dropout)"}
        for s in SIDES:
            print(f"  {labels[s]:<52}{tps[s]:9.0f} tokens/s  MFU {result[f'{s}_mfu']:6.1%}  "
                  f"wall {result[f'{s}_wall_s']:.2f} s  CPU {result[f'{s}_cpu_s']:.2f} s")
        print("  " + headline("the loop (workbench vs the same recipe around stock HF)", result["ratio_vs_hf_sparse"],
                              "hf_sparse", interleaved=True)
              + f"; median steps {result['ratio_vs_hf_sparse_median']:.2f}x; goal >= 0.97x")
        print(f"  the recipe (sparse head + no dropout + fused AdamW), not the loop: stock HF with it "
              f"{result['recipe_ratio']:.2f}x stock HF (dropout 0 + fused AdamW {result['nodrop_fused_ratio']:.2f}x, "
              f"then the sparse head {result['sparse_head_ratio']:.2f}x); workbench vs stock HF {result['ratio']:.2f}x "
              f"(median steps {result['ratio_median']:.2f}x) (load avg {la})")
        print(f"  measured peak {peak / 1e9:.0f} GFLOP/s")
    print(json.dumps(result))
    return result
