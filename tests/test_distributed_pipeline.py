"""The full selection pipeline (INGENIOUS sampler + RHO-LOSS batch filter) under DDP and under SIGKILL.

1. Two processes (``torchrun``, gloo on CPU, ``batch_size=4`` each) compute what one process computes
   on the same global batch (``batch_size=8``): the loop gives each rank its contiguous slice of the
   large batch and the RHO filter selects within it, which one process reproduces with
   ``BatchSelector(shards=2)``; the INGENIOUS sampler splits its facility-location partitions across
   the ranks and all-reduces the gains. Per-step losses and final weights agree within an *absolute*
   1e-4 (measured: ~1e-6 for the losses, ~1e-5 for the weights); the selections agree exactly.
2. A run with both, killed with SIGKILL at 3 random moments (one during a checkpoint write) and
   resumed, ends with bitwise the weights and (step, loss) records of an uninterrupted run.

Irreducible losses: the per-example losses (``irreducible.score``) of a separately seeded model plus
noise, stored in an ``IrreducibleLosses`` table in *shuffled* id order, so a look-up by position
instead of by example id would give wrong values (the test checks every value each rank used).
"""
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import workbench as wb
from workbench.data.labelled import LabelledTask
from workbench.errors import ConfigError
from workbench.selection.ingenious import IngeniousSampler
from workbench.selection.irreducible import IrreducibleLosses, score
from workbench.selection.rho_loss import BatchSelector
from workbench.training import Budget, Schedule

from killing import count_lines, kill_when, records

ROOT = Path(__file__).resolve().parents[1]

# Facility-location gains are chaotic in the embeddings: a 1e-7 change of the weights (what summing
# gradients over 2 ranks instead of 1 process does) reorders the greedy picks of a young model and
# moves single gains by ~10. So the 1-vs-2-process run computes the gains where both models are
# bitwise the same (step 0, before any update) and re-samples from them every 2 steps; the workers
# also check the split on the *trained* model against a 1-rank computation on that same model.
DDP_SAMPLER = dict(fraction=0.25, warm_start_steps=0, resample_every=2, recompute_every=0, partitions=4)
DDP_STEPS = 7            # selections at steps 0, 2, 4, 6
RESUME_SAMPLER = dict(fraction=0.25, warm_start_steps=2, resample_every=2, recompute_every=4, partitions=4)
RESUME_STEPS = 9         # selections at 2, 4, 6, 8; gains at 2 and 6

_COMMON = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import workbench as wb
    import workbench.selection.ingenious as ing
    from workbench.selection.ingenious import IngeniousSampler
    from workbench.selection.irreducible import IrreducibleLosses
    from workbench.selection.rho_loss import BatchSelector
    from workbench.training import Budget, Schedule
    SAMPLER = json.loads(sys.argv[1])
    out = sys.argv[2]
    p = wb.prepare("pydocs:datasets", "bert-tiny", seq_len=64, vocab_size=1024, seed=0)
    z = np.load(os.path.join(out, "il.npz"))
    il = IrreducibleLosses(z["id"].tolist(), z["loss"])
""")

_DDP_WORKER = _COMMON + textwrap.dedent("""
    from workbench.training.backends import shutdown
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    fl_calls = []                                   # sizes of the partitions this rank ordered
    _fl = ing.facility_location
    def counted(X, **kw):
        fl_calls.append(len(X))
        return _fl(X, **kw)
    ing.facility_location = counted
    m = wb.model("prelnbert-tiny", vocab_size=len(p.tokenizer), seed=0, dropout=0.0)
    s = IngeniousSampler(**SAMPLER, rank=rank, world_size=world)
    f = BatchSelector("rho_loss", fraction=0.25, irreducible=il)
    run = wb.Run(os.path.join(out, "run")) if rank == 0 else None
    r = wb.train(m, p.train, sampler=s, batch_filter=f, budget=Budget(max_steps=int(sys.argv[3])),
                 schedule=Schedule("linear", warmup=1 / int(sys.argv[3])), batch_size=4, grad_accum=2, lr=2e-3, seed=1,
                 progress=False, run=run)
    gains0, subset0, calls0 = s.gains, s.subset, list(fl_calls)
    # the split on the trained model: all-reduced gains of 2 ranks vs. this rank alone over all 4 partitions
    s.compute_gains(m, 100)
    split = s.gains
    s.rank, s.world_size = 0, 1
    s.compute_gains(m, 100)
    np.savez(os.path.join(out, f"rank{rank}.npz"), fl_calls=np.array(calls0), gains=gains0, subset=subset0,
             selections=s.selections, split_trained=split, whole_trained=s.gains,
             **{"rec_" + k: v for k, v in f.records().items()})
    if rank == 0:
        json.dump({"loss": [h["loss"] for h in r.history if "loss" in h], "tokens": r.tokens, "world": r.world_size},
                  open(os.path.join(out, "ddp.json"), "w"))
    shutdown()
