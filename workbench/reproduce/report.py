"""The reproduction report (``OUT/report.html``) and the "Measured" sections of the paper cards.

``reproduce all`` leaves one folder per notebook: ``OUT/NAME/NAME.ipynb`` (executed, widget state
kept) and ``OUT/NAME/summary.json``, whose contract every notebook follows::

    {"paper": "rho_loss", "scale": "tiny",
     "claim": "what this notebook tests, in one sentence",
     "metric": "steps_to_target",
     "baseline": {"name": "uniform", "value": 120}, "method": {"name": "rho_loss", "value": 57},
     "extra": {...anything...}, "wall_s": 312.4, "higher_is_better": false,
     "paper_result": "what the paper itself reported (the recipe's PAPER_RESULT)"}

A study (``reproduce NAME --seeds 0-4``) leaves ``OUT/NAME/seed-S/`` folders of that shape and
``OUT/NAME/study.json`` (:mod:`workbench.reproduce.study`); the page then opens with the studies'
table, and a paper's section shows its study and its first complete seed's notebook.

:func:`write_report` turns such a folder into one self-contained HTML page: the comparison table,
then per paper its claim, numbers, headline figure and a link to its executed notebook. plotly.js
is inlined once (about 4.8 MB), so the page opens offline, from a file, anywhere.

**Which figure is the headline.** The figure output of the first code cell tagged ``headline``;
without such a tag, the notebook's first plotly figure. A view from :mod:`workbench.viz` displays a
static copy of its figure next to the live widget, so views count as figures too; ``reproduce``
keeps only those static copies (plotly JSON and a PNG) in the executed notebook
(:mod:`workbench.reproduce.compact`).

:func:`update_papers` rewrites the block between ``<!-- measured:start -->`` and
``<!-- measured:end -->`` in ``papers/<paper>.md`` from the newest ``summary.json`` of each paper
under a reproduce folder, and leaves the rest of the card as it was (a card without the markers
gets them appended at the end; a paper without a card is skipped and reported). A paper with a
``study.json`` gets a "Study over seeds" subsection in that block (and, without a summary of its
own, its block is written from the study's first complete seed).
"""
from __future__ import annotations

import datetime as dt
import html
import json
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..recipes import ORDER, repo_root
from ..runs import atomic_write
from .study import fmt_p, format_seeds, load_studies, representative_seed, reproduce_command, study_frame, study_row
from .table import ARROW, beaten_text, fmt_num, fmt_seconds, judged, paper_result, ratio, verdict_label

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
START, END = "<!-- measured:start -->", "<!-- measured:end -->"

