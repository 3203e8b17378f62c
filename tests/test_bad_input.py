"""Bad input is refused with a clear error naming the field, option or file; nothing is silent.

Clients' conventions (an unknown keyword is a ``TypeError`` worded as Python words it, which
TorchRL's ``GymEnv`` relies on), actions (ragged, complex, requiring grad, out of range in
``differentiable_rollout``), task configs (render size, ``sim``, grid sizes the machine cannot
hold, divisors of 0, start positions outside the domain, horizons above a fixed time limit),
assets (target files, SB3 model archives, trajectories longer than the horizon), the command
line (``--set``, ``--size``, a fast ``--help`` without Taichi, ``--version``) and a gas solver
blow-up. Scenes are the cpu presets with short horizons.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401 - registers the envs
import tasks
import tasks.base as task_base
from envs import EnvSpec
from policies import cli, io

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- clients
def test_unknown_keyword_is_a_type_error_as_python_words_it(runtime):
    for make in (
        lambda: gym.make("FluxLab/Pouring-v0", frameskip=4),
        lambda: gym.make_vec("FluxLab/Pouring-v0", 2, vectorization_mode="vector_entry_point", frameskip=4),
    ):
        with pytest.raises(TypeError, match="unexpected keyword argument 'frameskip'") as err:
            make()
        assert "horizon" in str(err.value)  # the known fields are listed
    with pytest.raises(ValueError, match="EnvSpec.config_overrides: .*unexpected keyword argument 'frameskip'"):
        EnvSpec("Pouring", config_overrides={"frameskip": 4})


def test_torchrl_gym_env_builds_a_fluxlab_env(runtime):
    torchrl_gym = pytest.importorskip("torchrl.envs.libs.gym")
    from torchrl.envs.utils import check_env_specs

    env = torchrl_gym.GymEnv("FluxLab/Pouring-v0", horizon=3)
    check_env_specs(env)
    env.close()


# ---------------------------------------------------------------------- actions
@pytest.fixture(scope="module")
def pouring(runtime):
    env = gym.make("FluxLab/Pouring-v0", horizon=3)
    env.reset(seed=0)
    yield env
    env.close()


@pytest.mark.parametrize(
    "action, message",
    [
        ([[0.1, 0.2], [0.3]], "action must be a rectangular array"),
        (np.array([0.1, 0.2, 0.3]) + 0.5j, "action must be real, got complex"),
        (torch.zeros(3, requires_grad=True), "action is a torch tensor that requires grad"),
        (["a", "b", "c"], "action must be real numbers"),
    ],
)
def test_env_step_refuses_bad_actions_naming_them(pouring, action, message):
    with pytest.raises(ValueError, match=message):
        pouring.step(action)


def test_vector_env_step_refuses_ragged_actions(runtime):
    vec = gym.make_vec("FluxLab/Pouring-v0", 2, vectorization_mode="vector_entry_point", horizon=3)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="actions must be a rectangular array"):
        vec.step([[0.0, 0.0, 0.0], [0.0]])
    vec.close()


def test_differentiable_rollout_takes_the_env_step_rules(pouring):
    base = pouring.unwrapped
    with pytest.raises(ValueError, match=r"actions must lie in \[-1, 1\]"):
        base.differentiable_rollout(torch.full((3, 3), 5.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="actions must be real, got complex"):
        base.differentiable_rollout(torch.zeros(3, 3, dtype=torch.complex128))
    with pytest.raises(ValueError, match="rectangular"):
        base.differentiable_rollout([[0.0, 0.0, 0.0], [0.0]])


# ---------------------------------------------------------------------- configs
@pytest.mark.parametrize("size", [0, -5, 5000])
def test_render_size_is_checked_when_the_env_is_made(runtime, size):
    with pytest.raises(ValueError, match="render_size must be an int in"):
        gym.make("FluxLab/Pouring-v0", render_mode="rgb_array", render_size=size)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sim": {"grid_res": 32}}, "sim must be an engine.config.SimConfig"),
        ({"sim": None}, "sim must be an engine.config.SimConfig"),
        ({"loss_scale": 0.0}, "loss_scale must be > 0"),
        ({"holder_radius": -0.1}, "holder_radius must be > 0"),
        ({"horizon": "abc"}, "horizon must be an int"),
        ({"holder_start": (0.3, 0.5)}, "holder_start must be a sequence of 3 numbers"),
        ({"drop_speed": float("nan")}, "drop_speed must be a finite number"),
    ],
)
def test_task_config_values_are_checked_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        tasks.task_config("IceCreamStatic", **overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"reset_noise": 10.0}, r"reset_noise=10 m moves the tool's start"),
        ({"holder_start": (5.0, 5.0, 5.0)}, r"collider 0 \(the tool\) starts at .*'holder_start': \(5.0, 5.0, 5.0\)"),
    ],
)
def test_a_tool_starting_outside_the_domain_is_refused(runtime, overrides, message):
    with pytest.raises(ValueError, match=message):
        gym.make("FluxLab/IceCreamStatic-v0", **overrides)


def test_grids_the_machine_cannot_hold_are_refused_before_allocating(runtime, monkeypatch):
    sim = tasks.task_config("Pouring").sim
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"sim.grid_res=4096 .*int32 index range"):
        gym.make("FluxLab/Pouring-v0", sim=replace(sim, grid_res=4096, dt=sim.dt / 128))
    monkeypatch.setattr(task_base, "available_memory", lambda: 2 * 2**30)
    with pytest.raises(ValueError, match=r"sim.grid_res=512 .*needs at least \d+\.\d GiB, more than the 2.0 GiB"):
        gym.make("FluxLab/Pouring-v0", sim=replace(sim, grid_res=512, dt=sim.dt / 16))
    assert time.perf_counter() - start < 10.0
    task_base.check_allocation(sim, batch_size=8, n_colliders=2, n_particles=10_000)  # the cpu preset fits


def test_a_horizon_above_the_registered_one_is_not_cut(runtime):
    registered = tasks.task_config("Pouring").horizon
    env = gym.make("FluxLab/Pouring-v0", horizon=registered + 30)
    assert env.spec.max_episode_steps == registered + 30 == env.unwrapped.horizon
    env.close()
    assert (
        gym.make("FluxLab/Pouring-v0", preset="paper").spec.max_episode_steps
        == tasks.task_config("Pouring", "paper").horizon
    )


# ---------------------------------------------------------------------- assets
def _rewrite_target(tmp_path: Path, name: str, points=None, drop=(), **changes) -> Path:
    from tasks import targets

    data = np.load(targets.TARGET_DIR / f"{name}.npz", allow_pickle=False)
    meta = json.loads(str(data["metadata"]))
    meta = {k: v for k, v in meta.items() if k not in drop} | changes
    pts = data["points"] if points is None else points(data["points"])
    np.savez(tmp_path / f"{name}.npz", points=pts, metadata=np.array(json.dumps(meta)))
    return tmp_path


def test_target_files_with_incomplete_metadata_or_wrong_scale_are_refused(tmp_path):
    from tasks import targets

    folder = _rewrite_target(tmp_path, "latte_heart", drop=("cup_inner_radius", "n_points"))
    with pytest.raises(ValueError, match=r"latte_heart.npz: metadata lacks \['cup_inner_radius', 'n_points'\]"):
        targets.load_target("latte_heart", folder)
    folder = _rewrite_target(tmp_path, "latte_heart", points=lambda p: 10.0 * p)
    with pytest.raises(ValueError, match="beyond the cup_inner_radius 0.205 m .*wrong units or scale"):
        targets.load_target("latte_heart", folder)
    folder = _rewrite_target(tmp_path, "ice_cream_swirl", points=lambda p: 10.0 * p)
    with pytest.raises(ValueError, match="ice_cream_swirl.npz: .*wrong units or scale"):
        targets.load_target("ice_cream_swirl", folder)
    folder = _rewrite_target(tmp_path, "ice_cream_mound", points=lambda p: p[:-1])
    with pytest.raises(ValueError, match="n_points"):
        targets.load_target("ice_cream_mound", folder)


def test_targets_script_keeps_existing_files_unless_asked(tmp_path, capsys):
    from tasks import targets

    targets.main(["--out", str(tmp_path)])
    path = tmp_path / "latte_heart.npz"
    path.write_bytes(b"mine")
    targets.main(["--out", str(tmp_path)])
    assert path.read_bytes() == b"mine" and "--overwrite" in capsys.readouterr().out
    targets.main(["--out", str(tmp_path), "--overwrite"])
    assert targets.load_target("latte_heart", tmp_path).shape[1] == 2


class _Stub(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(5, np.float32), {}

    def step(self, action):
        return np.zeros(5, np.float32), 0.0, False, False, {}


def _saved_ppo(path: Path, algo_in_meta: str = "ppo") -> Path:
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", _Stub(), n_steps=8, batch_size=8, device="cpu")
    model.save(path)
    io.save_model_meta(path, EnvSpec("Pouring"), {"algo": algo_in_meta, "observation_dim": 5, "action_dim": 3})
    return path


def _replace_member(path: Path, member: str, content: bytes) -> None:
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries[member] = content
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


class _Payload:
    """Unpickling it would call ``Path.touch(path)``: code a model file must never run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_sb3_archives_that_are_tampered_nan_or_mislabelled_are_refused(tmp_path):
    assert io.load_model(_saved_ppo(tmp_path / "ok.zip"))[1]["algo"] == "ppo"

    tampered = _saved_ppo(tmp_path / "tampered.zip")
    marker = tmp_path / "pwned"
    _replace_member(tampered, "policy.pth", pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match=r"tampered.zip: not a valid PPO model"):
        io.load_model(tampered)
    assert not marker.exists()

    nan = _saved_ppo(tmp_path / "nan.zip")
    with zipfile.ZipFile(nan) as archive:
        weights = torch.load(BytesIO(archive.read("policy.pth")), weights_only=True)
    buffer = BytesIO()
    torch.save({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, buffer)
    _replace_member(nan, "policy.pth", buffer.getvalue())
    with pytest.raises(ValueError, match=r"nan.zip: the model's weights hold NaN/Inf"):
        io.load_model(nan)

    mislabelled = _saved_ppo(tmp_path / "ppo_as_sac.zip", algo_in_meta="sac")
    with pytest.raises(
        ValueError, match=r"ppo_as_sac.zip: .*ppo_as_sac.json declares SAC, but the archive holds a PPO"
    ):
        io.load_model(mislabelled)


def test_a_trajectory_longer_than_the_horizon_is_not_cut_silently(tmp_path):
    from policies import runs

    spec = EnvSpec("Pouring", config_overrides={"horizon": 3})
    trajectory = io.Trajectory(np.zeros((5, 3)), 1.0, spec.with_overrides(horizon=5))
    source = runs.PolicySource(str(tmp_path / "long.npz"), spec=trajectory.spec, trajectory=trajectory)
    with pytest.raises(ValueError, match=r"long.npz has 5 actions to play but the env's horizon is 3"):
        runs.rollout(spec, source)


# ---------------------------------------------------------------------- command line
def test_cli_config_errors_name_the_option(capsys):
    for argv, needle in [
        (["--set", "horizon=abc"], "--set horizon=abc: "),
        (["--set", "sim=32"], "--set sim=32: "),
        (["--set", "loss_scale=0"], "--set loss_scale=0: "),
    ]:
        assert cli.main(["rollout", "--task", "IceCreamStatic", "--policy", "random", *argv, "--no-progress"]) == 2
        assert needle in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):
        cli.main(["rollout", "--task", "Pouring", "--policy", "random", "--size", "-5"])
    assert "argument --size: must be in [16, 2048]" in capsys.readouterr().err


