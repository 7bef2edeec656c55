"""``reproduce all --scale smoke``, run once for real through the CLI, and what it leaves behind:
the table, report.html (self-contained, one section per notebook), executed notebooks holding
widget views with saved state; then ``report --html`` and ``report --update-papers`` on that output.

Slow by nature (every notebook, each in its own kernel); the notebooks' smoke parameters keep it
to minutes.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest

from workbench.cli import main
from workbench.recipes import available


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    import contextlib
    import io
    out = tmp_path_factory.mktemp("reproduce-all")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["reproduce", "all", "--scale", "smoke", "--out", str(out)])
    return {"out": out, "rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def test_every_notebook_ran(reproduced):
    out, names = reproduced["out"], available()
    assert reproduced["rc"] == 0, reproduced["stderr"][-3000:]
    assert len(names) >= 2
    for k, name in enumerate(names, 1):
        s = json.loads((out / name / "summary.json").read_text())
        assert s["paper"] == name and s["scale"] == "smoke"
        assert {"claim", "metric", "baseline", "method", "wall_s", "notebook_wall_s"} <= set(s)
        assert (out / name / f"{name}.ipynb").exists()
        assert f"[{k}/{len(names)}] {name} (smoke)" in reproduced["stderr"]          # progress, as it ran
        assert f"[{k}/{len(names)}] {name} done in" in reproduced["stderr"]
    assert re.search(r"^\s+\w+\s+\S+\s+cell \d+/\d+ done in", reproduced["stderr"], re.M)   # per-cell lines


def test_table_has_claims_and_numbers(reproduced):
    table = reproduced["stdout"]
    header = table.splitlines()[0]
    for col in ("paper", "claim", "paper reports", "metric", "baseline", "method", "ratio", "wall"):
        assert col in header
    for name in available():
        assert re.search(rf"^\s*{name}\s+smoke\s", table, re.M)
    assert "total wall time" in table and "report:" in table


def test_executed_notebooks_hold_views_with_saved_state(reproduced):
    from workbench.reproduce.report import widget_views
    missing = []
    for name in available():
        nb = json.loads((reproduced["out"] / name / f"{name}.ipynb").read_text())
        views = [v for v in widget_views(nb) if v["saved"] and "AnyModel" in v["children"]]
        if not views:
            missing.append(name)
    assert not missing, f"executed notebooks without a widget view (plotly FigureWidget) with saved state: {missing}"


def test_report_html_is_self_contained(reproduced):
    out = reproduced["out"]
    page = (out / "report.html").read_text()
    assert "Plotly.newPlot" in page and len(page) > 3_000_000              # plotly.js inlined
    markup = re.sub(r"<script>.*?</script>", "<script></script>", page, flags=re.S)   # the page minus inline JS
    assert not re.search(r"<script[^>]+src=", markup) and not re.search(r"<link[^>]+href=", markup)
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", markup)
    for name in available():
        assert f"id='{name}'" in page
        assert f"href='{name}/{name}.ipynb'" in page and (out / name / f"{name}.ipynb").exists()


def test_report_html_opens_offline_in_chromium(reproduced, tmp_path):
    """Every headline figure draws from the file alone: no request leaves file://."""
    from pathlib import Path
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip(f"Chromium not found at {chromium} (apt-get install -y chromium, as .ci/run does)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = ctx.new_page()
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto((reproduced["out"] / "report.html").as_uri())
            from workbench.reproduce.report import collect
            n_figs = page.evaluate("document.querySelectorAll('.fig').length")
            assert n_figs == sum(e["figure"] is not None for e in collect(reproduced["out"])) > 0
            page.wait_for_function(f"document.querySelectorAll('.fig .main-svg').length >= {n_figs}", timeout=60_000)
        finally:
            ctx.close()
    assert [u for u in requests if not u.startswith(("file:", "data:", "blob:"))] == []


def test_report_html_rebuilds_from_the_folder(reproduced, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(reproduced["out"], out)
    (out / "report.html").unlink()
    assert main(["report", str(out), "--html"]) == 0
    page = (out / "report.html").read_text()
    for name in available():
        assert f"id='{name}'" in page
    assert str(out / "report.html") in capsys.readouterr().out


def test_update_papers_rewrites_only_the_measured_block(reproduced, tmp_path, capsys):
    papers = tmp_path / "papers"
    papers.mkdir()
    names = available()
    with_block, without = names[0], names[1]
    (papers / f"{with_block}.md").write_text(
        f"# {with_block}\n\nThe claim, by hand.\n\n<!-- measured:start -->\nstale numbers\n<!-- measured:end -->\n\n"
        "## Notes\n\nkeep me\n")
    (papers / f"{without}.md").write_text(f"# {without}\n\nNo block yet.\n")
    assert main(["report", str(reproduced["out"]), "--update-papers", "--papers-dir", str(papers)]) == 0
    lines = capsys.readouterr().out
    for name in names[2:]:
        assert f"{name}: no card" in lines
    for name in (with_block, without):
        card = (papers / f"{name}.md").read_text()
        s = json.loads((reproduced["out"] / name / "summary.json").read_text())
        block = card[card.index("<!-- measured:start -->"):card.index("<!-- measured:end -->")]
        assert "Generated by `python -m workbench report --update-papers`" in block
        assert f"| smoke | {s['metric']} |" in block
        assert f"{s['baseline']['name']} = " in block and f"{s['method']['name']} = " in block
        assert f"reproduce {name} --scale smoke" in block
        assert card.count("<!-- measured:start -->") == 1
    first = (papers / f"{with_block}.md").read_text()
    assert "stale numbers" not in first and first.startswith(f"# {with_block}\n\nThe claim, by hand.\n\n")
    assert first.endswith("<!-- measured:end -->\n\n## Notes\n\nkeep me\n")
    assert (papers / f"{without}.md").read_text().startswith(f"# {without}\n\nNo block yet.\n\n## Measured\n\n"
                                                             "<!-- measured:start -->")
    assert main(["report", str(reproduced["out"]), "--update-papers", "--papers-dir", str(papers)]) == 0
    assert "unchanged" in capsys.readouterr().out and (papers / f"{with_block}.md").read_text() == first


def _numbers(obj, path=""):
    """Every number in a summary, by dotted path, except the measured times (they follow the load)."""
    timed = ("wall", "time", "_s", "per_s", "clock", "seconds")
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_numbers(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_numbers(v, f"{path}[{i}]"))
        return out
    if isinstance(obj, (int, float)) and not isinstance(obj, bool) and not any(t in path for t in timed):
        return {path: obj}
    return {}


def test_same_seed_gives_the_same_numbers_whatever_else_runs(reproduced, tmp_path):
    """LiGO ran beside other notebooks (``reproduce all``, parallel processes); run it again alone while
    another process keeps a core busy: one compute thread per process makes every number (losses,
    FLOPs, FLOPs saved) the same, bit for bit; only measured times may differ."""
    import subprocess
    import sys
    hog = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 300: pass"])
    try:
        assert main(["reproduce", "ligo", "--scale", "smoke", "--out", str(tmp_path), "--threads", "1"]) == 0
    finally:
        hog.kill()
    first = _numbers(json.loads((reproduced["out"] / "ligo" / "summary.json").read_text()))
    again = _numbers(json.loads((tmp_path / "ligo" / "summary.json").read_text()))
    assert len(first) > 10 and first.keys() == again.keys()
    assert {k: v for k, v in first.items() if again[k] != v} == {}
