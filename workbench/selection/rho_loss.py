"""RHO-LOSS and the batch-selection baselines of its paper, as batch filters for ``wb.train``.

Mindermann et al., ICML 2022, "Prioritized Training on Points that are Learnable, Worth Learning,
and Not Yet Learnt". Every step draws a *large* batch of ``n_B`` points, scores each with the current
model (no gradients, eval mode) and trains on a *small* batch of ``n_b = fraction * n_B`` of them. The
rules, each a pure function below so tests can pin them on hand-made batches:

=================  ==========================================================================
``uniform``        no large batch at all: trains on ``n_b`` points drawn as usual, so its step
                   count compares fairly with the selectors (same small batch per step)
``train_loss``     top-``n_b`` training loss (Loshchilov & Hutter 2015; Kawaguchi & Lu 2020)
``grad_norm``      top-``n_b`` of ``||softmax(z) - onehot(y)||_2``, the norm of the loss gradient
                   w.r.t. the logits: an upper bound, up to a per-batch constant, of the
                   per-example gradient norm (Katharopoulos & Fleuret 2018)
``grad_norm_is``   ``n_b`` draws *with replacement* with ``p_i ∝`` that bound; each drawn point
                   gets loss weight ``1 / (n_B p_i)``, so the weighted small-batch loss is an
                   unbiased estimate of the large batch's mean loss
``irreducible_loss`` bottom-``n_b`` irreducible loss (easiest points for the holdout model)
``rho_loss``       top-``n_b`` *reducible* holdout loss ``L[y|x; D_t] - L[y|x; D_ho]``: points
                   that are learnable (low IL), worth learning, and not yet learnt (high loss)
``bald``, ``entropy``, ``conditional_entropy``, ``loss_minus_conditional_entropy``
                   the active-learning baselines of the authors' code (``bald_selection`` ...
                   ``loss_minus_conditional_entropy_selection``): ``mc_samples`` (10) forward passes
                   with the dropout layers on, top-``n_b`` of the BALD mutual information, the
                   entropy of the mean prediction, the mean entropy of the samples, or the mean
                   loss minus that mean entropy (:func:`mc_dropout_scores`). A model without dropout
                   gives identical samples: BALD is then 0 and the entropies coincide
``boltzmann_rho``  ``n_b`` draws with ``p ∝ exp(RHO / temperature)``, with replacement by default
                   (the authors' ``boltzmann_reducible_loss_selection``, T = 0.25), or without
                   (``replacement=False``: Gumbel top-k); ``temperature -> 0`` recovers ``rho_loss``
=================  ==========================================================================

The target model scores the large batch in *train* mode by default (``train_mode=True``, the
authors' ``selection_train_mode=True`` in ``MultiModels.py``: dropout stays on while scoring, under
``no_grad``); ``train_mode=False`` scores in eval mode. Models without dropout or batch statistics
(the MLP and bag-of-embeddings classifiers here) score the same either way.

Costs per step on top of training on ``n_b`` points: one forward pass over ``n_B`` points for every
rule but ``uniform`` (so about ``n_B / (3 n_b)`` times the compute of the training step itself), plus
one more over ``n_B`` with the IL model when ``recompute=True``, plus one IL-model training step on
``n_b`` points when ``update_il=True``. Precomputed irreducible losses cost one table look-up.

Every filter records what it used: per large batch the example ``index``, ``score``, ``train_loss``,
``irreducible_loss``, ``picks`` (times selected) and ``noisy`` flag, written to the run's
``scores/selection_<rule>.npz`` whenever the loop checkpoints (``state_dict``) or on ``flush()``;
running counters (``stats()``) give the share of noisy points picked and the selection time
(``select_s``, seconds). ``state_dict`` holds the filter's whole state (sampling RNG, counters, and
with ``update_il`` the IL model and its optimizer), so a resumed run selects exactly what an
uninterrupted one does.

Several processes (DDP / DeepSpeed under ``torchrun``): the loop hands each rank its own contiguous
slice of the global large batch and the filter selects *within that slice* (``n_b`` per rank per
micro-batch), the way the paper's per-device selection does. ``shards=N`` makes one process compute
exactly that: it cuts the large batch into ``N`` equal contiguous slices, selects ``n_b / N`` within
each as if it were the only batch (its own forward pass, and the sampling rules start every slice
from the same RNG state, as every rank's copy of the filter does), and concatenates the picks in
slice order. So ``N`` ranks with ``batch_size=b`` and one process with ``batch_size=N*b, shards=N``
draw the same large batch, select the same rows and train on the same small batch (up to float
rounding); ``N`` ranks with ``shards=S`` each equal one process with ``shards=N*S``. ``update_il``
cannot be sharded (every rank would train its own copy of the IL model on its own picks).

Language models: every rule but ``grad_norm*`` (they need class logits) works on the LM tasks of
:mod:`workbench.data.batching` at the sequence level (an example's loss is its mean token loss). On
an MLM task (``task.kind == "mlm"``) the filter always recomputes the irreducible losses with the IL
model(s) on the large batch's own masked targets, since the masks change every step and a table
scored under another draw would not match the training loss it is subtracted from (the reasons for
recomputing rather than fixing the masks are in :mod:`workbench.selection.irreducible`). A table
loaded without its IL model(s) can only be looked up; on MLM that draws a ``UserWarning``.

The token-level variant (Rho-1, Lin et al. 2024) is :class:`TokenExcessLoss` in
:mod:`workbench.selection.rho_tokens`.
"""
from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..training.loop import index_batch
from .sampling import boltzmann_sample, bottom_k, importance_sample, top_k