def test_cli_help_and_version_are_fast_and_import_no_taichi():
    code = (
        "import sys; from policies import cli; cli.build_parser(); "
        "print(sorted({'taichi', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
    for argv in (["--help"], ["optimize", "--help"], ["--version"]):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "policies.cli", *argv], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0 and time.perf_counter() - start < 5.0, proc.stderr
        assert "[Taichi]" not in proc.stdout + proc.stderr
    assert proc.stdout.startswith("fluxlab ")
    help_text = subprocess.run(
        [sys.executable, "-m", "policies.cli", "optimize", "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    assert "(default: 50)" in help_text and "examples:" in help_text and "rollout" not in help_text.split("examples")[0]


# ---------------------------------------------------------------------- faults
def test_a_gas_blow_up_is_reported_as_diverged(runtime):
    scale = tasks.task_config("Circulation").action_scale
    env = gym.make("FluxLab/Circulation-v0", action_scale=(scale[0], scale[1], 1e8))
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.ones(3, dtype=np.float32))
    assert info["diverged"] and truncated and reward == 0.0
    assert env.observation_space.contains(obs)
    env.close()


def test_cmaes_progress_bar_counts_the_evaluations_it_will_make(capsys):
    from policies.cmaes import cmaes
    from policies.trajopt import ActionParameterization

    param = ActionParameterization(3, 2, "per-step")
    result = cmaes(None, param, evals=10, popsize=4, progress=True, evaluate=lambda xs: [float(x @ x) for x in xs])
    assert result.evals == 9  # the initial mean and two generations of 4; a third would pass 10
    assert "9/9" in capsys.readouterr().err
