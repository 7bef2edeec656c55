"""Irreducible losses for RHO-LOSS: the IL model and the per-example table keyed by stable id.

The *irreducible loss* of a training point (x, y) is the loss of a model trained on *held-out* data
only, ``L[y | x; D_ho]`` (Mindermann et al. 2022, eq. 3). It approximates the loss a model could
still have on the point after training on everything: high for noisy or ambiguous points (they stay
hard however long one trains), low for points the task's regularities already explain. RHO-LOSS
trains on the points whose *training* loss most exceeds it.

Three ways to get it, as in the paper:

``fit_il_model`` + ``score``   train a small model on the holdout split (``wb.train``), keep the
                               checkpoint with the lowest loss on a clean validation split, score
                               every training example once (``holdout_irreducible``).
``no_holdout_irreducible``     no data set aside: split the training set in two halves (class by
                               class by default, as the authors' ``datamodules.py`` does), train one
                               IL model per half, each scores the *other* half; the target model then
                               trains on all of it.
recompute / update             keep the IL model(s) in the batch filter and score each large batch
                               afresh, optionally taking one optimizer step of the IL model on every
                               selected small batch (see :class:`~workbench.selection.rho_loss.BatchSelector`).

:class:`IrreducibleLosses` stores the numbers by example id, so they stay attached to the right
examples whatever the order of the task that looks them up (``aligned(task)``), and saves them into
a run's ``scores/irreducible_loss.npz``.

Language models
---------------
All of it works on the LM tasks of :mod:`workbench.data.batching` (``CLMTask``: one example = one
packed block; ``MLMTask``: one example = one document), sequence level: an example's loss is its
mean loss over its target tokens. ``no_holdout_irreducible`` cuts those tasks into halves with
:func:`task_subset` (a view on the task: same tokens, same masking, ids and ``index`` of the half).

Masked LM: the IL is recomputed on the training batch's own masks. An MLM batch masks different
tokens every step (dynamic masking, drawn from the step and the batch), so a table scored once under
one mask draw would compare the IL of *other* targets with the training loss of these ones; the
difference would be mostly mask noise. Of the two exact fixes (fixed masks per example, or scoring
each large batch with the IL model on its own masks) we recompute: it leaves the MLM objective of
every arm unchanged (uniform keeps dynamic masking, so the comparison stays fair), needs no change to
the task, and costs one IL-model forward pass over the large batch per step (about what scoring the
batch with the target model costs). :class:`~workbench.selection.rho_loss.BatchSelector` switches
``recompute`` on by itself for an MLM task (``kind == "mlm"``) whenever the IL model(s) come with the
table (as from both functions here); a table loaded without them can only be looked up, and the filter
warns. The table (scored under the mask draw of step 0) remains for the views.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..errors import ConfigError
from ..training import Budget, train


class IrreducibleLosses:
    """Irreducible loss per example id; ``models`` (optional) are the IL models and ``owner[i]`` the
    index of the model that scored example ``ids[i]`` (the one that never trained on it)."""

    def __init__(self, ids, losses, models=(), owner=None):
        self.ids = [str(i) for i in ids]
        self.losses = np.asarray(losses, dtype=np.float64)
        if len(self.ids) != len(self.losses):
            raise ConfigError(f"irreducible losses: {len(self.ids)} ids but {len(self.losses)} losses")
        if len(set(self.ids)) != len(self.ids):
            raise ConfigError("irreducible losses: example ids are not unique")
        self.models = list(models)
        self.owner = np.zeros(len(self.ids), dtype=np.int64) if owner is None else np.asarray(owner, dtype=np.int64)
        self._pos = {i: k for k, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def copy(self) -> "IrreducibleLosses":
        """The same table with private copies of the IL models (for a filter that trains them)."""
        return IrreducibleLosses(self.ids, self.losses.copy(), [copy.deepcopy(m) for m in self.models], self.owner)

    def aligned(self, task) -> tuple[np.ndarray, np.ndarray]:
        """``(losses, owner)`` in the order of ``task`` (by ``task.ids``); every id must be known."""
        try:
            rows = np.fromiter((self._pos[str(i)] for i in task.ids), dtype=np.int64, count=len(task))
        except KeyError as e:
            name = getattr(task, "name", "")
            raise ConfigError(f"no irreducible loss for example {e.args[0]!r} of task {name!r}") from None
        return self.losses[rows], self.owner[rows]

    def save(self, run, name: str = "irreducible_loss") -> None:
        run.save_scores(name, id=np.asarray(self.ids), loss=self.losses, owner=self.owner)

    @classmethod
    def load(cls, run, name: str = "irreducible_loss") -> "IrreducibleLosses":
        z = run.load_scores(name)
        return cls(z["id"].tolist(), z["loss"], owner=z["owner"])


@torch.no_grad()
def score(model, task, batch_size: int | None = None) -> np.ndarray:
    """``task.per_example_loss`` of every example of ``task`` in order, in eval mode -> [N] float64.

    ``batch_size`` default: 1024 examples, or for a task of sequences (``seq_len``) as many as make
    16,384 tokens (the logits of a batch are ``tokens x vocabulary`` floats)."""
    if batch_size is None:
        seq_len = getattr(task, "seq_len", None)
        batch_size = 1024 if not seq_len else max(1, min(1024, 16384 // int(seq_len)))
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for s in range(0, len(task), batch_size):
        b = task.collate(list(range(s, min(s + batch_size, len(task)))), step=0)
        b = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in b.items()}
        out.append(task.per_example_loss(model, b).double().cpu().numpy())
    model.train(was)
    return np.concatenate(out)


def fit_il_model(model, task, valid, *, steps: int = 600, batch_size: int = 32, lr: float = 1e-3,
                 weight_decay: float = 0.01, eval_every: int = 10, seed: int = 0, run=None):
    """Train ``model`` on ``task`` with ``wb.train`` (AdamW, constant LR); keep the weights with the
    lowest mean loss on ``valid`` (checked every ``eval_every`` steps). Returns ``(model, info)``
    with ``info = {"best_step", "best_valid_loss", "valid_curve": [(step, loss), ...]}``.

    Cost: ``steps`` small-batch steps plus ``steps / eval_every`` passes over ``valid``.
    """
    if steps < 1 or eval_every < 1:
        raise ConfigError(f"IL model steps ({steps}) and eval_every ({eval_every}) must be >= 1")
    best = {"loss": float(score(model, valid).mean()), "step": 0, "state": copy.deepcopy(model.state_dict())}
    curve = [(0, best["loss"])]

    def keep_best(step, model, **_):
        if step % eval_every and step != steps:
            return
        v = float(score(model, valid).mean())
        curve.append((step, v))
        if v < best["loss"]:
            best.update(loss=v, step=step, state=copy.deepcopy(model.state_dict()))

    train(model, task, budget=Budget(max_steps=steps), batch_size=batch_size, lr=lr, weight_decay=weight_decay,
          grad_clip=None, seed=seed, progress=False, log_every=max(steps, 1), callbacks=(keep_best,), run=run)
    model.load_state_dict(best["state"])
    model.eval()
    return model, {"best_step": best["step"], "best_valid_loss": best["loss"], "valid_curve": curve}


def holdout_irreducible(make_model, train_task, holdout, valid, **fit_kw):
    """The paper's default: one IL model trained on ``holdout`` scores every example of ``train_task``.

    ``make_model()`` returns a fresh model. Returns ``(IrreducibleLosses, info)``.
    """
    model, info = fit_il_model(make_model(), holdout, valid, **fit_kw)
    il = IrreducibleLosses(train_task.ids, score(model, train_task), models=[model])
    return il, info


HALVES = ("balanced", "random")


def split_halves(train_task, seed: int = 0, halves: str = "balanced") -> list[np.ndarray]:
    """The two halves of the no-holdout variant, as sorted row numbers of ``train_task``.

    ``"balanced"`` (the authors' ``datamodules.py``: each class split in two, the first half of its
    shuffled rows to the first half) on a task with ``labels`` (the observed, possibly noisy ones, as
    the authors' code sees them); a task without labels (LM) falls back to ``"random"``: one seeded
    permutation cut in the middle."""
    if halves not in HALVES:
        raise ConfigError(f"unknown halves {halves!r}; choose one of {', '.join(HALVES)}")
    rng = np.random.default_rng([seed, 77])
    labels = getattr(train_task, "labels", None)
    if halves == "random" or labels is None:
        perm = rng.permutation(len(train_task))
        return [np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2:])]
    labels = np.asarray(labels)
    parts: list[list[int]] = [[], []]
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        parts[0] += rows[: len(rows) // 2].tolist()
        parts[1] += rows[len(rows) // 2:].tolist()
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def no_holdout_irreducible(make_model, train_task, valid, seed: int = 0, halves: str = "balanced", **fit_kw):
    """No holdout set: two IL models, each trained on one half of ``train_task`` (``halves``:
    ``"balanced"`` per class, the authors' default, or ``"random"``; see :func:`split_halves`), each
    scoring the half it did not see. Returns ``(IrreducibleLosses, info)``; ``il.owner`` says which
    model scored which example (the one to use if the losses are recomputed later).
    """
    if len(train_task) < 4:
        raise ConfigError(f"no-holdout irreducible losses need at least 4 training examples, got {len(train_task)}")
    halves = split_halves(train_task, seed, halves)
    if min(len(h) for h in halves) < 1:
        raise ConfigError("no-holdout irreducible losses: a half is empty (every class has a single example)")
    losses = np.zeros(len(train_task))
    owner = np.zeros(len(train_task), dtype=np.int64)
    models, infos = [], []
    for k, half in enumerate(halves):
        fit_kw_k = dict(fit_kw, seed=fit_kw.get("seed", seed) + k)
        m, info = fit_il_model(make_model(), task_subset(train_task, half, f"{_name(train_task)}[half{k}]"), valid, **fit_kw_k)
        other = halves[1 - k]
        losses[other] = score(m, task_subset(train_task, other))
        owner[other] = k
        models.append(m)
        infos.append(info)
    return IrreducibleLosses(train_task.ids, losses, models=models, owner=owner), {"halves": infos}


def _name(task) -> str:
    return str(getattr(task, "name", None) or getattr(getattr(task, "corpus", None), "spec", None) or type(task).__name__)


def task_subset(task, rows, name: str | None = None):
    """The examples ``rows`` of ``task`` (in that order) as a task: ``task.subset`` when it has one
    (labelled tasks), else a :class:`TaskView` (LM tasks)."""
    if hasattr(task, "subset"):
        return task.subset(rows, name)
    return TaskView(task, rows, name)


class TaskView:
    """Examples ``rows`` of a task, with the task contract of ``wb.train``: ``collate(i, step)`` is
    the parent's batch of ``rows[i]`` (the same tokens and, for MLM, the same mask draw) with
    ``index`` renumbered to the view; ``ids`` and ``domains`` follow; the losses and everything else
    are the parent's."""

    def __init__(self, task, rows, name: str | None = None):
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= len(task))):
            raise ConfigError(f"task subset: rows must index the {len(task)} examples of the task")
        self.task, self.rows = task, rows
        self.name = name or f"{_name(task)}[subset]"
        self.ids = [task.ids[r] for r in rows]
        self.domains = [task.domains[r] for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getattr__(self, key):                    # loss, per_example_loss, tokens, embed, kind, seq_len, ...
        if key in ("task", "rows"):
            raise AttributeError(key)
        return getattr(self.task, key)

    def _renumber(self, batch, indices):
        batch["index"] = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return batch

    def collate(self, indices, step: int = 0) -> dict:
        return self._renumber(self.task.collate(self.rows[np.asarray(indices, dtype=np.int64)], step=step), indices)

    def unmasked(self, indices) -> dict:
        return self._renumber(self.task.unmasked(self.rows[np.asarray(indices, dtype=np.int64)]), indices)
