"""``python -m workbench``: corpus | train | reproduce | bench | report | export.

Every user error (a :class:`~workbench.errors.WorkbenchError`) prints one line ``error: ...`` on
stderr and exits with code 2; no traceback.

Answers at once: this module imports only the standard library, :mod:`workbench.errors` and
:mod:`workbench.recipes` (no torch, no transformers); each command imports what it needs when it
runs. The ``-p`` parameters of ``train --help``, the notebooks of ``reproduce --help`` and the
quick checks of a misspelt or ill-typed parameter are read from the recipes' source files
(:func:`workbench.recipes.base.source_fields`), not imported.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

from .errors import ConfigError, CorpusError, RunError, WorkbenchError
from .recipes import ORDER, SCALES
from .recipes.base import fields_help, light_params, source_constant, source_fields, suggest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCHES = ("fl", "train", "probe")
#: what each scale is for (``reproduce --help``)
SCALE_HELP = {"smoke": "seconds: the code paths only (CI)", "tiny": "minutes: `make reproduce`, every notebook",
              "cpu": "tens of minutes per notebook: the fair small test on a 2-core CPU",
              "small": "a GPU: a small model, hours", "paper": "the paper's setting (GPUs, days)"}
_TRAIN = ("workbench.recipes.quickstart", "TrainParams")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2; a close subcommand suggested
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            message += suggest(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _doc_line(module: str) -> str:
    """The first line of a module's docstring, read from its source (no import)."""
    import ast
    import importlib.util
    try:
        spec = importlib.util.find_spec(module)
        doc = ast.get_docstring(ast.parse(open(spec.origin, encoding="utf-8").read())) or ""
    except (ImportError, OSError, SyntaxError, AttributeError, TypeError):
        return ""
    return doc.splitlines()[0].strip().replace("``", "") if doc else ""


def _train_help() -> str:
    fs = source_fields(*_TRAIN)
    return fields_help(fs, "parameters (-p KEY=VALUE; name, type, default, meaning):") if fs else ""


