"""FluxLab on a local Ray instance (``ray.init(num_cpus=2)``, started here): distributed CMA-ES and
the Ray-actor VecEnv against their single-process counterparts, a 2x2 sweep whose worker is
killed mid-trial, and a sweep interrupted (SIGINT to ``fluxlab sweep``) and resumed.

Every worker process runs the deterministic f64 runtime, as this test process does, so the
comparisons are bitwise. Scenes are the cpu preset of Pouring cut to a 2-4 step horizon.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from envs import EnvSpec  # noqa: E402
from policies.trajopt import ActionParameterization  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SWEEP = """
name: {name}
storage: {storage}
command: cmaes
task: Pouring-v0
precision: f64
deterministic: true
overrides: {{horizon: 2}}
settings: {{evals: {evals}, popsize: 2, knots: 2}}
grid:
  seed: [0, 1]
  settings.sigma: [0.3, 0.6]
resources: {{CPU: 1}}
max_concurrent: {concurrent}
max_failures: 2
"""


@pytest.fixture(scope="module")
def local_ray(runtime):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _sweep_file(tmp_path, name: str, evals: int = 3, concurrent: int = 0) -> Path:
    path = tmp_path / f"{name}.yaml"
    text = SWEEP.format(name=name, storage=tmp_path / "store", evals=evals, concurrent=concurrent)
    path.write_text(text)
    return path


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _trial_pids() -> list[int]:
    """This test's Tune trial processes: titled ``ray::ImplicitFunc...`` by Ray, children of a
    raylet that this process started (so no other Ray session on the machine is touched)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
                if title.startswith(b"ray::ImplicitFunc") and _parent(_parent(int(entry.name))) == os.getpid():
                    pids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return pids


def test_distributed_cmaes_equals_single_process(local_ray):
    """Two actors with batched envs of 2 scenes score each generation (popsize 4); CMA-ES from
    the same seed in this process, one candidate at a time, gives the same losses, history and
    best actions bit for bit."""
    from policies.cmaes import cmaes
    from policies.dist.population import PopulationEvaluator, distributed_cmaes

    spec = EnvSpec("Pouring", config_overrides={"horizon": 4}, precision="f64", seed=1)
    param = ActionParameterization(4, 3, "linear", knots=2)
    remote = distributed_cmaes(spec, param, evals=9, popsize=4, workers=2, batch_size=2, deterministic=True)
    env = spec.make()
    local = cmaes(env, param, evals=9, popsize=4, seed=1)
    env.close()
    assert (remote.loss, remote.initial_loss, remote.evals) == (local.loss, local.initial_loss, local.evals)
    assert np.array_equal(remote.actions, local.actions)
    strip = [{k: v for k, v in row.items() if k != "time_s"} for row in local.history]
    assert [{k: v for k, v in row.items() if k != "time_s"} for row in remote.history] == strip
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        PopulationEvaluator(spec, param, workers=1, batch_size=0)


def test_ray_vec_env_stream_equals_one_batched_env(local_ray, tmp_path):
    """Two actors of one scene each, stepped through two episodes and an autoreset, produce the
    stream of one batched env of two scenes in this process; PPO trains on them."""
    from policies import rl
    from policies.dist.vec_env import RayVecEnv

    spec = EnvSpec("Pouring", config_overrides={"horizon": 2}, precision="f64", seed=3)
    remote = RayVecEnv(spec, workers=2, envs_per_worker=1, deterministic=True)
    local = rl.GymnasiumVecEnv(spec.make_vec(2))
    assert remote.num_envs == 2 and remote.observation_space == local.observation_space
    for venv in (remote, local):
        venv.seed(3)
    np.testing.assert_array_equal(remote.reset(), local.reset())
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, 2, 3)).astype(np.float32)
    for a in actions:
        r, lo = remote.step(a), local.step(a)
        for x, y in zip(r[:3], lo[:3], strict=True):
            np.testing.assert_array_equal(x, y)
        for ri, li in zip(r[3], lo[3], strict=True):
            assert ri.keys() == li.keys()
            for key in ri:
                np.testing.assert_array_equal(ri[key], li[key])
    assert remote.get_attr("num_envs") == [1, 1]
    local.close()
    result = rl.train(spec, "ppo", timesteps=8, out=tmp_path / "ppo", vec_env=remote, tensorboard=False)
    assert result.model_path.is_file() and result.timesteps >= 8


