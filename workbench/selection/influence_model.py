"""MATES data-influence model: a tiny BERT regressor from token ids to oracle influence.

Oracle probing (`workbench.selection.mates.batched_probe`) costs at least one
forward+backward plus one reference evaluation *per candidate*, so MATES only
probes a few thousand candidates per stage and learns to predict the rest:
a small encoder reads a candidate's token ids and regresses its oracle score.
Predicting costs one small forward per candidate, which is cheap enough to
score the whole pool; the ranking (not the scale) is what selection uses, so
the model is chosen by validation Spearman correlation.

Recipe (as in the paper, scaled down):

* encoder: ``transformers.BertModel`` from a ``BertConfig`` (default 2 layers,
  hidden 128), fed the *LM's* token ids (one extra id is appended to the
  vocabulary as padding for ragged inputs), mean-pooled over non-padding
  tokens, followed by a linear head;
* targets: oracle scores z-scored with the training-split mean/std (stored, so
  `InfluenceModel.predict` returns values on the original score scale);
* loss: MSE; optimiser AdamW; seeded 90/10 train/validation split;
* model selection: the epoch with the best validation Spearman is kept;
* re-initialised per stage by default, as the authors' ``train_data_influence_model.py`` fine-tunes
  a fresh ``bert-base-uncased`` at every stage; ``warm_start=True`` (the workbench's earlier choice)
  fine-tunes the previous stage's encoder on the new oracle data instead;
* ``pretrained=DIR``: the encoder and its tokenizer come from a local directory saved with
  ``save_pretrained`` (offline only), and the model reads *text* (the LM's blocks decoded and
  re-tokenised for the encoder, as the authors re-tokenise C4 for BERT) instead of the LM's ids;
* `RidgeInfluence`: the ablation, a bag-of-tokens ridge regressor with the same interface;
* honest held-out estimate: `InfluenceModel.cross_validate` refits the same
  procedure on k-1 folds and scores the k-th, for a Spearman over every probe
  that no model saw (``spearman_val`` picked the epoch and is biased upward);
* checkpoints: `InfluenceModel.state_dict` is its whole state (the encoder's size, its weights as
  numpy arrays, the z-scoring constants and the fit metrics) and `InfluenceModel.from_state_dict`
  rebuilds it, so a resumed MATES run warm-starts from exactly the weights an uninterrupted one has.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["InfluenceModel", "MatesError", "RidgeInfluence"]


class MatesError(ConfigError):
    """Invalid input to a MATES primitive (bad shapes, k > n, unsupported optimizer...); a :class:`ConfigError`.

    Defined here, in the lowest MATES module, and re-exported by :mod:`workbench.selection.mates`
    (which imports this module; this one imports nothing of it).
    """


class _Regressor(torch.nn.Module):
    def __init__(self, config: Any, pretrained: str | None = None):
        super().__init__()
        from transformers import BertModel

        if pretrained:
            self.encoder = BertModel.from_pretrained(pretrained, config=config, add_pooling_layer=False,
                                                     local_files_only=True)
        else:
            self.encoder = BertModel(config, add_pooling_layer=False)
        self.head = torch.nn.Linear(config.hidden_size, 1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # mean over real tokens only
        return self.head(pooled).squeeze(-1)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho as a float; NaN when either side is constant (scipy's convention)."""
    from scipy.stats import spearmanr    # here, not at the top: scipy.stats costs about a second to import
    return float(spearmanr(a, b).statistic)


