"""Studies over seeds (issue 16): ``reproduce NAME --seeds`` runs a notebook once per seed in parallel
processes into ``OUT/NAME/seed-S/`` and writes ``OUT/NAME/study.json`` with paired statistics; the
report and the cards show the study table.

One real study runs in this file (quickstart at smoke, 2 seeds, 2 processes; module fixture), then
again to show that complete seeds are not rerun. Everything else works on hand-written numbers.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pytest
from scipy import stats

from workbench.cli import main
from workbench.errors import ConfigError
from workbench.recipes import ORDER, Summary, recipe
from workbench.recipes.base import Arm, higher_is_better
from workbench.reproduce.report import measured_markdown, update_papers, write_report
from workbench.reproduce.study import (build_study, flat_numbers, format_seeds, load_studies, paired_stats,
                                       parse_seeds, study_row)


# ------------------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("spec, seeds", [
    ("0-4", [0, 1, 2, 3, 4]), ("0,3,7", [0, 3, 7]), ("0-2,5", [0, 1, 2, 5]), ("7", [7]), (" 2 - 3 , 9 ", [2, 3, 9]),
    ("5,1", [5, 1]), ("10-10", [10]),
])
def test_parse_seeds(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec, words", [
    ("", ["--seeds", "needs seeds"]), ("a", ["'a'", "not a seed"]), ("3-1", ["'3-1'", "backwards"]),
    ("-1", ["'-1'", "not a seed"]), ("1,,2", ["''", "not a seed"]), ("0,0", ["seed 0", "more than once"]),
    ("0-3,2", ["seed 2", "more than once"]), ("1.5", ["'1.5'"]), ("0-", ["'0-'"]), ("0-100000", ["more than 1000"]),
])
def test_parse_seeds_refuses_bad_input(spec, words):
    with pytest.raises(ConfigError) as e:
        parse_seeds(spec)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_format_seeds_inverts_parse():
    for spec in ("0-4", "0,3,7", "0-2,5", "9"):
        assert format_seeds(parse_seeds(spec)) == spec


# ------------------------------------------------------------------------------------- statistics
def test_paired_stats_against_scipy_and_by_hand():
    b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    m = [0.5, 1.8, 2.0, 4.1, 4.2, 5.0]
    d = [mi - bi for bi, mi in zip(b, m)]                 # -0.5 -0.2 -1.0 0.1 -0.8 -1.0
    p = paired_stats(b, m, higher_is_better=False)
    mean = sum(d) / 6
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 5)
    assert p["n"] == 6 and p["n_excluded"] == 0
    assert p["mean_diff"] == pytest.approx(-3.4 / 6) and p["mean_diff"] == pytest.approx(mean)
    assert p["se"] == pytest.approx(sd / math.sqrt(6))
    assert p["baseline_mean"] == pytest.approx(3.5) and p["method_mean"] == pytest.approx(17.6 / 6)
    assert (p["wins"], p["losses"], p["ties"]) == (5, 1, 0)        # lower is better: 5 seeds went down
    assert p["p_value"] == pytest.approx(stats.ttest_rel(m, b).pvalue)
    assert p["wilcoxon_p"] == pytest.approx(stats.wilcoxon(m, b).pvalue)
    # the t statistic by hand: mean / se
    t = mean / (sd / math.sqrt(6))
    assert p["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 5))
    # higher is better: the same numbers are 1 win, 5 losses
    q = paired_stats(b, m, higher_is_better=True)
    assert (q["wins"], q["losses"]) == (1, 5) and q["p_value"] == p["p_value"]


def test_paired_stats_excludes_missing_values_and_handles_degenerate_cases():
    p = paired_stats([1.0, None, 3.0, 4.0], [2.0, 1.0, float("nan"), 6.0], higher_is_better=True, seeds=[10, 11, 12, 13])
    assert p["n"] == 2 and p["n_excluded"] == 2 and p["excluded_seeds"] == [11, 12]
    assert p["mean_diff"] == pytest.approx(1.5) and p["wins"] == 2
    assert p["p_value"] == pytest.approx(stats.ttest_rel([2.0, 6.0], [1.0, 4.0]).pvalue)
    assert p["wilcoxon_p"] is None                                  # fewer than 5 pairs
    one = paired_stats([1.0], [2.0])
    assert one["n"] == 1 and one["se"] is None and one["p_value"] is None
    same = paired_stats([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])            # every difference 1: no t-test
    assert same["se"] == 0 and same["p_value"] is None and same["losses"] == 3
    tied = paired_stats([1.0] * 5, [1.0] * 5)
    assert tied["ties"] == 5 and tied["wilcoxon_p"] is None and tied["p_value"] is None
    none = paired_stats([None, None], [1.0, 2.0])
    assert none["n"] == 0 and none["mean_diff"] is None and none["n_excluded"] == 2
    with pytest.raises(ConfigError):
        paired_stats([1.0], [1.0, 2.0])


def test_a_target_never_reached_counts_against_the_arm():
    """For a metric to a target, None is "never reached within the run": worse than any value. It is a
    loss for that arm (a win for the other, a tie when neither reached it), not a seed left out."""
    from workbench.recipes.base import verdict_study
    # lower is better (FLOPs to target); seeds 2-4: the method never reached it; a failed seed 5 is excluded
    p = paired_stats([1.0, 1.0, 1.0, 1.0, 1.0, None, None, 2.0], [2.7, 2.8, None, None, None, None, None, 1.5],
                     seeds=range(8), censored=True, failed=[5])
    assert p["n"] == 3 and p["excluded_seeds"] == [5] and p["n_censored"] == 4
    assert p["never_reached"] == {"method": [2, 3, 4], "baseline": [], "both": [6]}
    assert (p["wins"], p["losses"], p["ties"]) == (1, 5, 1)
    assert p["sign_p"] == pytest.approx(stats.binomtest(1, 6).pvalue)
    assert p["mean_diff"] == pytest.approx(((2.7 - 1) + (2.8 - 1) + (1.5 - 2)) / 3)
    # without the flag the same values are left out, as before
    assert paired_stats([1.0, 1.0], [2.0, None])["n_excluded"] == 1
    # the verdict: a significant t-test the never-reached seeds agree with decides ...
    two = paired_stats([1.0, 1.0, 1.0, 1.0, 1.0], [2.7, 2.8, None, None, None], censored=True)
    v, why = verdict_study(two)
    assert v == "does not hold" and "never reached the target: the method in 3 seed(s)" in why
    # ... and the sign test decides when the complete pairs cannot (5 of 5 seeds is p = 0.0625: inconclusive)
    assert verdict_study(paired_stats([1.0] * 5, [None] * 5, censored=True))[0] == "inconclusive"
    six = paired_stats([5.0] * 6, [None] * 6, censored=True)
    assert six["sign_p"] < 0.05 and verdict_study(six)[0] == "does not hold"
    assert verdict_study(paired_stats([None] * 6, [5.0] * 6, censored=True))[0] == "holds"
    # a t-test the never-reached seeds contradict does not decide alone
    mixed = paired_stats([1.0, 1.0, 1.0, None, None, None], [0.5, 0.6, 0.55, 1.0, 1.0, 1.0], censored=True)
    assert mixed["wins"] == 6 and verdict_study(mixed)[0] == "holds"
    contra = paired_stats([1.0, 1.0, 1.0, 1.0, 1.0], [0.5, 0.6, 0.55, None, None], censored=True)
    assert verdict_study(contra)[0] == "inconclusive"


@pytest.mark.parametrize("metric, higher", [
    ("eval_loss", False), ("flops_to_target", False), ("reference_loss", False), ("steps_to_target", False),
    ("steps_to_uniform_final_loss", False), ("downstream_acc", True), ("final_accuracy", True),
    ("flops_saved", True), ("speedup", True), ("tokens_per_s", True), ("spearman_val", True),
    ("selection_wall_fraction", False), ("quality_vs_full", True),
])
def test_metric_direction_from_its_name(metric, higher):
    assert higher_is_better(metric) is higher


def test_summary_records_the_direction():
    s = Summary("p", "smoke", "c", "eval_loss", Arm("a", 1.0), Arm("b", 0.5))
    assert s.to_dict()["higher_is_better"] is False
    s = Summary("p", "smoke", "c", "accuracy", Arm("a", 1.0), Arm("b", 0.5))
    assert s.higher_is_better is True
    assert Summary("p", "smoke", "c", "accuracy", Arm("a", 1), Arm("b", 2), higher_is_better=False).higher_is_better is False


def test_every_recipe_metric_has_the_right_direction():
    """Each recipe's headline metric (read from its summary()) is lower-better: losses, and steps or
    FLOPs to a target. A recipe with a higher-better metric must say so (or be named so)."""
    expected = {"eval_loss": False, "flops_to_target": False, "reference_loss": False, "steps_to_target": False,
                "steps_to_uniform_final_loss": False}
    for name in ORDER:
        src = Path(recipe(name).__file__).read_text()
        for metric in re.findall(r"metric=\"(\w+)\"", src):
            assert metric in expected, f"{name}: new metric {metric!r}: add its direction to this test"
            explicit = re.search(r"higher_is_better=(True|False)", src)
            assert (explicit.group(1) == "True" if explicit else higher_is_better(metric)) is expected[metric], name


# ------------------------------------------------------------------------------------- study.json
def _summary(seed, b, m, extra=None, metric="steps_to_target", failed=None):
    if failed:
        return {"paper": "rho_loss", "scale": "tiny", "failed": failed}
    return {"paper": "rho_loss", "scale": "tiny", "claim": "RHO-LOSS reaches the target in fewer steps",
            "metric": metric, "baseline": {"name": "uniform", "value": b}, "method": {"name": "rho_loss", "value": m},
            "extra": extra or {}, "wall_s": 10.0 + seed, "notebook_wall_s": 12.0 + seed, "higher_is_better": False,
            "params": {"seed": seed, "dataset": "digits"}}


def _hand_study():
    summaries = {
        0: _summary(0, 120, 60, {"steps_to_target": {"uniform": 120, "rho_loss": 60}, "final_accuracy":
                                 {"uniform": 0.9, "rho_loss": 0.93}, "dataset": "digits", "splits": {"train": 1000}}),
        1: _summary(1, 100, 70, {"steps_to_target": {"uniform": 100, "rho_loss": 70}, "final_accuracy":
                                 {"uniform": 0.91, "rho_loss": 0.92}, "dataset": "digits", "splits": {"train": 1000}}),
        2: _summary(2, 110, None, {"steps_to_target": {"uniform": 110, "rho_loss": None}, "final_accuracy":
                                   {"uniform": 0.9, "rho_loss": 0.89}, "dataset": "digits", "splits": {"train": 1000}}),
        3: _summary(3, 90, 80, {"steps_to_target": {"uniform": 90, "rho_loss": 80}, "final_accuracy":
                                {"uniform": 0.92, "rho_loss": 0.94}, "dataset": "digits", "splits": {"train": 1000}}),
        4: _summary(4, None, None, failed="notebook rho_loss failed in cell 3: RuntimeError: boom"),
    }
    return build_study("rho_loss", "tiny", [0, 1, 2, 3, 4], summaries, {4: summaries[4]["failed"]}, wall_s=42.0)


def test_study_shape_and_exclusions():
    st = _hand_study()
    assert {"paper", "scale", "metric", "seeds", "per_seed", "paired", "extras", "higher_is_better"} <= set(st)
    assert st["seeds"] == [0, 1, 2, 3, 4] and st["complete_seeds"] == [0, 1, 2, 3] and st["failed_seeds"] == [4]
    assert st["metric"] == "steps_to_target" and st["higher_is_better"] is False
    assert [p["seed"] for p in st["per_seed"]] == [0, 1, 2, 3, 4]
    assert st["per_seed"][2] == {**st["per_seed"][2], "baseline": 110, "method": None, "diff": None}
    assert "boom" in st["per_seed"][4]["failed"]
    assert all({"seed", "baseline", "method"} <= set(p) for p in st["per_seed"])
    pr = st["paired"]
    assert {"mean_diff", "se", "wins", "n", "p_value"} <= set(pr)
    # seed 2: rho_loss never reached the target (a loss, not left out); seed 4 failed (left out)
    assert pr["n"] == 3 and pr["n_excluded"] == 1 and pr["excluded_seeds"] == [4]
    assert pr["n_censored"] == 1 and pr["never_reached"]["method"] == [2]
    assert pr["mean_diff"] == pytest.approx((-60 - 30 - 10) / 3) and (pr["wins"], pr["losses"]) == (3, 1)
    assert pr["p_value"] == pytest.approx(stats.ttest_rel([60, 70, 80], [120, 100, 90]).pvalue)
    # every number in `extra`, per complete seed, with mean and se; strings left out
    ex = st["extras"]
    assert ex["final_accuracy.rho_loss"]["values"] == [0.93, 0.92, 0.89, 0.94]
    assert ex["final_accuracy.rho_loss"]["mean"] == pytest.approx(0.92)
    assert ex["steps_to_target.rho_loss"]["n"] == 3 and ex["splits.train"]["se"] == 0
    assert "dataset" not in ex
    # numbers given per arm are paired too, each in its own direction
    acc = st["extras_paired"]["final_accuracy"]
    assert acc["higher_is_better"] is True and acc["wins"] == 3 and acc["n"] == 4
    assert st["extras_paired"]["steps_to_target"]["wins"] == 3
    assert st["params"] == {"dataset": "digits"} and "--seeds 0-4" in st["reproduce"]
    assert st["wall_s"] == 42.0 and st["seeds_wall_s"] == pytest.approx(12 + 13 + 14 + 15)
    json.dumps(st, allow_nan=False)                                   # plain JSON, no NaN


def test_flat_numbers():
    assert flat_numbers({"a": 1, "b": {"c": 2.5, "d": "x", "e": [1, 2], "f": True, "g": None, "h": float("nan")}}) == \
        {"a": 1.0, "b.c": 2.5, "b.g": None, "b.h": None}


# ------------------------------------------------------------------------------------- report and cards
def _hand_folder(root: Path) -> Path:
    st = _hand_study()
    d = root / "rho_loss"
    for s in (0, 1, 2, 3):
        (d / f"seed-{s}").mkdir(parents=True)
        (d / f"seed-{s}" / "summary.json").write_text(json.dumps(_summary(s, 100, 50)))
    (d / "study.json").write_text(json.dumps(st))
    return root


def test_study_row_and_report_table(tmp_path, capsys):
    root = _hand_folder(tmp_path / "out")
    row = study_row(_hand_study())
    assert row["paper"] == "rho_loss" and row["wins"] == "3/4" and row["seeds"] == "3 (+1 never reached) (+1 excluded)"
    assert row["method - baseline"].startswith("-33.33 ± ") and "lower is better" in row["metric"]
    assert [st["paper"] for _, st in load_studies(root)] == ["rho_loss"]
    assert main(["report", str(root)]) == 0
    out = capsys.readouterr().out
    assert "studies over seeds" in out and "scale tiny" in out and \
        re.search(r"rho_loss\s+inconclusive \(4 seeds\)\s+steps_to_target ↓", out)   # 3 wins, 1 never reached
    assert "3/4" in out and "-33.33" in out
    page = write_report(root).read_text()
    assert "Studies over seeds" in page and "3 (+1 never reached) (+1 excluded)" in page and "Study over 5 seeds" in page
    assert "never reached the target: the method in seed(s) 2" in page


def test_update_papers_writes_the_study_section(tmp_path):
    root = _hand_folder(tmp_path / "out")
    papers = tmp_path / "papers"
    papers.mkdir()
    card = papers / "rho_loss.md"
    card.write_text("# RHO-LOSS\n\nBy hand.\n\n## Measured\n\nkept prose\n\n<!-- measured:start -->\nold\n"
                    "<!-- measured:end -->\n\n## Notes\n\nkeep me\n")
    lines = update_papers(root, papers)
    assert any(line.startswith("rho_loss: updated") and "study.json" in line for line in lines)
    text = card.read_text()
    assert text.startswith("# RHO-LOSS\n\nBy hand.\n\n## Measured\n\nkept prose\n\n<!-- measured:start -->")
    assert text.endswith("<!-- measured:end -->\n\n## Notes\n\nkeep me\n") and "\nold\n" not in text
    block = text[text.index("<!-- measured:start -->"):text.index("<!-- measured:end -->")]
    assert "### Study over seeds" in block
    assert "| steps_to_target | 3 (+1 never reached) (+1 excluded) | uniform = 103.3 | rho_loss = 70 | -33.33 ± " in block
    assert "| 3/4 |" in block and "Per seed (baseline → method): 0: 120 → 60;" in block and "4: – → – (failed)" in block
    assert "Excluded from the paired statistics" in block and "seed(s) 4." in block
    assert "a seed where an arm never reached it counts against that arm" in block
    assert "- `final_accuracy`:" in block
    assert "reproduce rho_loss --scale tiny -p dataset=digits --seeds 0-4" in block     # the override it ran with
    assert update_papers(root, papers)[0].startswith("rho_loss: unchanged")
    # a summary's block without a study stays as it was before studies existed
    assert "Study over seeds" not in measured_markdown(root / "rho_loss/seed-0/summary.json", _summary(0, 1, 2))


# ------------------------------------------------------------------------------------- a real study
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """quickstart at smoke, seeds 0 and 1, two processes: run once, then again (nothing to rerun)."""
    import time
    out = tmp_path_factory.mktemp("study")
    argv = ["reproduce", "quickstart", "--scale", "smoke", "--seeds", "0-1", "--jobs", "2", "--out", str(out)]
    runs = []
    for _ in range(2):
        stdout, stderr = io.StringIO(), io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = main(argv)
        runs.append({"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
                     "wall_s": time.perf_counter() - t0})
        if _ == 0:
            mtimes = {s: (out / "quickstart" / f"seed-{s}" / "summary.json").stat().st_mtime_ns for s in (0, 1)}
    return {"out": out, "first": runs[0], "second": runs[1], "mtimes": mtimes}


def test_study_runs_each_seed_in_its_own_folder(study):
    first, out = study["first"], study["out"]
    assert first["rc"] == 0, first["stderr"][-3000:]
    for s in (0, 1):
        d = out / "quickstart" / f"seed-{s}"
        sm = json.loads((d / "summary.json").read_text())
        assert sm["scale"] == "smoke" and sm["params"]["seed"] == s and "out_dir" not in sm["params"]
        assert (d / "quickstart.ipynb").exists()
        assert f"[{s + 1}/2] quickstart/seed-{s} (smoke)" in first["stderr"]
        assert f"[{s + 1}/2] quickstart/seed-{s} done in" in first["stderr"]
    # every progress line of a notebook process carries its label (a cell under 3 s prints none)
    lines = [ln for ln in first["stderr"].splitlines() if ln.startswith("  ")]
    assert all(re.match(r"  quickstart/seed-[01]\s", ln) for ln in lines), lines[:5]
    assert not (out / "quickstart" / "summary.json").exists()        # a study leaves OUT/NAME/ to its seeds
    assert "total wall time" in first["stdout"] and "2 run, 0 already complete (jobs 2, threads 1)" in first["stdout"]
    assert re.search(r"quickstart\s+(holds|does not hold|inconclusive) \(2 seeds\)\s+eval_loss", first["stdout"])
    assert (out / "report.html").exists() and "Studies over seeds" in (out / "report.html").read_text()
    print(f"smoke study (quickstart, 2 seeds, --jobs 2): {first['wall_s']:.1f}s wall")


def test_study_json_from_the_seeds(study):
    st = json.loads((study["out"] / "quickstart" / "study.json").read_text())
    assert st["paper"] == "quickstart" and st["scale"] == "smoke" and st["metric"] == "eval_loss"
    assert st["seeds"] == [0, 1] and st["higher_is_better"] is False
    per = {p["seed"]: p for p in st["per_seed"]}
    for s in (0, 1):
        sm = json.loads((study["out"] / "quickstart" / f"seed-{s}" / "summary.json").read_text())
        assert per[s]["baseline"] == sm["baseline"]["value"] and per[s]["method"] == sm["method"]["value"]
    assert per[0]["method"] != per[1]["method"]                       # the seeds differ
    pr = st["paired"]
    assert pr["n"] == 2 and pr["wins"] == 2                           # training lowers the loss
    assert pr["p_value"] == pytest.approx(stats.ttest_rel([per[0]["method"], per[1]["method"]],
                                                          [per[0]["baseline"], per[1]["baseline"]]).pvalue)
    assert st["extras"]["steps"]["values"] == [12, 12]


def test_complete_seeds_are_not_rerun(study):
    second, out = study["second"], study["out"]
    assert second["rc"] == 0, second["stderr"][-3000:]
    for s in (0, 1):
        assert f"quickstart/seed-{s} (smoke) is complete" in second["stderr"]
        assert (out / "quickstart" / f"seed-{s}" / "summary.json").stat().st_mtime_ns == study["mtimes"][s]
    assert "0 run, 2 already complete" in second["stdout"]
    assert second["wall_s"] < 20


def test_changed_parameters_make_a_seed_incomplete(study):
    from workbench.reproduce.notebooks import _complete_seed
    d = study["out"] / "quickstart" / "seed-0"
    assert _complete_seed(d, "quickstart", "smoke", {"seed": 0}) is not None
    assert _complete_seed(d, "quickstart", "smoke", {"seed": 0, "max_steps": 13}) is None
    assert _complete_seed(d, "quickstart", "tiny", {"seed": 0}) is None
    assert _complete_seed(d, "quickstart", "smoke", {"seed": 1}) is None



def test_a_parameter_added_later_at_its_default_keeps_a_seed_complete(study, tmp_path):
    """A seed run before the recipe gained a parameter stays complete while that parameter is at its
    default (the seed ran with the behaviour the default keeps); set otherwise, or with a parameter the
    recipe no longer has, the seed is rerun."""
    import shutil

    from workbench.recipes import param_defaults
    from workbench.reproduce.notebooks import _complete_seed
    src = study["out"] / "quickstart" / "seed-0"
    d = tmp_path / "seed-0"
    shutil.copytree(src, d)
    s = json.loads((d / "summary.json").read_text())
    defaults = param_defaults("quickstart")
    key = next(k for k, v in s["params"].items() if k in defaults and v == defaults[k] and isinstance(v, str))
    older = {**s, "params": {k: v for k, v in s["params"].items() if k != key}}     # as if `key` came later
    (d / "summary.json").write_text(json.dumps(older))
    assert _complete_seed(d, "quickstart", "smoke", {"seed": 0}) is not None
    assert _complete_seed(d, "quickstart", "smoke", {"seed": 0, key: "something else"}) is None
    gone = {**s, "params": {**s["params"], "a_removed_parameter": 1}}
    (d / "summary.json").write_text(json.dumps(gone))
    assert _complete_seed(d, "quickstart", "smoke", {"seed": 0}) is None


def test_verdicts_single_run_and_study():
    from workbench.recipes.base import Arm, Summary, verdict_single, verdict_study
    # one run: the margin decides; a *_to_* metric's None is "never reached"
    assert verdict_single("eval_loss", 7.6, 6.8, False)[0] == "holds"
    assert verdict_single("eval_loss", 7.06, 7.05, False)[0] == "inconclusive"
    assert verdict_single("accuracy", 0.9, 0.7, True)[0] == "does not hold"
    assert verdict_single("steps_to_target", None, 40, False)[0] == "holds"
    assert verdict_single("steps_to_target", 40, None, False)[0] == "does not hold"
    assert verdict_single("eval_loss", None, 3.0, False)[0] == "inconclusive"
    assert verdict_single("eval_loss", 7.6, 6.8, False)[1].startswith("single run")
    # a study: the paired t-test and the side the mean difference favours
    assert verdict_study({"n": 5, "p_value": 0.01, "mean_diff": -3.0, "higher_is_better": False})[0] == "holds"
    assert verdict_study({"n": 5, "p_value": 0.01, "mean_diff": -3.0, "higher_is_better": True})[0] == "does not hold"
    assert verdict_study({"n": 5, "p_value": 0.2, "mean_diff": -3.0, "higher_is_better": False})[0] == "inconclusive"
    assert verdict_study({"n": 1, "p_value": None, "mean_diff": -3.0})[0] == "inconclusive"
    st = _hand_study()
    assert st["verdict"] == "inconclusive" and st["better"] == "lower" and "3 seeds" in st["verdict_basis"]
    # the summary records direction, verdict and every arm that beat the method (other arms: extra[metric])
    s = Summary("ligo", "smoke", "c", "flops_to_target", Arm("scratch", 1e9), Arm("ligo", 2.77e8),
                extra={"flops_to_target": {"scratch": 1e9, "ligo": 2.77e8, "stackbert": 0.0, "interp": 1e8,
                                           "bert2bert": None}})
    d = s.to_dict()
    assert d["better"] == "lower" and d["verdict"] == "holds"
    assert [a["name"] for a in d["beaten_by"]] == ["stackbert", "interp"]
    s = Summary("x", "smoke", "c", "accuracy", Arm("uniform", 0.9), Arm("rho", 0.8))
    assert s.better == "higher" and s.verdict == "does not hold" and s.beaten_by == [{"name": "uniform", "value": 0.9}]


def test_report_fits_120_columns_with_verdicts(tmp_path, capsys):
    root = _hand_folder(tmp_path / "out")
    runs = root / "quickstart"
    (runs / "run").mkdir(parents=True)
    (runs / "run" / "summary.json").write_text(json.dumps({"recipe": "quickstart", "steps": 12, "tokens": 6082,
                                                           "final_eval_loss": 6.853933730295727, "complete": True}))
    (runs / "summary.json").write_text(json.dumps({
        "paper": "quickstart", "scale": "tiny", "claim": "c", "metric": "eval_loss", "wall_s": 3592.4,
        "baseline": {"name": "untrained", "value": 3592421376.000001}, "method": {"name": "trained", "value": 6.85},
        "extra": {"a": {"b": [1, 2]}, **{f"k{i}": i for i in range(200)}}}))
    assert main(["report", str(root)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 120
    assert "NaN" not in out and "nan" not in out and "3592421376" not in out and "3.592e9" in out
    assert re.search(r"quickstart\s+holds \(1 run\)\s+eval_loss ↓", out) and "quickstart/run" in out
    assert main(["report", str(root), "--full"]) == 0
    assert "extra.k199" in capsys.readouterr().out


def test_a_stopped_study_leaves_no_notebook_process_behind(tmp_path):
    """SIGTERM (or Ctrl-C) to ``reproduce --seeds``: its notebook processes and their kernels stop too
    (nothing keeps computing after the command is gone), and no study.json is written."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def descendants(pid: int) -> set[int]:
        kids: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                kids.setdefault(ppid, []).append(int(d))
        out, todo = set(), [pid]
        while todo:
            for c in kids.get(todo.pop(), []):
                out.add(c)
                todo.append(c)
        return out

    def alive(pids) -> set[int]:
        return {p for p in pids if os.path.exists(f"/proc/{p}") and
                open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"}

    out = tmp_path / "study"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "reproduce", "quickstart", "--scale", "tiny",
                             "--seeds", "0-1", "--jobs", "2", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline, seen = time.time() + 90, set()
    while time.time() < deadline and len(seen) < 4:        # two notebook processes and their two kernels
        seen |= descendants(proc.pid)
        time.sleep(0.5)
    assert len(seen) >= 4, f"only {len(seen)} processes started"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and alive(seen):
        time.sleep(0.5)
    assert not alive(seen), f"{len(alive(seen))} process(es) left running"
    assert proc.returncode != 0 and not (out / "quickstart" / "study.json").exists()


def test_study_pairs_the_arms_a_recipe_names():
    """budget_bert's STUDY_PAIRS: the recipe arms are paired per seed, each pair in its metric's direction."""
    base = lambda b, m: {"paper": "budget_bert", "metric": "sim_eval_loss", "higher_is_better": False,
                         "baseline": {"name": "step", "value": b}, "method": {"name": "time-linear", "value": m}}
    loss = {0: (5.0, 4.8, 4.5), 1: (5.1, 4.7, 4.6), 2: (5.2, 4.9, 4.4)}
    acc = {0: (0.60, 0.62, 0.70), 1: (0.61, 0.60, 0.72), 2: (0.59, 0.63, 0.69)}
    summaries = {s: {**base(5.7, 5.69 + s / 100), "extra": {"recipes": {
        "eval_loss": dict(zip(("vanilla", "24hbert", "cramming"), loss[s])),
        "probe_acc": dict(zip(("vanilla", "24hbert", "cramming"), acc[s]))}}} for s in loss}
    st = build_study("budget_bert", "cpu", [0, 1, 2], summaries)
    ep = st["extras_paired"]
    c = ep["recipes.eval_loss: cramming - vanilla"]
    assert c["higher_is_better"] is False and c["wins"] == 3 and c["mean_diff"] == pytest.approx(-0.6)
    assert c["p_value"] == pytest.approx(stats.ttest_rel([4.5, 4.6, 4.4], [5.0, 5.1, 5.2]).pvalue)
    a = ep["recipes.probe_acc: 24hbert - vanilla"]
    assert a["higher_is_better"] is True and (a["wins"], a["losses"]) == (2, 1)
    assert {"recipes.eval_loss: cramming - 24hbert", "recipes.probe_acc: cramming - vanilla"} <= set(ep)
    # a recipe that names no pairs, or a name outside the registry, gets only its baseline/method pairs
    assert not any(":" in k for k in build_study("nope", "cpu", [0, 1, 2], summaries)["extras_paired"])


def test_reproduce_command_names_the_overrides_a_study_ran_with():
    """A study run with `-p` overrides says so in its reproduce command (seed and out_dir are not overrides)."""
    from workbench.recipes import scale_values
    from workbench.reproduce.study import reproduce_command
    vals = scale_values("rho_loss", "tiny")
    params = {**vals, "seed": 3, "out_dir": "/x", "corpus": "pydocs:numpy", "selectors": ["uniform", "rho_loss"]}
    cmd = reproduce_command("rho_loss", "tiny", params, "--seeds 0-2")
    assert cmd.startswith("python -m workbench reproduce rho_loss --scale tiny -p ") and cmd.endswith("--seeds 0-2")
    assert "-p corpus=pydocs:numpy" in cmd and "model=" not in cmd and "-p selectors=uniform,rho_loss" in cmd
    assert "seed=" not in cmd and "out_dir" not in cmd
    assert reproduce_command("rho_loss", "tiny", vals) == "python -m workbench reproduce rho_loss --scale tiny"
    assert reproduce_command("nope", "tiny", {"x": 1}) == "python -m workbench reproduce nope --scale tiny"
