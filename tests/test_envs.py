"""Every registered FluxLab env against Gymnasium's contract, plus the batched vector env.

Parametrized over the registry (``envs.ENV_IDS``): Gymnasium's ``check_env`` without warnings,
same seed => identical rollout, observations in their space, rendering, bad actions, repeated
create/close. The vector env is checked against B single envs with the same seeds, and
``differentiable_rollout`` of the liquid task (Pouring) against central finite differences.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs

SHORT = 4  # env steps used by the rollout tests (kept short for CI time)


def _make(env_id, **kwargs):
    return gym.make(env_id, **kwargs)


def _rollout(env, seed, steps=SHORT):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        out.append(np.concatenate([obs, [reward, info["loss"]]]))
        if terminated or truncated:
            break
    return out


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_check_env_passes_without_warnings(runtime, env_id):
    from gymnasium.utils.env_checker import check_env

    env = _make(env_id, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_same_seed_same_rollout_and_observations_in_space(runtime, env_id):
    env = _make(env_id)
    first = _rollout(env, seed=3)
    second = _rollout(env, seed=3)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    obs, _ = env.reset(seed=3)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    for _ in range(2):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.all(np.isfinite(obs))
        assert np.isfinite(reward) and isinstance(info["success"], bool) and not info["diverged"]
        assert any(k.startswith("reward_") for k in info)
    env.close()


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_render_and_bad_actions(runtime, env_id):
    env = _make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 1.0, "render returned a (nearly) constant image"
    shape = env.action_space.shape
    for bad in (np.full(shape, np.nan), np.full(shape, np.inf), np.zeros(shape[0] + 1), np.zeros((1, *shape))):
        with pytest.raises(ValueError):
            env.step(bad)
    env.close()


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_create_close_many_times_does_not_grow(runtime, env_id):
    def cycle():
        env = _make(env_id)
        env.reset(seed=0)
        env.close()

    first = _make(env_id)  # compiles everything once
    first.reset(seed=0)
    first.step(first.action_space.sample())
    first.close()
    gc.collect()
    tracemalloc.start()
    times = []
    for i in range(20):
        t0 = time.perf_counter()
        cycle()
        times.append(time.perf_counter() - t0)
        if i == 4:
            gc.collect()
            base, _ = tracemalloc.get_traced_memory()
    gc.collect()
    end, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Python-heap growth over 15 further cycles stays small (a leak of one scene per cycle
    # would add its particle arrays each time), and no cycle recompiles kernels.
    assert end - base < 2_000_000, f"python memory grew by {(end - base) / 1e6:.1f} MB over 15 create/close cycles"
    assert max(times[5:]) < 3.0 * np.median(times) + 0.5, f"create/close times grew: {np.round(times, 3)}"


def test_vector_env_matches_single_envs(runtime):
    env_id, B, seed = "FluxLab/Pouring-v0", 3, 11
    vec = gym.make_vec(env_id, num_envs=B, vectorization_mode="vector_entry_point")
    singles = [_make(env_id) for _ in range(B)]
    obs_v, _ = vec.reset(seed=seed)
    obs_s = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(singles)])
    np.testing.assert_array_equal(obs_v, obs_s)
    rng = np.random.default_rng(0)
    for _ in range(3):
        actions = rng.uniform(-1, 1, size=(B, singles[0].action_space.shape[0])).astype(np.float32)
        obs_v, rew_v, term_v, trunc_v, info_v = vec.step(actions)
        results = [env.step(a) for env, a in zip(singles, actions, strict=True)]
        np.testing.assert_allclose(obs_v, np.stack([r[0] for r in results]), rtol=0, atol=0)
        np.testing.assert_allclose(rew_v, [r[1] for r in results], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(info_v["loss"], [r[4]["loss"] for r in results], rtol=1e-12)
        assert list(term_v) == [r[2] for r in results] and list(trunc_v) == [r[3] for r in results]
    vec.close()
    for env in singles:
        env.close()


def test_vector_env_autoresets_on_the_next_step(runtime):
    vec = gym.make_vec("FluxLab/Pouring-v0", num_envs=2, vectorization_mode="vector_entry_point", horizon=2)
    obs0, _ = vec.reset(seed=5)
    zeros = np.zeros(vec.action_space.shape, dtype=np.float32)
    vec.step(zeros)
    _, _, _, truncated, _ = vec.step(zeros)
    assert truncated.all(), "episodes of horizon 2 must truncate at step 2"
    obs, reward, terminated, truncated, _ = vec.step(zeros)  # next-step autoreset
    assert not truncated.any() and not terminated.any() and np.all(reward == 0.0)
    # reset entries reuse their generators, so the restart differs from seed 5's jitter only through
    # the generator state; the first observation is the scene's start (tool near its start pose).
    assert obs.shape == obs0.shape and np.all(np.isfinite(obs))
    vec.close()


def test_diverged_simulation_truncates_with_flag(runtime):
    env = _make("FluxLab/Pouring-v0")
    obs, _ = env.reset(seed=0)
    sim = env.unwrapped.task.sim
    state = sim.get_state()
    state.v[0, 0] = 1e6  # a runaway particle: the engine's blow-up detector must catch it
    sim.reset(state)
    obs2, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    assert truncated and not terminated and info["diverged"] and reward == 0.0
    np.testing.assert_array_equal(obs2, obs)  # the last valid observation, not garbage
    env.close()


def test_single_and_vector_envs_report_a_blow_up_alike(runtime):
    """The shared step bookkeeping (envs/step.py): a scene that blows up keeps its last observation
    and loss, gets reward 0 and every reward term 0, and is truncated, in the single env and in
    one scene of the vector env alike (same info keys as any step); the other scene runs on."""
    env_id = "FluxLab/Pouring-v0"
    single = _make(env_id)
    vec = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    obs_s, _ = single.reset(seed=1)
    obs_v, _ = vec.reset(seed=0)  # scene 1 is seeded 0 + 1
    np.testing.assert_array_equal(obs_v[1], obs_s)
    for sim, entry in ((single.unwrapped.task.sim, 0), (vec.unwrapped.task.sim, 1)):
        state = sim.get_state()
        state.v[entry, 0] = 1e6
        sim.reset(state)
    zeros = np.zeros(vec.action_space.shape, dtype=np.float32)
    obs_s2, reward_s, terminated_s, truncated_s, info_s = single.step(zeros[0])
    obs_v2, reward_v, terminated_v, truncated_v, info_v = vec.step(zeros)
    np.testing.assert_array_equal(obs_s2, obs_s)
    np.testing.assert_array_equal(obs_v2[1], obs_v[1])
    assert (reward_s, terminated_s, truncated_s) == (reward_v[1], terminated_v[1], truncated_v[1]) == (0.0, False, True)
    keys = ["reward_progress", "reward_action_cost", "loss", "success", "diverged"]
    assert list(info_s) == [k for k in info_v if not k.startswith("_")] == keys
    assert all(info_v[f"_{k}"].all() for k in keys)  # Gymnasium's vector-info masks: both scenes report
    scene = {k: info_v[k][1].item() for k in keys}
    assert scene.pop("loss") == pytest.approx(info_s.pop("loss"), rel=1e-12)
    assert scene == info_s == {"reward_progress": 0.0, "reward_action_cost": 0.0, "success": False, "diverged": True}
    assert not info_v["diverged"][0] and not truncated_v[0] and reward_v[0] != 0.0
    single.close()
    vec.close()


def test_differentiable_rollout_matches_finite_differences_liquid(runtime):
    env = _make("FluxLab/Pouring-v0", horizon=3)
    env.reset(seed=0)
    T, A = 3, env.action_space.shape[0]
    gen = torch.Generator().manual_seed(0)
    actions = (0.5 * torch.rand(T, A, generator=gen, dtype=torch.float64) - 0.25).requires_grad_(True)
    params = env.unwrapped.task.sim.default_params()[0].clone().requires_grad_(True)
    loss = env.unwrapped.differentiable_rollout(actions, params)
    loss.backward()
    direction = torch.randn(T, A, generator=gen, dtype=torch.float64)
    eps = 1e-5

    def f(a, p):
        with torch.no_grad():
            return float(env.unwrapped.differentiable_rollout(a, p))

    fd = (f(actions + eps * direction, params) - f(actions - eps * direction, params)) / (2 * eps)
    ad = float((actions.grad * direction).sum())
    assert abs(ad) > 1e-6, "gradient along the probe direction vanished"
    assert abs(ad - fd) <= 1e-8 + 1e-4 * abs(fd), (ad, fd)
    # material parameter: milk viscosity (column 3)
    e_visc = torch.zeros_like(params)
    e_visc[0, 3] = 1e-3
    fd_p = (f(actions, params + e_visc) - f(actions, params - e_visc)) / (2 * 1e-3)
    assert abs(float(params.grad[0, 3]) - fd_p) <= 1e-9 + 1e-4 * abs(fd_p), (float(params.grad[0, 3]), fd_p)
    env.close()


def test_scripted_pouring_succeeds_and_random_does_not(runtime):
    env = _make("FluxLab/Pouring-v0")
    env.reset(seed=0)
    start = env.unwrapped.task.loss()[0]
    for _ in range(env.unwrapped.horizon):
        _, _, _, _, info = env.step(env.unwrapped.scripted_action())
    assert info["success"] and info["loss"] < 0.05 * start, (start, info["loss"])
    env.reset(seed=1)
    env.action_space.seed(1)
    successes = []
    for _ in range(40):
        _, _, _, _, info = env.step(env.action_space.sample())
        successes.append(info["success"])
    assert not any(successes)
    env.close()
