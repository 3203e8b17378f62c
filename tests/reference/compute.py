"""Reference values that pin the simulator's behaviour: states, rewards, losses and gradients.

:func:`compute` runs, in f64 with a deterministic (one-thread) runtime, a short episode of every
registered task (scripted actions; observations, rewards, losses, the final particle state) and
a short differentiable rollout of each (loss and its gradient with respect to the actions), plus
engine scenes of every material model with a moving, rotating collider (rollout states and the
gradients with respect to x0, v0, the material parameters and the collider control). Only public
APIs are used, so the same code runs on any version of the engine.

``python tests/reference/compute.py --out tests/reference/values.npz`` records the values;
``tests/test_reference_values.py`` recomputes them and compares to rounding.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

EPISODE_STEPS = 3  # env steps per task episode
GRAD_STEPS = 2  # control steps of each differentiable rollout


def _task_values(name: str) -> dict[str, np.ndarray]:
    import gymnasium as gym
    import torch

    out: dict[str, np.ndarray] = {}
    env = gym.make(f"FluxLab/{name}-v0", precision="f64")
    try:
        obs, info = env.reset(seed=3)
        rows = [np.concatenate([obs, [0.0, info["loss"]]])]
        actions = []
        for _ in range(EPISODE_STEPS):
            action = env.unwrapped.scripted_action()
            actions.append(action)
            obs, reward, _, _, info = env.step(action)
            rows.append(np.concatenate([obs, [reward, info["loss"]]]))
        out[f"{name}/episode"] = np.stack(rows)
        sim = getattr(env.unwrapped.task, "sim", None)
        if sim is not None and hasattr(sim, "get_state"):
            state = sim.get_state()
            for field in ("x", "v", "C", "F", "J", "collider_pose"):
                out[f"{name}/state_{field}"] = getattr(state, field).numpy()
        env.reset(seed=5)
        rng = np.random.default_rng(7)
        base = np.stack(actions[:GRAD_STEPS])
        acts = torch.tensor(np.clip(base + 0.3 * rng.standard_normal(base.shape), -1, 1), requires_grad=True)
        loss = env.unwrapped.differentiable_rollout(acts)
        loss.backward()
        out[f"{name}/grad_loss"] = np.array([loss.item()])
        out[f"{name}/grad_actions"] = acts.grad.numpy()
    finally:
        env.close()
    return out


def _scene(material, with_collider: bool):
    from engine import colliders, sampling

    try:  # shapes live in engine.geometry (older trees: engine.colliders)
        from engine.geometry import Box
    except ImportError:
        Box = colliders.Box
    from engine.config import SimConfig
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    builder = SceneBuilder(SimConfig(grid_res=16, dt=5e-4, substeps=3))
    points = sampling.box((0.35, 0.35, 0.3), (0.55, 0.55, 0.45), 1 / 40)
    centre = points.mean(0)
    gradient = np.array([[-1.0, 0.3, 0.0], [0.2, 0.5, 0.0], [0.0, 0.1, -0.8]])
    builder.add_particles(points, material, 1 / 40, velocity=0.5 * (points - centre) @ gradient.T)
    if with_collider:
        builder.add_collider(colliders.Collider(Box((0.05, 0.05, 0.03)), pose=(0.45, 0.45, 0.55, 1, 0, 0, 0)))
    return Simulator(builder.build(), batch_size=2)


def _engine_values(label: str, material, with_collider: bool) -> dict[str, np.ndarray]:
    import torch

    sim = _scene(material, with_collider)
    state = sim.initial_state()
    state.x.requires_grad_(True)
    state.v.requires_grad_(True)
    params = sim.default_params().requires_grad_(True)
    K = sim.n_colliders
    control = torch.zeros(3, 2, K, 6, dtype=torch.float64)
    if K:
        control[:, :, 0, 2] = -0.4
        control[:, 1, 0, 4] = 1.5
        control[:, 0, 0, 0] = 0.2
    control.requires_grad_(True)
    out = sim.rollout(state, control, params=params, record="all", checkpoint_every=4)
    weights = torch.linspace(-1.0, 1.0, out.x.numel(), dtype=torch.float64).reshape(out.x.shape)
    loss = (weights * out.x).sum() + 0.1 * (out.v**2).sum()
    loss.backward()
    values = {
        "x": out.x.detach(),
        "v": out.v.detach(),
        "C": out.final.C,
        "F": out.final.F,
        "J": out.final.J,
        "grad_x0": state.x.grad,
        "grad_v0": state.v.grad,
        "grad_params": params.grad,
    }
    if K:
        values["grad_control"] = control.grad
    return {f"engine_{label}/{k}": v.numpy() for k, v in values.items()}


def compute() -> dict[str, np.ndarray]:
    """Every reference value; the runtime must be f64 and deterministic."""
    import envs
    from engine import materials

    values: dict[str, np.ndarray] = {}
    for label, material, with_collider in (
        ("water", materials.WATER, False),
        ("water_collider", materials.WATER, True),
        ("jelly_collider", materials.JELLY, True),
        ("plasticine_collider", materials.PLASTICINE, True),
        ("ice_cream_collider", materials.ICE_CREAM, True),
    ):
        values.update(_engine_values(label, material, with_collider))
    for env_id in envs.ENV_IDS:
        values.update(_task_values(env_id.split("/")[1].removesuffix("-v0")))
    return values


def main() -> None:
    import engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    engine.init(arch="cpu", precision="f64", deterministic=True)
    values = compute()
    np.savez_compressed(args.out, **values)
    print(f"{len(values)} arrays -> {args.out} (engine from {engine.__file__})")


if __name__ == "__main__":
    main()
