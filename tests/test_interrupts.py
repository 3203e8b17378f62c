"""Interrupted and concurrent runs of ``fluxlab optimize | cmaes | train`` (policies/rundir.py).

A run stopped by SIGINT or SIGTERM (the real console script in a subprocess, signalled once its
log shows progress) leaves best.npz / model.zip loadable by ``rollout``, a summary and run.log
saying it was interrupted, and exits with 128 + the signal number; ``--resume`` continues it;
a second writer into the same ``--out`` is refused while the first holds it, and a killed
run's lock does not outlive it. Budgets are tiny (horizon 3).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from policies import cli, io
from policies.rundir import RunDirectory, RunDirectoryError

ROOT = Path(__file__).resolve().parents[1]


def _start(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "policies.cli", *args, "--no-progress"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 240.0) -> tuple[int, str]:
    """Send ``sig`` once ``ready()`` holds; returns (exit status, stderr)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before it was signalled: {out[-1500:]} {err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run never got ready to be signalled")
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _log_rows(path: Path) -> int:
    return max(len(path.read_text().splitlines()) - 1, 0) if path.is_file() else 0


def _interrupted_summary(out: Path, name: str) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["interrupted_by"] == name
    assert f"interrupted by {name}" in (out / "run.log").read_text()
    return summary


@pytest.mark.slow
def test_optimize_sigint_saves_the_best_and_resume_continues(tmp_path, runtime, capsys):
    out = tmp_path / "opt"
    args = ["optimize", "--task", "Pouring", "--horizon", "3", "--precision", "f64", "--no-video"]
    proc = _start(*args, "--iters", "1000", "--out", str(out))
    status, err = _signal_when(proc, lambda: _log_rows(out / "log.csv") >= 2, signal.SIGINT)
    assert status == 128 + signal.SIGINT, err[-3000:]
    assert "Traceback" not in err and "SIGINT received" in err
    summary = _interrupted_summary(out, "SIGINT")
    done = summary["iterations"]
    assert 2 <= done < 1000 and summary["stopped"] == "interrupted"
    best = io.load_trajectory(out / "best.npz")
    assert best.loss == pytest.approx(summary["best_loss"]) and best.actions.shape == (3, 3)

    # A rerun into the same --out is refused without --resume; --resume continues to --iters in all.
    assert cli.main([*args, "--iters", str(done + 2), "--out", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main([*args, "--iters", str(done + 2), "--out", str(out), "--no-progress", "--resume"]) == 0
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert [int(line.split(",")[0]) for line in rows[1:]] == list(range(done + 2))
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["interrupted"] is False and resumed["iterations"] == done + 2
    assert resumed["best_loss"] <= summary["best_loss"]
    assert "optimize resumed" in (out / "run.log").read_text()


@pytest.mark.slow
def test_cmaes_sigterm_saves_the_best(tmp_path):
    out = tmp_path / "cma"
    args = [
        "cmaes",
        "--task",
        "Pouring",
        "--horizon",
        "3",
        "--evals",
        "100000",
        "--popsize",
        "4",
        "--knots",
        "3",
        "--no-video",
    ]
    proc = _start(*args, "--out", str(out))
    status, err = _signal_when(proc, lambda: _log_rows(out / "log.csv") >= 1, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, err[-3000:]
    summary = _interrupted_summary(out, "SIGTERM")
    assert summary["generations"] >= 1 and summary["evals"] < 100000
    best = io.load_trajectory(out / "best.npz")
    assert best.loss == pytest.approx(summary["best_loss"])
    with np.load(out / "checkpoint.npz", allow_pickle=False) as data:
        assert data["mean"].shape == (3 * 3,)


@pytest.mark.slow
def test_train_sigint_leaves_models_rollout_loads(tmp_path, runtime, capsys):
    out = tmp_path / "ppo"
    args = ["train", "--task", "Pouring", "--horizon", "3", "--algo", "ppo", "--eval-freq", "3", "--video", ""]
    proc = _start(*args, "--timesteps", "1000000", "--out", str(out))
    status, err = _signal_when(proc, lambda: (out / "best_model.zip").is_file(), signal.SIGINT)
    assert status == 128 + signal.SIGINT, err[-3000:]
    summary = _interrupted_summary(out, "SIGINT")
    assert 0 < summary["timesteps"] < 1000000 and summary["eval_final_loss"] == []
    for name in ("model.zip", "best_model.zip"):
        model, meta = io.load_model(out / name)
        assert meta["spec"].overrides == {"horizon": 3} and meta["algo"] == "ppo"
    argv = ["rollout", "--policy", str(out / "best_model.zip"), "--precision", "f64", "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "final loss" in capsys.readouterr().out


def test_a_second_writer_is_refused_while_the_first_holds_the_directory(tmp_path, capsys):
    out = tmp_path / "run"
    with RunDirectory(out):
        argv = ["optimize", "--task", "Pouring", "--horizon", "3", "--iters", "1", "--out", str(out)]
        assert cli.main([*argv, "--no-progress"]) == 2
        assert "in use by another fluxlab run" in capsys.readouterr().err
        with pytest.raises(RunDirectoryError, match="in use"):
            RunDirectory(out, resume=True).open()
    with pytest.raises(RunDirectoryError, match="holds no run to resume"):
        RunDirectory(out, resume=True).open()
    (out / "summary.json").write_text("{}")
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        RunDirectory(out).open()
    with RunDirectory(out, overwrite=True):
        assert not (out / "summary.json").exists()


def test_a_killed_run_does_not_leave_a_stale_lock(tmp_path):
    out = tmp_path / "run"
    code = (
        "import sys, time; from policies.rundir import RunDirectory; "
        f"RunDirectory({str(out)!r}).open(); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirectoryError, match=f"pid {proc.pid}"):
        RunDirectory(out).open()
    proc.kill()
    proc.wait(timeout=30)
    with RunDirectory(out):
        pass


def test_unwritable_outputs_fail_before_simulating(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    start = time.perf_counter()
    argv = ["cmaes", "--task", "Pouring", "--evals", "2", "--out", str(blocker / "run"), "--no-progress"]
    assert cli.main(argv) == 2
    assert "cannot create the output directory" in capsys.readouterr().err
    argv = ["rollout", "--task", "Pouring", "--policy", "random", "--video", str(blocker / "a.mp4"), "--no-progress"]
    assert cli.main(argv) == 2
    assert "--video" in capsys.readouterr().err
    assert time.perf_counter() - start < 20.0
