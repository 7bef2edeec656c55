"""A catalogue of bad inputs (tracker issue 9).

Every malformed input a user can give -- on the command line, through the Python API or as a
notebook parameter -- must end in a clean, specific error:

* CLI (``workbench.cli.main``): exit code 2 and exactly one line ``error: ...`` on stderr that names
  the problem (the parameter, the file, the run directory); never a traceback;
* API: a :mod:`workbench.errors` type (``ConfigError``, ``CorpusError``, ``RunError``,
  ``CheckpointError``, ``ModelError`` or a module's refinement of one) whose message names the
  problem; never a bare ``ValueError`` / ``KeyError`` / ``IndexError`` / ``TypeError`` from deep inside
  a library;
* a run directory that was involved holds no ``summary.json`` with ``"complete": true``; a new run
  that failed before it started leaves no ``config.json`` behind, so the same ``--out`` works again.

Two inputs are decided to *work* rather than fail, and are pinned as such: a corpus file that is one
5 MB line without a newline (one document; ``train`` then refuses it cleanly: too few documents to
split), and constant embeddings (facility location: the first pick serves everything; INGENIOUS:
uniform sampling).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.config import load_yaml, parse, parse_overrides
from workbench.errors import (CheckpointError, ConfigError, CorpusError, ModelError, RunError, WorkbenchError)
from workbench.recipes import REGISTRY, params_class

# a tiny, fast training set-up (pydocs:datasets is a small embedded corpus; its tokenizer is cached)
BASE = ["-p", "corpus=pydocs:datasets", "-p", "max_steps=1", "-p", "batch_size=4", "-p", "seq_len=32",
        "-p", "vocab_size=512", "-p", "eval_every=0", "-p", "warmup=0", "-p", "eval_batches=1"]
HUGE = 5_000_000          # characters of the one-line corpus


def _train(out, *params):
    return ["train", "--out", str(out), "--no-progress", *BASE, *params]


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _unwritable(tmp: Path) -> Path:
    """A path below which nothing can be created, for root as well (chmod does not stop root)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return _write(tmp / "a-file", "not a directory") / "sub"
    d = tmp / "read-only"
    d.mkdir()
    d.chmod(0o500)
    return d / "sub"


def _complete(run: Path) -> bool:
    p = Path(run) / "summary.json"
    try:
        return json.loads(p.read_text()).get("complete") is True
    except (OSError, json.JSONDecodeError):       # missing, below a file, or torn
        return False


# --------------------------------------------------------------------------------- shared fixtures

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished 2-step run with a checkpoint per step (copied by every resume case)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    argv = ["train", "--out", str(out), "--no-progress", *BASE, "-p", "max_steps=2", "-p", "checkpoint_every=1"]
    assert main(argv) == 0
    assert _complete(out) and (out / "checkpoints" / "LATEST").exists()
    return out


@dataclass
class Ctx:
    tmp: Path
    request: pytest.FixtureRequest

    def run_copy(self, complete: bool = False) -> Path:
        """A copy of the trained run; unless ``complete``, its summary says it did not finish."""
        dst = self.tmp / "resumed"
        shutil.copytree(self.request.getfixturevalue("trained_run"), dst)
        if not complete:
            s = json.loads((dst / "summary.json").read_text())
            s["complete"] = False
            (dst / "summary.json").write_text(json.dumps(s))
        return dst


def _corrupt_checkpoint(run: Path) -> None:
    latest = (run / "checkpoints" / "LATEST").read_text().strip()
    (run / "checkpoints" / latest / "model.safetensors").write_bytes(b"garbage, not safetensors")


def _delete_checkpoint(run: Path) -> None:
    latest = (run / "checkpoints" / "LATEST").read_text().strip()
    shutil.rmtree(run / "checkpoints" / latest)


def _edit_config(run: Path, text: str | None = None, **params) -> None:
    p = run / "config.json"
    if text is not None:
        p.write_text(text)
        return
    cfg = json.loads(p.read_text())
    cfg["params"].update(params)
    p.write_text(json.dumps(cfg))


# ----------------------------------------------------------------------------------- CLI catalogue
# Each case: ctx -> (argv, words the error line must contain, run dir to check or None, expectation).
# Expectations for the run directory: "absent" = no config.json there (never made, or rolled back);
# "incomplete" = no summary.json with complete: true; "unchanged" = its summary.json is untouched.

def _c(fn, id):
    return pytest.param(fn, id=id)


def _file_case(name, data, *words, expect="absent"):
    def case(c):
        f = _write(c.tmp / name, data)
        return _train(c.tmp / "run", "-p", f"corpus={f}"), [str(f), *words], c.tmp / "run", expect
    return case


def _resume_case(prepare, *words, complete=False, expect="incomplete"):
    def case(c):
        run = c.run_copy(complete=complete)
        prepare(run)
        return ["train", "--resume", str(run), "--no-progress"], [str(run), *words], run, expect
    return case


def _with_run_dir(argv_fn, words, expect="absent"):
    return lambda c: (argv_fn(c), words(c) if callable(words) else words, c.tmp / "run", expect)


def _param_case(param, words, id):
    """``train -p param`` must be refused with ``words`` in the error, and leave no run directory."""
    return _c(_with_run_dir(lambda c: _train(c.tmp / "run", "-p", param), words), id)


