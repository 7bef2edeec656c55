"""MATES staged, model-aware selection (Yu, Das, Xiong, NeurIPS 2024) and its notebook recipe.

Training runs in **stages** of ``stage_steps`` steps. Each stage draws a candidate pool (all training
blocks, or a random ``pool_size`` of them) and keeps ``select_fraction`` (20%) of it to train on:

* stage 0: a random selection (the model knows nothing yet);
* stage k > 0: **probe** the oracle influence of ``probe_size`` random pool members on the current
  checkpoint (one optimizer step on the candidate, with the real optimizer state and LR, then the
  reference loss; :func:`workbench.selection.mates.batched_probe`), **fit** the data-influence model
  on them (a small BERT regressor, warm-started from the previous stage, best epoch by validation
  Spearman), **predict** the influence of every pool member, and **select** by Gumbel top-k on the
  negated prediction (lower reference loss after the step = better) with temperature ``tau``.  The
  prediction is ranked in the influence model's own units (z-scores of the stage's probes, as it was
  fitted), so ``tau`` is measured in oracle standard deviations and means the same at every stage
  and model size; raw influences (loss differences of order 1e-3) divided by ``tau`` would be
  drowned by the unit Gumbel noise and the draw would be uniform.

The reference task is text the pool never contains: a ``pydocs`` package held out of the training
corpus. Its LM loss drives probing and is the reported metric; a LAMBADA-style last-word prediction
built from the same held-out documents is reported next to it.

Cost: probing ``P`` candidates costs ``P`` per-example gradient steps plus ``P`` evaluations of the
reference batch; fitting costs ``epochs × P`` encoder passes; prediction one pass over the pool.
:class:`MatesSampler` accumulates the FLOPs and wall time it spends so a run can report the share.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..config import check
from ..errors import ConfigError
from ..training.hooks import next_in_epochs


class MatesSampler:
    """A Sampler (see :mod:`workbench.training.hooks`) that re-selects its data every stage.

    ``optimizer`` must be the optimizer the loop steps (pass the same object to ``wb.train``), so
    probes see its state. ``method="random"`` is the baseline: the same stages and pool, random picks.
    ``im_cv_folds=k`` also scores each stage's influence model by k-fold cross-validation on its probes
    (``spearman_cv`` in ``per_stage``; see `InfluenceModel.cross_validate`). It is a measurement: the
    selection is the same with or without it, and its time is kept out of ``selection_wall_s``.
    """

    name = "mates"

    def __init__(self, optimizer, ref_batch: torch.Tensor, stage_steps: int = 50, select_fraction: float = 0.2,
                 pool_size: int | None = None, probe_size: int = 64, tau: float = 0.5, method: str = "mates",
                 im_epochs: int = 5, im_hidden: int = 64, im_layers: int = 2, probe_chunk: int = 16,
                 flops_per_token: float | None = None, im_cv_folds: int = 0):
        if method not in ("mates", "random"):
            raise ConfigError(f"MATES method must be 'mates' or 'random', got {method!r}")
        if stage_steps < 1 or not 0 < select_fraction <= 1 or probe_size < 8 or tau <= 0:
            raise ConfigError("stage_steps >= 1, select_fraction in (0, 1], probe_size >= 8 and tau > 0 are required")
        _check_cv_folds(im_cv_folds, probe_size)
        self.opt, self.ref = optimizer, ref_batch
        self.S, self.frac, self.pool_size, self.probe_size, self.tau = stage_steps, select_fraction, pool_size, probe_size, tau
        self.method, self.im_epochs, self.im_hidden, self.im_layers = method, im_epochs, im_hidden, im_layers
        self.probe_chunk, self.fpt, self.cv_folds = probe_chunk, flops_per_token, im_cv_folds
        self.stage = -1
        self.subset: np.ndarray | None = None
        self.per_stage: list[dict] = []
        self.selection_wall_s = 0.0
        self.selection_flops = 0.0
        self.diagnostic_wall_s = 0.0    # cross-validation of the influence model: measurement, not selection
        self.im = None

    def setup(self, data, seed: int = 0, run=None) -> None:
        self.data, self.seed, self.run, self.n = data, seed, run, len(data)
        self.epoch, self.pos = 0, 0

    # ------------------------------------------------------------------------------- stream
    def _permutation(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.stage, self.epoch, 31])
        return self.subset[rng.permutation(len(self.subset))]

    def next(self, n: int) -> list[int]:
        return next_in_epochs(self, n)

    def refresh(self, model, step: int) -> None:
        if step % self.S != 0 or step // self.S == self.stage:
            return
        t0 = time.perf_counter()
        self.stage = step // self.S
        rng = np.random.default_rng([self.seed, self.stage, 97])
        pool = np.arange(self.n) if not self.pool_size or self.pool_size >= self.n else \
            np.sort(rng.choice(self.n, self.pool_size, replace=False))
        k = max(1, int(round(self.frac * len(pool))))
        rec = {"stage": self.stage, "step": step, "pool": len(pool), "selected": k}
        if self.stage == 0 or self.method == "random":
            chosen = np.sort(rng.choice(pool, k, replace=False))
            pred = None
        else:
            chosen, pred = self._select(model, pool, k, rng, rec)
        self.subset = chosen
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()
        dt = time.perf_counter() - t0 - rec.get("im_cv_wall_s", 0.0)
        self.selection_wall_s += dt
        rec["wall_s"] = dt
        self.per_stage.append(rec)
        if self.run is not None:
            arrays = {"step": np.array(step), "indices": chosen,
                      "domains": np.asarray([self.data.domains[i] for i in chosen])}
            if pred is not None:
                arrays.update(pool=pool, predicted=pred, probe_indices=rec.pop("_probe_idx"),
                              oracle=rec.pop("_oracle"), probe_predicted=rec.pop("_probe_pred"),
                              score_mean=np.array(rec["score_mean"]), score_std=np.array(rec["score_std"]))
            self.run.save_scores(f"mates_stage_{self.stage:03d}", **arrays)
        for key in ("_probe_idx", "_oracle", "_probe_pred"):
            rec.pop(key, None)

    def _select(self, model, pool, k, rng, rec):
        from ..selection.influence_model import InfluenceModel
        from ..selection.mates import batched_probe, gumbel_topk
        dev = next(model.parameters()).device
        probe_idx = np.sort(rng.choice(pool, min(self.probe_size, len(pool)), replace=False))
        cand = self.data.collate(probe_idx)["input_ids"].to(dev)                    # [P, T]
        oracle = batched_probe(model, self.opt, cand, self.ref.to(dev), chunk_size=self.probe_chunk)
        if self.im is None:
            self.im = InfluenceModel(self.data.vocab_size, hidden=self.im_hidden, layers=self.im_layers,
                                     heads=2, max_len=cand.shape[1])
        probes = list(cand.cpu())                                                  # the influence model's inputs
        if self.cv_folds:   # before the fit: the folds start from the same weights the real fit does
            t_cv = time.perf_counter()
            cv = self.im.cross_validate(probes, oracle, self.cv_folds, epochs=self.im_epochs,
                                        seed=self.seed + self.stage, warm_start=True)
            dt_cv = time.perf_counter() - t_cv
            self.diagnostic_wall_s += dt_cv
            rec.update(spearman_cv=cv["spearman"], spearman_cv_folds=cv["fold_spearmans"], im_cv_wall_s=dt_cv)
        self.im.fit(probes, oracle, epochs=self.im_epochs, seed=self.seed + self.stage,
                    warm_start=True)
        blocks = torch.from_numpy(self.data.input_ids[pool].astype(np.int64))
        z = self.im.predict(list(blocks), standardized=True)        # oracle-std units (see module doc)
        pred = z * self.im.score_std + self.im.score_mean
        chosen = np.sort(pool[gumbel_topk(-z, k, self.tau, seed=self.seed * 1000 + self.stage)])
        T = cand.shape[1]
        if self.fpt:
            fwd = self.fpt / 3
            probe = len(probe_idx) * (self.fpt * T + fwd * self.ref.numel())
            im_fwd = _im_forward_flops(self.im, T)
            fit = self.im_epochs * len(probe_idx) * 3 * im_fwd * T
            predict = len(pool) * im_fwd * T
            self.selection_flops += probe + fit + predict
            rec.update(probe_flops=probe, im_fit_flops=fit, im_predict_flops=predict)
        rec.update(spearman_val=self.im.spearman_val, oracle_mean=float(np.mean(oracle)),
                   score_mean=self.im.score_mean, score_std=self.im.score_std, predicted_z_std=float(np.std(z)),
                   _probe_idx=probe_idx, _oracle=oracle, _probe_pred=self.im.predict(probes))
        return chosen, pred

    # ------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"stage": self.stage, "epoch": self.epoch, "pos": self.pos,
                "subset": self.subset if self.subset is not None else np.zeros(0, dtype=np.int64),
                "selection_wall_s": self.selection_wall_s, "selection_flops": self.selection_flops,
                "diagnostic_wall_s": self.diagnostic_wall_s}

    def load_state_dict(self, s: dict) -> None:
        self.stage, self.epoch, self.pos = int(s["stage"]), int(s["epoch"]), int(s["pos"])
        self.subset = np.asarray(s["subset"], dtype=np.int64)
        self.selection_wall_s, self.selection_flops = float(s["selection_wall_s"]), float(s["selection_flops"])
        self.diagnostic_wall_s = float(s.get("diagnostic_wall_s", 0.0))
        if len(self.subset):
            self._perm = self._permutation()


def _check_cv_folds(folds: int, probe_size: int) -> None:
    """The influence model's k-fold check needs 0 (off) or 2..probe_size // 4 folds (>= 4 probes per fold)."""
    check(folds == 0 or 2 <= folds <= probe_size // 4,
          f"im_cv_folds must be 0 (off) or between 2 and probe_size // 4, got {folds}")