#: the paper's selectors (the recipe's default comparison)
PAPER_SELECTORS = ("uniform", "train_loss", "grad_norm", "grad_norm_is", "irreducible_loss", "rho_loss", "boltzmann_rho")
#: the active-learning baselines of the authors' code (MC dropout, ``mc_samples`` forward passes)
AL_SELECTORS = ("bald", "entropy", "conditional_entropy", "loss_minus_conditional_entropy")
SELECTORS = PAPER_SELECTORS + AL_SELECTORS
NEEDS_IL = ("irreducible_loss", "rho_loss", "boltzmann_rho")
#: rules that need class logits (classification tasks only)
NEEDS_LOGITS = ("grad_norm", "grad_norm_is") + AL_SELECTORS


# ----------------------------------------------------------------------------------- the rules

def grad_norm_bound(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``||softmax(z) - onehot(y)||_2`` per row: logits [B, C], labels [B] -> [B]."""
    p = torch.softmax(logits.float(), dim=-1)
    return (p - F.one_hot(labels, p.shape[-1]).to(p.dtype)).norm(dim=-1)


def boltzmann_draw(scores: torch.Tensor, k: int, temperature: float, generator: torch.Generator | None = None,
                   replacement: bool = True) -> torch.Tensor:
    """``k`` rows drawn with ``p = softmax(scores / temperature)``: independently, with replacement
    (the authors' ``boltzmann_reducible_loss_selection``: a row may be picked, and trained on, twice),
    or ``replacement=False``: ``k`` distinct rows one after another (Gumbel top-k)."""
    if not replacement:
        return boltzmann_sample(scores, k, temperature, generator)
    if not temperature > 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    p = torch.softmax(scores.double().cpu() / temperature, dim=0)
    return torch.multinomial(p, k, replacement=True, generator=generator).to(scores.device)


def mc_dropout_scores(log_probs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The active-learning scores from MC-dropout log-probabilities ``[K, B, C]`` and labels [B]:
    ``entropy`` (of the mean prediction), ``conditional_entropy`` (mean entropy of the K samples),
    ``bald`` (their difference, the mutual information), ``loss`` (mean cross-entropy) and
    ``loss_minus_conditional_entropy``; each [B]."""
    K = log_probs.shape[0]
    lp = log_probs.double()
    cond = -(lp * lp.exp()).sum(-1).mean(0)
    mean_lp = torch.logsumexp(lp, dim=0) - math.log(K)
    ent = -(mean_lp * mean_lp.exp()).sum(-1)
    loss = -lp.gather(-1, labels.view(1, -1, 1).expand(K, -1, 1)).squeeze(-1).mean(0)
    return {"entropy": ent, "conditional_entropy": cond, "bald": ent - cond, "loss": loss,
            "loss_minus_conditional_entropy": loss - cond}


def reducible_loss(train_loss: torch.Tensor, irreducible: torch.Tensor) -> torch.Tensor:
    """RHO-LOSS's score: training loss minus irreducible (holdout-model) loss."""
    return train_loss - irreducible


# ----------------------------------------------------------------------------------- the filter

class BatchSelector:
    """A batch filter for ``wb.train`` applying one of :data:`SELECTORS`.

    ``fraction``     n_b / n_B, the share of each large batch trained on (default 0.1: a large
                     batch ten times the small one)
    ``irreducible``  :class:`~workbench.selection.irreducible.IrreducibleLosses` (needed by
                     ``irreducible_loss``, ``rho_loss``, ``boltzmann_rho``), looked up by example id
    ``temperature``  ``boltzmann_rho`` only
    ``recompute``    score each large batch with the IL model(s) instead of the precomputed table
                     (always on for an MLM task: each batch's own masks, see the module doc)
    ``update_il``    also take one AdamW step (``il_lr``) of the IL model on every selected small
                     batch, so the IL model tracks ``L[y | x; D_ho ∪ D_t]`` (the paper's exact
                     quantity, which its Approximation 1 freezes at ``D_ho``); implies ``recompute``;
                     needs a single IL model (not the no-holdout pair)
    ``il_holdout``   with ``update_il``: the holdout task; each IL step then mixes the selected
                     batch with as many random holdout points (not the authors' code, which
                     trains the IL model on the selected batch alone: ``il_holdout=None``), so the IL model keeps fitting
                     ``D_ho`` while it takes in ``D_t``. Beware (measured in papers/rho_loss.md):
                     once a noisy point is picked the updated IL model fits its wrong label, its
                     IL drops and it gets picked again; the frozen IL model has no such loop
    ``train_mode``   score the large batch with the model in train mode (authors' default) or eval mode
    ``replacement``  ``boltzmann_rho``: draw with replacement (authors' default) or without
    ``mc_samples``   the active-learning rules: MC-dropout forward passes per large batch (authors: 10)
    ``record_every`` keep the per-example record of every k-th step (counters see every step)
    ``shards``       select within each of ``shards`` equal contiguous slices of the large batch
                     (``n_b / shards`` per slice) and concatenate the picks: one process then
                     computes what ``shards`` DDP ranks compute (see the module doc); the batch size
                     must be a multiple of it
    ``proxy``        a (smaller) model that scores the large batch instead of the model being trained,
                     and takes one AdamW step (``proxy_lr``, ``proxy_weight_decay``) on every selected
                     small batch, as the authors' ``proxy_model`` (``MultiModels.training_step``): a
                     cheap model selects for an expensive one. Its weights and optimizer are in the
                     filter's state, so a resumed run continues it
    """

    def __init__(self, rule: str = "rho_loss", fraction: float = 0.1, irreducible=None, temperature: float = 0.25,
                 recompute: bool = False, update_il: bool = False, il_lr: float = 1e-3,
                 il_weight_decay: float = 0.01, il_holdout=None, record_every: int = 1, shards: int = 1,
                 train_mode: bool = True, replacement: bool = True, mc_samples: int = 10,
                 proxy=None, proxy_lr: float = 1e-3, proxy_weight_decay: float = 0.01):
        if rule not in SELECTORS:
            raise ConfigError(f"unknown selector {rule!r}; choose one of {', '.join(SELECTORS)}")
        if not 0 < fraction <= 1:
            raise ConfigError(f"selection fraction must be in (0, 1], got {fraction}")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ConfigError(f"temperature must be a positive number, got {temperature}")
        if record_every < 1:
            raise ConfigError(f"record_every must be >= 1, got {record_every}")
        if not (isinstance(mc_samples, int) and mc_samples >= 1):
            raise ConfigError(f"mc_samples must be an integer >= 1, got {mc_samples!r}")
        if not (isinstance(shards, int) and shards >= 1):
            raise ConfigError(f"shards must be an integer >= 1, got {shards!r}")
        if shards > 1 and update_il:
            raise ConfigError("update_il cannot be sharded: each shard (rank) would train its own IL model copy")
        if proxy is not None and shards > 1:
            raise ConfigError("a proxy model cannot be sharded: each shard (rank) would train its own copy")
        if proxy is not None and not isinstance(proxy, torch.nn.Module):
            raise ConfigError(f"proxy must be a torch model, not {type(proxy).__name__}")
        self._recompute_asked = recompute = recompute or update_il
        if rule in NEEDS_IL:
            if irreducible is None:
                raise ConfigError(f"selector {rule!r} needs irreducible losses (an IrreducibleLosses)")
            if recompute and not irreducible.models:
                raise ConfigError("recomputing irreducible losses needs the IL model(s); these were loaded without")
        if update_il and (irreducible is None or len(irreducible.models) != 1):
            got = "none" if irreducible is None else f"{len(irreducible.models)} (the no-holdout pair has 2)"
            raise ConfigError(f"update_il needs irreducible losses with a single IL model (holdout), got {got}")
        self.rule, self.fraction, self.irreducible, self.temperature = rule, fraction, irreducible, temperature
        self.recompute, self.update_il, self.record_every = recompute, update_il, record_every
        self.il_lr, self.il_weight_decay, self.il_holdout = il_lr, il_weight_decay, il_holdout
        self.shards = shards
        self.train_mode, self.replacement, self.mc_samples = bool(train_mode), bool(replacement), mc_samples
        self.proxy, self.proxy_lr, self.proxy_weight_decay = proxy, proxy_lr, proxy_weight_decay
        self._proxy_opt = None
        self.name = rule
        self.run = None
        self.small: int | None = None
        self._il = self._owner = None
        self._il_opt = None
        self.gen = torch.Generator().manual_seed(0)
        self.n_picked = self.n_noisy = self.n_steps = 0
        self.last_step = -1
        self.select_s = 0.0
        self._log: dict[str, list] = {k: [] for k in ("step", "index", "score", "train_loss", "irreducible_loss",
                                                      "picks", "noisy")}

    # ------------------------------------------------------------------ loop contract
    def large_batch_size(self, batch_size: int) -> int:
        """``n_B`` for a small batch of ``batch_size``: ``ceil(n_b / fraction)`` (per shard, times ``shards``)."""
        if batch_size % self.shards:
            raise ConfigError(f"batch size {batch_size} is not a multiple of shards={self.shards}")
        self.small = batch_size
        if self.rule == "uniform":
            return batch_size
        b = batch_size // self.shards
        return self.shards * max(b, int(math.ceil(b / self.fraction - 1e-9)))

    def setup(self, data, seed: int = 0, run=None) -> None:
        """Seed the sampling RNG; align the irreducible losses to ``data``'s indices (by id)."""
        self.gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + 17)
        self.run = run if run is not None else self.run
        if self.rule in NEEDS_LOGITS and not hasattr(data, "logits"):
            raise ConfigError(f"selector {self.rule!r} needs a classification task with logits(); "
                              f"on a language-model task use uniform, train_loss, irreducible_loss, rho_loss "
                              f"or boltzmann_rho")
        # MLM: masks change every step, so the IL is scored on each large batch's own masks (module doc);
        # a table without its IL model(s) can only be looked up: said out loud, since its masks differ
        mlm = self.rule in NEEDS_IL and getattr(data, "kind", None) == "mlm"
        self.recompute = self._recompute_asked or (mlm and bool(self.irreducible.models))
        if mlm and not self.recompute:
            warnings.warn("irreducible losses on an MLM task without the IL model(s): the table's losses were scored "
                          "under other masks than the training batches use; keep the IL model (holdout_irreducible, "
                          "no_holdout_irreducible) to recompute them on each batch's own masks", stacklevel=2)
        if self.rule in NEEDS_IL:
            il, owner = self.irreducible.aligned(data)
            self._il, self._owner = torch.from_numpy(il).float(), torch.from_numpy(owner)
            if run is not None:
                self.irreducible.save(run)
        if self.update_il:
            self._il_opt = None
            self._il_optimizer()                    # a fresh optimizer for the IL model of this run
        if self.proxy is not None:
            self._proxy_opt = None
            self._proxy_optimizer()

    def select(self, model, batch: dict, task, step: int) -> dict:
        """The small batch to train on (with ``weight`` [n_b] for ``grad_norm_is``)."""
        t0 = time.perf_counter()
        B = int(batch["index"].shape[0])
        k = min(self.small or max(1, round(self.fraction * B)), B)
        dev = batch["index"].device
        S = self.shards
        if S == 1:
            rows, score, train_loss, il, weights = self._select_rows(model, batch, task, k)
        else:
            if B % S or k % S:
                raise ConfigError(f"shards={S} must divide the large batch ({B}) and the small batch ({k})")
            g0 = self.gen.get_state()
            parts = []
            for j in range(S):                  # what rank j of S computes on its slice
                self.gen.set_state(g0)
                sl = torch.arange(j * (B // S), (j + 1) * (B // S))
                r, *rest = self._select_rows(model, index_batch(batch, sl), task, k // S)
                parts.append((r + j * (B // S), *rest))
            rows, score, train_loss, il = (torch.cat([p[i].to(parts[0][i].device) for p in parts]) for i in range(4))
            weights = None if parts[0][4] is None else torch.cat([p[4] for p in parts])
        sub = index_batch(batch, rows) if k < B or self.rule in ("grad_norm_is", "boltzmann_rho") else batch
        if weights is not None:
            sub["weight"] = weights.to(dev)
        if self.update_il:
            self._update_il(sub, task)
        if self.proxy is not None and self.rule != "uniform":
            self._update_proxy(sub, task)
        self._record(step, batch, rows, score, train_loss, il)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.select_s += time.perf_counter() - t0
        return sub

    def _select_rows(self, model, batch: dict, task, k: int):
        """The rule on one (shard of a) large batch: ``(rows, score, train_loss, il, weights)``."""
        B = int(batch["index"].shape[0])
        dev = batch["index"].device
        nan = torch.full((B,), float("nan"))
        train_loss, il, weights = nan, nan, None
        if self.rule == "uniform":
            return torch.arange(B, device=dev)[:k], nan, train_loss, il, None
        if self.proxy is not None:          # the proxy scores; the model being trained only trains
            model = self.proxy.to(dev)
        was = model.training
        model.train(self.train_mode)
        with torch.no_grad():
            if self.rule in AL_SELECTORS:
                if not hasattr(task, "logits"):
                    raise ConfigError(f"selector {self.rule!r} needs a classification task with logits()")
                for m in model.modules():                   # the authors' enable_dropout
                    if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                        m.train()
                lp = torch.stack([torch.log_softmax(task.logits(model, batch).float(), -1)
                                  for _ in range(self.mc_samples)])
                sc = mc_dropout_scores(lp, batch["labels"])
                train_loss, score = sc["loss"].float(), sc[self.rule].float()
            elif self.rule.startswith("grad_norm"):
                if not hasattr(task, "logits"):
                    raise ConfigError(f"selector {self.rule!r} needs a classification task with logits()")
                logits = task.logits(model, batch)
                train_loss = F.cross_entropy(logits.float(), batch["labels"], reduction="none")
                score = grad_norm_bound(logits, batch["labels"])
            else:
                train_loss = task.per_example_loss(model, batch).float()
                if self.rule in NEEDS_IL:
                    il = self._irreducible(batch, task).to(train_loss.device)
                score = {"train_loss": train_loss, "irreducible_loss": il}.get(self.rule)
                if score is None:
                    score = reducible_loss(train_loss, il)
        model.train(was)
        if self.rule in ("train_loss", "grad_norm", "rho_loss") + AL_SELECTORS:
            rows = top_k(score, k)
        elif self.rule == "irreducible_loss":
            rows = bottom_k(score, k)
        elif self.rule == "boltzmann_rho":
            rows = boltzmann_draw(score, k, self.temperature, self.gen, self.replacement)
        else:
            rows, weights, _ = importance_sample(score, k, self.gen)
        return rows, score, train_loss, il, weights

    # ------------------------------------------------------------------ irreducible losses
    def _irreducible(self, batch, task) -> torch.Tensor:
        idx = batch["index"].cpu()
        if not self.recompute:
            return self._il[idx]
        out = torch.empty(len(idx))
        owner = self._owner[idx]
        for m_id, m in enumerate(self.irreducible.models):
            rows = (owner == m_id).nonzero().flatten()
            if len(rows):
                m.to(batch["index"].device).eval()
                out[rows] = task.per_example_loss(m, index_batch(batch, rows)).float().cpu()
        return out

    def _update_il(self, sub, task) -> None:
        m = self.irreducible.models[0].to(sub["index"].device)
        m.train()
        with torch.enable_grad():
            loss = task.loss(m, {k: v for k, v in sub.items() if k != "weight"})
            if self.il_holdout is not None:
                n = int(sub["index"].shape[0])
                rows = torch.randint(len(self.il_holdout), (n,), generator=self.gen).tolist()
                hb = {k: (v.to(sub["index"].device) if torch.is_tensor(v) else v)
                      for k, v in self.il_holdout.collate(rows).items()}
                loss = 0.5 * (loss + self.il_holdout.loss(m, hb))
            opt = self._il_optimizer()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        m.eval()

    def _update_proxy(self, sub, task) -> None:
        """One AdamW step of the proxy on the selected small batch (the authors' ``opt_proxy_model``)."""
        m = self.proxy.to(sub["index"].device)
        was = m.training
        m.train()
        with torch.enable_grad():
            loss = task.loss(m, {k: v for k, v in sub.items() if k != "weight"})
            opt = self._proxy_optimizer()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        m.train(was)

    def _proxy_optimizer(self):
        if self._proxy_opt is None:
            self._proxy_opt = torch.optim.AdamW(self.proxy.parameters(), lr=self.proxy_lr,
                                                weight_decay=self.proxy_weight_decay)
        return self._proxy_opt

    # ------------------------------------------------------------------ records
    def _record(self, step, batch, rows, score, train_loss, il) -> None:
        B = int(batch["index"].shape[0])
        picks = torch.bincount(rows.cpu(), minlength=B)
        noisy = batch["noisy"].cpu() if "noisy" in batch else torch.zeros(B, dtype=torch.bool)
        self.n_steps += 1
        self.last_step = max(self.last_step, int(step))
        self.n_picked += int(picks.sum())
        self.n_noisy += int((picks * noisy).sum())
        if step % self.record_every == 0:
            for key, v in (("step", torch.full((B,), step)), ("index", batch["index"]), ("score", score),
                           ("train_loss", train_loss), ("irreducible_loss", il), ("picks", picks), ("noisy", noisy)):
                self._log[key].append(v.detach().cpu().numpy())

    def stats(self) -> dict:
        """``noisy_fraction`` (share of the selected points that carry a flipped label, counting
        repeats), ``picked``, ``steps`` and ``select_s`` (seconds spent in ``select``)."""
        return {"rule": self.rule, "steps": self.n_steps, "picked": self.n_picked,
                "noisy_fraction": self.n_noisy / max(self.n_picked, 1), "select_s": self.select_s}

    def records(self) -> dict[str, np.ndarray]:
        """The per-example record so far, one row per (step, large-batch example)."""
        return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in self._log.items()}

    def flush(self) -> None:
        """Write the record to ``scores/selection_<rule>.npz`` of the run (if any)."""
        if self.run is not None:
            self.run.save_scores(f"selection_{self.rule}", **self.records())

    def state_dict(self) -> dict:
        """The filter's whole state: the sampling RNG, the counters and, with ``update_il``, the IL
        model and its optimizer (copies: later steps do not change a state already taken). The
        per-example record goes to the run's ``scores/`` (flushed here, so it matches the checkpoint
        being written, and read back by :meth:`load_state_dict`); without a run it is in the state."""
        self.flush()
        s = {"gen": self.gen.get_state(), "n_picked": self.n_picked, "n_noisy": self.n_noisy,
             "n_steps": self.n_steps, "last_step": self.last_step, "select_s": self.select_s}
        if self.update_il:
            s["il_model"] = {k: v.detach().clone() for k, v in self.irreducible.models[0].state_dict().items()}
            s["il_opt"] = optimizer_state(self._il_optimizer())
        if self.proxy is not None:
            s["proxy_model"] = {k: v.detach().clone() for k, v in self.proxy.state_dict().items()}
            s["proxy_opt"] = optimizer_state(self._proxy_optimizer())
        if self.run is None:
            s["records"] = self.records()
        return s

    def load_state_dict(self, s: dict) -> None:
        """Restore a :meth:`state_dict` (after ``setup``, as ``wb.train`` does on resume)."""
        self.gen.set_state(torch.as_tensor(s["gen"]).to(torch.uint8))
        self.n_picked, self.n_noisy, self.n_steps = int(s["n_picked"]), int(s["n_noisy"]), int(s["n_steps"])
        self.last_step = int(s["last_step"])
        self.select_s = float(s["select_s"])
        if self.update_il:
            if "il_model" not in s:
                raise ConfigError("this selector state has no IL model: it was saved by a filter without update_il")
            self.irreducible.models[0].load_state_dict(s["il_model"])
            load_optimizer_state(self._il_optimizer(), s["il_opt"])
        if self.proxy is not None:
            if "proxy_model" not in s:
                raise ConfigError("this selector state has no proxy model: it was saved by a filter without one")
            self.proxy.load_state_dict(s["proxy_model"])
            load_optimizer_state(self._proxy_optimizer(), s["proxy_opt"])
        if "records" in s:
            self._log = restore_log(self._log, s["records"], self.last_step)
        elif self.run is not None and f"selection_{self.rule}" in self.run.score_names():
            self._log = restore_log(self._log, self.run.load_scores(f"selection_{self.rule}"), self.last_step)

    def _il_optimizer(self):
        if self._il_opt is None:
            m = self.irreducible.models[0]
            self._il_opt = torch.optim.AdamW(m.parameters(), lr=self.il_lr, weight_decay=self.il_weight_decay)
        return self._il_opt


# ----------------------------------------------------------------------------------- state helpers

def optimizer_state(opt) -> dict:
    """``opt.state_dict()`` as a checkpoint can hold it (string keys), its tensors copied."""
    sd = opt.state_dict()
    return {"state": {str(k): {n: (t.detach().clone() if torch.is_tensor(t) else t) for n, t in v.items()}
                      for k, v in sd["state"].items()},
            "param_groups": copy.deepcopy(sd["param_groups"])}


def load_optimizer_state(opt, s: dict) -> None:
    opt.load_state_dict({"state": {int(k): dict(v) for k, v in s["state"].items()},
                         "param_groups": copy.deepcopy(s["param_groups"])})


def restore_log(log: dict[str, list], arrays, last_step: int) -> dict[str, list]:
    """A per-example record (``{key: [arrays]}``) rebuilt from saved ``arrays`` (with a ``step``
    column), keeping the rows of steps up to ``last_step``: what an uninterrupted run had then."""
    if not len(arrays["step"]):
        return {k: [] for k in log}
    keep = np.asarray(arrays["step"]) <= last_step
    return {k: [np.asarray(arrays[k])[keep]] for k in log}


def make_selector(name: str, fraction: float = 0.1, irreducible=None, **kw) -> BatchSelector:
    """``BatchSelector(name, fraction, irreducible, **kw)``; the one place a recipe names a selector."""
    return BatchSelector(name, fraction, irreducible, **kw)