def _reproduce_help() -> str:
    from .recipes import available
    names = available()
    w = max(len(n) for n in names) if names else 0
    lines = ["notebooks (NAME; 'all' runs every one):"]
    for n in names:
        claim = " ".join((source_constant(f"workbench.recipes.{n}", "CLAIM") or "").split())
        lines.append(f"  {n:<{w}}  {claim[:96] + ('…' if len(claim) > 96 else '')}")
    lines += ["", "scales (--scale; parameters from papers/NAME/SCALE.yaml, -p overrides them):"]
    lines += [f"  {s:<6}  {SCALE_HELP.get(s, '')}" for s in SCALES]
    lines += ["", "-p takes the notebook's parameters: the tagged parameters cell of notebooks/NAME.ipynb lists them."]
    return "\n".join(lines)


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m workbench", description=__doc__.splitlines()[0].replace("``", ""))
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    c = sub.add_parser("corpus", help="build a corpus and print its statistics")
    c.add_argument("spec", nargs="?", default="pydocs",
                   help="pydocs[:pkg,...] | file.txt/.jsonl/.json/.csv/.parquet | datasets dir")
    c.add_argument("--packages", help="shorthand for pydocs:<packages>")
    c.add_argument("--min-chars", type=int, default=200, help="pydocs: shortest docstring kept")
    c.add_argument("--text-field", help="field/column holding the text (default: text)")
    c.add_argument("--domain-field", help="field/column holding the domain (default: domain if present, else the file name)")
    c.add_argument("--encoding", help="encoding of .txt/.jsonl/.json/.csv files (default: utf-8)")
    c.add_argument("--stats", action="store_true", help="print one JSON object of statistics")

    t = sub.add_parser("train", help="train a model on a corpus into a run directory (samplers, filters, budgets)",
                       epilog=_train_help() if argv[:1] == ["train"] else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--out", help="run directory (required unless --resume)")
    t.add_argument("--resume", metavar="DIR", help="continue a run made with `train` in DIR from its latest checkpoint")
    t.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter (listed below)")
    t.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("reproduce", help="execute a paper notebook (or all) with papermill",
                       epilog=_reproduce_help() if argv[:1] == ["reproduce"] else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("name", help="notebook name or 'all' (listed below)")
    r.add_argument("--scale", default="tiny", help=" | ".join(SCALES) + " (listed below; default tiny)")
    r.add_argument("--out", default="runs/reproduce", help="output directory")
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a parameter override")
    r.add_argument("--seeds", metavar="SEEDS", help="a study: run once per seed (0-4, 0,3,7 or 0-2,5) into "
                   "OUT/NAME/seed-S/, then OUT/NAME/study.json with paired statistics; complete seeds are not rerun")
    r.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="notebook processes at a time for 'all' and --seeds (default: the cores this process may use)")
    r.add_argument("--threads", type=int, default=None, metavar="T",
                   help="compute threads per notebook process (default 1 for 'all' and --seeds)")
    r.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the runs' resume checkpoints (deleted by default once a notebook has finished)")

    b = sub.add_parser("bench", help="benchmarks against a peer measured in the same run")
    bsub = b.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    for name in BENCHES:
        desc = _doc_line(f"workbench.bench.{name}")
        desc = desc.split(":", 1)[1].strip() if desc.startswith(f"bench {name}:") else desc
        bp = bsub.add_parser(name, help=desc, description=desc)
        if argv[:2] == ["bench", name]:  # a benchmark's options, only when it is asked for (no torch)
            from .bench.options import OPTIONS
            OPTIONS[name](bp)

    ex = sub.add_parser("export", help="write a run's model (and tokenizer) as a Hugging Face directory")
    ex.add_argument("run", help="run directory")
    ex.add_argument("dir", help="output directory (must not exist, or be empty)")
    ex.add_argument("--checkpoint", default=None, metavar="step-N|latest|final|marker-F",
                    help="which weights (default: the final ones, else the latest checkpoint)")

    rep = sub.add_parser("report", help="summaries of the runs below a directory; the HTML report; paper cards")
    rep.add_argument("root", nargs="?", default=None,
                     help="runs folder (default runs; with --html or --update-papers: runs/reproduce)")
    rep.add_argument("--json", action="store_true", help="print the runs table as JSON records")
    rep.add_argument("--full", action="store_true",
                     help="print the wide table: every summary.json field (nested ones flattened) as a column")
    rep.add_argument("--html", action="store_true",
                     help="(re)build ROOT/report.html from the executed notebooks and summaries in ROOT")
    rep.add_argument("--update-papers", action="store_true",
                     help="rewrite the Measured section of papers/<paper>.md from the newest ROOT/*/summary.json")
    rep.add_argument("--papers-dir", default=None, help="where the paper cards are (default: the repository's papers/)")
    return ap


def _cmd_corpus(a) -> int:
    from .data.corpus import corpus
    spec = a.spec
    if a.packages:
        if spec not in ("pydocs",):
            raise CorpusError("--packages only applies to the pydocs corpus")
        spec = "pydocs:" + a.packages
    c = corpus(spec, min_chars=a.min_chars, text_field=a.text_field, domain_field=a.domain_field,
               encoding=a.encoding)
    s = c.stats()
    if a.stats:
        print(json.dumps(s))
    else:
        print(f"{c.spec}: {s['docs']} docs, {s['chars']} chars, {len(s['domains'])} domains, "
              f"{s['duplicate_fraction']:.1%} duplicates")
    return 0


def _quick_check(module: str, cls: str, overrides: dict, what: str) -> None:
    """Refuse an unknown (with a "did you mean") or ill-typed parameter from the source alone, before
    the recipe (torch) is imported; range checks stay with the real dataclass."""
    from .config import parse
    light = light_params(module, cls)
    if light is None:
        return
    import dataclasses
    known = [f.name for f in dataclasses.fields(light)]
    for k in overrides:
        if k not in known:
            raise ConfigError(f"unknown parameter {k!r} for {what}{suggest(k, known)}; known: {', '.join(known)}")
    parse(light, overrides)


def _cmd_train(a) -> int:
    from .config import parse, parse_overrides
    if bool(a.out) == bool(a.resume):
        raise ConfigError("give exactly one of --out DIR (a new run) or --resume DIR")
    if a.resume:
        if a.param:
            raise ConfigError("--resume continues a run with its stored parameters; -p is not allowed")
        from .recipes.quickstart import TrainParams, run_train
        res = run_train(TrainParams(), a.resume, resume=True, progress=not a.no_progress)
    else:
        overrides = parse_overrides(a.param)
        _quick_check(*_TRAIN, overrides, "train")
        from .recipes.quickstart import TrainParams, run_train
        params = parse(TrainParams, overrides)
        res = run_train(params, a.out, progress=not a.no_progress)
    print(json.dumps({"run": str(res.run.path), "steps": res.step, "final_eval_loss": res.final_eval_loss,
                      "stop_reason": res.stop_reason, "wall_s": round(res.wall_s, 2)}))
    return 0


def _cmd_reproduce(a) -> int:
    from .config import parse_overrides
    from .recipes import available
    from .reproduce.study import parse_seeds
    names = available()
    if a.name != "all" and a.name not in names:
        raise ConfigError(f"unknown notebook {a.name!r}{suggest(a.name, names + ['all'])}; available: "
                          f"{', '.join(names)} (or 'all')")
    if a.scale not in SCALES:
        raise ConfigError(f"unknown scale {a.scale!r}{suggest(a.scale, SCALES)}; choose one of {', '.join(SCALES)}")
    seeds = parse_seeds(a.seeds) if a.seeds is not None else None
    overrides = parse_overrides(a.param)
    for key, flag in (("scale", "--scale"), ("out_dir", "--out")):
        if key in overrides:
            raise ConfigError(f"parameter {key!r} is set with {flag}, not with -p")
    if a.name != "all":
        _quick_check(f"workbench.recipes.{a.name}", "Params", overrides, a.name)
    from .reproduce import reproduce
    reproduce(a.name, a.scale, a.out, overrides, seeds=seeds, jobs=a.jobs, threads=a.threads,
              keep_checkpoints=a.keep_checkpoints)
    return 0


def _cmd_bench(a) -> int:
    mod = __import__(f"workbench.bench.{a.bench}", fromlist=["main"])
    mod.main(a)
    return 0


def _cmd_export(a) -> int:
    if not os.path.isdir(a.run):       # before importing torch: this error answers at once
        raise RunError(f"run directory {a.run} does not exist")
    from .training.export import export_run
    print(f"export: {export_run(a.run, a.dir, a.checkpoint)}")
    return 0


def _cmd_report(a) -> int:
    if a.root is not None and not os.path.isdir(a.root):   # a named folder must exist ("runs" may not yet)
        raise RunError(f"runs folder {a.root} does not exist or is not a directory")
    if a.html or a.update_papers:
        from .reproduce.report import update_papers, write_report
        root = a.root or "runs/reproduce"
        if a.html:
            print(f"report: {write_report(root)}")
        if a.update_papers:
            for line in update_papers(root, a.papers_dir):
                print(line)
        return 0
    root = a.root or "runs"
    if a.json or a.full:
        from .runs import table
        df = table(root)
        if a.json:
            print(df.to_json(orient="records"))
        else:
            import pandas as pd
            with pd.option_context("display.max_columns", None, "display.width", 100_000, "display.max_colwidth", 60):
                print(df.dropna(axis=1, how="all").fillna("").to_string(index=False))
        return 0
    from .reproduce.table import report_text
    print(report_text(root))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = _parser(argv).parse_args(argv)
    try:
        return {"corpus": _cmd_corpus, "train": _cmd_train, "reproduce": _cmd_reproduce, "bench": _cmd_bench,
                "report": _cmd_report, "export": _cmd_export}[a.cmd](a)
    except WorkbenchError as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:         # `... | head`: the reader has gone, nothing left to say
        sys.stdout = open(os.devnull, "w")
        return 0
