"""One writer per run directory: a Run opened for writing holds an flock on RUN/.lock (real processes, no mocks)."""
import fcntl
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import workbench as wb
from workbench.errors import RunError

ROOT = Path(__file__).resolve().parents[1]

_HOLDER = textwrap.dedent("""
    import sys, time
    from workbench.runs import Run
    run = Run(sys.argv[1], {"holder": True}, resume=sys.argv[2] == "resume")
    run.log({"step": 1, "loss": 1.0})
    print("ready", flush=True)
    time.sleep(120)
""")


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _start_holder(d: Path, resume: bool = False) -> subprocess.Popen:
    """A child process that opens ``d`` for writing and keeps the Run while it sleeps."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(d), "resume" if resume else "new"], env=_env(),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"holder did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def _locked(d: Path) -> bool:
    """Whether some open file description holds the lock of ``d`` (a fresh one of ours conflicts with any)."""
    fd = os.open(d / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)              # releases the probe's own lock, if it got it
    return False


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    d = tmp_path / "run"
    holder = _start_holder(d)
    try:
        info = json.loads((d / ".lock").read_text())
        assert info["pid"] == holder.pid and info["host"] == socket.gethostname()
        for open_for_writing in (lambda: wb.Run(d, resume=True), lambda: wb.Run(d, overwrite=True),
                                 lambda: wb.Run.open(d, write=True)):
            with pytest.raises(RunError) as e:
                open_for_writing()
            msg = str(e.value)
            assert len(msg.splitlines()) == 1
            assert msg == (f"run {d} is in use by process {holder.pid} (host {socket.gethostname()}); "
                           f"wait for it to finish or stop it")
        with pytest.raises(RunError, match="already holds a run"):       # a new run there: refused as before
            wb.Run(d)
        # readers take no lock: the holder's run reads fine while it is being written
        reader = wb.Run.open(d)
        assert reader.metrics() == [{"step": 1, "loss": 1.0}] and reader.config["params"] == {"holder": True}
        with pytest.raises(RunError, match="opened for reading"):
            reader.log({"step": 2})
        assert len(wb.runs.table(tmp_path)) == 0
        assert _locked(d) and holder.poll() is None
        assert [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] == [{"step": 1, "loss": 1.0}]
    finally:
        _kill(holder)


def test_sigkilled_holder_leaves_the_run_resumable(tmp_path):
    d = tmp_path / "run"
    first = _start_holder(d)
    _kill(first)
    assert json.loads((d / ".lock").read_text())["pid"] == first.pid     # stale content, but no lock: no cleanup
    run = wb.Run(d, resume=True)
    assert run.resumed and run.writable
    assert json.loads((d / ".lock").read_text())["pid"] == os.getpid()
    run.log({"step": 2})
    run.close()
    assert not _locked(d)
    second = _start_holder(d, resume=True)                           # another process can take it over now
    try:
        with pytest.raises(RunError, match=f"in use by process {second.pid} "):
            wb.Run(d, resume=True)
    finally:
        _kill(second)
    with wb.Run(d, resume=True) as run:
        assert [r["step"] for r in run.metrics()] == [1, 2, 1]
    assert not _locked(d)


def test_close_context_manager_and_reopening_in_one_process(tmp_path):
    d = tmp_path / "run"
    run = wb.Run(d, {"x": 1})
    assert _locked(d) and run.writable
    run.close()
    run.close()                                                      # idempotent
    assert not _locked(d) and not run.writable
    assert (d / ".lock").read_text() == ""                           # no stale pid once released
    with pytest.raises(RunError, match="was closed"):
        run.log({"step": 1})
    assert run.metrics() == [] and run.config["params"] == {"x": 1}  # reading a closed run still works
    with wb.Run(d, resume=True) as again:
        again.log({"step": 1})
        assert _locked(d)
    assert not _locked(d)
    assert wb.Run.open(d).metrics() == [{"step": 1}]


def test_run_objects_of_one_process_share_the_lock(tmp_path):
    """A notebook re-running a cell, or a test resuming while the crashed Run object is still referenced: a
    second Run object of the same process on the same directory works, and the lock lives while either does."""
    d = tmp_path / "run"
    a = wb.Run(d, {"x": 1})
    a.log({"step": 1})
    b = wb.Run(d, resume=True)                      # same process: no conflict with `a`
    (tmp_path / "link").symlink_to(d)
    c = wb.Run(tmp_path / "link", resume=True)      # another name of the same folder
    b.log({"step": 2})
    a.close()
    assert _locked(d)                               # b and c still hold it
    b.log({"step": 3})
    del b                                           # an unreferenced Run is released by the garbage collector
    gc.collect()
    assert _locked(d)
    c.close()
    assert not _locked(d)
    # the older object is dropped when a name is rebound (a notebook cell run twice)
    run = wb.Run(d, resume=True)
    run = wb.Run(d, resume=True)
    assert _locked(d)
    del run
    gc.collect()
    assert not _locked(d)


def test_discard_releases_and_removes_the_lock(tmp_path):
    d = tmp_path / "new"
    run = wb.Run(d, {"x": 1})
    run.discard()
    assert not d.exists()                           # the lock file went too: the same --out is reusable
    wb.Run(d, {"x": 2}).close()
    resumed = wb.Run(d, resume=True)
    resumed.discard()                               # a resumed run is kept, but released
    assert (d / "config.json").exists() and not _locked(d)
    with pytest.raises(RunError, match="was closed"):
        resumed.write_summary({})


def test_forked_child_does_not_keep_the_lock(tmp_path):
    """A child forked while a run is open (e.g. a data-loader worker) does not hold the lock after its parent
    lets go (or dies)."""
    d = tmp_path / "run"
    run = wb.Run(d, {"x": 1})
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child (its at-fork hooks have run): outlive the parent's Run
        try:
            os.write(w, b"x")
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"x"
        os.close(r)
        assert _locked(d)
        run.close()
        assert not _locked(d)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_cli_resume_of_a_running_run_is_refused(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "workbench", "train", "--no-progress"]
    first = subprocess.Popen(cmd + ["--out", str(out), "-p", "model=bert-tiny", "-p", "corpus=pydocs:datasets",
                                    "-p", "max_steps=100000", "-p", "seq_len=32", "-p", "batch_size=4",
                                    "-p", "vocab_size=512", "-p", "eval_every=0", "-p", "checkpoint_every=5"],
                             env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not ((out / "checkpoints" / "LATEST").exists() or first.poll() is not None):
            assert time.time() - t0 < 120, "the first run wrote no checkpoint in 120 s"
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read()[-3000:]
        second = subprocess.run(cmd + ["--resume", str(out)], env=_env(), cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert first.poll() is None                 # still training while the second one was refused
        assert second.returncode == 2, second.stderr[-3000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0] == (f"error: run {out} is in use by process {first.pid} (host {socket.gethostname()}); "
                            f"wait for it to finish or stop it")
        assert second.stdout == ""
        steps = [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()[:-1])
                 if "loss" in r]                    # (the last line may be being written)
        assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 5    # none repeated: one writer
    finally:
        _kill(first)
    # the killed run is resumable at once (no stale lock): a resume gets past the lock and on to training
    resumed = wb.Run(out, resume=True)
    assert resumed.resumed
    resumed.close()