class InfluenceModel:
    """Small BERT regressor of oracle influence scores (see module docstring).

    Args:
        vocab_size: vocabulary size of the token ids it will read (the LM's).
        hidden, layers, heads, intermediate: encoder size.
        max_len: longer blocks are truncated to their first ``max_len`` tokens.
        dropout: encoder dropout during training.

    After `fit`: ``spearman_val`` (best validation Spearman), ``val_spearmans``
    and ``train_losses`` (per epoch), ``best_epoch`` (0-based),
    ``score_mean``/``score_std`` (z-scoring constants), ``val_indices``.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        hidden: int = 128,
        layers: int = 2,
        heads: int = 2,
        intermediate: int | None = None,
        max_len: int = 512,
        dropout: float = 0.1,
        pretrained: str | None = None,
    ):
        self.pretrained = str(pretrained) if pretrained else None
        self.tokenizer = None
        if self.pretrained:
            self._load_pretrained(max_len, dropout)
            return
        if vocab_size < 1 or hidden % heads:
            raise MatesError("need vocab_size >= 1 and hidden divisible by heads")
        from transformers import BertConfig

        self.vocab_size, self.max_len = int(vocab_size), int(max_len)
        # what __init__ needs to rebuild this model (checkpoints: see state_dict)
        self.spec = {"vocab_size": self.vocab_size, "hidden": int(hidden), "layers": int(layers), "heads": int(heads),
                     "intermediate": int(intermediate or 4 * hidden), "max_len": self.max_len,
                     "dropout": float(dropout)}
        self.pad_id = self.vocab_size  # extra id reserved for padding
        self.config = BertConfig(
            vocab_size=self.vocab_size + 1,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate or 4 * hidden,
            max_position_embeddings=self.max_len,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            pad_token_id=self.pad_id,
        )
        self._reset()

    def _load_pretrained(self, max_len: int, dropout: float) -> None:
        """Encoder config and tokenizer from the local directory ``self.pretrained`` (offline)."""
        from pathlib import Path

        from transformers import AutoTokenizer, BertConfig

        path = self.pretrained
        if not (Path(path) / "config.json").is_file():
            raise MatesError(f"influence-model encoder {path!r}: not a local directory saved with save_pretrained "
                             f"(config.json missing); pretrained encoders are read offline only")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.config = BertConfig.from_pretrained(path, local_files_only=True,
                                                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        except (OSError, ValueError) as e:
            raise MatesError(f"influence-model encoder {path!r}: {str(e).splitlines()[0]}") from None
        self.max_len = int(min(max_len, self.config.max_position_embeddings))
        self.vocab_size = int(self.config.vocab_size)
        self.pad_id = int(self.config.pad_token_id or 0)
        self.spec = {"vocab_size": self.vocab_size, "hidden": int(self.config.hidden_size),
                     "layers": int(self.config.num_hidden_layers), "heads": int(self.config.num_attention_heads),
                     "intermediate": int(self.config.intermediate_size), "max_len": self.max_len,
                     "dropout": float(dropout), "pretrained": path}
        self._reset()

    def _reset(self) -> None:
        self.net: _Regressor | None = None
        self.score_mean, self.score_std = 0.0, 1.0
        self.train_losses: list[float] = []
        self.val_spearmans: list[float] = []
        self.best_epoch = -1
        self.spearman_val = float("nan")
        self.val_indices = np.empty(0, dtype=np.int64)

    # ----------------------------------------------------------------- data
    def _encode(self, blocks: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad/truncate token blocks into (ids [N, L], attention mask [N, L]); texts for a pretrained encoder."""
        rows = list(blocks)  # works for a [N, L] tensor/array or a list of 1-D blocks
        if not rows:
            raise MatesError("no token blocks given")
        if self.pretrained:
            if not all(isinstance(r, str) for r in rows):
                raise MatesError("a pretrained influence model reads texts (decode the LM's blocks first)")
            enc = self.tokenizer(rows, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
            return enc["input_ids"].long(), enc["attention_mask"].long()
        rows = [torch.as_tensor(r, dtype=torch.long).reshape(-1)[: self.max_len] for r in rows]
        if any(len(r) == 0 for r in rows):
            raise MatesError("empty token block")
        if any(int(r.min()) < 0 or int(r.max()) >= self.vocab_size for r in rows):
            raise MatesError(f"token ids must lie in [0, {self.vocab_size})")
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, 1
        return ids, mask

    # ----------------------------------------------------------------- API
    def fit(
        self,
        token_blocks: Sequence[Any],
        scores: Sequence[float],
        epochs: int = 5,
        lr: float = 5e-4,
        batch_size: int = 32,
        seed: int = 0,
        *,
        val_fraction: float = 0.1,
        warm_start: bool = False,
        weight_decay: float = 0.01,
    ) -> "InfluenceModel":
        """Fit on (token block, oracle score) pairs; keeps the best-validation-Spearman epoch.

        Cost: ``epochs * N`` encoder forward+backward passes plus one validation
        pass per epoch.  With ``warm_start=True`` and an already fitted model the
        encoder continues from its current weights (MATES stage-to-stage
        continuation); z-scoring constants are always recomputed from the new
        scores.  Returns ``self``.
        """
        ids, mask = self._encode(token_blocks)
        y = np.asarray(scores, dtype=np.float64).reshape(-1)
        n = len(y)
        if n != len(ids):
            raise MatesError(f"{len(ids)} token blocks but {n} scores")
        if not np.all(np.isfinite(y)):
            raise MatesError("scores must be finite")
        if epochs < 1 or batch_size < 1 or not 0 < val_fraction < 1:
            raise MatesError("need epochs >= 1, batch_size >= 1 and 0 < val_fraction < 1")
        n_val = max(2, int(round(n * val_fraction)))
        if n - n_val < 2:
            raise MatesError(f"need at least {n_val + 2} examples for a train/validation split, got {n}")

        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=gen).numpy()
        val_idx, tr_idx = np.sort(perm[:n_val]), perm[n_val:]
        mean, std = float(y[tr_idx].mean()), float(y[tr_idx].std())
        if not std > 0:
            raise MatesError("training scores have zero variance; nothing to rank")
        target = torch.tensor((y - mean) / std, dtype=torch.float32)

        if not (warm_start and self.net is not None):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.net = _Regressor(self.config, self.pretrained)
        net = self.net
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)

        self.score_mean, self.score_std = mean, std
        self.val_indices = val_idx.astype(np.int64)
        self.train_losses, self.val_spearmans = [], []
        best_state, best_rho = None, -np.inf
        tr = torch.as_tensor(tr_idx)
        for _ in range(epochs):
            net.train()
            order = tr[torch.randperm(len(tr), generator=gen)]
            total = 0.0
            for s in range(0, len(order), batch_size):
                b = order[s : s + batch_size]
                with torch.random.fork_rng(devices=[]):  # dropout draws from a seeded stream
                    torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
                    loss = torch.nn.functional.mse_loss(net(ids[b], mask[b]), target[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            self.train_losses.append(total / len(order))
            pred = self._raw_predict(ids[val_idx], mask[val_idx], batch_size=max(batch_size, 64))
            rho = _spearman(pred, y[val_idx])
            self.val_spearmans.append(rho)
            score = rho if np.isfinite(rho) else -np.inf  # NaN (constant predictions) ranks last
            if best_state is None or score > best_rho:  # strict: ties keep the earlier epoch
                best_rho, best_state = score, copy.deepcopy(net.state_dict())
                self.best_epoch = len(self.val_spearmans) - 1
        net.load_state_dict(best_state)
        self.spearman_val = self.val_spearmans[self.best_epoch]
        return self

    def cross_validate(
        self,
        token_blocks: Sequence[Any],
        scores: Sequence[float],
        folds: int = 5,
        *,
        seed: int = 0,
        warm_start: bool = False,
        **fit_kwargs: Any,
    ) -> dict:
        """Out-of-fold Spearman of the whole fitting procedure: an honest held-out estimate.

        The Spearman that `fit` keeps (``spearman_val``) is the best of ``epochs`` validation scores,
        measured on the same ~10% split that picked the epoch, so it is biased upward; at a few
        hundred probes it also rests on a few dozen points.  Here the examples are cut into
        ``folds`` parts; for each part a copy of this model is fitted exactly as `fit` would fit it
        (same ``fit_kwargs``, its own inner validation split and best epoch; from this model's
        current weights when ``warm_start``) on the other parts, and predicts the held-out part, so
        every example is scored once by a model that never saw it.  ``spearman`` is the mean of the
        per-fold Spearmans: selection ranks one model's predictions, and a pooled correlation
        across folds would also score the folds' different offsets and scales (it reads lower
        for a good model and below zero for a useless one); the pooled value is returned too.

        This model is not modified.  Cost: ``folds`` fits on ``(folds - 1) / folds`` of the data.

        Returns:
            dict with ``spearman`` (mean over folds), ``fold_spearmans``, ``spearman_pooled``
            (all out-of-fold predictions together) and ``predictions`` (float64 ``[N]`` on the
            original score scale, aligned with ``scores``).
        """
        y = np.asarray(scores, dtype=np.float64).reshape(-1)
        blocks = list(token_blocks)
        if len(blocks) != len(y):
            raise MatesError(f"{len(blocks)} token blocks but {len(y)} scores")
        if folds < 2 or len(y) < 2 * folds:
            raise MatesError(f"need folds >= 2 and at least 2 examples per fold, got {folds} folds for {len(y)}")
        order = np.random.default_rng(seed).permutation(len(y))
        pred = np.empty(len(y), dtype=np.float64)
        fold_rhos = []
        for f, held in enumerate(np.array_split(order, folds)):
            keep = np.setdiff1d(order, held)
            clone = copy.deepcopy(self)
            clone.fit([blocks[i] for i in keep], y[keep], seed=seed + 1 + f, warm_start=warm_start, **fit_kwargs)
            pred[held] = clone.predict([blocks[i] for i in held])
            fold_rhos.append(_spearman(pred[held], y[held]))
        return {"spearman": float(np.nanmean(fold_rhos)) if np.isfinite(fold_rhos).any() else float("nan"),
                "fold_spearmans": fold_rhos, "spearman_pooled": _spearman(pred, y),
                "predictions": pred}

    def _raw_predict(self, ids: torch.Tensor, mask: torch.Tensor, batch_size: int) -> np.ndarray:
        assert self.net is not None
        was = self.net.training
        self.net.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(ids), batch_size):
                out.append(self.net(ids[s : s + batch_size], mask[s : s + batch_size]))
        self.net.train(was)
        return torch.cat(out).double().numpy()

    def predict(self, token_blocks: Sequence[Any], batch_size: int = 256, standardized: bool = False) -> np.ndarray:
        """Predicted oracle scores, float64 ``[N]``.

        By default on the oracle's original scale (head output * std + mean).  With
        ``standardized=True``, the head output itself: the prediction in units of the fitted
        probes' standard deviation, relative to their mean.  That is the scale MATES's Gumbel
        temperature is defined on -- raw influences are loss differences of order 1e-3, beside
        which unit Gumbel noise would swamp any ranking.
        """
        if self.net is None:
            raise MatesError("InfluenceModel.predict called before fit")
        ids, mask = self._encode(token_blocks)
        z = self._raw_predict(ids, mask, batch_size)
        return z if standardized else z * self.score_std + self.score_mean

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """The whole state as plain values and numpy arrays: ``spec`` (the constructor's arguments),
        ``weights`` (the encoder and head, ``None`` before the first fit), the z-scoring constants
        and the fit metrics. :meth:`from_state_dict` rebuilds an equal model."""
        weights = None
        if self.net is not None:
            weights = {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}
        return {"spec": dict(self.spec), "weights": weights,
                "score_mean": float(self.score_mean), "score_std": float(self.score_std),
                "train_losses": [float(x) for x in self.train_losses],
                "val_spearmans": [float(x) for x in self.val_spearmans],
                "best_epoch": int(self.best_epoch), "spearman_val": float(self.spearman_val),
                "val_indices": np.asarray(self.val_indices, dtype=np.int64)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (the spec must match this model's)."""
        spec = {k: state["spec"][k] for k in self.spec}
        if spec != self.spec:
            raise MatesError(f"influence model state is for {spec}, not {self.spec}")
        if state.get("weights") is None:
            self.net = None
        else:
            with torch.random.fork_rng(devices=[]):      # building the net draws its (overwritten) init
                net = _Regressor(self.config, self.pretrained)
            net.load_state_dict({k: torch.as_tensor(np.asarray(v)).clone() for k, v in state["weights"].items()})
            self.net = net
        self.score_mean, self.score_std = float(state["score_mean"]), float(state["score_std"])
        self.train_losses = [float(x) for x in state["train_losses"]]
        self.val_spearmans = [float(x) for x in state["val_spearmans"]]
        self.best_epoch, self.spearman_val = int(state["best_epoch"]), float(state["spearman_val"])
        self.val_indices = np.asarray(state["val_indices"], dtype=np.int64)

    @classmethod
    def from_state_dict(cls, state: dict) -> "InfluenceModel":
        """A model rebuilt from :meth:`state_dict`'s output."""
        s = state["spec"]
        if s.get("pretrained"):
            im = cls(0, max_len=int(s["max_len"]), dropout=float(s["dropout"]), pretrained=s["pretrained"])
            im.load_state_dict(state)
            return im
        im = cls(int(s["vocab_size"]), hidden=int(s["hidden"]), layers=int(s["layers"]), heads=int(s["heads"]),
                 intermediate=int(s["intermediate"]), max_len=int(s["max_len"]), dropout=float(s["dropout"]))
        im.load_state_dict(state)
        return im

    @property
    def metrics(self) -> dict:
        """Fit metrics as a plain dict (JSON-friendly)."""
        return {
            "spearman_val": self.spearman_val,
            "best_epoch": self.best_epoch,
            "val_spearmans": list(self.val_spearmans),
            "train_losses": list(self.train_losses),
            "score_mean": self.score_mean,
            "score_std": self.score_std,
        }


class RidgeInfluence:
    """The ablation influence model: ridge regression of oracle influence on bag-of-tokens features.

    Features: each block's token counts over the LM's vocabulary, rows scaled to unit L2 norm and
    centred with the training mean; targets z-scored as `InfluenceModel` does; solved in closed form
    in the dual (``N x N``, cheap for a few hundred probes). Same interface as `InfluenceModel`
    (``fit``, ``predict(standardized=)``, ``cross_validate``, ``state_dict``); it answers whether a
    learned encoder ranks candidates better than which tokens they contain.
    """

    kind = "ridge"

    def __init__(self, vocab_size: int, alpha: float = 1.0):
        if vocab_size < 1 or not alpha > 0:
            raise MatesError("RidgeInfluence needs vocab_size >= 1 and alpha > 0")
        self.vocab_size, self.alpha = int(vocab_size), float(alpha)
        self.spec = {"kind": "ridge", "vocab_size": self.vocab_size, "alpha": self.alpha}
        self.w: np.ndarray | None = None
        self.x_mean = np.zeros(self.vocab_size)
        self.score_mean, self.score_std = 0.0, 1.0
        self.spearman_val = float("nan")          # no validation split: use cross_validate

    def _features(self, blocks: Sequence[Any]) -> np.ndarray:
        rows = [np.asarray(torch.as_tensor(b).reshape(-1).numpy(), dtype=np.int64) for b in blocks]
        if not rows or any(len(r) == 0 for r in rows):
            raise MatesError("no (or an empty) token block given")
        if any(int(r.min()) < 0 or int(r.max()) >= self.vocab_size for r in rows):
            raise MatesError(f"token ids must lie in [0, {self.vocab_size})")
        X = np.stack([np.bincount(r, minlength=self.vocab_size).astype(np.float64) for r in rows])
        return X / np.linalg.norm(X, axis=1, keepdims=True)

    def fit(self, token_blocks: Sequence[Any], scores: Sequence[float], seed: int = 0, **_: Any) -> "RidgeInfluence":
        X, y = self._features(token_blocks), np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(X) != len(y) or len(y) < 2 or not np.all(np.isfinite(y)):
            raise MatesError(f"need >= 2 finite scores, one per block ({len(X)} blocks, {len(y)} scores)")
        mean, std = float(y.mean()), float(y.std())
        if not std > 0:
            raise MatesError("training scores have zero variance; nothing to rank")
        self.x_mean = X.mean(0)
        Xc = X - self.x_mean
        a = np.linalg.solve(Xc @ Xc.T + self.alpha * np.eye(len(y)), (y - mean) / std)
        self.w, self.score_mean, self.score_std = Xc.T @ a, mean, std
        return self

    def predict(self, token_blocks: Sequence[Any], batch_size: int = 0, standardized: bool = False) -> np.ndarray:
        if self.w is None:
            raise MatesError("RidgeInfluence.predict called before fit")
        z = (self._features(token_blocks) - self.x_mean) @ self.w
        return z if standardized else z * self.score_std + self.score_mean

    def cross_validate(self, token_blocks: Sequence[Any], scores: Sequence[float], folds: int = 5, *,
                       seed: int = 0, **_: Any) -> dict:
        """Out-of-fold Spearman (the folds `InfluenceModel.cross_validate` cuts for the same ``seed``)."""
        y = np.asarray(scores, dtype=np.float64).reshape(-1)
        blocks = list(token_blocks)
        if len(blocks) != len(y) or folds < 2 or len(y) < 2 * folds:
            raise MatesError(f"need one score per block, folds >= 2 and 2 examples per fold ({len(y)}, {folds})")
        order = np.random.default_rng(seed).permutation(len(y))
        pred = np.empty(len(y))
        rhos = []
        for held in np.array_split(order, folds):
            keep = np.setdiff1d(order, held)
            m = RidgeInfluence(self.vocab_size, self.alpha).fit([blocks[i] for i in keep], y[keep])
            pred[held] = m.predict([blocks[i] for i in held])
            rhos.append(_spearman(pred[held], y[held]))
        return {"spearman": float(np.nanmean(rhos)) if np.isfinite(rhos).any() else float("nan"),
                "fold_spearmans": rhos, "spearman_pooled": _spearman(pred, y), "predictions": pred}

    def fit_flops(self, n: int) -> float:
        """Multiply-adds x2 of the closed-form fit on ``n`` blocks (Gram matrix, solve, weights)."""
        return 2.0 * n * n * self.vocab_size + n ** 3 / 1.5 + 2.0 * n * self.vocab_size

    def predict_flops(self, n: int) -> float:
        return 2.0 * n * self.vocab_size

    def state_dict(self) -> dict:
        return {"spec": dict(self.spec), "w": None if self.w is None else self.w.copy(), "x_mean": self.x_mean.copy(),
                "score_mean": self.score_mean, "score_std": self.score_std}

    @classmethod
    def from_state_dict(cls, state: dict) -> "RidgeInfluence":
        m = cls(int(state["spec"]["vocab_size"]), float(state["spec"]["alpha"]))
        m.w = None if state["w"] is None else np.asarray(state["w"], dtype=np.float64)
        m.x_mean = np.asarray(state["x_mean"], dtype=np.float64)
        m.score_mean, m.score_std = float(state["score_mean"]), float(state["score_std"])
        return m


def influence_model_from_state(state: dict):
    """`InfluenceModel` or `RidgeInfluence`, whichever ``state`` (a ``state_dict()``) was saved from."""
    if state["spec"].get("kind") == "ridge":
        return RidgeInfluence.from_state_dict(state)
    return InfluenceModel.from_state_dict(state)
