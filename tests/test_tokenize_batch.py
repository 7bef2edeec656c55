import numpy as np
import torch

import workbench as wb


def test_tokenizer_round_trip(small_corpus, small_prep, small_prep_clm):
    tok = small_prep.tokenizer
    text = "Return a new dataset with the given column removed."
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text.lower()
    btok = small_prep_clm.tokenizer
    assert btok.decode(btok(text)["input_ids"]) == text          # byte-level BPE is lossless
    # cached: a second call loads the same vocabulary
    again = wb.train_tokenizer(small_prep.train_corpus, "wordpiece", 1024)
    assert again.get_vocab() == tok.get_vocab()


def test_mlm_masking_statistics(small_prep):
    task = small_prep.train
    b = task.collate(list(range(len(task)))[:256], step=3)
    orig = torch.from_numpy(task.input_ids[:256, : b["input_ids"].shape[1]].astype(np.int64))
    special = torch.isin(orig, task.special_ids)
    cand = b["attention_mask"].bool() & ~special
    tgt = b["labels"] != -100
    assert not (tgt & ~cand).any()                              # only real, non-special tokens are targets
    assert torch.equal(b["labels"][tgt], orig[tgt])             # labels hold the original tokens
    assert (tgt.sum(1) >= 1).all()                              # every example has a target
    rate = tgt.sum() / cand.sum()
    assert 0.13 < rate < 0.18
    masked = b["input_ids"][tgt]
    frac_mask = (masked == task.mask_id).float().mean()
    frac_kept = (masked == orig[tgt]).float().mean()
    assert 0.75 < frac_mask < 0.85 and 0.06 < frac_kept < 0.16
    assert torch.equal(b["input_ids"][~tgt], orig[~tgt])        # non-targets untouched
    assert torch.equal(task.collate(list(range(256)), 3)["input_ids"], b["input_ids"])   # deterministic
    assert not torch.equal(task.collate(list(range(256)), 4)["labels"], b["labels"])


def test_clm_packing(small_prep_clm):
    task = small_prep_clm.train
    eos = small_prep_clm.tokenizer.eos_token_id
    assert task.input_ids.shape[1] == 64
    stream = task.input_ids.reshape(-1)
    docs = small_prep_clm.train_corpus.texts
    first = small_prep_clm.tokenizer(docs[0])["input_ids"]
    assert stream[: len(first)].tolist() == first and stream[len(first)] == eos
    n_eos = int((stream == eos).sum())
    assert n_eos in (len(docs), len(docs) - 1) or n_eos <= len(docs)
    b = task.collate([3, 1], step=0)
    assert torch.equal(b["labels"], b["input_ids"]) and b["input_ids"].shape == (2, 64)
    assert len(task.domains) == len(task) == len(task.ids)


def test_sparse_head_equals_dense(small_prep):
    m = small_prep.model.eval()
    b = small_prep.train.collate(list(range(8)), step=0)
    with torch.no_grad():
        sparse = wb.models.mlm_loss(m, b, sparse=True)
        dense = wb.models.mlm_loss(m, b, sparse=False)
        hf = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        per = wb.models.mlm_loss(m, b, sparse=True, reduction="none")
    assert torch.allclose(sparse, dense, atol=1e-5) and torch.allclose(sparse, hf, atol=1e-5)
    assert per.shape == (8,) and torch.isfinite(per).all()
