"""The README's "Bring your own model and data" example, run exactly as written, in an empty folder."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split("<!-- example:own-model -->", 1)[1].split("<!-- example:end -->", 1)[0]
    return re.findall(r"```(python|bash)\n(.*?)```", body, flags=re.S)


def test_readme_own_model_example_runs_as_written(tmp_path):
    blocks = _blocks()
    assert [lang for lang, _ in blocks] == ["python", "bash", "python"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "WORKBENCH_CACHE": os.environ.get("WORKBENCH_CACHE", str(ROOT / "runs" / "cache")),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    outs = []
    for lang, code in blocks:
        cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{lang} block failed:\n{code}\n{r.stderr[-3000:]}"
        outs.append(r.stdout)
    assert (tmp_path / "runs" / "mine" / "hf" / "config.json").exists()
    assert re.search(r"torch\.Size\(\[1, \d+, \d+\]\)", outs[-1]), outs[-1]