CLI_CASES = [
    # ---- train: parameters (unknown, ill-typed, out of range): refused before any directory is made
    _param_case("nope=1", ["'nope'", "unknown parameter"], "train-unknown-param"),
    _param_case("max_steps=ten", ["'max_steps'", "integer", "ten"], "train-ill-typed-int"),
    _param_case("max_step=10", ["'max_step'", "did you mean 'max_steps'"], "train-misspelt-param"),
    _param_case("max_steps=2.5", ["'max_steps'", "integer"], "train-fractional-int"),
    _param_case("lr=fast", ["'lr'", "number", "fast"], "train-ill-typed-float"),
    _param_case("lr=nan", ["'lr'", "NaN"], "train-lr-nan"),
    _param_case("max_steps=0", ["no budget", "max_steps", "max_minutes"], "train-zero-steps"),
    _param_case("max_steps=-3", ["max_steps must be positive", "-3"], "train-negative-steps"),
    _param_case("lr=0", ["lr must be positive"], "train-lr-zero"),
    _param_case("lr=-1e-3", ["lr must be positive"], "train-lr-negative"),
    _param_case("seq_len=0", ["seq_len", "got 0"], "train-seq-len-0"),
    _param_case("batch_size=0", ["batch_size must be positive"], "train-batch-size-0"),
    _param_case("vocab_size=10", ["vocab_size", "10"], "train-vocab-too-small"),
    _param_case("dropout=1.5", ["dropout", "1.5"], "train-dropout-out-of-range"),
    _param_case("eval_batches=0", ["eval_batches"], "train-eval-batches-0"),
    _param_case("precision=fp8", ["precision", "fp8"], "train-unknown-precision"),
    _param_case("schedule=sawtooth", ["schedule", "sawtooth"], "train-unknown-schedule"),
    _param_case("sampler=magic", ["sampler", "magic"], "train-unknown-sampler"),
    _c(_with_run_dir(lambda c: _train(c.tmp / "run", "-p", "sampler=random", "-p", "fraction=1.5"),
                     ["fraction", "1.5"]), "train-subset-larger-than-data"),
    _param_case("model=bert-huge", ["unknown model preset", "bert-huge"], "train-unknown-model-preset"),
    _param_case("model=someone/tiny-lm", ["someone/tiny-lm", "not a local directory", "offline"],
                "train-model-hub-id-offline"),
    _param_case("model=/no/such/model-dir", ["/no/such/model-dir", "no such directory"], "train-model-missing-directory"),
    _param_case("noequals", ["'noequals'", "key=value"], "train-param-without-equals"),
    _param_case("1x=3", ["'1x'", "identifier"], "train-param-bad-name"),
    _param_case("corpus=", ["corpus"], "train-empty-corpus-spec"),
    # ---- train: corpora (a failed new run is rolled back: no config.json is left in --out)
    _c(_with_run_dir(lambda c: _train(c.tmp / "run", "-p", f"corpus={c.tmp / 'missing.txt'}"),
                     lambda c: [str(c.tmp / "missing.txt"), "not found"]), "train-missing-corpus-file"),
    _param_case("corpus=pydocs:not_a_pkg_qq", ["not_a_pkg_qq"], "train-unknown-pydocs-package"),
    _c(_file_case("empty.txt", b"", "empty"), "train-empty-corpus-file"),
    _c(_file_case("blank.txt", "  \n\n \t\n\n", "no document"), "train-blank-corpus-file"),
    _c(_file_case("binary.txt", bytes(range(256)) * 64, "binary"), "train-binary-corpus-file"),
    _c(_file_case("latin1.txt", "caf\xe9 cr\xe8me br\xfbl\xe9e\n\nna\xefve\n".encode("latin-1"), "UTF-8"),
       "train-non-utf8-corpus-file"),
    _c(_file_case("huge.txt", "word " * (HUGE // 5), "too few documents (1)"), "train-huge-single-line-corpus"),
    _c(_file_case("bad.jsonl", '{"text": "fine"}\n{"text": oops}\n', ":2:", "JSON"), "train-invalid-jsonl-line"),
    _c(_file_case("notext.jsonl", '{"body": "no text field"}\n', ":1:", "'text'"), "train-jsonl-without-text"),
    _c(_file_case("corpus.xml", "<text>hello</text>\n", "unsupported corpus file type", "'.xml'"),
       "train-unsupported-corpus-type"),
    _c(_file_case("notext.csv", "body,label\nhello,a\n", "no field 'text'", "fields found: body, label"),
       "train-csv-without-text-column"),
    _c(_file_case("notext.json", '[{"body": "x"}]', "no field 'text'", "fields found: body"),
       "train-json-array-without-text"),
    _c(_file_case("broken.parquet", b"PAR1 this is not parquet", "parquet"), "train-corrupted-parquet"),
    # ---- train: run directories, resume and checkpoints
    _c(lambda c: (_train(c.run_copy(complete=True)), [str(c.tmp / "resumed"), "--resume"],
                  c.tmp / "resumed", "unchanged"), "train-existing-run-without-resume"),
    _c(lambda c: (["train", "--resume", str(c.tmp / "nothing"), "--no-progress"],
                  [str(c.tmp / "nothing"), "nothing to resume"], c.tmp / "nothing", "absent"),
       "train-resume-missing-run"),
    _c(_resume_case(lambda run: None, "already complete", complete=True, expect="unchanged"),
       "train-resume-complete-run"),
    _c(_resume_case(_corrupt_checkpoint, "unreadable"), "train-resume-corrupted-checkpoint"),
    _c(_resume_case(_delete_checkpoint, "missing"), "train-resume-missing-checkpoint"),
    _c(_resume_case(lambda run: _edit_config(run, text='{"params": {"max_st'), "config.json", "corrupted"),
       "train-resume-corrupted-config"),
    _c(_resume_case(lambda run: _edit_config(run, from_the_future=1), "stored parameters", "'from_the_future'"),
       "train-resume-unknown-stored-param"),
    _c(_resume_case(lambda run: (run / "summary.json").write_text('{"complete": tr'), "summary.json", "corrupted"),
       "train-resume-corrupted-summary"),
    _c(lambda c: (["train", "--resume", str(c.tmp / "x"), "-p", "lr=1"], ["-p"], c.tmp / "x", "absent"),
       "train-resume-with-params"),
    _c(lambda c: (["train", "--no-progress", *BASE], ["--out", "--resume"], None, None), "train-without-out"),
    _c(lambda c: (["train", "--out", str(c.tmp / "a"), "--resume", str(c.tmp / "b")], ["exactly one"],
                  c.tmp / "a", "absent"), "train-out-and-resume"),
    _c(lambda c: (lambda out: (_train(out), [str(out), "cannot write"], out, "absent"))(_unwritable(c.tmp)),
       "train-unwritable-out"),
    _c(lambda c: (lambda f: (_train(f), [str(f), "cannot write"], None, None))(_write(c.tmp / "f.txt", "x")),
       "train-out-is-a-file"),
    _c(lambda c: (["train", "--out", str(c.tmp / "run"), "--bogus"], ["--bogus"], c.tmp / "run", "absent"),
       "train-unknown-option"),
    # ---- train: budgets, schedules, samplers, filters and their data (issue 17)
    _param_case("max_minutes=-1", ["max_minutes must be positive", "-1"], "train-negative-minutes"),
    _param_case("max_tokens=-5", ["max_tokens must be positive", "-5"], "train-negative-tokens"),
    _c(_with_run_dir(lambda c: _train(c.tmp / "run", "-p", "max_steps=0", "-p", "max_minutes=1"),
                     ["'linear'", "needs max_steps", "time-linear"]), "train-step-schedule-without-steps"),
    _param_case("eval_fraction=1", ["eval_fraction", "got 1"], "train-eval-fraction-1"),
    _param_case("batch_filter=magic", ["batch_filter", "'magic'"], "train-unknown-batch-filter"),
    _param_case("sampler=mates", ["sampler=mates", "causal LM", "'bert-tiny'"], "train-mates-on-encoder"),
    _param_case("batch_filter=token_rho", ["batch_filter=token_rho", "causal LM"], "train-token-rho-on-encoder"),
    _param_case("temperature=0.5", ["temperature", "sampler=full"], "train-temperature-without-sampler"),
    _param_case("filter_fraction=2", ["filter_fraction", "got 2"], "train-filter-fraction-above-1"),
    _param_case("holdout_fraction=0", ["holdout_fraction", "got 0"], "train-holdout-fraction-0"),
    _param_case("reference=numpy", ["reference=", "sampler=mates"], "train-reference-without-method"),
    _c(_with_run_dir(lambda c: _train(c.tmp / "run", "-p", "sampler=ingenious", "-p", "warm_start_steps=5"),
                     ["warm_start_steps", "(5)", "max_steps (1)"]), "train-warm-start-beyond-steps"),
    _c(_with_run_dir(lambda c: _train(c.tmp / "run", "-p", f"tokenizer={c.tmp / 'no-tok'}"),
                     lambda c: ["tokenizer directory", str(c.tmp / "no-tok"), "does not exist"]),
       "train-missing-tokenizer-dir"),
    _c(_with_run_dir(lambda c: _train(c.tmp / "run", "-p", "model=gpt2-tiny", "-p", "sampler=mates",
                                      "-p", f"reference={c.tmp / 'missing-ref.txt'}"),
                     lambda c: [str(c.tmp / "missing-ref.txt"), "not found"]), "train-mates-missing-reference"),
    _c(lambda c: (lambda r: (wb.Run(r, {"lr": 1e-3}).close(), (["train", "--resume", str(r), "--no-progress"],
                             [str(r), "not made with the train command", "wb.Run(DIR, resume=True)"], r,
                             "incomplete"))[1])(c.tmp / "api-run"), "train-resume-api-run"),
    # ---- corpus
    _c(lambda c: (["corpus", str(c.tmp / "nope.jsonl"), "--stats"], [str(c.tmp / "nope.jsonl"), "not found"],
                  None, None), "corpus-missing-file"),
    _c(lambda c: (["corpus", "pydocs", "--packages", "not_a_pkg_qq"], ["not_a_pkg_qq", "not installed"], None, None),
       "corpus-unknown-package"),
    _c(lambda c: (["corpus", "pydocs:"], ["at least one package"], None, None), "corpus-pydocs-without-package"),
    _c(lambda c: (["corpus", "pydocs:datasets,datasets"], ["repeat"], None, None), "corpus-repeated-package"),
    _c(lambda c: (["corpus", str(_write(c.tmp / "x.txt", "hello")), "--packages", "numpy"], ["--packages"],
                  None, None), "corpus-packages-with-file"),
    _c(lambda c: ((lambda d: (d.mkdir(), ["corpus", str(d)])[1])(c.tmp / "emptydir"),
                  [str(c.tmp / "emptydir"), "datasets directory"], None, None), "corpus-empty-directory"),
    _c(lambda c: (["corpus", "--min-chars", "many"], ["--min-chars", "many"], None, None), "corpus-ill-typed-option"),
    _c(lambda c: (["corpus", str(_write(c.tmp / "d.jsonl", '{"body": "x"}\n')), "--text-field", "content"],
                  ["'content'", "fields found: body"], None, None), "corpus-text-field-not-in-file"),
    _c(lambda c: (["corpus", str(_write(c.tmp / "d.txt", "hello")), "--encoding", "klingon"],
                  ["unknown encoding", "'klingon'"], None, None), "corpus-unknown-encoding"),
    # ---- reproduce (notebook parameters are validated before any kernel starts)
    _c(lambda c: (["reproduce", "no_such_paper", "--out", str(c.tmp)], ["'no_such_paper'", "unknown notebook"],
                  None, None), "reproduce-unknown-paper"),
    _c(lambda c: (["reproduce", "quickstart", "--scale", "huge", "--out", str(c.tmp)], ["'huge'", "scale"],
                  None, None), "reproduce-unknown-scale"),
    _c(lambda c: (["reproduce", "quickstart", "--scale", "smoke", "-p", "bogus=1", "--out", str(c.tmp)],
                  ["'bogus'", "unknown parameter"], None, None), "reproduce-unknown-param"),
    _c(lambda c: (["reproduce", "quickstart", "--scale", "smoke", "-p", "max_steps=many", "--out", str(c.tmp)],
                  ["'max_steps'", "integer"], None, None), "reproduce-ill-typed-param"),
    _c(lambda c: (["reproduce", "quickstart", "--scale", "smoke", "-p", "scale=paper", "--out", str(c.tmp)],
                  ["'scale'", "--scale"], None, None), "reproduce-scale-as-param"),
    # ---- reproduce --seeds (a study; refused before any notebook process starts)
    _c(lambda c: (["reproduce", "quickstart", "--scale", "smoke", "--seeds", "3-1", "--out", str(c.tmp)],
                  ["--seeds", "'3-1'", "backwards"], None, None), "reproduce-seeds-backwards-range"),
    _c(lambda c: (["reproduce", "quickstart", "--scale", "smoke", "--seeds", "0,x", "--out", str(c.tmp)],
                  ["'x'", "not a seed"], None, None), "reproduce-seeds-not-a-number"),
    _c(lambda c: (["reproduce", "quickstart", "--scale", "smoke", "--seeds", "0-2,1", "--out", str(c.tmp)],
                  ["seed 1", "more than once"], None, None), "reproduce-seeds-repeated"),
    _c(lambda c: (["reproduce", "quickstart", "--scale", "smoke", "--seeds", "", "--out", str(c.tmp)],
                  ["--seeds"], None, None), "reproduce-seeds-empty"),
    _c(lambda c: (["reproduce", "quickstart", "--scale", "smoke", "--seeds", "0-1", "-p", "seed=3", "--out",
                   str(c.tmp)], ["'seed'", "--seeds"], None, None), "reproduce-seed-param-with-seeds"),
    _c(lambda c: (["reproduce", "quickstart", "--scale", "smoke", "--seeds", "0-1", "--jobs", "0", "--out",
                   str(c.tmp)], ["--jobs", ">= 1", "0"], None, None), "reproduce-zero-jobs"),
    _c(lambda c: (["reproduce", "all", "--scale", "smoke", "--threads", "-2", "--out", str(c.tmp)],
                  ["--threads", ">= 1", "-2"], None, None), "reproduce-negative-threads"),
    _c(lambda c: (["reproduce", "quickstart", "--seeds", "0-1", "--jobs", "many", "--out", str(c.tmp)],
                  ["--jobs", "'many'"], None, None), "reproduce-ill-typed-jobs"),
    _c(lambda c: (["reproduce", "ligo", "--scale", "smoke", "-p", "small=4x128x4", "-p", "large=2x64x2",
                   "--out", str(c.tmp)], ["smaller", "layers"], None, None), "reproduce-ligo-grow-to-smaller"),
    _c(lambda c: (["reproduce", "ligo", "--scale", "smoke", "-p", f"small={c.tmp / 'no-model'}", "--out", str(c.tmp)],
                  ["no-model", "does not exist"], None, None), "reproduce-ligo-small-dir-missing"),
    _c(lambda c: (["reproduce", "rho_loss", "--scale", "smoke", "-p", f"corpus={c.tmp / 'docs.jsonl'}", "-p",
                   "selectors=uniform,rho_loss,grad_norm", "--out", str(c.tmp)], ["'grad_norm'", "need class labels"],
                  None, None), "reproduce-rho-lm-grad-norm-selector"),
    _c(lambda c: (["reproduce", "ingenious", "--scale", "smoke", "-p", "fraction=1.5", "--out", str(c.tmp)],
                  ["fraction", "1.5"], None, None), "reproduce-ingenious-fraction-above-1"),
    _c(lambda c: (["reproduce", "mates", "--scale", "smoke", "-p", "reference_package=nope", "--out", str(c.tmp)],
                  ["'nope'", "packages: datasets, papermill, deepspeed"], None, None),
       "reproduce-mates-unknown-reference-package"),
    _c(lambda c: (["reproduce", "mates", "--scale", "smoke", "-p", f"reference={c.tmp / 'ref.txt'}", "--out",
                   str(c.tmp)], ["reference", str(c.tmp / "ref.txt"), "not found"], None, None),
       "reproduce-mates-missing-reference-file"),
    _c(lambda c: (lambda out: (["reproduce", "quickstart", "--scale", "smoke", "--out", str(out)],
                               [str(out), "cannot create output directory"], None, None))(_unwritable(c.tmp)),
       "reproduce-unwritable-out"),
    # ---- export (a run's checkpoint as a Hugging Face directory)
    _c(lambda c: (["export", str(c.tmp / "nothing"), str(c.tmp / "out")], [str(c.tmp / "nothing"), "does not exist"],
                  None, None), "export-missing-run"),
    _c(lambda c: (lambda r: (wb.Run(r, {}).close(), (["export", str(r), str(c.tmp / "out")],
                                                      [str(r), "no weights"], None, None))[1])(c.tmp / "bare"),
       "export-run-without-weights"),
    _c(lambda c: (lambda r: (["export", str(r), str(c.tmp / "out"), "--checkpoint", "step-99"],
                             ["'step-99'", "choose among", "step-00000002"], r, "unchanged"))(c.run_copy(True)),
       "export-unknown-checkpoint"),
    _c(lambda c: (lambda r, out: (["export", str(r), str(out)], [str(out), "not empty"], r, "unchanged"))(
        c.run_copy(True), _write(c.tmp / "out" / "keep.txt", "x").parent), "export-existing-nonempty-out"),
    # ---- report / bench / unknown command
    _c(lambda c: (["report", str(c.tmp / "no-runs-here")], [str(c.tmp / "no-runs-here"), "does not exist"],
                  None, None), "report-missing-folder"),
    _c(lambda c: (["bench", "nope"], ["'nope'", "invalid choice"], None, None), "bench-unknown-benchmark"),
    _c(lambda c: (["frobnicate"], ["'frobnicate'", "invalid choice"], None, None), "unknown-command"),
    _c(lambda c: (["reproduc", "all"], ["'reproduc'", "did you mean 'reproduce'"], None, None), "misspelt-command"),
    _c(lambda c: (["reproduce", "ingenous", "--out", str(c.tmp)], ["'ingenous'", "did you mean 'ingenious'"],
                  None, None), "reproduce-misspelt-paper"),
    _c(lambda c: (["reproduce", "mates", "--scale", "smoke", "-p", "refrence=x", "--out", str(c.tmp)],
                  ["'refrence'", "did you mean 'reference'"], None, None), "reproduce-misspelt-param"),
    _c(lambda c: (["reproduce", "mates", "--scale", "smal", "--out", str(c.tmp)], ["'smal'", "did you mean 'small'"],
                  None, None), "reproduce-misspelt-scale"),
]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_bad_input(case, tmp_path, request, capsys):
    argv, words, run, expect = case(Ctx(tmp_path, request))
    before = (run / "summary.json").read_bytes() if expect == "unchanged" else None
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:          # argparse's own errors exit from inside parse_args
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, f"exit code {rc}; stderr: {err!r}"
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"stderr must be one line, got {lines!r}"
    line = lines[0]
    assert line.startswith("error: "), line
    for w in words:
        assert w in line, f"{w!r} not in {line!r}"
    if run is not None:
        if expect == "absent":
            assert not (run / "config.json").exists(), f"{run} kept a config.json of a run that never started"
        if expect == "unchanged":
            assert (run / "summary.json").read_bytes() == before
        else:
            assert not _complete(run)


def test_failed_new_run_leaves_out_reusable(tmp_path, capsys):
    """A new run refused for its corpus is rolled back: the same --out then trains without --resume."""
    out = tmp_path / "run"
    empty = _write(tmp_path / "empty.txt", b"")
    assert main(_train(out, "-p", f"corpus={empty}")) == 2
    assert "empty" in capsys.readouterr().err and not out.exists()
    assert main(_train(out)) == 0
    assert _complete(out)


def test_huge_single_line_corpus_is_one_document(tmp_path, capsys):
    """Decided: a 5 MB file without a newline *works* as a corpus of one document (training on it is
    refused cleanly above: one document cannot be split into train and eval)."""
    f = _write(tmp_path / "huge.txt", "word " * (HUGE // 5))
    assert main(["corpus", str(f), "--stats"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["docs"] == 1 and s["chars"] == HUGE - 1          # the trailing space is stripped


# ----------------------------------------------------------------------------------- API catalogue

def _tiny_x(n=5, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def _nan_x(n=5):
    x = _tiny_x(n)
    x[2, 1] = np.nan
    return x


def _fl(*a, **kw):
    from workbench.selection import facility_location
    return facility_location(*a, **kw)


class _EmbTask:
    """A task whose embeddings are given (for the INGENIOUS sampler)."""

    def __init__(self, X):
        self.X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        self.domains = ["d"] * len(self.X)

    def __len__(self):
        return len(self.X)

    def unmasked(self, idx):
        return {"x": self.X[idx]}

    def embed(self, model, batch, layer=-1):
        return batch["x"]


def _ingenious(X, **kw):
    from workbench.selection.ingenious import IngeniousSampler
    s = IngeniousSampler(**{"fraction": 0.5, "warm_start_steps": 0, "partitions": 2, "variant": "sharp", **kw})
    s.setup(_EmbTask(X), seed=0)
    s.refresh(torch.nn.Linear(2, 2), 0)
    return s


def _small_bert(vocab=128):
    return wb.model("bert-mini", vocab_size=vocab)


def _own_gpt2(tmp, request, vocab=512, positions=64):
    """A tiny GPT-2 saved with save_pretrained, with the 1024-token BPE tokenizer of ``small_prep_clm``."""
    import transformers
    tok = request.getfixturevalue("small_prep_clm").tokenizer
    cfg = transformers.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=positions)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp / "gpt2")
    tok.save_pretrained(tmp / "bpe")
    return str(tmp / "gpt2"), str(tmp / "bpe")


def _own_prepare(tmp, request, tokenizer=None, seq_len=32, model_vocab=512):
    m, tok = _own_gpt2(tmp, request, vocab=model_vocab)
    return wb.prepare("pydocs:datasets", m, tokenizer=tok if tokenizer is None else tokenizer, seq_len=seq_len)


def _grow(large_preset, vocab=128, method="stackbert", **kw):
    from workbench.growth import grow
    from workbench.models import config
    return grow(_small_bert(), config(large_preset, vocab), method=method, **kw)


def _yaml(tmp, text):
    return load_yaml(_write(tmp / "params.yaml", text))


def _run_twice(tmp):
    wb.Run(tmp / "r")
    return wb.Run(tmp / "r")


def _corrupted_config_resume(tmp, request=None):
    wb.Run(tmp / "r")
    (tmp / "r" / "config.json").write_text("{not json")
    return wb.Run.open(tmp / "r")


def _load_garbage_checkpoint(tmp, request=None):
    from workbench.training.checkpoint import load_checkpoint
    d = tmp / "ckpt"
    _write(d / "model.safetensors", b"\x00garbage")
    return load_checkpoint(d, _small_bert())


def _latest_missing(tmp, request=None):
    from workbench.training.checkpoint import latest_checkpoint
    _write(tmp / "checkpoints" / "LATEST", "step-00000007")
    return latest_checkpoint(tmp / "checkpoints")


def _train_vocab_mismatch(prep, model_vocab, eval_only=False):
    m = wb.model("bert-tiny", vocab_size=model_vocab)
    data = prep.train
    if eval_only:   # the model fits the training data but not the eval data
        import copy
        data = copy.copy(prep.train)
        data.vocab_size = model_vocab
    return wb.train(m, data, eval_data=prep.eval if eval_only else None, budget=wb.Budget(max_steps=1),
                    progress=False)


def _mates_refresh(request, foreign_optimizer=False, encoder=False):
    from workbench.selection.mates import MatesSampler
    p = request.getfixturevalue("small_prep" if encoder else "small_prep_clm")
    model = wb.model("bert-tiny" if encoder else "gpt2-tiny", vocab_size=len(p.tokenizer), seed=0)
    opt = torch.optim.AdamW((wb.model("gpt2-tiny", vocab_size=len(p.tokenizer)) if foreign_optimizer
                             else model).parameters())
    s = MatesSampler(opt, torch.from_numpy(p.eval.input_ids[:2].astype(np.int64)), probe_size=8)
    s.setup(p.train, seed=0)
    s.refresh(model, 0)


def _gumbel(k):
    from workbench.selection.mates import gumbel_topk
    return gumbel_topk(np.arange(5.0), k, seed=0)


def _rho_lm_splits(tmp, n_docs):
    from workbench.recipes.rho_loss import RhoLossParams as P, lm_splits
    f = _write(tmp / "docs.jsonl", "".join(json.dumps({"text": f"document {k} " * 40}) + "\n" for k in range(n_docs)))
    return lm_splits(P(corpus=str(f)))


def _rho_selector_on_lm(request, rule):
    from workbench.selection.rho_loss import BatchSelector
    BatchSelector(rule, 0.5).setup(request.getfixturevalue("small_prep_clm").train)


def _p(fn, exc, match, id):
    return pytest.param(fn, exc, match, id=id)


def _ligo_dir(t: Path, kind: str, tokenizer: bool = True) -> Path:
    """A model directory holding only a tiny config (and a tokenizer file): enough for LigoParams' checks."""
    import transformers as T
    d = t / kind
    cls = {"bert": T.BertConfig, "llama": T.LlamaConfig}[kind]
    cls(hidden_size=64, num_attention_heads=2, num_hidden_layers=2, intermediate_size=256, vocab_size=128).save_pretrained(d)
    if tokenizer:
        _write(d / "tokenizer.json", "{}")
    return d


def _params(cls_path):
    mod, name = cls_path.split(":")
    import importlib
    return getattr(importlib.import_module(mod), name)


TrainParams = _params("workbench.recipes.quickstart:TrainParams")
LigoParams = _params("workbench.recipes.ligo:LigoParams")
BudgetBertParams = _params("workbench.recipes.budget_bert:BudgetBertParams")
IngeniousParams = _params("workbench.recipes.ingenious:IngeniousParams")
MatesParams = _params("workbench.recipes.mates:MatesParams")
RhoLossParams = _params("workbench.recipes.rho_loss:RhoLossParams")

API_CASES = [
    # ---- parameters through parse() (what the notebooks and reproduce use)
    _p(lambda t, r: parse(TrainParams, {"max_step": 3}), ConfigError, r"unknown parameter.*'max_step'",
       "parse-unknown-key"),
    _p(lambda t, r: parse(TrainParams, {"max_steps": "3 steps"}), ConfigError, r"'max_steps'.*integer",
       "parse-ill-typed-int-string"),
    _p(lambda t, r: parse(TrainParams, {"max_steps": 2.5}), ConfigError, r"'max_steps'.*integer",
       "parse-fractional-int"),
    _p(lambda t, r: parse(TrainParams, {"max_steps": None}), ConfigError, r"'max_steps'.*None",
       "parse-none-for-int"),
    _p(lambda t, r: parse(TrainParams, {"lr": True}), ConfigError, r"'lr'.*number", "parse-bool-for-float"),
    _p(lambda t, r: parse(TrainParams, {"lr": float("nan")}), ConfigError, r"'lr'.*NaN", "parse-nan-float"),
    _p(lambda t, r: parse(TrainParams, {"model": ["bert-tiny"]}), ConfigError, r"'model'.*string",
       "parse-list-for-string"),
    _p(lambda t, r: parse(TrainParams, {"seq_len": 0}), ConfigError, r"seq_len.*got 0", "parse-seq-len-0"),
    _p(lambda t, r: parse(TrainParams, {"warmup": -1}), ConfigError, r"warmup", "parse-negative-warmup"),
    _p(lambda t, r: parse(LigoParams, {"small": "4x128x4", "large": "2x64x2"}), ConfigError,
       r"must not be smaller.*layers 4 -> 2", "ligo-params-grow-to-smaller"),
    _p(lambda t, r: parse(LigoParams, {"small": "axb"}), ConfigError, r"model size 'axb'", "ligo-params-bad-size"),
    _p(lambda t, r: parse(LigoParams, {"small": str(t / "mine")}), ConfigError,
       r"small model directory '.*mine' does not exist", "ligo-params-small-dir-missing"),
    _p(lambda t, r: parse(LigoParams, {"small": str(t)}), ConfigError, r"has no config.json",
       "ligo-params-small-dir-no-config"),
    _p(lambda t, r: parse(LigoParams, {"small": str(_ligo_dir(t, "bert", tokenizer=False))}), ConfigError,
       r"holds no tokenizer", "ligo-params-small-dir-no-tokenizer"),
    _p(lambda t, r: parse(LigoParams, {"small": str(_ligo_dir(t, "llama"))}), ConfigError,
       r"LlamaConfig.*grows only BERT", "ligo-params-small-dir-unsupported-arch"),
    _p(lambda t, r: parse(LigoParams, {"methods": "scratch,ligo,magic"}), ConfigError, r"growth method.*magic",
       "ligo-params-unknown-method"),
    _p(lambda t, r: parse(LigoParams, {"methods": 5}), ConfigError, r"'methods'.*list", "ligo-params-methods-not-list"),
    _p(lambda t, r: parse(BudgetBertParams, {"model": "gpt2-tiny"}), ConfigError, r"'gpt2-tiny' is a decoder",
       "budget-bert-params-decoder"),
    _p(lambda t, r: parse(BudgetBertParams, {"budget_minutes": 0}), ConfigError, r"budget_minutes",
       "budget-bert-params-zero-budget"),
    _p(lambda t, r: parse(BudgetBertParams, {"markers": "0.5,1.5"}), ConfigError, r"markers",
       "budget-bert-params-marker-out-of-range"),
    _p(lambda t, r: parse(IngeniousParams, {"fraction": 1.5}), ConfigError, r"fraction.*1.5",
       "ingenious-params-fraction-above-1"),
    _p(lambda t, r: parse(IngeniousParams, {"warm_start_steps": 400, "max_steps": 300}), ConfigError,
       r"warm_start_steps", "ingenious-params-warm-start-beyond-steps"),
    _p(lambda t, r: parse(IngeniousParams, {"warmup": 30}), ConfigError, r"warmup is a fraction.*got 30",
       "ingenious-params-warmup-in-steps"),
    _p(lambda t, r: parse(IngeniousParams, {"variant": "sharper"}), ConfigError, r"variant must be one of.*sharper",
       "ingenious-params-unknown-variant"),
    _p(lambda t, r: parse(IngeniousParams, {"arms": "full,ingenious_authors"}), ConfigError,
       r"arms must include.*random_online", "ingenious-params-arms-without-baseline"),
    _p(lambda t, r: parse(IngeniousParams, {"partition_strategy": "kmeanz"}), ConfigError,
       r"partition_strategy must be one of random, kmeans", "ingenious-params-unknown-partition-strategy"),
    _p(lambda t, r: parse(MatesParams, {"fraction": 0}), ConfigError, r"fraction must be in \(0, 1\], got 0",
       "mates-params-zero-fraction"),
    _p(lambda t, r: parse(MatesParams, {"im_cv_folds": 1}), ConfigError, r"im_cv_folds.*got 1",
       "mates-params-one-fold"),
    _p(lambda t, r: parse(MatesParams, {"warmup": 20}), ConfigError, r"warmup is a fraction.*got 20",
       "mates-params-warmup-in-steps"),
    _p(lambda t, r: parse(MatesParams, {"reference": str(t / "ref.txt")}), ConfigError,
       r"reference: corpus '.*ref.txt' not found", "mates-params-missing-reference-file"),
    _p(lambda t, r: parse(MatesParams, {"reference_package": "pandas"}), ConfigError,
       r"reference_package 'pandas' is not a package of corpus .*; packages: numpy, sklearn",
       "mates-params-unknown-reference-package"),
    _p(lambda t, r: parse(MatesParams, {"model": "bert-tiny"}), ConfigError, r"'bert-tiny' is a masked-LM",
       "mates-params-encoder-model"),
    _p(lambda t, r: _mates_refresh(r, foreign_optimizer=True), ConfigError,
       r"optimizer holds none of the model's \d+ trainable parameters", "mates-optimizer-of-another-model"),
    _p(lambda t, r: _mates_refresh(r, encoder=True), ConfigError, r"MATES probes a causal language model",
       "mates-sampler-on-masked-lm"),
    _p(lambda t, r: parse(RhoLossParams, {"fraction": 2}), ConfigError, r"fraction.*2",
       "rho-params-fraction-above-1"),
    _p(lambda t, r: parse(RhoLossParams, {"dataset": "imagenet"}), ConfigError, r"'imagenet'",
       "rho-params-unknown-dataset"),
    _p(lambda t, r: parse(RhoLossParams, {"corpus": "x.jsonl", "selectors": "uniform,rho_loss,grad_norm_is"}),
       ConfigError, r"'grad_norm_is'.*need class labels", "rho-params-lm-mode-grad-norm"),
    _p(lambda t, r: _rho_lm_splits(t, 3), CorpusError, r"3 document\(s\): too few", "rho-lm-corpus-too-small"),
    _p(lambda t, r: _rho_selector_on_lm(r, "grad_norm"), ConfigError, r"'grad_norm' needs a classification task",
       "rho-grad-norm-on-lm-task"),
    _p(lambda t, r: parse(params_class("quickstart"), {"scale": "huge"}), ConfigError, r"scale 'huge'",
       "quickstart-params-unknown-scale"),
    _p(lambda t, r: params_class("no_such_notebook"), ConfigError, r"'no_such_notebook'", "unknown-notebook"),
    _p(lambda t, r: parse_overrides(["lr"]), ConfigError, r"'lr'.*key=value", "override-without-equals"),
    _p(lambda t, r: _yaml(t, "- lr: 1\n- seed: 2\n"), ConfigError, r"params.yaml must hold a mapping",
       "yaml-params-not-a-mapping"),
    _p(lambda t, r: _yaml(t, "lr: [1, 2\n"), ConfigError, r"params.yaml is not valid YAML", "yaml-params-invalid"),
    _p(lambda t, r: load_yaml(t / "nope.yaml"), ConfigError, r"nope.yaml does not exist", "yaml-params-missing"),
    # ---- corpora
    _p(lambda t, r: wb.corpus(""), CorpusError, r"non-empty", "corpus-empty-spec"),
    _p(lambda t, r: wb.corpus(42), CorpusError, r"non-empty string", "corpus-spec-not-a-string"),
    _p(lambda t, r: wb.corpus(str(t / "none.txt")), CorpusError, r"none.txt.*not found", "corpus-missing-file"),
    _p(lambda t, r: wb.corpus(str(_write(t / "e.txt", b"")), ), CorpusError, r"e.txt is empty", "corpus-empty-file"),
    _p(lambda t, r: wb.corpus(str(_write(t / "b.jsonl", b"\x00\x01\x02{}\n"))), CorpusError, r"b.jsonl looks binary",
       "corpus-binary-jsonl"),
    _p(lambda t, r: wb.corpus(str(_write(t / "l.txt", "\xe9t\xe9\n".encode("latin-1")))), CorpusError,
       r"l.txt is not valid UTF-8", "corpus-non-utf8"),
    _p(lambda t, r: wb.corpus(str(_write(t / "w.txt", "\n\n   \n"))), CorpusError, r"w.txt holds no document",
       "corpus-whitespace-only"),
    _p(lambda t, r: wb.corpus(str(_write(t / "a.json", '[{"body": "x", "label": "y"}]'))), CorpusError,
       r"a.json: item 0: no field 'text'; fields found: body, label; pass text_field=", "corpus-json-array-without-text"),
    _p(lambda t, r: wb.corpus(str(_write(t / "a.csv", "body\nx\n")), text_field="content"), CorpusError,
       r"a.csv: no field 'content'; fields found: body", "corpus-csv-text-field-missing"),
    _p(lambda t, r: wb.corpus(str(_write(t / "a.jsonl", '{"text": "x"}\n')), domain_field="label"), CorpusError,
       r"no field 'label' \(domain_field\)", "corpus-domain-field-missing"),
    _p(lambda t, r: wb.corpus(str(_write(t / "a.json", '{"text": "x",\n"id": 1}'))), CorpusError,
       r"a.json holds a single JSON object", "corpus-json-single-object"),
    _p(lambda t, r: wb.corpus(str(_write(t / "a.txt", "x")), encoding="klingon"), CorpusError,
       r"unknown encoding 'klingon'", "corpus-unknown-encoding"),
    _p(lambda t, r: wb.corpus("pydocs:datasets", text_field="body"), CorpusError, r"text_field apply to corpus files",
       "corpus-pydocs-with-text-field"),
    _p(lambda t, r: wb.corpus("pydocs:datasets").split(eval_fraction=1.5), ConfigError, r"eval_fraction.*1.5",
       "corpus-split-eval-fraction-above-1"),
    _p(lambda t, r: wb.corpus("pydocs:datasets").split(holdout_domains=["nope"]), CorpusError,
       r"holdout domain.*'nope'", "corpus-split-unknown-holdout-domain"),
    # ---- facility location / INGENIOUS / MATES: budgets larger than the data, NaN embeddings
    _p(lambda t, r: _fl(_tiny_x(), 6), ConfigError, r"budget \(6\) exceeds the number of points \(5\)",
       "fl-budget-larger-than-data"),
    _p(lambda t, r: _fl(_tiny_x(), 0), ConfigError, r"budget must be positive", "fl-budget-zero"),
    _p(lambda t, r: _fl(_tiny_x(), 2.5), ConfigError, r"budget must be an integer", "fl-budget-not-int"),
    _p(lambda t, r: _fl(_nan_x(), 2), ConfigError, r"NaN", "fl-nan-embeddings"),
    _p(lambda t, r: _fl(np.full((4, 3), np.inf), 2), ConfigError, r"infinite", "fl-inf-embeddings"),
    _p(lambda t, r: _fl(_tiny_x()[0], 1), ConfigError, r"2-D", "fl-1d-embeddings"),
    _p(lambda t, r: _fl(np.zeros((0, 3)), 1), ConfigError, r"empty", "fl-no-points"),
    _p(lambda t, r: _fl(_tiny_x(), 2, kernel="knn", knn=9), ConfigError, r"knn \(9\) exceeds", "fl-knn-larger-than-data"),
    _p(lambda t, r: _fl(_tiny_x(), 2, metric="manhattan"), ConfigError, r"metric.*'manhattan'", "fl-unknown-metric"),
    _p(lambda t, r: _ingenious(_nan_x(n=6)), ConfigError, r"INGENIOUS embeddings contain NaN", "ingenious-nan-embeddings"),
    _p(lambda t, r: _ingenious(_tiny_x(n=3), partitions=4), ConfigError, r"4 partitions.*have 3",
       "ingenious-more-partitions-than-data"),
    _p(lambda t, r: _ingenious(_tiny_x(n=6), fraction=1.5), ConfigError, r"fraction.*1.5",
       "ingenious-fraction-above-1"),
    _p(lambda t, r: _ingenious(_tiny_x(n=6), function="facility"), ConfigError, r"function must be one of fl, gc, logdet",
       "ingenious-unknown-function"),
    _p(lambda t, r: _ingenious(_tiny_x(n=6), variant=None, layer=None), ConfigError, r"variant must be one of",
       "ingenious-variant-none"),
    _p(lambda t, r: _gumbel(6), ConfigError, r"k must be an integer in \[0, 5\], got 6", "mates-k-larger-than-data"),
    # ---- models and growth
    _p(lambda t, r: wb.model("bert-huge", vocab_size=128), ModelError, r"unknown model preset 'bert-huge'",
       "model-unknown-preset"),
    _p(lambda t, r: wb.model("bert-tiny", vocab_size=8), ModelError, r"vocab_size 8", "model-vocab-too-small"),
    _p(lambda t, r: wb.model("bert-tiny", vocab_size=128, num_layerz=3), ModelError, r"'num_layerz'",
       "model-unknown-config-attribute"),
    _p(lambda t, r: _grow("bert-tiny"), ModelError, r"cannot grow to a smaller model: layers 4 -> 2",
       "grow-to-smaller-model"),
    _p(lambda t, r: _grow("bert-small", vocab=256), ModelError, r"vocab size mismatch: small 128 vs large 256",
       "grow-vocab-mismatch"),
    _p(lambda t, r: _grow("gpt2-small"), ModelError, r"'model_type' differs: 'bert' vs 'gpt2'", "grow-across-families"),
    _p(lambda t, r: _grow("bert-small", method="magic"), ModelError, r"unknown method 'magic'", "grow-unknown-method"),
    _p(lambda t, r: _grow("bert-small", sede=1), ModelError, r"'sede'", "grow-unexpected-keyword"),
    _p(lambda t, r: _train_vocab_mismatch(r.getfixturevalue("small_prep"), 64), ModelError,
       r"vocabulary mismatch: data's tokenizer has \d+ tokens but the model's vocab_size is 64",
       "train-model-vocab-smaller-than-tokenizer"),
    _p(lambda t, r: _train_vocab_mismatch(r.getfixturevalue("small_prep"), 256, eval_only=True), ModelError,
       r"vocabulary mismatch: eval_data's tokenizer", "train-model-vocab-smaller-than-eval-tokenizer"),
    _p(lambda t, r: wb.MLMTask(r.getfixturevalue("small_prep").train_corpus, r.getfixturevalue("small_prep").tokenizer,
                               seq_len=0), ConfigError, r"seq_len 0", "mlm-task-seq-len-0"),
    _p(lambda t, r: wb.train_tokenizer(r.getfixturevalue("small_prep").train_corpus, "wordpiece", 10), ConfigError,
       r"vocab_size 10", "tokenizer-vocab-too-small"),
    _p(lambda t, r: wb.train_tokenizer(r.getfixturevalue("small_prep").train_corpus, "sentencepiece", 512),
       ConfigError, r"'sentencepiece'", "tokenizer-unknown-kind"),
    # ---- your own model and tokenizer (directories saved with save_pretrained, hub ids: offline here)
    _p(lambda t, r: wb.model("someone/tiny-lm"), ModelError,
       r"unknown model preset 'someone/tiny-lm', not a local directory, and not loadable as a hub id: the hub is "
       r"offline", "model-hub-id-offline"),
    _p(lambda t, r: wb.model(str(_write(t / "m" / "weights.txt", "x").parent)), ModelError,
       r"model directory '.*m' has no config.json", "model-directory-without-config"),
    _p(lambda t, r: wb.model(42), ModelError, r"model must be a preset name, a Hugging Face directory, a hub id "
       r"or a Hugging Face model object, not int", "model-not-a-model"),
    _p(lambda t, r: wb.prepare("pydocs:datasets", "gpt2-tiny", tokenizer="someone/tok"), ConfigError,
       r"tokenizer 'someone/tok' is not a local directory and not loadable as a hub id: the hub is offline",
       "prepare-tokenizer-hub-id-offline"),
    _p(lambda t, r: _own_prepare(t, r, tokenizer=str(t)), ConfigError, r"tokenizer directory '.*' holds no tokenizer",
       "prepare-tokenizer-directory-empty"),
    _p(lambda t, r: _own_prepare(t, r), ModelError, r"vocabulary mismatch: tokenizer '.*bpe' has 1024 tokens but "
       r"model '.*gpt2' has an embedding table of 512 rows", "prepare-tokenizer-larger-than-model"),
    _p(lambda t, r: _own_prepare(t, r, seq_len=100, model_vocab=1024), ModelError,
       r"seq_len 100 is above the position table of model '.*gpt2': it holds 64 positions", "prepare-seq-len-above-positions"),
    _p(lambda t, r: wb.prepare("pydocs:datasets", "bert-tiny", tokenizer=_own_gpt2(t, r)[1], seq_len=32), ModelError,
       r"tokenizer '.*bpe' has no mask token, which masked-LM training of model 'bert-tiny' \(an encoder\) needs",
       "prepare-tokenizer-without-mask-for-encoder"),
    # ---- training loop
    _p(lambda t, r: wb.train(_small_bert(), r.getfixturevalue("small_prep").train, lr=0, progress=False),
       ConfigError, r"lr must be a positive number, got 0", "train-api-lr-zero"),
    _p(lambda t, r: wb.train(_small_bert(), r.getfixturevalue("small_prep").train, batch_size=0, progress=False),
       ConfigError, r"batch_size \(0\)", "train-api-batch-size-0"),
    _p(lambda t, r: wb.Budget(max_steps=-1), ConfigError, r"max_steps must be positive, got -1", "budget-negative-steps"),
    _p(lambda t, r: wb.Schedule("sawtooth"), ConfigError, r"schedule 'sawtooth'", "schedule-unknown"),
    # ---- run directories and checkpoints
    _p(lambda t, r: _run_twice(t), RunError, r"already holds a run; pass --resume", "run-exists-without-resume"),
    _p(lambda t, r: wb.Run.open(t / "nothing"), RunError, r"nothing to resume", "run-resume-missing"),
    _p(lambda t, r: wb.Run(_unwritable(t)), RunError, r"cannot write to run directory", "run-unwritable"),
    _p(_corrupted_config_resume, RunError, r"corrupted config.json", "run-corrupted-config"),
    _p(lambda t, r: wb.runs.safe_child(t, "../x"), RunError, r"run name '../x'", "run-name-escapes-dotdot"),
    _p(lambda t, r: wb.runs.safe_child(t, "/etc/passwd"), RunError, r"run name '/etc/passwd'", "run-name-absolute"),
    _p(lambda t, r: wb.runs.safe_child(t, "a/../../b"), RunError, r"run name 'a/../../b'", "run-name-escapes-nested"),
    _p(lambda t, r: wb.Run(t / "r").save_scores("../evil", a=[1]), RunError, r"scores name '../evil'",
       "run-scores-name-escapes"),
    _p(_load_garbage_checkpoint, CheckpointError, r"ckpt is unreadable", "checkpoint-corrupted"),
    _p(_latest_missing, CheckpointError, r"step-00000007 named by LATEST is missing", "checkpoint-missing"),
]

# every notebook's parameters: an unknown key and an ill-typed value are refused by name
for _name in REGISTRY:
    API_CASES.append(_p(lambda t, r, n=_name: parse(params_class(n), {"no_such_parameter": 1}), ConfigError,
                        r"unknown parameter.*'no_such_parameter'", f"notebook-{_name}-unknown-param"))
    _hints = typing.get_type_hints(params_class(_name))
    _int = next(f.name for f in fields(params_class(_name)) if _hints[f.name] is int)
    API_CASES.append(_p(lambda t, r, n=_name, k=_int: parse(params_class(n), {k: "many"}), ConfigError,
                        rf"'{_int}'.*integer.*'many'", f"notebook-{_name}-ill-typed-{_int}"))


@pytest.mark.parametrize("fn,exc,match", API_CASES)
def test_api_bad_input(fn, exc, match, tmp_path, request):
    with pytest.raises(WorkbenchError) as info:
        fn(tmp_path, request)
    e = info.value
    assert isinstance(e, exc), f"expected {exc.__name__}, got {type(e).__name__}: {e}"
    assert re.search(match, str(e)), f"{match!r} not in {str(e)!r}"
    assert str(e).splitlines()[0].strip(), "the CLI prints the first line: it must not be empty"


# ------------------------------------------------------------------------ decided behaviour: it works

def test_constant_embeddings_facility_location():
    """Constant data is valid (module doc): the first pick serves everything, later gains are 0."""
    sel = _fl(np.ones((6, 3)), 3)
    assert sel.indices.tolist() == [0, 1, 2]
    np.testing.assert_allclose(sel.gains, [6.0, 0.0, 0.0], atol=1e-6)
    sel = _fl(np.zeros((6, 3)), 3)               # all-zero rows: the identity kernel, every gain 1
    assert sel.indices.tolist() == [0, 1, 2] and sel.gains.tolist() == [1.0, 1.0, 1.0]


def test_constant_embeddings_ingenious():
    """INGENIOUS on constant embeddings: centred they are all zero, every gain is 1, sampling uniform."""
    s = _ingenious(np.ones((8, 3)))
    assert np.allclose(s.gains, 1.0)
    assert np.allclose(s.probs, 1 / 4)                      # 2 partitions of 4, uniform within each
    assert len(s.subset) == 4 and len(set(s.subset.tolist())) == 4


