"""The ``train`` command: every sampler and batch filter, budgets in steps, tokens and minutes,
time-based schedules, resume of a filter run (bitwise equal to an uninterrupted one), ``--help``
and the refusal of runs it cannot resume."""
import json

import pytest
import torch
from safetensors.torch import load_file

import workbench as wb
from workbench.cli import main
from workbench.recipes.quickstart import TrainParams, run_train
from workbench.config import parse

BASE = ["-p", "corpus=pydocs:datasets", "-p", "max_steps=6", "-p", "batch_size=4", "-p", "seq_len=32",
        "-p", "vocab_size=512", "-p", "eval_batches=1", "-p", "eval_every=0"]
IL = ["-p", "il_steps=4"]          # a tiny IL / reference model: seconds


def _train(capsys, out, *params, base=BASE):
    assert main(["train", "--out", str(out), "--no-progress", *base, *params]) == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True
    return res, summary


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("sampler,extra", [
    ("full", []),
    ("random", ["-p", "fraction=0.5", "-p", "warm_start_steps=2"]),
    ("ingenious", ["-p", "fraction=0.5", "-p", "warm_start_steps=2", "-p", "resample_every=2"]),
    ("mates", ["-p", "model=gpt2-tiny", "-p", "resample_every=3", "-p", "probe_size=8", "-p", "ref_blocks=2"]),
])
def test_each_sampler(sampler, extra, tmp_path, capsys):
    res, s = _train(capsys, tmp_path / "run", "-p", f"sampler={sampler}", *extra)
    assert res["steps"] == 6 and s["sampler"] == sampler and res["stop_reason"] == "max_steps"
    scores = wb.Run.open(tmp_path / "run").score_names()
    expect = {"full": [], "random": ["random_subset"], "ingenious": ["ingenious_001", "ingenious_002"],
              "mates": ["mates_stage_000", "mates_stage_001"]}[sampler]
    assert [n for n in scores if not n.startswith("selection")] == expect
    if sampler == "mates":          # default reference: the eval split's first blocks
        assert s["reference_blocks"] == 2
        stage1 = wb.Run.open(tmp_path / "run").load_scores("mates_stage_001")
        assert "predicted" in stage1 and len(stage1["oracle"]) == 8


@pytest.mark.parametrize("filt,model", [("rho_loss", "bert-tiny"), ("rho_loss", "gpt2-tiny"),
                                        ("train_loss", "bert-tiny"), ("token_rho", "gpt2-tiny")])
def test_each_filter(filt, model, tmp_path, capsys):
    res, s = _train(capsys, tmp_path / "run", "-p", f"batch_filter={filt}", "-p", f"model={model}", *IL)
    assert res["steps"] == 6 and s["batch_filter"] == filt
    run = wb.Run.open(tmp_path / "run")
    name = {"rho_loss": "selection_rho_loss", "train_loss": "selection_train_loss",
            "token_rho": "token_selection"}[filt]
    rec = run.load_scores(name)
    assert sorted(set(rec["step"].tolist())) == list(range(6))
    if filt == "token_rho":          # 60% of each batch's target tokens are kept
        assert rec["kept"].sum() == pytest.approx(0.6 * rec["valid"].sum(), rel=0.02)
    else:                            # each small batch of 4 is drawn from a large batch of 40
        assert len(rec["step"]) == 6 * 40 and rec["picks"].sum() == 6 * 4
    if filt == "rho_loss":
        assert "il_valid_loss" in s and s["holdout_docs"] > 0
        assert (rec["irreducible_loss"] > 0).all()          # recomputed by the IL model for every large batch


def test_boltzmann_rho_and_a_sampler_together(tmp_path, capsys):
    res, s = _train(capsys, tmp_path / "run", "-p", "sampler=random", "-p", "batch_filter=rho_loss",
                    "-p", "filter_temperature=0.5", "-p", "filter_fraction=0.5", *IL)
    assert res["steps"] == 6
    assert "selection_boltzmann_rho" in wb.Run.open(tmp_path / "run").score_names()


