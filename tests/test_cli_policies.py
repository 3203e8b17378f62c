"""Smoke tests of ``fluxlab rollout / optimize / cmaes / train`` (CleanRL style: the real console
script in a subprocess, tiny budgets, f32 runtime, every run's outputs checked: log, plot, video,
checkpoint), plus in-process checks of argument and file errors.

Each subprocess pays Taichi start-up and the kernel-cache load (~5-10 s). f32 on 2 threads is not
bitwise deterministic across processes (atomic scatter order), so cross-process loss comparisons
use rtol 1e-4; within one f64 process the replay relation is exact (tests/test_policies.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from policies import cli, io

ROOT = Path(__file__).resolve().parents[1]


def _fluxlab(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "policies.cli", *args, "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _frames(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path) as reader:
        return [np.asarray(f)[..., :3] for f in reader.iter_data()]


def _check_image(path: Path) -> None:
    image = imageio.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 5.0


def _check_log(run: Path, columns: list[str], rows: int) -> list[dict]:
    lines = (run / "log.csv").read_text().strip().splitlines()
    assert lines[0].split(",") == columns
    assert len(lines) == rows + 1
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard events"
    return [dict(zip(columns, map(float, line.split(",")), strict=True)) for line in lines[1:]]


@pytest.mark.slow
def test_optimize_then_rollout_replays_the_recorded_loss(tmp_path):
    run = tmp_path / "opt"
    args = "--task FluxLab/Pouring-v0 --horizon 6 --iters 3 --lr 0.5 --seed 2 --size 64 --video-format gif"
    proc = _fluxlab("optimize", *args.split(), "--out", str(run))
    assert "median" in proc.stdout
    rows = _check_log(run, ["iter", "loss", "best_loss", "grad_norm", "lr", "iter_s", "time_s"], 3)
    summary = json.loads((run / "summary.json").read_text())
    # 3 Adam steps of lr 0.5 on tanh-squashed per-step actions: >= 5 % lower than zero actions.
    assert summary["best_loss"] <= 0.95 * summary["initial_loss"], summary
    assert summary["best_loss"] == np.nanmin([r["loss"] for r in rows])
    assert summary["replay_loss"] == pytest.approx(summary["best_loss"], rel=1e-4)
    _check_image(run / "loss.png")
    frames = _frames(run / "best.gif")
    assert len(frames) == 7 and frames[0].shape == (64, 64, 3) and frames[-1].std() > 5.0
    saved = io.load_trajectory(run / "best.npz")
    assert saved.actions.shape == (6, 3) and saved.spec.seed == 2 and saved.spec.overrides == {"horizon": 6}
    assert summary["task"] == saved.spec.task == "Pouring" and summary["precision"] == saved.spec.precision == "f32"
    assert saved.loss == summary["best_loss"] and saved.metadata["param"] == "per-step"

    video = tmp_path / "replay.mp4"
    proc = _fluxlab("rollout", "--policy", str(run / "best.npz"), "--video", str(video), "--size", "64")
    diff = float(re.search(r"replay - recorded = (\S+)\)", proc.stdout).group(1))
    assert abs(diff) <= 1e-4 * saved.loss, proc.stdout
    assert len(_frames(video)) == 7


def test_rollout_scripted_policy_writes_a_video(tmp_path):
    video = tmp_path / "scripted.gif"
    proc = _fluxlab("rollout", "--task", "Pouring", "--policy", "scripted", "--horizon", "5", "--video", str(video))
    assert str(video) in proc.stdout
    match = re.search(r"total reward (\S+), final loss (\S+), success (True|False)", proc.stdout)
    assert match, proc.stdout
    frames = _frames(video)
    assert len(frames) == 6 and frames[-1].std() > 5.0
    assert not np.array_equal(frames[0], frames[-1])  # the cup moved


def test_rollout_random_policy_in_process(runtime, capsys):
    code = cli.main(["rollout", "--task", "Pouring", "--policy", "random", "--steps", "2", "--precision", "f64"])
    out = capsys.readouterr().out
    assert code == 0
    assert "2 steps" in out and "final loss" in out


@pytest.mark.slow
def test_cmaes_cli_writes_its_outputs(tmp_path):
    run = tmp_path / "es"
    args = "--task Pouring --horizon 4 --evals 9 --popsize 4 --knots 2 --size 48 --video-format gif"
    _fluxlab("cmaes", *args.split(), "--out", str(run))
    rows = _check_log(run, ["evals", "generation", "loss", "mean_loss", "best_loss", "sigma", "time_s"], 2)
    assert [r["evals"] for r in rows] == [5, 9]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_loss"] <= summary["initial_loss"]
    assert summary["replay_loss"] == pytest.approx(summary["best_loss"], rel=1e-4)
    _check_image(run / "loss.png")
    assert len(_frames(run / "best.gif")) == 5
    saved = io.load_trajectory(run / "best.npz")
    assert saved.metadata == {
        "param": "linear",
        "knots": 2,
        "squash": "tanh",
        "evals": 9,
        "generations": 2,
        "sigma0": 0.5,
    }
    assert saved.spec.to_dict() == {
        "task": "Pouring",
        "preset": "cpu",
        "overrides": {"horizon": 4},
        "precision": "f32",
        "seed": 0,
    }


def _check_training_run(run: Path, algo: str, timesteps: int) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["algo"] == algo and summary["timesteps"] >= timesteps
    assert np.isfinite(summary["eval_final_loss"][0])
    assert (run / "train.monitor.csv").is_file() and (run / "evaluations.npz").is_file()
    assert list((run / "tb").rglob("events.out.tfevents.*")), "no TensorBoard events"
    _check_image(run / "learning_curve.png")
    assert len(_frames(run / "eval.gif")) == 4  # reset + horizon 3
    model, meta = io.load_model(run / "model.zip")
    assert meta["spec"].task == "Pouring" and meta["algo"] == algo and meta["spec"].overrides == {"horizon": 3}
    obs = np.zeros(model.observation_space.shape, dtype=np.float32)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (3,) and np.all(np.abs(action) <= 1.0)
    best, _ = io.load_model(run / "best_model.zip")
    assert best.observation_space == model.observation_space


def test_train_ppo_cli_writes_checkpoint_curve_and_video(tmp_path):
    run = tmp_path / "ppo"
    args = "--task Pouring-v0 --algo ppo --horizon 3 --timesteps 6 --num-envs 2 --eval-freq 6 --size 48"
    args += " --video eval.gif"
    _fluxlab("train", *args.split(), "--out", str(run))
    _check_training_run(run, "ppo", 6)


@pytest.mark.slow
def test_train_sac_cli_writes_checkpoint_curve_and_video(tmp_path):
    run = tmp_path / "sac"
    args = "--task Pouring --algo sac --horizon 3 --timesteps 9 --eval-freq 6 --size 48 --video eval.gif"
    _fluxlab("train", *args.split(), "--out", str(run))
    _check_training_run(run, "sac", 9)


def test_cli_reports_bad_arguments_and_files(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"\x00" * 64)
    cases = [
        (["rollout", "--policy", str(corrupt)], "corrupt.npz"),
        (["rollout", "--policy", str(tmp_path / "absent.npz")], "absent.npz"),
        (["rollout", "--policy", str(tmp_path / "policy.txt")], "--policy"),
        (["rollout", "--policy", "random"], "--task"),
        (["rollout", "--task", "NoSuchTask-v0", "--policy", "random"], "unknown task"),
        (["rollout", "--task", "Pouring", "--policy", "scripted", "--video", "out.avi"], ".mp4"),
        (["optimize", "--task", "Pouring", "--iters", "0"], "--iters"),
        (["train", "--task", "Pouring", "--algo", "sac", "--timesteps", "5", "--n-steps", "4"], "PPO"),
        (["cmaes", "--task", "Pouring", "--set", "horizon"], "KEY=VALUE"),
    ]
    for argv, needle in cases:
        assert cli.main([*argv, "--no-progress"]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err, (argv, err)
