"""``reproduce all --scale smoke``, run once for real through the CLI, and what it leaves behind:
the table, report.html (self-contained, one section per notebook), executed notebooks holding
every figure as a PNG and under 2 MB; then ``report --html`` and ``report --update-papers`` on that output.

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
    # finished notebooks keep their runs' final weights, not the resume checkpoints
    assert not [p for p in out.rglob("checkpoints") if p.is_dir()]
    assert list(out.rglob("model.safetensors"))


def test_prune_checkpoints_deletes_only_run_checkpoints(tmp_path):
    """What ``reproduce`` deletes once a notebook finished: ``checkpoints/`` of run directories (those
    with a config.json), and nothing else (a user's own folder of that name stays)."""
    from workbench.reproduce.notebooks import prune_checkpoints
    run = tmp_path / "arm" / "run"
    (run / "checkpoints" / "step-00000010").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "model.safetensors").write_bytes(b"w" * 10)
    (run / "checkpoints" / "step-00000010" / "optimizer.pt").write_bytes(b"o" * 100)
    (run / "checkpoints" / "LATEST").write_text("step-00000010")
    other = tmp_path / "notes" / "checkpoints"
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("mine")
    assert prune_checkpoints(tmp_path) == 100 + len("step-00000010")
    assert not (run / "checkpoints").exists() and (run / "model.safetensors").exists()
    assert (other / "keep.txt").exists()
    assert prune_checkpoints(tmp_path) == 0


def test_table_has_claims_and_numbers(reproduced):
    table = reproduced["stdout"]
    assert table.splitlines()[0] == "at scale smoke:"
    header = table.splitlines()[1]
    for col in ("paper", "verdict", "metric", "baseline", "method", "ratio", "beaten by", "wall"):
        assert col in header
    for name in available():
        assert re.search(rf"^{name}\s+(holds|does not hold|inconclusive) \(1 run\)\s+\w+ [↓↑]\s", table, re.M)
        assert re.search(rf"^{name}: claim tested: ", table, re.M)      # the claims follow the table
    assert max(len(line) for line in table.splitlines() if not line.startswith("report:")) <= 120
    assert "total wall time" in table and "report:" in table
    for name in available():                         # summary.json records the verdict and the direction
        s = json.loads((reproduced["out"] / name / "summary.json").read_text())
        assert s["verdict"] in ("holds", "does not hold", "inconclusive") and s["better"] in ("lower", "higher")
        assert s["verdict_basis"].startswith("single run") and isinstance(s["beaten_by"], list)


def test_executed_notebooks_render_anywhere(reproduced):
    """Every figure of every executed notebook carries a PNG (nbconvert, code-hosting viewers), the
    widget views' saved state (plotly.js, 5 MB a view) is gone, and each notebook is under 2 MB."""
    from workbench.reproduce.report import static_figures, widget_views
    for name in available():
        path = reproduced["out"] / name / f"{name}.ipynb"
        nb = json.loads(path.read_text())
        png, total = static_figures(nb)
        assert total >= 1 and png == total, f"{name}: {png} of {total} figures with a PNG"
        assert not [v for v in widget_views(nb) if "AnyModel" in v["children"]], name
        assert path.stat().st_size < 2_000_000, f"{name}: {path.stat().st_size} bytes"


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
        assert f"| smoke | {s['verdict']} (1 run) | {s['metric']} ({s['better']} is better) |" in block
        assert f"Verdict: **{s['verdict']}** at scale `smoke`" in block
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
