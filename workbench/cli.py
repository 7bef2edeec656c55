"""``python -m workbench``: corpus | train | reproduce | bench | report | export.

Every user error (a :class:`~workbench.errors.WorkbenchError`) prints one line ``error: ...`` on
stderr and exits with code 2; no traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .config import parse, parse_overrides
from .data.corpus import corpus
from .errors import ConfigError, CorpusError, RunError, WorkbenchError
from .recipes.quickstart import TrainParams, params_help, run_train
from .reproduce import reproduce
from .reproduce.report import study_table, update_papers, write_report
from .reproduce.table import print_table
from .runs import table
from .training.export import export_run

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCHES = ("fl", "train", "probe")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m workbench", description=__doc__.splitlines()[0])
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
                       epilog=params_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--out", help="run directory (required unless --resume)")
    t.add_argument("--resume", metavar="DIR", help="continue a run made with `train` in DIR from its latest checkpoint")
    t.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter (listed below)")
    t.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("reproduce", help="execute a paper notebook (or all) with papermill")
    r.add_argument("name", help="notebook name or 'all'")
    r.add_argument("--scale", default="tiny", help="smoke | tiny | cpu | small | paper")
    r.add_argument("--out", default="runs/reproduce", help="output directory")
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a parameter override")
    r.add_argument("--seeds", metavar="SEEDS", help="a study: run once per seed (0-4, 0,3,7 or 0-2,5) into "
                   "OUT/NAME/seed-S/, then OUT/NAME/study.json with paired statistics; complete seeds are not rerun")
    r.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="notebook processes at a time for 'all' and --seeds (default: the cores this process may use)")
    r.add_argument("--threads", type=int, default=None, metavar="T",
                   help="compute threads per notebook process (default 1 for 'all' and --seeds)")

    b = sub.add_parser("bench", help="benchmarks against a peer measured in the same run")
    bsub = b.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    for name in BENCHES:
        bp = bsub.add_parser(name)
        if argv[:2] == ["bench", name]:  # import a benchmark's options only when it is asked for
            try:
                mod = __import__(f"workbench.bench.{name}", fromlist=["add_arguments"])
                mod.add_arguments(bp)
            except ImportError:
                bp.set_defaults(_missing=True)

    ex = sub.add_parser("export", help="write a run's model (and tokenizer) as a Hugging Face directory")
    ex.add_argument("run", help="run directory")
    ex.add_argument("dir", help="output directory (must not exist, or be empty)")
    ex.add_argument("--checkpoint", default=None, metavar="step-N|latest|final|marker-F",
                    help="which weights (default: the final ones, else the latest checkpoint)")

    rep = sub.add_parser("report", help="summaries of the runs below a directory; the HTML report; paper cards")
    rep.add_argument("root", nargs="?", default=None,
                     help="runs folder (default runs; with --html or --update-papers: runs/reproduce)")
    rep.add_argument("--json", action="store_true", help="print the runs table as JSON records")
    rep.add_argument("--html", action="store_true",
                     help="(re)build ROOT/report.html from the executed notebooks and summaries in ROOT")
    rep.add_argument("--update-papers", action="store_true",
                     help="rewrite the Measured section of papers/<paper>.md from the newest ROOT/*/summary.json")
    rep.add_argument("--papers-dir", default=None, help="where the paper cards are (default: the repository's papers/)")
    return ap


def _cmd_corpus(a) -> int:
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


def _cmd_train(a) -> int:
    if bool(a.out) == bool(a.resume):
        raise ConfigError("give exactly one of --out DIR (a new run) or --resume DIR")
    if a.resume:
        if a.param:
            raise ConfigError("--resume continues a run with its stored parameters; -p is not allowed")
        res = run_train(TrainParams(), a.resume, resume=True, progress=not a.no_progress)
    else:
        params = parse(TrainParams, parse_overrides(a.param))
        res = run_train(params, a.out, progress=not a.no_progress)
    print(json.dumps({"run": str(res.run.path), "steps": res.step, "final_eval_loss": res.final_eval_loss,
                      "stop_reason": res.stop_reason, "wall_s": round(res.wall_s, 2)}))
    return 0


def _cmd_reproduce(a) -> int:
    from .reproduce.study import parse_seeds
    seeds = parse_seeds(a.seeds) if a.seeds is not None else None
    reproduce(a.name, a.scale, a.out, parse_overrides(a.param), seeds=seeds, jobs=a.jobs, threads=a.threads)
    return 0


def _cmd_bench(a) -> int:
    if getattr(a, "_missing", False):
        raise ConfigError(f"benchmark {a.bench!r} is not available in this version")
    mod = __import__(f"workbench.bench.{a.bench}", fromlist=["main"])
    mod.main(a)
    return 0


def _cmd_export(a) -> int:
    print(f"export: {export_run(a.run, a.dir, a.checkpoint)}")
    return 0


def _cmd_report(a) -> int:
    if a.root is not None and not os.path.isdir(a.root):   # a named folder must exist ("runs" may not yet)
        raise RunError(f"runs folder {a.root} does not exist or is not a directory")
    if a.html or a.update_papers:
        root = a.root or "runs/reproduce"
        if a.html:
            print(f"report: {write_report(root)}")
        if a.update_papers:
            for line in update_papers(root, a.papers_dir):
                print(line)
        return 0
    df = table(a.root or "runs")
    if a.json:
        print(df.to_json(orient="records"))
    else:
        print_table(df)
        studies = study_table(a.root or "runs")
        if studies is not None:
            print("\nstudies over seeds (method - baseline paired by seed):")
            print_table(studies)
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
