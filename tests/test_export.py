"""Export (issue 17): every run ends with ``RUN/hf/`` that Hugging Face loads back, ``python -m
workbench export`` turns any checkpoint into such a directory, and every API run ends with a
``summary.json`` that ``wb.runs.table`` lists (a recipe may still replace it)."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

import workbench as wb
from workbench.cli import main
from workbench.training.checkpoint import load_weights
from workbench.training.export import export_run

STEPS = 3


def _train(prep, run_dir, family, **kw):
    model = wb.model(f"{family}-tiny", vocab_size=len(prep.tokenizer), seed=0, dropout=0.0)
    run = wb.Run(run_dir)
    res = wb.train(model, prep.train, eval_data=prep.eval, budget=wb.Budget(max_steps=STEPS), run=run,
                   batch_size=4, lr=1e-3, eval_batches=1, progress=False, **kw)
    run.close()
    return res


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits


@pytest.mark.parametrize("family, auto, fixture", [("bert", AutoModelForMaskedLM, "small_prep"),
                                                   ("gpt2", AutoModelForCausalLM, "small_prep_clm")])
def test_run_ends_with_a_loadable_hf_directory(family, auto, fixture, tmp_path, request):
    prep = request.getfixturevalue(fixture)
    res = _train(prep, tmp_path / "run", family)
    hf = tmp_path / "run" / "hf"
    assert (hf / "config.json").exists() and (tmp_path / "run" / "model.safetensors").exists()
    loaded = auto.from_pretrained(hf)
    tok = AutoTokenizer.from_pretrained(hf)
    assert type(loaded) is type(res.model)
    text = prep.eval_corpus.ds[0]["text"][:200]
    assert tok(text)["input_ids"] == prep.tokenizer(text)["input_ids"]
    batch = prep.eval.collate([0, 1], step=-1)
    torch.testing.assert_close(_logits(loaded, batch), _logits(res.model.cpu(), batch))
    # no temporary folder is left beside it
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".tmp")]


def test_api_run_summary_listed_and_replaceable_by_a_recipe(small_prep_clm, tmp_path):
    res = _train(small_prep_clm, tmp_path / "runs" / "a", "gpt2")
    s = json.loads((tmp_path / "runs" / "a" / "summary.json").read_text())
    assert s["complete"] is True and s["steps"] == STEPS and s["tokens"] == res.tokens
    assert s["stop_reason"] == res.stop_reason and s["final_eval_loss"] == pytest.approx(res.final_eval_loss)
    assert s["wall_s"] > 0 and s["train_s"] is not None
    df = wb.runs.table(tmp_path / "runs")
    assert list(df["run_dir"]) == [str(tmp_path / "runs" / "a")] and int(df["steps"][0]) == STEPS
    # a recipe writes its own summary after train(): it replaces train()'s
    run = wb.Run(tmp_path / "runs" / "a", resume=True)
    run.write_summary({"recipe": "mine", "score": 1.5}, complete=True)
    run.close()
    assert wb.runs.table(tmp_path / "runs")["recipe"].tolist() == ["mine"]
    # ... and a recipe's summary written before train() is not replaced by it
    run = wb.Run(tmp_path / "runs" / "b")
    run.write_summary({"recipe": "mine", "phase": "started"})
    model = wb.model("gpt2-tiny", vocab_size=len(small_prep_clm.tokenizer), seed=0)
    wb.train(model, small_prep_clm.train, budget=wb.Budget(max_steps=1), run=run, batch_size=2, progress=False)
    run.close()
    assert json.loads((tmp_path / "runs" / "b" / "summary.json").read_text())["phase"] == "started"


def test_resumed_api_run_updates_its_summary(small_prep_clm, tmp_path):
    _train(small_prep_clm, tmp_path / "run", "gpt2", checkpoint_every=1)
    run = wb.Run(tmp_path / "run", resume=True)
    model = wb.model("gpt2-tiny", vocab_size=len(small_prep_clm.tokenizer), seed=0, dropout=0.0)
    wb.train(model, small_prep_clm.train, budget=wb.Budget(max_steps=STEPS + 2), run=run, batch_size=4,
             progress=False)
    run.close()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == STEPS + 2


def test_export_any_checkpoint(small_prep_clm, tmp_path, capsys):
    run = tmp_path / "run"
    _train(small_prep_clm, run, "gpt2", checkpoint_every=1, keep_checkpoints=5)
    assert (run / "hf_config.json").exists() and (run / "tokenizer").is_dir()
    out = tmp_path / "step2"
    assert main(["export", str(run), str(out), "--checkpoint", "step-2"]) == 0
    assert str(out) in capsys.readouterr().out
    m = AutoModelForCausalLM.from_pretrained(out)
    ref = wb.model("gpt2-tiny", vocab_size=len(small_prep_clm.tokenizer), seed=0)
    load_weights(run / "checkpoints" / "step-00000002" / "model.safetensors", ref)
    batch = small_prep_clm.eval.collate([0, 1], step=-1)
    torch.testing.assert_close(_logits(m, batch), _logits(ref, batch))
    assert AutoTokenizer.from_pretrained(out)("def f(x)")["input_ids"] == \
        small_prep_clm.tokenizer("def f(x)")["input_ids"]
    # the default (final weights) equals the run's own hf/; "latest" is the last step here
    final = export_run(run, tmp_path / "final")
    latest = export_run(run, tmp_path / "latest", "latest")
    for d in (final, latest):
        torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(d), batch),
                                   _logits(AutoModelForCausalLM.from_pretrained(run / "hf"), batch))