def _im_forward_flops(im, T: int) -> float:
    c = im.config
    return 2 * c.num_hidden_layers * (4 * c.hidden_size ** 2 + 2 * c.hidden_size * c.intermediate_size) \
        + 4 * c.num_hidden_layers * T * c.hidden_size


# ----------------------------------------------------------------------------------- reference task

def lambada_style(corpus, tokenizer, max_tokens: int = 64, n: int = 200) -> list[tuple[list[int], list[int]]]:
    """LAMBADA-style items from held-out documents: (context tokens, last-word tokens).

    Each document's first ``max_tokens`` tokens are cut back to the last whole word; the model must
    predict that word from everything before it.
    """
    items = []
    for text in corpus.texts:
        words = text.split()
        if len(words) < 8:
            continue
        ids = tokenizer(" ".join(words))["input_ids"][:max_tokens]
        prefix = tokenizer.decode(ids).split()
        if len(prefix) < 8:
            continue
        ctx = tokenizer(" ".join(prefix[:-1]))["input_ids"]
        tgt = tokenizer(" " + prefix[-1])["input_ids"]
        if ctx and tgt and len(ctx) + len(tgt) <= max_tokens + 4:
            items.append((ctx, tgt))
        if len(items) >= n:
            break
    if not items:
        raise ConfigError("the held-out reference corpus yields no LAMBADA-style item")
    return items


