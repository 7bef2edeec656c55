import json

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import ConfigError
from workbench.selection.mates_recipe import MatesSampler, lambada_eval, lambada_style


def test_stage_bookkeeping(small_prep_clm, tmp_path):
    p = small_prep_clm
    model = wb.model("gpt2-tiny", vocab_size=len(p.tokenizer), seed=0)
    from workbench.train import make_optimizer
    opt = make_optimizer(model, 1e-3)
    ref = torch.from_numpy(p.eval.input_ids[:4].astype(np.int64))
    s = MatesSampler(opt, ref, stage_steps=3, select_fraction=0.2, probe_size=12, im_epochs=1)
    run = wb.Run(tmp_path / "r")
    wb.train(model, p.train, sampler=s, optimizer=opt, budget=wb.Budget(max_steps=7), batch_size=4, run=run,
             progress=False)
    assert [r["stage"] for r in s.per_stage] == [0, 1, 2] and [r["step"] for r in s.per_stage] == [0, 3, 6]
    k = round(0.2 * len(p.train))
    assert all(r["selected"] == k for r in s.per_stage)
    st1 = run.load_scores("mates_stage_001")
    assert len(st1["indices"]) == k and len(st1["oracle"]) == 12 and len(st1["predicted"]) == len(p.train)
    assert "spearman_val" in s.per_stage[1] and "predicted" not in run.load_scores("mates_stage_000")
    assert s.selection_wall_s > 0
    drawn = set(s.next(3 * k))
    assert drawn == set(s.subset.tolist())                  # training draws only from the stage's selection


def test_lambada_items(small_prep_clm):
    items = lambada_style(small_prep_clm.eval_corpus, small_prep_clm.tokenizer, 32, n=10)
    assert 0 < len(items) <= 10 and all(len(c) > 0 and len(t) > 0 for c, t in items)
    m = wb.model("gpt2-tiny", vocab_size=len(small_prep_clm.tokenizer), seed=0)
    r = lambada_eval(m, items)
    assert r["lambada_loss"] > 0 and 0 <= r["lambada_acc"] <= 1


def test_bad_params():
    with pytest.raises(ConfigError):
        MatesSampler(None, torch.zeros(1, 4, dtype=torch.long), method="best")
    with pytest.raises(ConfigError):
        MatesSampler(None, torch.zeros(1, 4, dtype=torch.long), probe_size=2)


def test_mates_notebook_smoke(tmp_path):
    from workbench.cli import main
    assert main(["reproduce", "mates", "--scale", "smoke", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "mates" / "summary.json").read_text())
    assert s["metric"] == "reference_loss" and s["baseline"]["name"] == "random"
    for k in ("spearman_val", "selection_flops_fraction", "selection_wall_fraction", "per_stage"):
        assert k in s["extra"]
    assert 0 < s["extra"]["selection_flops_fraction"] < 1
