"""``make gpu-check``: on a machine without CUDA it says so in one line and exits 0; the check list
covers every notebook's recipe, the benches and both distributed launchers."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.bench import gpu_check
from workbench.recipes import available

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the checks would run")
def test_without_cuda_it_says_so_and_exits_0():
    p = subprocess.run([sys.executable, "-m", "workbench.bench.gpu_check"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: skipped, no CUDA device here")


def test_the_checks_cover_every_recipe_and_launcher(capsys):
    assert gpu_check.main(["--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()]
    assert {f"smoke_{n}" for n in available()} <= set(names)
    assert {"fl_dense_20k", "fl_knn_100k", "train_bf16_bert_small", "probe_cuda", "ddp_torchrun",
            "deepspeed"} <= set(names)
    assert "gpu-check:" in (ROOT / "Makefile").read_text()


def test_a_failing_check_is_reported_with_its_last_lines(tmp_path):
    with open(tmp_path / "log", "w") as log:
        r = gpu_check.run_check("boom", [sys.executable, "-c", "import sys; print('partial'); sys.exit('it broke')"],
                                30, log)
        ok = gpu_check.run_check("fine", [sys.executable, "-c", "print('{\"bench\": \"x\", \"v\": 1}')"], 30, log)
    assert r["ok"] is False and "it broke" in r["error"]
    assert ok["ok"] is True and ok["v"] == 1