@torch.no_grad()
def lambada_eval(model, items) -> dict:
    """Mean last-word loss (nats per target token) and exact last-word accuracy (greedy)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    tot, ntok, correct = 0.0, 0, 0
    for ctx, tgt in items:
        ids = torch.tensor([ctx + tgt], device=dev)
        logits = model(input_ids=ids).logits[0, len(ctx) - 1: len(ctx) + len(tgt) - 1].float()
        t = torch.tensor(tgt, device=dev)
        tot += float(torch.nn.functional.cross_entropy(logits, t, reduction="sum"))
        ntok += len(tgt)
        correct += bool((logits.argmax(-1) == t).all())
    model.train(was)
    return {"lambada_loss": tot / ntok, "lambada_acc": correct / len(items)}


# ----------------------------------------------------------------------------------- the notebook

@dataclass(frozen=True)
class MatesParams:
    scale: str = "tiny"                         # smoke | tiny | small | paper
    out_dir: str = "runs/mates"                 # runs and summary.json go here
    corpus: str = "pydocs:numpy,sklearn,datasets,deepspeed,papermill"   # corpus spec (pydocs packages)
    reference_package: str = "deepspeed"        # pydocs package held out as the reference task
    model: str = "gpt2-tiny"                    # decoder preset
    seq_len: int = 64                           # tokens per block
    vocab_size: int = 4096                      # tokenizer vocabulary
    max_steps: int = 200                        # optimizer steps of each run
    batch_size: int = 16                        # blocks per step
    lr: float = 1e-3                            # peak learning rate
    warmup: int = 20                            # warmup steps
    stage_steps: int = 50                       # steps per stage (selection every stage)
    select_fraction: float = 0.2                # share of each stage's pool that is kept
    pool_size: int = 0                          # candidate pool per stage (0 = every training block)
    probe_size: int = 384                       # oracle probes per stage
    tau: float = 0.5                            # Gumbel top-k temperature, in oracle standard deviations
    im_epochs: int = 6                          # influence-model epochs per stage
    im_cv_folds: int = 5                        # k-fold check of the influence model per stage (0: off; not selection cost)
    ref_blocks: int = 16                        # reference blocks the probes evaluate
    seed: int = 0                               # seed

    def __post_init__(self):
        from . import SCALES
        check(self.scale in SCALES, f"scale {self.scale!r} is not one of {SCALES}")
        check(self.max_steps > 0 and self.stage_steps > 0, "max_steps and stage_steps must be positive")
        check(0 < self.select_fraction <= 1, f"select_fraction must be in (0, 1], got {self.select_fraction}")
        check(self.probe_size >= 8 and self.tau > 0 and self.ref_blocks >= 1, "probe_size >= 8, tau > 0, ref_blocks >= 1")
        check(self.pool_size >= 0 and self.im_epochs >= 1, "pool_size >= 0 and im_epochs >= 1")
        _check_cv_folds(self.im_cv_folds, self.probe_size)


def prepare_mates(P: MatesParams):
    """(prepared training setup, reference blocks tensor, LAMBADA-style items)."""
    from ..data.prepare import make_task, prepare
    prep = prepare(P.corpus, P.model, P.seq_len, P.vocab_size, P.seed, holdout_domains=[P.reference_package])
    if prep.encoder:
        raise ConfigError(f"MATES here trains a decoder; {P.model!r} is an encoder")
    ref_task = make_task(prep.holdout_corpus, prep.tokenizer, False, P.seq_len, P.seed)
    ref_all = torch.from_numpy(ref_task.input_ids.astype(np.int64))
    g = torch.Generator().manual_seed(1234)
    ref_all = ref_all[torch.randperm(len(ref_all), generator=g)[:256]]      # a fixed sample of <= 256 blocks
    return prep, ref_all, lambada_style(prep.holdout_corpus, prep.tokenizer, P.seq_len)


def run_method(P: MatesParams, method: str, progress: bool = False) -> dict:
    """Train with MATES or random staged selection into ``out_dir/<method>``."""
    import shutil
    from pathlib import Path

    from ..models import flops_per_token
    from ..runs import Run
    from ..training import Budget, Schedule, make_optimizer, train
    from ..selection.mates import reference_loss
    prep, ref_all, lam = prepare_mates(P)
    g = torch.Generator().manual_seed(P.seed)
    probe_ref = ref_all[torch.randperm(len(ref_all), generator=g)[: P.ref_blocks]]
    fpt = flops_per_token(prep.model, P.seq_len)
    opt = make_optimizer(prep.model, P.lr)
    sampler = MatesSampler(opt, probe_ref, P.stage_steps, P.select_fraction, P.pool_size or None, P.probe_size,
                           P.tau, method, P.im_epochs, flops_per_token=fpt, im_cv_folds=P.im_cv_folds)
    run_dir = Path(P.out_dir) / method
    shutil.rmtree(run_dir, ignore_errors=True)
    run = Run(run_dir, {"method": method, **{k: getattr(P, k) for k in P.__dataclass_fields__}})
    ref_curve = []

    def track(step, model, **_):
        if step % P.stage_steps == 0:
            ref_curve.append({"step": step, "reference_loss": reference_loss(model, ref_all)})
    t0 = time.perf_counter()
    res = train(prep.model, prep.train, eval_data=prep.eval, sampler=sampler, optimizer=opt,
                budget=Budget(max_steps=P.max_steps), schedule=Schedule("linear", warmup=P.warmup),
                batch_size=P.batch_size, lr=P.lr, seed=P.seed, run=run, progress=progress, flops_per_token=fpt,
                callbacks=(track,))
    wall = time.perf_counter() - t0 - sampler.diagnostic_wall_s     # the influence model's k-fold check is not training
    final_ref = reference_loss(res.model, ref_all)
    rec = {"method": method, "reference_loss": final_ref, "eval_loss": res.final_eval_loss, "wall_s": wall,
           "train_flops": res.history[-1].get("flops", 0.0) if res.history else 0.0,
           "selection_flops": sampler.selection_flops, "selection_wall_s": sampler.selection_wall_s,
           "diagnostic_wall_s": sampler.diagnostic_wall_s,
           "per_stage": sampler.per_stage, "ref_curve": ref_curve, **lambada_eval(res.model, lam)}
    run.write_summary({k: v for k, v in rec.items() if k not in ("ref_curve",)}, complete=True)
    rec.update(run=run, model=res.model, prep=prep)
    return rec