""")

_RESUME_SCRIPT = _COMMON + textwrap.dedent("""
    import time
    path = os.path.join(out, sys.argv[3])
    m = wb.model("bert-tiny", vocab_size=len(p.tokenizer), seed=0)          # dropout on: the RNG state matters
    s = IngeniousSampler(**SAMPLER)
    f = BatchSelector("rho_loss", fraction=0.25, irreducible=il)
    gate = sys.argv[5] if len(sys.argv) > 5 else None      # imported and ready; start when this file appears
    while gate and not os.path.exists(gate):
        time.sleep(0.002)
    resume = os.path.exists(os.path.join(path, "config.json"))
    first = []
    def note_start(step, **_):                             # the first step this process trained (resume proof)
        if not first:
            first.append(step)
            with open(os.path.join(out, "starts.txt"), "a") as fh:
                fh.write(f"{sys.argv[3]} {step}\\n")
    wb.train(m, p.train, sampler=s, batch_filter=f, budget=Budget(max_steps=int(sys.argv[4])),
             schedule=Schedule("linear", warmup=2 / int(sys.argv[4])), batch_size=4, lr=2e-3, seed=3, progress=False,
             checkpoint_every=1, run=wb.Run(path, resume=resume), callbacks=(note_start,))
""")


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def il_table(small_prep, tmp_path_factory):
    """Irreducible losses of every training example (a seed-5 model's losses), stored in shuffled id order."""
    d = tmp_path_factory.mktemp("il")
    task = small_prep.train
    il_model = wb.model("prelnbert-tiny", vocab_size=len(small_prep.tokenizer), seed=5, dropout=0.0)
    losses = score(il_model, task)
    losses = losses + np.random.default_rng(0).normal(0, 0.5, len(losses))   # spread, so IL matters for the picks
    perm = np.random.default_rng(1).permutation(len(task))
    np.savez(d / "il.npz", id=np.asarray(task.ids)[perm], loss=losses[perm])
    by_index = losses.astype(np.float32)                                     # what example i must be scored with
    return d, IrreducibleLosses(np.asarray(task.ids)[perm].tolist(), losses[perm]), by_index


# ------------------------------------------------------------------------------ shards on a hand-made batch

def test_shards_select_within_each_slice_like_ranks():
    X = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    Y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    task = LabelledTask(X.numpy(), Y, Y, [f"ex{i}" for i in range(8)], ["a", "b", "c"], name="hand")
    il = IrreducibleLosses(task.ids, np.linspace(0.0, 1.4, 8)[::-1].copy())
    lin = torch.nn.Linear(3, 3)
    for rule in ("rho_loss", "boltzmann_rho"):
        one = BatchSelector(rule, fraction=0.5, irreducible=il, shards=2)
        assert one.large_batch_size(4) == 8
        one.setup(task, seed=0)
        picked = one.select(lin, task.collate(range(8)), task, step=0)["index"].tolist()
        want = []
        for j in range(2):                    # each "rank": its own filter copy on its half, 2 picks
            r = BatchSelector(rule, fraction=0.5, irreducible=il)
            assert r.large_batch_size(2) == 4
            r.setup(task, seed=0)
            want += r.select(lin, task.collate(range(4 * j, 4 * j + 4)), task, step=0)["index"].tolist()
        # each rank's picks come from its own slice (Boltzmann draws with replacement: repeats allowed)
        assert picked == want and set(picked[:2]) <= set(range(4)) and set(picked[2:]) <= set(range(4, 8))
        assert torch.equal(one.gen.get_state(), r.gen.get_state())   # the RNG ends where every rank's ends
    with pytest.raises(ConfigError, match="multiple of shards"):
        BatchSelector("rho_loss", 0.5, il, shards=2).large_batch_size(3)
    with pytest.raises(ConfigError, match="update_il"):
        BatchSelector("rho_loss", 0.5, IrreducibleLosses(task.ids, np.zeros(8), models=[lin]), shards=2,
                      update_il=True)


# ------------------------------------------------------------------------------ 2 processes == 1 process

def test_ingenious_and_rho_two_processes_equal_one_process(small_prep, il_table, tmp_path):
    d, il, il_by_index = il_table
    out = tmp_path
    (out / "il.npz").write_bytes((d / "il.npz").read_bytes())
    (out / "worker.py").write_text(_DDP_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(out / "worker.py"), json.dumps(DDP_SAMPLER), str(out), str(DDP_STEPS)]
    proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((out / "ddp.json").read_text())
    ranks = [dict(np.load(out / f"rank{r}.npz")) for r in (0, 1)]

    # one process, the same global batch (2 x 4 per micro-batch), the filter selecting within each rank's slice
    m = wb.model("prelnbert-tiny", vocab_size=len(small_prep.tokenizer), seed=0, dropout=0.0)
    s = IngeniousSampler(**DDP_SAMPLER)
    f = BatchSelector("rho_loss", fraction=0.25, irreducible=il, shards=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)               # the workers' kernels: the step-0 embeddings must be bitwise theirs
    try:
        r = wb.train(m, small_prep.train, sampler=s, batch_filter=f, budget=Budget(max_steps=DDP_STEPS),
                     schedule=Schedule("linear", warmup=1 / DDP_STEPS), batch_size=8, grad_accum=2, lr=2e-3, seed=1,
                     progress=False)
    finally:
        torch.set_num_threads(threads)
    one_loss = [h["loss"] for h in r.history if "loss" in h]

    assert ddp["world"] == 2 and ddp["tokens"] == r.tokens and len(ddp["loss"]) == len(one_loss) == DDP_STEPS
    # the sampler selected 4 times; each rank ordered only its 2 of the 4 partitions, and the all-reduced
    # gains are the ones one process computes over all 4
    assert s.selections == 4 and all(int(x["selections"]) == 4 for x in ranks)
    assert [len(x["fl_calls"]) for x in ranks] == [2, 2]
    assert sum(int(c) for x in ranks for c in x["fl_calls"]) == len(small_prep.train)
    for x in ranks:
        assert np.array_equal(x["gains"], s.gains) and np.array_equal(x["subset"], s.subset)
        # on the trained model too (same weights on both ranks): split + all-reduce == one rank doing all
        assert np.array_equal(x["split_trained"], x["whole_trained"]) and x["whole_trained"].max() > 1
    assert np.array_equal(ranks[0]["whole_trained"], ranks[1]["whole_trained"])
    # the filter: rank k saw slice k of every large batch, scored with the irreducible loss of each example id
    one_rec, recs = f.records(), [{k[4:]: v for k, v in x.items() if k.startswith("rec_")} for x in ranks]
    n_large = DDP_STEPS * 2
    assert len(one_rec["index"]) == n_large * 32
    for key in ("index", "picks", "step"):
        both = np.stack([rc[key].reshape(n_large, 16) for rc in recs], 1)           # [batches, rank, 16]
        assert np.array_equal(both.reshape(-1), one_rec[key]), key
    for rc in recs:
        assert np.array_equal(rc["irreducible_loss"], il_by_index[rc["index"]])
        assert rc["picks"].reshape(n_large, 16).sum(1).tolist() == [4] * n_large
        # the picks are the top-4 reducible losses of the rank's slice, and not just the top-4 training losses
        rho = (rc["train_loss"] - rc["irreducible_loss"]).reshape(n_large, 16)
        top = np.argsort(-rho, kind="stable", axis=1)[:, :4]
        picks = rc["picks"].reshape(n_large, 16)
        assert (np.take_along_axis(picks, top, 1) == 1).all()
        top_train = np.argsort(-rc["train_loss"].reshape(n_large, 16), kind="stable", axis=1)[:, :4]
        assert (np.take_along_axis(picks, top_train, 1) == 0).any()
    assert np.allclose(np.concatenate([rc["train_loss"].reshape(n_large, 16) for rc in recs], 1).reshape(-1),
                       one_rec["train_loss"], atol=1e-4)
    # per-step losses and final weights: absolute tolerance 1e-4
    diff = max(abs(a - b) for a, b in zip(ddp["loss"], one_loss))
    print(f"max |loss(2 processes) - loss(1 process)| = {diff:.3g}")
    assert diff < 1e-4, (ddp["loss"], one_loss)
    w2 = load_file(out / "run" / "model.safetensors")
    w1 = m.state_dict()
    wdiff = max(float((w2[k] - w1[k]).abs().max()) for k in w2)
    print(f"max |weight(2 processes) - weight(1 process)| = {wdiff:.3g}")
    assert len(w2) > 10 and wdiff < 1e-4
    moved = max(float((w2[k] - v).abs().max()) for k, v in
                wb.model("prelnbert-tiny", vocab_size=len(small_prep.tokenizer), seed=0, dropout=0.0)
                .state_dict().items() if k in w2)
    assert moved > 1e-3                                                        # it trained
    logged = wb.Run.open(out / "run").metrics()
    assert [x["step"] for x in logged if "loss" in x] == list(range(1, DDP_STEPS + 1))


# ------------------------------------------------------------------------------ SIGKILL + resume







def _resume_run(task, vocab_size, il, path, steps):
    """The run of ``_RESUME_SCRIPT``, in this process (the uninterrupted reference)."""
    m = wb.model("bert-tiny", vocab_size=vocab_size, seed=0)
    wb.train(m, task, sampler=IngeniousSampler(**RESUME_SAMPLER),
             batch_filter=BatchSelector("rho_loss", fraction=0.25, irreducible=il), budget=Budget(max_steps=steps),
             schedule=Schedule("linear", warmup=2 / steps), batch_size=4, lr=2e-3, seed=3, progress=False,
             checkpoint_every=1, run=wb.Run(path))


def test_ingenious_and_rho_sigkill_and_resume_is_bitwise_identical(small_prep, il_table, tmp_path):
    d, il, _ = il_table
    (tmp_path / "il.npz").write_bytes((d / "il.npz").read_bytes())
    (tmp_path / "train.py").write_text(_RESUME_SCRIPT)

    def cmd(name):
        return [sys.executable, str(tmp_path / "train.py"), json.dumps(RESUME_SAMPLER), str(tmp_path), name,
                str(RESUME_STEPS)]

    def launch(gate):                                         # a victim that starts once file `gate` exists
        err = open(tmp_path / f"{gate}.err", "w")
        return subprocess.Popen(cmd("victim") + [str(tmp_path / gate)], env=_env(), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)

    victim = tmp_path / "victim"
    metrics, ckpts = victim / "metrics.jsonl", victim / "checkpoints"
    rng = random.Random(2024)
    moments = [("lines", rng.randint(1, 3)), ("ckpt-write", None), ("random-time", rng.uniform(0.0, 0.5))]
    rng.shuffle(moments)
    kills = []
    nxt = launch("go-0")
    # the uninterrupted reference, in this process while the first victim imports (1 thread, as the scripts)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _resume_run(small_prep.train, len(small_prep.tokenizer), il, tmp_path / "ref", RESUME_STEPS)
    finally:
        torch.set_num_threads(threads)
    for k, (kind, arg) in enumerate(moments):
        proc, nxt = nxt, launch(f"go-{k + 1}")      # the next one imports while this one trains
        base = count_lines(metrics)
        (tmp_path / f"go-{k}").touch()
        if kind == "lines":
            cond = lambda: count_lines(metrics) >= base + arg                   # noqa: E731
        elif kind == "ckpt-write":
            # this process's temporary checkpoint dir (".tmp-step-N-<pid>"; a killed write leaves its own behind)
            cond = lambda: ckpts.exists() and any(p.name.startswith(".tmp-") and p.name.endswith(f"-{proc.pid}")  # noqa: E731
                                                  for p in ckpts.iterdir())
        else:
            t_start = []

            def cond():                                                          # arg seconds into training
                if count_lines(metrics) > base and not t_start:
                    t_start.append(time.time())
                return bool(t_start) and time.time() - t_start[0] > arg
        if kill_when(proc, cond):
            kills.append((kind, count_lines(metrics)))
    assert len(kills) == 3, f"only these kills landed: {kills}"
    assert not (victim / "model.safetensors").exists()                           # none of them got to the end
    (tmp_path / f"go-{len(moments)}").touch()                                    # resume to completion
    assert nxt.wait(timeout=300) == 0, (tmp_path / f"go-{len(moments)}.err").read_text()[-3000:]
    starts = [line.split() for line in (tmp_path / "starts.txt").read_text().splitlines()]
    assert starts[-1][0] == "victim" and int(starts[-1][1]) > 1                  # the last one resumed mid-run
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(victim / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert records(tmp_path / "ref") == records(victim)                      # no record lost or repeated
    assert [s for s, _ in records(victim)] == list(range(1, RESUME_STEPS + 1))
    # the sampler re-selected after the warm start, and its records survived the kills
    run = wb.Run.open(victim)
    assert [n for n in run.score_names() if n.startswith("ingenious_")] == [f"ingenious_{k:03d}" for k in (1, 2, 3, 4)]
    sel = run.load_scores("selection_rho_loss")
    assert sorted(set(sel["step"].tolist())) == list(range(RESUME_STEPS))