def _read_nb(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _source(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def figures(nb: dict) -> list[tuple[int, dict]]:
    """``[(cell index, plotly figure dict)]`` of every plotly output of an executed notebook."""
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        for o in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            fig = (o.get("data") or {}).get(PLOTLY_MIME)
            if isinstance(fig, dict) and "data" in fig:
                out.append((i, fig))
    return out


def headline_figure(nb: dict) -> tuple[dict | None, str]:
    """(figure, how it was chosen): the first figure of a cell tagged ``headline``, else the first."""
    figs = figures(nb)
    for i, fig in figs:
        if "headline" in nb["cells"][i].get("metadata", {}).get("tags", []):
            return fig, "tagged headline"
    return (figs[0][1], "first figure") if figs else (None, "no figure")


def static_figures(nb: dict) -> tuple[int, int]:
    """(figure outputs with a PNG copy, figure outputs) of an executed notebook: a figure output holds
    a plotly figure, a PNG or a widget view."""
    png = total = 0
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = o.get("data") or {}
            if PLOTLY_MIME in data or "image/png" in data:
                total += 1
                png += "image/png" in data
    return png, total


def widget_views(nb: dict) -> list[dict]:
    """The widget views an executed notebook displays, and whether their state was saved.

    Returns one dict per displayed widget: ``model_id``, ``model`` (its ``_model_name``),
    ``saved`` (its state is in ``metadata.widgets``), ``children`` (models reachable from it whose
    state is saved, e.g. a slider and a plotly FigureWidget inside a VBox), ``cell``.
    """
    state = ((nb.get("metadata", {}).get("widgets") or {}).get(WIDGET_STATE) or {}).get("state", {})
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        for o in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            view = (o.get("data") or {}).get(WIDGET_VIEW)
            if not view:
                continue
            mid = view.get("model_id")
            reach, todo = set(), [mid]
            while todo:                                    # follow "IPY_MODEL_<id>" references
                m = todo.pop()
                if m in reach or m not in state:
                    continue
                reach.add(m)
                todo += [v[len("IPY_MODEL_"):] for v in _strings(state[m].get("state", {}))
                         if v.startswith("IPY_MODEL_")]
            models = sorted({state[m].get("model_name", "") for m in reach})
            out.append({"model_id": mid, "model": state.get(mid, {}).get("model_name"), "saved": mid in state,
                        "children": models, "cell": i})
    return out


def _view_label(view: dict) -> str:
    """'VBox: FigureWidget, FloatSlider' -- the widgets of a view, without layout and style models."""
    names = {"AnyModel": "plotly FigureWidget"}
    parts = sorted({names.get(c, c.removesuffix("Model")) for c in view["children"]
                    if c and c != view["model"] and not c.endswith(("LayoutModel", "StyleModel"))})
    return f"{(view['model'] or '?').removesuffix('Model')}: {', '.join(parts)}" if parts else str(view["model"])


def _strings(o: Any):
    if isinstance(o, str):
        yield o
    elif isinstance(o, dict):
        for v in o.values():
            yield from _strings(v)
    elif isinstance(o, list):
        for v in o:
            yield from _strings(v)


# ------------------------------------------------------------------------------------- report
def _num(v) -> str:
    return html.escape(fmt_num(v))


def _study_of(out: Path, name: str) -> dict | None:
    try:
        st = json.loads((out / name / "study.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return st if isinstance(st, dict) and st.get("paper") == name else None


def collect(out: str | Path, summaries: list[dict] | None = None, names: list[str] | None = None,
            prefer_study: bool = False) -> list[dict]:
    """One entry per notebook folder under ``out`` (or per given summary, or per given name): its
    summary, executed notebook path, headline figure, widget views and study (``NAME/study.json``,
    or None). A folder holding a study but no ``summary.json`` of its own (or any study, with
    ``prefer_study``) stands for its study's first complete seed: ``NAME/seed-S/``. Order: the
    given summaries' or names', else the registry's ORDER, then the rest alphabetically."""
    out = Path(out)
    seed_of: dict[str, int] = {}
    if summaries is None:
        if names is None:
            names = sorted({p.parent.name for p in out.glob("*/summary.json")} |
                           {p.parent.name for p in out.glob("*/*.ipynb") if p.stem == p.parent.name} |
                           {p.parent.name for p in out.glob("*/study.json")},
                           key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
        summaries = []
        for n in names:
            st = _study_of(out, n)
            seed = representative_seed(st) if st else None
            here = (out / n / "summary.json").exists()
            sp = out / n / f"seed-{seed}" / "summary.json" if seed is not None and (prefer_study or not here) \
                else out / n / "summary.json"
            if sp.parent != out / n:
                seed_of[n] = seed
            try:
                summaries.append(json.loads(sp.read_text()))
            except (OSError, json.JSONDecodeError):
                summaries.append({"paper": n, "failed": "no summary.json (the notebook did not finish)"})
    entries = []
    for s in summaries:
        name = s.get("paper") or "?"
        folder = out / name / f"seed-{seed_of[name]}" if name in seed_of else out / name
        nbp = folder / f"{name}.ipynb"
        nb = _read_nb(nbp) if nbp.exists() else None
        fig, how = headline_figure(nb) if nb else (None, "no notebook")
        entries.append({"name": name, "summary": s, "notebook": nbp if nbp.exists() else None,
                        "figure": fig, "figure_from": how, "views": widget_views(nb) if nb else [],
                        "static": static_figures(nb) if nb else (0, 0),
                        "study": _study_of(out, name), "seed": seed_of.get(name)})
    return entries


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:20px;margin:0 0 6px} .sub{color:#666;margin:0 0 18px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13.5px}
th,td{border-bottom:1px solid #e4e4e4;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;position:sticky;top:0} td.num{text-align:right;font-variant-numeric:tabular-nums}
section{background:#fff;border:1px solid #e4e4e4;border-radius:8px;padding:16px 18px;margin:22px 0}
.claim{margin:4px 0} .paper{color:#555;font-size:13.5px} .fail{color:#b00020;font-weight:600}
.fig{width:100%;min-height:380px} .v-holds{color:#0a7b34;font-weight:600}
.v-does-not-hold{color:#b00020;font-weight:600} .v-inconclusive{color:#8a6d00} .meta{color:#666;font-size:13px} code{background:#f3f3f3;padding:0 3px}
details pre{white-space:pre-wrap;font-size:12px;background:#f7f7f7;padding:8px;max-height:320px;overflow:auto}
"""


def _plotly_js() -> str:
    import plotly
    p = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return p.read_text(encoding="utf-8")


def _script_json(obj) -> str:
    """JSON safe to embed inside a <script> element."""
    return json.dumps(obj, allow_nan=False, default=str).replace("</", "<\\/").replace("<!--", "<\\!--")


def _clean(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    return o


def render_html(entries: list[dict], out: Path, title: str, total_wall_s: float | None = None) -> str:
    """The report page for :func:`collect`'s entries (links relative to ``out``)."""
    scales = sorted({str(e["summary"].get("scale")) for e in entries if e["summary"].get("scale")})
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    rows, sections, plots = [], [], []
    for k, e in enumerate(entries):
        s, name = e["summary"], e["name"]
        link = e["notebook"].relative_to(out).as_posix() if e["notebook"] else f"{name}/{name}.ipynb"
        nb_link = f"<a href='{html.escape(link)}'>{html.escape(link)}</a>" if e["notebook"] else "–"
        wall = s.get("notebook_wall_s", s.get("wall_s"))
        png, nfig = e.get("static", (0, 0))
        views = f"{png}/{nfig}" if nfig else "0"
        b, m, r = s.get("baseline") or {}, s.get("method") or {}, ratio(s)
        j = judged(s, e.get("study")) if not s.get("failed") else {}
        verdict = (f"<td class='verdict v-{html.escape(j['verdict'].replace(' ', '-'))}' "
                   f"title='{html.escape(j.get('verdict_basis', ''))}'>{html.escape(verdict_label(j))}</td>"
                   f"<td>{html.escape(beaten_text(j))}</td>") if j else ""
        direction = f" {ARROW.get(j.get('better'), '')} ({j.get('better')} is better)" if j else ""
        if s.get("failed"):
            rows.append(f"<tr><td><a href='#{name}'>{html.escape(name)}</a></td><td colspan=9 class=fail>FAILED: "
                        f"{html.escape(str(s['failed']))}</td><td class=num>{fmt_seconds(wall)}</td><td>{views}</td>"
                        f"<td>{nb_link}</td></tr>")
        else:
            rows.append(
                f"<tr><td><a href='#{name}'>{html.escape(name)}</a></td><td>{html.escape(str(s.get('scale', '')))}</td>"
                f"<td>{html.escape(str(s.get('claim', '')))}</td><td class=paper>{html.escape(paper_result(s))}</td>"
                f"{verdict}<td>{html.escape(str(s.get('metric', '')) + direction)}</td>"
                f"<td>{html.escape(str(b.get('name', '')))} = {_num(b.get('value'))}</td>"
                f"<td>{html.escape(str(m.get('name', '')))} = {_num(m.get('value'))}</td>"
                f"<td class=num>{_num(r) if r is not None else '–'}</td><td class=num>{fmt_seconds(wall)}</td>"
                f"<td>{views}</td><td>{nb_link}</td></tr>")
        fig_html = "<p class=meta>(no figure in this notebook)</p>"
        if e["figure"] is not None:
            fig_html = f"<div class=fig id='fig{k}'></div>"
            fig = _clean(e["figure"])
            plots.append(f"Plotly.newPlot('fig{k}', {_script_json(fig.get('data', []))}, "
                         f"{_script_json(fig.get('layout', {}))}, {{responsive: true, displaylogo: false}});")
        live = "; ".join(sorted({_view_label(v) for v in e["views"] if v["saved"]}))
        extra = json.dumps(_clean(s.get("extra", {})), indent=1, default=str)
        body = (f"<p class=fail>FAILED: {html.escape(str(s['failed']))}</p>" if s.get("failed") else
                f"<p class=claim><b>Claim tested:</b> {html.escape(str(s.get('claim', '')))}</p>"
                f"<p class=paper><b>The paper:</b> {html.escape(paper_result(s)) or '–'}</p>"
                f"<p><b>Verdict at scale {html.escape(str(s.get('scale', '')))}: {html.escape(j['verdict'])}</b> "
                f"({html.escape(j.get('verdict_basis', ''))}). Better than the method: "
                f"{html.escape(beaten_text(j))}.</p>"
                f"<p><b>{html.escape(str(s.get('metric', '')))}</b>{html.escape(direction)}: "
                f"{html.escape(str(b.get('name', '')))} = {_num(b.get('value'))}, "
                f"{html.escape(str(m.get('name', '')))} = {_num(m.get('value'))}"
                f" (ratio {_num(r) if r is not None else '–'}); wall time {fmt_seconds(wall)}</p>")
        if e.get("study"):
            body += _study_paragraph(e["study"], e.get("seed"))
        sections.append(
            f"<section id='{html.escape(name)}'><h2>{html.escape(name)}</h2>{body}{fig_html}"
            f"<p class=meta>executed notebook: {nb_link} · figures with a static (PNG) copy: {views}"
            f"{' · saved widget views: ' + html.escape(live) if live else ''}</p>"
            f"<details><summary>all numbers (summary.json extra)</summary><pre>{html.escape(extra)}</pre></details></section>")
    total = f" · total wall time {fmt_seconds(total_wall_s)}" if total_wall_s else ""
    head = ("<tr><th>paper</th><th>scale</th><th>claim tested</th><th>the paper reports</th><th>verdict</th>"
            "<th>beaten by</th><th>metric</th>"
            "<th>baseline</th><th>method</th><th>ratio</th><th>wall</th><th>figures</th><th>notebook</th></tr>")
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style><script>{_plotly_js()}</script></head><body><main>"
        f"<h1>{html.escape(title)}</h1><p class=sub>scale {', '.join(scales) or '–'} · generated {when}{total} · "
        f"ratio = method / baseline · verdict: one run holds when the method is ahead by more than 5 %, a study "
        f"over seeds when a paired t-test gives p &lt; 0.05 · beaten by: every arm better than the method · "
        f"figures = figures of the executed notebook with a PNG copy (shown by any viewer) / all</p>"
        f"{_study_table_html([e['study'] for e in entries if e.get('study')])}"
        f"<table>{head}{''.join(rows)}</table>{''.join(sections)}</main>"
        f"<script>{''.join(plots)}</script></body></html>")


def _study_table_html(studies: list[dict]) -> str:
    """The studies' table (one row per ``study.json``), above the per-run table; empty without studies."""
    if not studies:
        return ""
    rows = [study_row(st) for st in studies]
    cols = list(rows[0])
    num = {"seeds", "method - baseline", "wins", "p (paired t)", "p (Wilcoxon)"}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(
        f"<td{' class=num' if c in num else ''}>" + (f"<a href='#{html.escape(str(r[c]))}'>{html.escape(str(r[c]))}</a>"
                                                     if c == "paper" else html.escape(str(r[c]))) + "</td>"
        for c in cols) + "</tr>" for r in rows)
    return (f"<h2>Studies over seeds</h2><p class=sub>method - baseline paired by seed; wins = seeds where the "
            f"method is better in the metric's direction; p: two-sided paired t-test (scipy.stats.ttest_rel) and "
            f"Wilcoxon signed-rank (5 seeds or more)</p><table>{head and '<tr>' + head + '</tr>'}{body}</table>"
            f"<h2 style='margin-top:22px'>Runs</h2>")


def _never(pr: dict) -> str:
    """", never reached the target: method in seeds 2, 3" for a metric to a target (empty otherwise)."""
    nv = pr.get("never_reached") or {}
    parts = [f"{who} in seed(s) {', '.join(map(str, nv[key]))}" for who, key in
             (("the method", "method"), ("the baseline", "baseline"), ("neither arm", "both")) if nv.get(key)]
    return (" (never reached the target: " + "; ".join(parts) + f"; sign test p = {fmt_p(pr.get('sign_p'))})"
            if parts else "")


def _study_paragraph(st: dict, seed) -> str:
    pr = st.get("paired") or {}
    per = ", ".join(f"{p['seed']}: {_num(p.get('baseline'))} → {_num(p.get('method'))}" for p in st.get("per_seed", []))
    shown = f" The figure and numbers above are seed {seed}'s." if seed is not None else ""
    return (f"<p><b>Study over {len(st.get('seeds', []))} seeds</b> ({html.escape(str(st.get('metric')))}, "
            f"{'higher' if st.get('higher_is_better') else 'lower'} is better): method - baseline = "
            f"{_num(pr.get('mean_diff'))} ± {_num(pr.get('se'))} (mean ± se over {pr.get('n', 0)} seeds"
            f"{', ' + str(pr.get('n_excluded')) + ' excluded' if pr.get('n_excluded') else ''}); wins "
            f"{pr.get('wins', 0)}/{pr.get('n', 0) + (pr.get('n_censored') or 0)}{_never(pr)}; paired t-test p = "
            f"{fmt_p(pr.get('p_value'))}, Wilcoxon p = "
            f"{fmt_p(pr.get('wilcoxon_p'))}.{shown}</p><p class=meta>per seed (baseline → method): "
            f"{html.escape(per)}</p>")


def write_report(out: str | Path, summaries: list[dict] | None = None, total_wall_s: float | None = None,
                 title: str = "workbench: paper reproductions", names: list[str] | None = None) -> Path:
    """Write ``out/report.html`` from the notebook folders under ``out`` (or the given summaries,
    or the given notebook names, standing for their studies); returns its path."""
    out = Path(out)
    entries = collect(out, summaries, names=names, prefer_study=names is not None)
    if not entries:
        raise ConfigError(f"nothing to report in {out}: no <notebook>/summary.json, study.json or executed notebook")
    path = out / "report.html"
    atomic_write(path, render_html(entries, out, title, total_wall_s))
    return path


# ------------------------------------------------------------------------------------- paper cards
def latest_summaries(root: str | Path = "runs/reproduce") -> dict[str, tuple[Path, dict]]:
    """``{paper: (path, summary)}``: the newest (by modification time) of the ``root/*/summary.json``
    files of each paper; failed or paper-less summaries are ignored."""
    root = Path(root)
    cands = list(root.glob("*/summary.json"))
    best: dict[str, tuple[float, Path, dict]] = {}
    for p in cands:
        try:
            s = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if s.get("failed") or not s.get("paper"):
            continue
        t = p.stat().st_mtime
        if s["paper"] not in best or t > best[s["paper"]][0]:
            best[s["paper"]] = (t, p, s)
    return {k: (p, s) for k, (t, p, s) in best.items()}


def _flat(d: Any, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
    elif isinstance(d, (int, float, str, bool)) or d is None:
        out[prefix[:-1]] = d
    return out


def study_markdown(path: Path, st: dict, max_extras: int = 8) -> list[str]:
    """The lines of the "Study over seeds" subsection of a card's Measured block."""
    pr = st.get("paired") or {}
    md = lambda v: _num(v).replace("|", "\\|")
    seeds = format_seeds(list(st.get("seeds", [])))
    lines = ["### Study over seeds", "",
             f"From `{path.as_posix()}`: {len(st.get('seeds', []))} seeds ({seeds}) at scale `{st.get('scale')}`, "
             f"each notebook run in its own process. {st.get('metric')}: "
             f"{'higher' if st.get('higher_is_better') else 'lower'} is better; a win is a seed where "
             f"{st.get('method_name')} beats {st.get('baseline_name')}; p: two-sided paired t-test "
             f"(`scipy.stats.ttest_rel`) and Wilcoxon signed-rank (5 seeds or more).", "",
             "| metric | seeds | baseline mean | method mean | method - baseline (mean ± se) | wins | p (paired t) | p (Wilcoxon) |",
             "|---|---|---|---|---|---|---|---|",
             f"| {st.get('metric')} | {pr.get('n', 0)}"
             + (f" (+{pr['n_censored']} never reached)" if pr.get("n_censored") else "")
             + (f" (+{pr['n_excluded']} excluded)" if pr.get("n_excluded") else "")
             + f" | {st.get('baseline_name')} = {md(pr.get('baseline_mean'))} | {st.get('method_name')} = "
             f"{md(pr.get('method_mean'))} | {md(pr.get('mean_diff'))} ± {md(pr.get('se'))} | "
             f"{pr.get('wins', 0)}/{pr.get('n', 0) + (pr.get('n_censored') or 0)} | {fmt_p(pr.get('p_value'))} | "
             f"{fmt_p(pr.get('wilcoxon_p'))} |", ""]
    if pr.get("n_censored"):
        lines += [f"A metric to a target: a seed where an arm never reached it counts against that arm{_never(pr)}; "
                  f"the means and the t-test use the {pr.get('n', 0)} seed(s) where both reached it. Verdict: "
                  f"{st.get('verdict')} ({st.get('verdict_basis')}).", ""]
    per = st.get("per_seed", [])
    if per:
        lines += ["Per seed (baseline → method): " + "; ".join(
            f"{p['seed']}: {_num(p.get('baseline'))} → {_num(p.get('method'))}" + (" (failed)" if p.get("failed") else "")
            for p in per) + ".", ""]
    if pr.get("n_excluded"):
        lines += [f"Excluded from the paired statistics (an arm without a value, or a failed run): seed(s) "
                  f"{', '.join(str(x) for x in pr.get('excluded_seeds', []))}.", ""]
    ep = list((st.get("extras_paired") or {}).items())
    if ep:
        lines += ["Other numbers given per arm (method - baseline, mean ± se, wins, paired t p)"
                  + (f", first {max_extras} of {len(ep)}" if len(ep) > max_extras else "") + ":", ""]
        lines += [f"- `{k}`: {_num(v.get('mean_diff'))} ± {_num(v.get('se'))}, wins {v.get('wins', 0)}/{v.get('n', 0)}, "
                  f"p {fmt_p(v.get('p_value'))}" for k, v in ep[:max_extras]]
        lines.append("")
    cmd = st.get("reproduce") or f"python -m workbench reproduce {st.get('paper')} --scale {st.get('scale')} --seeds {seeds}"
    lines += [f"Reproduce the study: `{cmd}`", ""]
    return lines


def measured_markdown(path: Path, s: dict, max_details: int = 14, study: tuple[Path, dict] | None = None) -> str:
    """The Markdown of a card's Measured block for summary ``s`` (read from ``path``), with the
    "Study over seeds" subsection when ``study`` (its path and content) is given."""
    b, m = s.get("baseline") or {}, s.get("method") or {}
    r = ratio(s)
    when = dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    wall = s.get("notebook_wall_s", s.get("wall_s"))
    md = lambda v: _num(v).replace("|", "\\|")
    j = judged(s, study[1] if study else None)
    lines = [
        START,
        f"_Generated by `python -m workbench report --update-papers` from `{path.as_posix()}` ({when}, scale "
        f"`{s.get('scale')}`). Rerun it after a reproduction; edits inside this block are overwritten._",
        "",
        f"Claim tested: {s.get('claim', '')}",
        "",
        "| scale | verdict | metric | baseline | method | method / baseline | beaten by | wall time |",
        "|---|---|---|---|---|---|---|---|",
        f"| {s.get('scale')} | {verdict_label(j)} | {s.get('metric')} ({j['better']} is better) | {b.get('name')} = "
        f"{md(b.get('value'))} | {m.get('name')} = {md(m.get('value'))} | {md(r) if r is not None else '–'} | "
        f"{beaten_text(j).replace('|', '/')} | {fmt_seconds(wall)} |",
        "",
        f"Verdict: **{j['verdict']}** at scale `{s.get('scale')}` ({j.get('verdict_basis', '')}). One run holds when "
        "the method is ahead of the baseline by more than 5 %; a study over seeds when the paired t-test gives "
        "p < 0.05 (`workbench/recipes/base.py`).",
        "",
    ]
    pr = paper_result(s)
    if pr:
        lines += [f"The paper reports: {pr}.", ""]
    details = [(k, v) for k, v in _flat(s.get("extra", {})).items() if not (isinstance(v, str) and len(v) > 80)]
    if details:
        lines += ["Details (`extra` in summary.json" + (f", first {max_details} of {len(details)}" if len(details) > max_details else "") + "):", ""]
        lines += [f"- `{k}`: {_num(v)}" for k, v in details[:max_details]]
        lines.append("")
    if study is not None:
        lines += study_markdown(*study)
    lines += [f"Reproduce: `{reproduce_command(s.get('paper'), s.get('scale'), s.get('params'))}`", END]
    return "\n".join(lines)


def replace_block(card: str, block: str) -> str:
    """``card`` with its Measured block replaced by ``block``; a card without one gets a
    ``## Measured`` section with the block appended (the block itself has no heading, so it can
    also sit inside a Measured section written by hand, as in ``papers/ingenious.md``)."""
    i, j = card.find(START), card.find(END)
    if i >= 0 and j > i:
        return card[:i] + block + card[j + len(END):]
    if (i >= 0) != (j >= 0) or (i >= 0 and j < i):
        raise ConfigError(f"the card has a broken measured block: need {START} ... {END}")
    return card.rstrip("\n") + "\n\n## Measured\n\n" + block + "\n"


def update_papers(root: str | Path = "runs/reproduce", papers_dir: str | Path | None = None) -> list[str]:
    """Rewrite the Measured block of each ``papers/<paper>.md`` from the newest summary under
    ``root``; returns one line per paper saying what was done."""
    papers_dir = Path(papers_dir) if papers_dir else repo_root() / "papers"
    found = latest_summaries(root)
    studies = {st["paper"]: (p, st) for p, st in load_studies(root)}
    for paper, (p, st) in studies.items():     # a study without a summary of its own: its first seed's
        seed = representative_seed(st)
        sp = p.parent / f"seed-{seed}" / "summary.json"
        if paper not in found and seed is not None and sp.exists():
            try:
                found[paper] = (sp, json.loads(sp.read_text()))
            except (OSError, json.JSONDecodeError):
                pass
    if not found:
        raise ConfigError(f"no <paper>/summary.json or <paper>/study.json under {root}: run "
                          "`python -m workbench reproduce all` first")
    done = []
    for paper, (path, s) in sorted(found.items()):
        card = papers_dir / f"{paper}.md"
        if not card.exists():
            done.append(f"{paper}: no card {card}, skipped")
            continue
        old = card.read_text(encoding="utf-8")
        new = replace_block(old, measured_markdown(path, s, study=studies.get(paper)))
        if new != old:
            atomic_write(card, new)
        with_study = f" and {studies[paper][0]}" if paper in studies else ""
        done.append(f"{paper}: {'updated' if new != old else 'unchanged'} {card} from {path}{with_study} "
                    f"(scale {s.get('scale')})")
    return done


def study_table(root: str | Path):
    """The studies' table (a DataFrame, one row per ``root/*/study.json``), or None without studies."""
    studies = [st for _, st in load_studies(root)]
    return study_frame(studies) if studies else None