def test_time_budget_with_a_time_schedule(tmp_path, capsys):
    res, s = _train(capsys, tmp_path / "run", "-p", "max_steps=0", "-p", "max_minutes=0.02",
                    "-p", "schedule=time-linear", "-p", "warmup=0.2")
    assert res["stop_reason"] == "deadline" and s["train_s"] >= 1.2
    lrs = [r["lr"] for r in _records(tmp_path / "run") if "lr" in r]
    peak = lrs.index(max(lrs))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))       # decays after the warmup ...
    assert lrs[-1] < 0.2 * max(lrs)                                        # ... to (about) zero at the deadline


def test_token_budget_with_the_triangle(tmp_path, capsys):
    res, s = _train(capsys, tmp_path / "run", "-p", "max_steps=0", "-p", "max_tokens=400",
                    "-p", "schedule=triangle")
    assert res["stop_reason"] == "max_tokens" and 400 <= s["tokens"] < 400 + 4 * 32
    lrs = [r["lr"] for r in _records(tmp_path / "run") if "lr" in r]
    assert lrs[0] == pytest.approx(1e-3 * (0.25 + 0.75 * 0 / 0.75))      # the triangle starts at 0.25 of the peak


def test_resume_of_a_filter_run_equals_uninterrupted(tmp_path, capsys):
    args = [*BASE, "-p", "batch_filter=rho_loss", "-p", "checkpoint_every=2", "-p", "eval_every=3", *IL]
    _train(capsys, tmp_path / "whole", base=args)

    class Stop(Exception):
        pass

    def stop(step, **_):
        if step == 5:                # the checkpoint of step 4 is the last one: step 5 is lost
            raise Stop()
    params = parse(TrainParams, {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args[1::2]})
    with pytest.raises(Stop):
        run_train(params, str(tmp_path / "part"), progress=False, callbacks=(stop,))
    assert main(["train", "--resume", str(tmp_path / "part"), "--no-progress"]) == 0, capsys.readouterr().err
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = ("elapsed_s", "tokens_per_s")
    strip = lambda rs: [{k: v for k, v in r.items() if k not in timing} for r in rs]  # noqa: E731
    assert strip(_records(tmp_path / "whole")) == strip(_records(tmp_path / "part"))
    ra = wb.Run.open(tmp_path / "whole").load_scores("selection_rho_loss")
    rb = wb.Run.open(tmp_path / "part").load_scores("selection_rho_loss")
    assert all((ra[k] == rb[k]).all() or k in ("score", "train_loss", "irreducible_loss") for k in ra)
    assert all(torch.equal(torch.as_tensor(ra[k]), torch.as_tensor(rb[k])) for k in ("index", "picks", "score"))


def test_api_run_is_refused_by_resume_in_one_line(tmp_path, small_prep, capsys):
    model = wb.model("bert-tiny", vocab_size=len(small_prep.tokenizer))
    with pytest.raises(RuntimeError):
        def crash(step, **_):
            raise RuntimeError("stop")
        wb.train(model, small_prep.train, budget=wb.Budget(max_steps=3), run=wb.Run(tmp_path / "api"),
                 progress=False, checkpoint_every=1, callbacks=(crash,))
    assert main(["train", "--resume", str(tmp_path / "api"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not made with the train command" in err[0]
    assert "wb.Run(DIR, resume=True)" in err[0]


def test_help_lists_every_parameter(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for f in TrainParams.__dataclass_fields__:
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [f])
        assert len(line.split()) >= 4, f"{f}: no type, default or comment in --help"


def test_own_model_and_tokenizer_directories(tmp_path, small_corpus, capsys):
    """A GPT-2 and a BPE tokenizer saved with save_pretrained train with INGENIOUS and RHO-LOSS together."""
    import transformers
    from workbench.data.tokenizer import train_tokenizer
    tok = train_tokenizer(small_corpus, "bpe", 300)
    tok.save_pretrained(tmp_path / "tok")
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "model")
    res, s = _train(capsys, tmp_path / "run", "-p", f"model={tmp_path / 'model'}", "-p", f"tokenizer={tmp_path / 'tok'}",
                    "-p", "sampler=ingenious", "-p", "warm_start_steps=2", "-p", "resample_every=4",
                    "-p", "batch_filter=rho_loss", *IL)
    assert res["steps"] == 6 and s["model"] == str(tmp_path / "model")
    assert {"ingenious_001", "selection_rho_loss"} <= set(wb.Run.open(tmp_path / "run").score_names())
