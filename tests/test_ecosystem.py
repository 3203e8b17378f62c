"""FluxLab envs under client code nobody here wrote: Gymnasium's async vector env with its default
(fork) context, Stable-Baselines3's ``SubprocVecEnv`` with fork, Gymnasium's three autoreset
modes against ``SyncVectorEnv``, TorchRL's ``GymEnv`` / ``GymWrapper`` with ``check_env_specs``,
pickled envs in a fresh interpreter, bitwise reproducible episodes with the default (threaded)
runtime, and memory over repeated make/close.

Client code that could hang runs in a subprocess with a timeout, so a regression fails instead
of stalling the suite.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401 - registers the FluxLab ids

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "FluxLab/Pouring-v0"


def _run(code: str, timeout: float, stdin: bytes | None = None) -> str:
    """Run ``code`` in a fresh interpreter at the repository root; its stdout (asserts success)."""
    path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    try:
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], input=stdin, capture_output=True, timeout=timeout, cwd=ROOT,
            env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"client code hung for {timeout} s:\n{(err.stderr or b'').decode()[-3000:]}")
    assert out.returncode == 0, out.stderr.decode()[-4000:]
    return out.stdout.decode()


@pytest.mark.slow
def test_fork_clients_after_the_parent_made_an_env():
    out = _run(
        """
        import multiprocessing as mp
        import gymnasium as gym, numpy as np
        from stable_baselines3.common.vec_env import SubprocVecEnv
        import envs

        ENV = "FluxLab/Pouring-v0"
        parent = gym.make(ENV, horizon=3)  # Taichi runs in the parent before anything forks
        parent.reset(seed=0)
        parent.step(parent.action_space.sample())

        vec = gym.make_vec(ENV, 2, vectorization_mode="async", horizon=3)  # default context: fork
        obs, _ = vec.reset(seed=0)
        for _ in range(4):  # crosses the horizon: the workers autoreset
            obs, reward, terminated, truncated, info = vec.step(vec.action_space.sample())
            assert np.all(np.isfinite(obs)) and np.all(np.isfinite(reward))
        vec.close()
        print("async ok")

        sb3 = SubprocVecEnv([lambda: gym.make(ENV, horizon=3)] * 2, start_method="fork")
        sb3.seed(0)
        obs = sb3.reset()
        obs, reward, done, infos = sb3.step(np.stack([sb3.action_space.sample() for _ in range(2)]))
        assert obs.shape[0] == 2 and np.all(np.isfinite(reward))
        sb3.close()
        print("sb3 ok")

        def use_parent_env(queue):  # an env made before the fork must refuse, not hang
            try:
                parent.step(parent.action_space.sample())
                queue.put("stepped")
            except RuntimeError as err:
                queue.put(str(err))

        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        worker = ctx.Process(target=use_parent_env, args=(queue,))
        worker.start()
        print("child:", queue.get(timeout=60))
        worker.join(60)
        parent.step(parent.action_space.sample())  # the parent's env still works
        print("parent ok")

        # Should Taichi fail to restart in a child, making an env there fails at once, naming
        # the start methods that work.
        import engine.runtime
        engine.runtime._PROGRAM_COUNT_SYMBOL = "not_a_taichi_symbol"

        def make_env(queue):
            try:
                gym.make(ENV, horizon=3)
                queue.put("made")
            except RuntimeError as err:
                queue.put(str(err))

        worker = ctx.Process(target=make_env, args=(queue,))
        worker.start()
        print("broken child:", queue.get(timeout=60))
        worker.join(60)
        """,
        timeout=600,
    )
    assert "async ok" in out and "sb3 ok" in out and "parent ok" in out
    assert "made before its process forked" in out
    broken = out.split("broken child:")[1]
    assert "could not be restarted" in broken and "'spawn'" in broken


def _compare_infos(vec_info: dict, sync_info: dict):
    assert set(vec_info) == set(sync_info), (sorted(vec_info), sorted(sync_info))
    for key, value in sync_info.items():
        if key.startswith("_"):
            np.testing.assert_array_equal(vec_info[key], value, err_msg=key)
        elif key == "final_obs":
            for mine, theirs in zip(vec_info[key], value, strict=True):
                assert (mine is None) == (theirs is None)
                if theirs is not None:
                    np.testing.assert_array_equal(mine, theirs)
        elif isinstance(value, dict):
            _compare_infos(vec_info[key], value)
        else:
            mask = sync_info[f"_{key}"]
            np.testing.assert_allclose(vec_info[key][mask], value[mask], rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_vector_env_autoreset_modes_match_sync_vector_env(runtime, mode):
    B, horizon, seed = 2, 2, 5
    vec = gym.make_vec(ENV_ID, B, vectorization_mode="vector_entry_point", horizon=horizon, autoreset_mode=mode)
    sync = gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID, horizon=horizon)] * B, autoreset_mode=mode)
    assert vec.autoreset_mode == mode and vec.metadata["autoreset_mode"] == mode
    obs_v, info_v = vec.reset(seed=seed)
    obs_s, info_s = sync.reset(seed=seed)
    np.testing.assert_array_equal(obs_v, obs_s)
    _compare_infos(info_v, info_s)
    rng = np.random.default_rng(0)
    for step in range(5):
        actions = rng.uniform(-1, 1, size=vec.action_space.shape).astype(np.float32)
        if mode == AutoresetMode.DISABLED and step > 0 and step % horizon == 0:
            with pytest.raises(RuntimeError, match="reset_mask"):
                vec.step(actions)
            mask = np.ones(B, dtype=bool)
            obs_v, info_v = vec.reset(options={"reset_mask": mask})
            obs_s, info_s = sync.reset(options={"reset_mask": mask})
            np.testing.assert_array_equal(obs_v, obs_s)
            _compare_infos(info_v, info_s)
        obs_v, rew_v, term_v, trunc_v, info_v = vec.step(actions)
        obs_s, rew_s, term_s, trunc_s, info_s = sync.step(actions)
        np.testing.assert_array_equal(obs_v, obs_s)
        np.testing.assert_allclose(rew_v, rew_s, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(term_v, term_s)
        np.testing.assert_array_equal(trunc_v, trunc_s)
        _compare_infos(info_v, info_s)
    with pytest.raises(ValueError, match="autoreset_mode"):
        gym.make_vec(ENV_ID, B, vectorization_mode="vector_entry_point", autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": np.ones(B + 1, dtype=bool)})
    vec.close()
    sync.close()


def test_torchrl_gym_env_and_wrapped_vector_env_pass_check_env_specs(runtime):
    torchrl_envs = pytest.importorskip("torchrl.envs")
    from torchrl.envs.utils import check_env_specs

    env = torchrl_envs.GymEnv(ENV_ID, horizon=2)
    check_env_specs(env)
    rollout = env.rollout(4, break_when_any_done=False)
    assert rollout["next", "done"].flatten().tolist() == [False, True, False, True]
    env.close()
    for mode in (AutoresetMode.DISABLED, AutoresetMode.SAME_STEP):
        vec = gym.make_vec(ENV_ID, 2, vectorization_mode="vector_entry_point", horizon=2, autoreset_mode=mode)
        wrapped = torchrl_envs.GymWrapper(vec)
        assert tuple(wrapped.batch_size) == (2,)
        check_env_specs(wrapped)
        done = wrapped.rollout(4, break_when_any_done=False)["next", "done"].squeeze(-1)
        assert done.tolist() == [[False, True, False, True]] * 2, mode
        wrapped.close()


@pytest.mark.slow
def test_pickled_envs_run_in_a_fresh_interpreter_and_episodes_are_bitwise_reproducible(runtime):
    env = gym.make(ENV_ID, horizon=3)
    vec = gym.make_vec(ENV_ID, 2, vectorization_mode="vector_entry_point", horizon=3)
    for original in (env, vec):
        copy = pickle.loads(pickle.dumps(original))
        np.testing.assert_array_equal(copy.reset(seed=4)[0], original.reset(seed=4)[0])
        copy.close()
    payload = pickle.dumps((env, vec))
    env.close()
    vec.close()
    # A fresh interpreter that never imports envs: unpickling does, and registers the ids. Then
    # the default runtime (threaded, f32) gives bitwise identical episodes for the same seed, and
    # Gymnasium's check_env (which compares two same-seed steps) passes without warnings.
    out = _run(
        """
        import pickle, sys, warnings
        import gymnasium as gym, numpy as np
        from gymnasium.utils.env_checker import check_env

        env, vec = pickle.loads(sys.stdin.buffer.read())
        env.reset(seed=1)
        env.step(env.action_space.sample())
        vec.reset(seed=1)
        vec.step(vec.action_space.sample())
        print("unpickled ok")

        def episode(env, seed, steps=6):
            obs, _ = env.reset(seed=seed)
            env.action_space.seed(seed)
            rows = [np.append(obs, 0.0)]
            for _ in range(steps):
                obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
                rows.append(np.append(obs, [reward, info["loss"]]))
            return np.concatenate(rows)

        for task in ("Mixing", "Pouring", "LatteArtStir"):
            made = gym.make(f"FluxLab/{task}-v0")
            runs = [episode(made, 7) for _ in range(3)]
            assert all(np.array_equal(runs[0], r) for r in runs[1:]), task
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                check_env(made.unwrapped, skip_render_check=True)
            made.close()
            print(task, "reproducible")
        """,
        timeout=600,
        stdin=payload,
    )
    assert "unpickled ok" in out
    for task in ("Mixing", "Pouring", "LatteArtStir"):
        assert f"{task} reproducible" in out


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set size from /proc")
def test_fifty_make_close_cycles_grow_rss_less_than_20_mb(runtime):
    def cycle():
        env = gym.make(ENV_ID)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        env.close()

    for _ in range(3):  # compile and warm every cache first
        cycle()
    gc.collect()
    before = _rss_mb()
    for _ in range(50):
        cycle()
    gc.collect()
    growth = _rss_mb() - before
    assert growth < 20.0, f"RSS grew by {growth:.1f} MB over 50 make/close cycles"
