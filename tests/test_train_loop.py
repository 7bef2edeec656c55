import json

import pytest
import torch
from safetensors.torch import load_file

import workbench as wb
from workbench.cli import main
from workbench.errors import ConfigError, RunError
from workbench.training import Budget, RandomSubsetSampler, Schedule


def _train(prep, run=None, steps=6, **kw):
    model = wb.model("bert-tiny", vocab_size=len(prep.tokenizer), seed=0)
    return wb.train(model, prep.train, eval_data=prep.eval, budget=Budget(max_steps=steps),
                    schedule=Schedule("linear", warmup=2 / steps), batch_size=8, lr=1e-3, eval_every=3, eval_batches=2,
                    run=run, progress=False, seed=1, **kw)


def test_train_logs_and_learns(small_prep, tmp_path):
    run = wb.Run(tmp_path / "r", {"x": 1})
    res = _train(small_prep, run, steps=8, checkpoint_every=4)
    recs = run.metrics()
    train_recs = [r for r in recs if "loss" in r]
    assert [r["step"] for r in train_recs] == list(range(1, 9))
    assert set(train_recs[0]) >= {"step", "tokens", "loss", "lr", "elapsed_s", "tokens_per_s"}
    assert train_recs[-1]["loss"] < train_recs[0]["loss"]
    assert [r["step"] for r in recs if "eval_loss" in r] == [3, 6, 8]
    assert train_recs[-1]["lr"] == pytest.approx(1e-3 * (1 - 5 / 6))    # linear decay after 2 warmup steps
    assert (run.path / "model.safetensors").exists() and (run.path / "checkpoints" / "LATEST").exists()
    assert res.stop_reason == "max_steps" and res.step == 8


def test_resume_equals_uninterrupted(small_prep, tmp_path):
    full = _train(small_prep, wb.Run(tmp_path / "full"), steps=8, checkpoint_every=4)
    part = wb.Run(tmp_path / "part")
    model = wb.model("bert-tiny", vocab_size=len(small_prep.tokenizer), seed=0)

    class Boom(Exception):
        pass

    def crash(step, **_):
        if step == 6:
            raise Boom()
    with pytest.raises(Boom):
        wb.train(model, small_prep.train, eval_data=small_prep.eval, budget=Budget(max_steps=8),
                 schedule=Schedule("linear", warmup=0.25), batch_size=8, lr=1e-3, eval_every=3, eval_batches=2,
                 run=part, progress=False, seed=1, checkpoint_every=4, callbacks=(crash,))
    resumed = _train(small_prep, wb.Run(tmp_path / "part", resume=True), steps=8, checkpoint_every=4)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    key = lambda rs: [(r["step"], r.get("loss"), r.get("eval_loss")) for r in rs]
    assert key(wb.Run.open(tmp_path / "full").metrics()) == key(wb.Run.open(tmp_path / "part").metrics())
    assert resumed.step == full.step == 8


def test_random_subset_sampler_stays_in_subset(small_prep):
    s = RandomSubsetSampler(0.25)
    s.setup(small_prep.train, seed=0)
    pool = set(s.pool.tolist())
    assert len(pool) == round(0.25 * len(small_prep.train))
    drawn = s.next(3 * len(pool))
    assert set(drawn) == pool                                     # three full epochs over the subset
    assert sorted(drawn[: len(pool)]) == sorted(pool)


def test_run_dir_refuses_existing_and_escapes(tmp_path):
    wb.Run(tmp_path / "r")
    with pytest.raises(RunError, match="--resume"):
        wb.Run(tmp_path / "r")
    with pytest.raises(RunError, match="nothing to resume"):
        wb.Run(tmp_path / "none", resume=True)
    with pytest.raises(RunError):
        wb.runs.safe_child(tmp_path, "../evil")
    df = wb.runs.table(tmp_path)
    assert len(df) == 0


def test_cli_train_and_resume(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--out", str(out), "--no-progress", "-p", "corpus=pydocs:datasets", "-p", "max_steps=4",
            "-p", "batch_size=4", "-p", "seq_len=32", "-p", "vocab_size=512", "-p", "eval_every=2", "-p", "warmup=0.25"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["steps"] == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["steps"] == 4
    assert main(args) == 2                                       # exists, no --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2   # already complete
    df = wb.runs.table(tmp_path)
    assert len(df) == 1 and df["steps"].iloc[0] == 4


@pytest.mark.parametrize("args,msg", [
    (["-p", "nope=1"], "unknown parameter"),
    (["-p", "max_steps=ten"], "integer"),
    (["-p", "model=bert-huge"], "unknown model preset"),
    (["-p", "corpus=/no/such/file.txt"], "not found"),
    (["-p", "lr=-1"], "lr must be positive"),
])
def test_cli_train_bad_params(tmp_path, capsys, args, msg):
    assert main(["train", "--out", str(tmp_path / "x"), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_train_bad_api_inputs(small_prep):
    m = wb.model("bert-tiny", vocab_size=len(small_prep.tokenizer))
    with pytest.raises(ConfigError, match="backend"):
        wb.train(m, small_prep.train, backend="mpi", progress=False)
    with pytest.raises(ConfigError, match="needs a step budget"):
        wb.train(m, small_prep.train, budget=Budget(max_minutes=1), schedule=Schedule("linear"), progress=False)
    with pytest.raises(ConfigError):
        Budget()
