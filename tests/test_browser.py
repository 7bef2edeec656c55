"""The views in a real browser: JupyterLab on 127.0.0.1 (with a token), Chromium driven by Playwright.

Two notebooks are opened, run with "Run All Cells" and checked:

* a notebook holding the three workbench views (curves, subset composition, influence) over the
  small real runs of ``test_viz.build_viz_data``: every view renders its plot and its controls;
  clicking the x-axis toggle and dragging each slider changes what the plot shows;
* a paper notebook (``$WORKBENCH_BROWSER_NOTEBOOK``; default ``ingenious``, else ``rho_loss``, else
  ``quickstart``, whichever exists first),
  with its smoke parameters injected by papermill: it runs without an error, its widget views
  render, and dragging a view's slider changes that view's plot.

Needs Debian's ``chromium`` (``/usr/bin/chromium``; ``.ci/run`` installs it) and the ``playwright``
Python package (pinned in requirements.txt). Playwright's own browser download is never used:
Chromium is launched from ``executable_path`` with networking extras switched off and a fresh
profile. Without Chromium or Playwright the tests skip and say why.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_S = 900

if not Path(CHROMIUM).exists():
    pytest.skip(f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install -y chromium, as "
                f".ci/run does) or point WORKBENCH_CHROMIUM at a Chromium binary", allow_module_level=True)
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    pytest.skip("the playwright Python package is not installed (pip install -r requirements.txt); "
                "never run `playwright install`: the test uses the system Chromium", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):        # not listening yet
        return 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with a random token, rooted in a temporary folder."""
    root = tmp_path_factory.mktemp("lab")
    home = tmp_path_factory.mktemp("lab-home")
    port, token = _free_port(), secrets.token_hex(24)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE"}
    env.setdefault("WORKBENCH_CACHE", str(Path(__file__).resolve().parents[1] / "runs" / "cache"))
    # user settings: render every cell (JupyterLab 4 only renders cells in view by default, so views
    # further down would not exist in the DOM), and do not offer to fetch news from the internet
    settings = home / "settings"
    for ext, name, value in (("notebook-extension", "tracker", {"windowingMode": "none"}),
                             ("apputils-extension", "notification", {"fetchNews": "false"})):
        (settings / f"@jupyterlab/{ext}").mkdir(parents=True, exist_ok=True)
        (settings / f"@jupyterlab/{ext}" / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", "--ServerApp.allow_root=True", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(root))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while _get(f"{base}/api/status?token={token}") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start:\n{(home / 'lab.log').read_text()[-3000:]}")
            time.sleep(1)
        yield {"base": base, "token": token, "root": root, "log": home / "lab.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            yield ctx
        finally:
            ctx.close()


# ------------------------------------------------------------------------------------------- helpers
def open_and_run(ctx, lab, name: str):
    """Open ``name`` in JupyterLab, wait for its kernel, Run All Cells, wait until every code cell
    ran; returns the page. Fails with the first error output if a cell raised."""
    page = ctx.new_page()
    page.goto(f"{lab['base']}/lab/tree/{name}?token={lab['token']}")
    page.wait_for_function("""(name) => {
        const app = window.jupyterapp; const w = app && app.shell.currentWidget;
        return w && w.context && w.context.path === name && w.sessionContext.session &&
               w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle';
    }""", arg=name, timeout=180_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function("""() => {
        const w = window.jupyterapp.shell.currentWidget;
        const cells = w.content.widgets.filter(c => c.model.type === 'code');
        const err = cells.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'));
        return err || (w.sessionContext.session.kernel.status === 'idle' && cells.every(c =>
            c.model.executionCount !== null && c.node.querySelector('.jp-InputPrompt').textContent.indexOf('*') < 0));
    }""", timeout=RUN_TIMEOUT_S * 1000, polling=1000)
    errors = page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets
        .filter(c => c.model.type === 'code').flatMap(c => c.model.outputs.toJSON())
        .filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)""")
    assert not errors, f"{name}: a cell raised {errors[0]}"
    return page


def wait_plots(page, n: int, timeout_ms: int = 180_000) -> None:
    """Wait until ``n`` plotly plots inside widget boxes have drawn their axes."""
    page.wait_for_function("""(n) => Array.from(document.querySelectorAll('.jp-OutputArea-output .widget-vbox .js-plotly-plot'))
        .filter(p => p.querySelector('.main-svg .xtitle')).length >= n""", arg=n, timeout=timeout_ms)


def plot_signature(box) -> str:
    """What a view's plot shows: its titles and the geometry of its traces."""
    return box.evaluate("""b => Array.from(b.querySelectorAll('.js-plotly-plot')).map(p =>
        Array.from(p.querySelectorAll('.gtitle, .xtitle, .annotation-text, path.js-line, path.point, .bars path'))
             .map(e => e.textContent + (e.getAttribute('d') || '')).join('|')).join('#')""")


def drag_to(page, slider, end: str) -> None:
    """Drag a slider's handle with the mouse past the ``"start"`` or ``"end"`` of its track."""
    slider.scroll_into_view_if_needed()
    handle, track = slider.locator(".noUi-handle").first, slider.locator(".noUi-target").first
    hb, tb = handle.bounding_box(), track.bounding_box()
    y = hb["y"] + hb["height"] / 2
    page.mouse.move(hb["x"] + hb["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(tb["x"] - 20 if end == "start" else tb["x"] + tb["width"] + 20, y, steps=12)
    page.mouse.up()


def view_boxes(page):
    """Widget boxes that hold a plotly plot and a slider (one per view)."""
    boxes = page.locator(".jp-OutputArea-output .widget-vbox").filter(has=page.locator(".js-plotly-plot")) \
        .filter(has=page.locator(".widget-slider"))
    outer = []
    for i in range(boxes.count()):
        b = boxes.nth(i)
        if not b.evaluate("b => !!b.parentElement.closest('.widget-vbox')"):   # outermost only
            outer.append(b)
    return outer


def wait_text(page, box, selector: str, text: str, timeout_ms: int = 60_000) -> None:
    """Wait until an element matching ``selector`` inside ``box`` shows ``text`` (re-queried each
    time: plotly replaces its title elements when it redraws)."""
    page.wait_for_function("([b, sel, text]) => Array.from(b.querySelectorAll(sel)).some(e => e.textContent.includes(text))",
                           arg=[box.element_handle(), selector, text], timeout=timeout_ms)


def wait_changed(box, before: str, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while plot_signature(box) == before:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: the plot did not change")
        time.sleep(0.5)


# ------------------------------------------------------------------------------------------- tests
def test_server_wants_the_token(lab):
    assert _get(f"{lab['base']}/api/contents") == 403
    assert _get(f"{lab['base']}/api/contents?token={lab['token']}") == 200


def test_workbench_views_render_and_respond(lab, browser, tmp_path_factory):
    from test_viz import build_viz_data, views_notebook
    data = build_viz_data(tmp_path_factory.getbasetemp() / "viz-data")
    views_notebook(data, lab["root"] / "views.ipynb")
    page = open_and_run(browser, lab, "views.ipynb")
    with screenshot_on_failure(page, tmp_path_factory.mktemp("shots") / "views.png"):
        check_views(page)
    page.close()


@contextlib.contextmanager
def screenshot_on_failure(page, path: Path):
    try:
        yield
    except Exception as e:
        page.screenshot(path=str(path), full_page=True)
        raise AssertionError(f"{e}\n(screenshot: {path})") from e


def check_views(page) -> None:
    wait_plots(page, 3)
    boxes = view_boxes(page)
    assert len(boxes) == 3, f"expected 3 views with a plot and a slider, found {len(boxes)}"
    curves, composition, influence = boxes

    # curves: the x-axis toggle, then the smoothing slider
    assert "optimizer step" in curves.locator(".xtitle").first.text_content()
    curves.locator(".widget-toggle-button", has_text="tokens").click()
    wait_text(page, curves, ".xtitle", "tokens seen")
    curves.locator(".widget-toggle-button", has_text="wall time").click()
    wait_text(page, curves, ".xtitle", "wall time")
    before = plot_signature(curves)
    drag_to(page, curves.locator(".widget-slider").first, "end")         # smoothing 0 -> 0.98
    wait_changed(curves, before, "curves: smoothing slider")

    # composition: the subset slider to its first position (the random subset)
    before = plot_signature(composition)
    assert "embedding map, ingenious #2" in before
    drag_to(page, composition.locator(".widget-slider").first, "start")
    wait_changed(composition, before, "composition: subset slider")
    assert "embedding map, random" in plot_signature(composition)
    # composition: picking a domain lists its examples
    composition.locator("select").first.select_option(label="papermill")
    wait_text(page, composition, ".widget-html", "papermill in random")

    # influence: temperature to its minimum -> the deterministic top-k
    before = plot_signature(influence)
    drag_to(page, influence.locator(".widget-slider").first, "start")
    wait_changed(influence, before, "influence: temperature slider")
    assert "100% of them from the top-k" in plot_signature(influence)


def _paper_notebook() -> str:
    from workbench.recipes import available
    want = os.environ.get("WORKBENCH_BROWSER_NOTEBOOK")
    if want:
        return want
    return next((n for n in ("ingenious", "rho_loss", "quickstart") if n in available()))


def test_paper_notebook_runs_in_jupyterlab(lab, browser):
    import papermill as pm

    from workbench.recipes import notebook_path
    from workbench.reproduce import resolve_params
    name = _paper_notebook()
    out_dir = lab["root"] / f"{name}-out"
    params = resolve_params(name, "smoke", {}, out_dir)
    pm.execute_notebook(str(notebook_path(name)), str(lab["root"] / f"{name}.ipynb"), parameters=params,
                        prepare_only=True, kernel_name="python3")
    page = open_and_run(browser, lab, f"{name}.ipynb")
    assert (out_dir / "summary.json").exists(), f"{name} ran but wrote no summary.json"
    with screenshot_on_failure(page, lab["root"].parent / f"{name}-failure.png"):
        wait_plots(page, 1)
        boxes = view_boxes(page)
        assert boxes, f"{name}: no widget view with a plot and a slider rendered"
        box = boxes[0]
        before = plot_signature(box)
        slider = box.locator(".widget-slider").first
        drag_to(page, slider, "start")
        try:
            wait_changed(box, before, f"{name}: first view's slider", timeout_s=30)
        except AssertionError:        # the slider may have started at its left end: go right instead
            drag_to(page, slider, "end")
            wait_changed(box, before, f"{name}: first view's slider")
    page.close()


def test_nbconvert_html_of_an_executed_notebook_shows_every_figure(browser, tmp_path_factory):
    """An executed notebook as ``reproduce`` leaves it (:mod:`workbench.reproduce.compact`): nbconvert's
    HTML, opened offline in Chromium, shows one rendered image per figure (three widget views and a
    plain plotly figure), and the file holds no plotly.js bundle."""
    import nbformat as nbf
    import papermill as pm
    from nbconvert import HTMLExporter
    from test_viz import build_viz_data, views_notebook

    from workbench.reproduce.compact import compact_notebook
    from workbench.reproduce.report import static_figures
    tmp = tmp_path_factory.mktemp("nbconvert")
    data = build_viz_data(tmp_path_factory.getbasetemp() / "viz-data")
    src = views_notebook(data, tmp / "views.ipynb")
    nb = nbf.read(src, as_version=4)
    nb.cells.append(nbf.v4.new_code_cell("import plotly.graph_objects as go\nimport workbench.viz\n"
                                         "go.Figure(go.Scatter(y=[3, 1, 2], name='plain'))"))
    nbf.write(nb, src)
    out = tmp / "executed.ipynb"
    pm.execute_notebook(str(src), str(out), kernel_name="python3", progress_bar=False)
    counts = compact_notebook(out)
    assert counts["figures"] == 4 and counts["views_made_static"] == 3, counts
    assert counts["bytes_after"] < 2_000_000 and "plotly.min.js" not in out.read_text()
    assert static_figures(json.loads(out.read_text())) == (4, 4)
    body, _ = HTMLExporter().from_filename(str(out))
    page_path = tmp / "executed.html"
    page_path.write_text(body)
    page = browser.new_page()
    try:
        page.route("http*://**", lambda route: route.abort())          # offline: nothing from a CDN
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        shown = page.evaluate("""() => Array.from(document.querySelectorAll('.jp-OutputArea-output img, '
            + '.jp-OutputArea-output svg')).filter(e => (e.naturalWidth || e.getBoundingClientRect().width) > 100).length""")
    finally:
        page.close()
    assert shown == 4, f"{shown} rendered figures in nbconvert's HTML, expected 4"