def test_sweep_2x2_survives_a_killed_worker(local_ray, tmp_path):
    """A 2x2 grid (seed x sigma) of tiny CMA-ES runs; one trial worker is SIGKILLed while it runs,
    Tune retries that trial, and the table holds the four trials, all finished."""
    from policies.dist.config import load_sweep
    from policies.dist.sweep import run_sweep

    killed: list[int] = []

    def kill_first_trial():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            pids = _trial_pids()
            if pids:
                time.sleep(1.0)
                try:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                except ProcessLookupError:
                    continue
            time.sleep(0.2)

    killer = threading.Thread(target=kill_first_trial, daemon=True)
    killer.start()
    cfg = load_sweep(_sweep_file(tmp_path, "grid", evals=5))
    result = run_sweep(cfg, verbose=0)
    killer.join()
    assert killed, "no trial process was found to kill"
    rows = result.rows
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    assert sorted((r["seed"], r["settings.sigma"]) for r in rows) == [(0, 0.3), (0, 0.6), (1, 0.3), (1, 0.6)]
    assert all(r["loss"] <= r["initial_loss"] for r in rows)
    failed = [p for p in result.path.glob("run_trial_*") if (p / "error.txt").is_file()]
    assert len(failed) == 1, failed
    table = (result.path / "results.csv").read_text().splitlines()
    assert len(table) == 5 and table[0].startswith("trial,status,settings.sigma,task,seed,loss")
    assert json.loads((result.path / "results.json").read_text())[0]["task"] == "Pouring-v0"
    assert [p.name for p in result.plots] == ["Pouring-v0.png"] and result.plots[0].stat().st_size > 0
    for row in rows:
        summary = json.loads((Path(row["out"]) / "summary.json").read_text())
        assert summary["best_loss"] == row["loss"] and summary["seed"] == row["seed"]


def test_interrupted_sweep_resumes_every_trial_once(local_ray, tmp_path):
    """``fluxlab sweep`` on this cluster, one trial at a time, gets SIGINT after its first trial
    finished; run again, it resumes: the finished trials are not rerun, the others run, and
    every trial ends with exactly one result."""
    path = _sweep_file(tmp_path, "resume", evals=21, concurrent=1)
    store = tmp_path / "store" / "resume"
    command = [sys.executable, "-m", "policies.cli", "sweep", str(path), "--address", local_ray, "--quiet"]

    def finished() -> dict[str, str]:
        return {p.parent.name: p.read_text() for p in store.glob("run_trial_*/result.json") if p.read_text().strip()}

    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0.5"}  # finished trials reach storage within 0.5 s
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 240
    while not finished() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    assert finished(), first.communicate()[0][-3000:]
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=120)[0]
    before = finished()
    assert 1 <= len(before) < 4, output[-3000:]
    second = subprocess.run(command, capture_output=True, text=True, timeout=400, check=False)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    assert "resumed 4 trials (4 ok)" in second.stdout
    after = finished()
    assert len(after) == 4
    assert all(after[name] == text for name, text in before.items())  # finished trials were not rerun
    assert all(len(text.strip().splitlines()) == 1 for text in after.values())  # one result per trial
    rows = json.loads((store / "results.json").read_text())
    assert sorted((r["seed"], r["settings.sigma"]) for r in rows) == [(0, 0.3), (0, 0.6), (1, 0.3), (1, 0.6)]
