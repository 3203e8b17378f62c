"""Saving and safely reloading policy artifacts: open-loop trajectories (.npz) and SB3 models (.zip).

A trajectory file is a plain ``numpy.savez`` archive of arrays only (no pickled objects; it is
read back with ``allow_pickle=False``): the actions (T, A) in [-1, 1], the task loss they
reached (the differentiable loss of the full-horizon rollout, equal to the env's final
``info["loss"]`` on replay from the spec's reset seed, see :mod:`policies.trajopt`), the env it
belongs to (:meth:`envs.EnvSpec.to_dict` as a JSON string), the method that produced it and
free-form metadata (JSON). Files of the format ``fluxlab-trajectory-v1`` (task, preset, seed and
overrides as separate fields, the precision in the metadata) are read too.
Stable-Baselines3 models are loaded with SB3's own loader (which reads the network weights with
``torch.load(weights_only=True)``), its cloudpickled fields replaced via ``custom_objects`` from a
JSON side file (env spec, algorithm, spaces) so nothing is unpickled. Missing files
raise ``FileNotFoundError`` and unreadable or malformed ones ``ValueError``, both naming the file.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs import EnvSpec

TRAJECTORY_FORMAT = "fluxlab-trajectory-v2"
#: Fields of each readable trajectory format.
_KEYS = {
    TRAJECTORY_FORMAT: ("format", "actions", "loss", "spec", "method", "metadata"),
    "fluxlab-trajectory-v1": ("format", "actions", "loss", "task", "preset", "seed", "overrides", "method", "metadata"),
}


@dataclass
class Trajectory:
    """An open-loop action sequence and where it came from.

    Attributes:
        actions: (T, A) float64 actions in [-1, 1].
        loss: task loss the sequence reached (full-horizon rollout from the ``spec.seed`` reset).
        spec: the env the actions were optimized in (task, preset, overrides, precision, reset seed).
        method: what produced it ("optimize", "cmaes", ...).
        metadata: any further JSON-compatible facts (parameterization, iterations).
    """

    actions: np.ndarray
    loss: float
    spec: EnvSpec
    method: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def _check_actions(actions: np.ndarray, where: str) -> np.ndarray:
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{where}: actions must have shape (T, A) with T, A >= 1, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{where}: actions contain NaN/Inf")
    if np.any(np.abs(a) > 1.0 + 1e-6):
        raise ValueError(f"{where}: actions must lie in [-1, 1], got range [{a.min():g}, {a.max():g}]")
    return a


def save_trajectory(path: str | Path, trajectory: Trajectory) -> Path:
    """Write ``trajectory`` to ``path`` (``.npz``; arrays only). Returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"trajectory files end in .npz, got {path}")
    actions = _check_actions(trajectory.actions, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(
            f,
            format=np.array(TRAJECTORY_FORMAT),
            actions=actions,
            loss=np.array(float(trajectory.loss)),
            spec=np.array(json.dumps(trajectory.spec.to_dict())),
            method=np.array(str(trajectory.method)),
            metadata=np.array(json.dumps(trajectory.metadata)),
        )
    return path


def _spec_of(fields: dict[str, np.ndarray], metadata: dict[str, Any]) -> EnvSpec:
    """The env spec of a trajectory file's fields (either format)."""
    if str(fields["format"]) == TRAJECTORY_FORMAT:
        return EnvSpec.from_dict(json.loads(str(fields["spec"])))
    overrides = json.loads(str(fields["overrides"]))
    if not isinstance(overrides, dict):
        raise ValueError("overrides must be a JSON object")
    return EnvSpec(
        task=str(fields["task"]),
        preset=str(fields["preset"]),
        config_overrides=overrides,
        precision=metadata.get("precision", "f32"),
        seed=int(fields["seed"]),
    )


def load_trajectory(path: str | Path) -> Trajectory:
    """Read a trajectory written by :func:`save_trajectory` (``allow_pickle=False``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a readable ``.npz``, an unknown format, a missing or malformed field
            (an invalid env spec included), or actions outside [-1, 1] / non-finite; the
            message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            fmt = str(data["format"]) if "format" in data.files else TRAJECTORY_FORMAT
            if fmt not in _KEYS:
                raise ValueError(f"format {fmt!r}, expected one of {sorted(_KEYS)}")
            missing = [k for k in _KEYS[fmt] if k not in data.files]
            if missing:
                raise ValueError(f"missing fields {missing}")
            fields = {k: data[k] for k in _KEYS[fmt]}
        metadata = json.loads(str(fields["metadata"]))
        if not isinstance(metadata, dict):
            raise ValueError("metadata must be a JSON object")
        trajectory = Trajectory(
            actions=_check_actions(fields["actions"], str(path)),
            loss=float(fields["loss"]),
            spec=_spec_of(fields, metadata),
            method=str(fields["method"]),
            metadata=metadata,
        )
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a valid FluxLab trajectory file ({err})") from err
    return trajectory


# ---------------------------------------------------------------------- SB3 models
SB3_ALGOS = ("ppo", "sac")


def model_meta_path(model_path: str | Path) -> Path:
    """The JSON side file of an SB3 model: ``model.zip`` -> ``model.json``."""
    return Path(model_path).with_suffix(".json")


def save_model_meta(model_path: str | Path, spec: EnvSpec, meta: dict[str, Any]) -> Path:
    """Write the side file of ``model_path``: ``{"spec": spec.to_dict(), **meta}``; ``meta`` holds
    ``algo`` and the spaces' ``observation_dim`` / ``action_dim`` (and any further facts)."""
    if meta.get("algo") not in SB3_ALGOS:
        raise ValueError(f"model metadata needs 'algo' in {SB3_ALGOS}, got {meta!r}")
    path = model_meta_path(model_path)
    path.write_text(json.dumps({"spec": spec.to_dict(), **meta}, indent=2))
    return path


#: Env keys a side file may hold at its top level instead of one ``spec`` entry.
_FLAT_SPEC_KEYS = ("task", "preset", "overrides", "precision", "seed")


def load_model_meta(model_path: str | Path) -> dict[str, Any]:
    """Read the side file of ``model_path``; ``meta["spec"]`` is returned as an :class:`envs.EnvSpec`.

    Side files with the env fields at the top level (task, preset, overrides, precision, seed)
    are read too; those fields then form the spec.

    Raises:
        FileNotFoundError: no side file.
        ValueError: unreadable JSON, no algo in :data:`SB3_ALGOS`, or no valid env spec.
    """
    path = model_meta_path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"model metadata not found: {path} (written next to the model by fluxlab train)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("algo") not in SB3_ALGOS:
        raise ValueError(f"{path}: needs 'algo' in {SB3_ALGOS}")
    if "spec" not in meta:
        meta["spec"] = {k: meta.pop(k) for k in _FLAT_SPEC_KEYS if k in meta}
    try:
        meta["spec"] = EnvSpec.from_dict(meta["spec"])
    except ValueError as err:
        raise ValueError(f"{path}: no valid env spec ({err})") from err
    return meta


def _no_pickle_objects(algo: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Replacements for every cloudpickled field of an SB3 (2.x) PPO / SAC ``data`` entry, built
    from the side file, so loading never unpickles: the policy class, the spaces, schedules,
    buffer classes, and training-only state (last observations, episode buffers)."""
    from gymnasium import spaces
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.buffers import ReplayBuffer, RolloutBuffer
    from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

    try:
        from stable_baselines3.common.utils import ConstantSchedule
    except ImportError:  # SB3 < 2.6
        from stable_baselines3.common.utils import constant_fn as ConstantSchedule

    try:
        obs_dim, act_dim = int(meta["observation_dim"]), int(meta["action_dim"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"model metadata lacks observation_dim/action_dim ({err})") from err
    hyper = meta.get("hyperparameters", {})
    cls = {"ppo": PPO, "sac": SAC}[algo]
    return {
        "policy_class": cls.policy_aliases["MlpPolicy"],
        "observation_space": spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32),
        "action_space": spaces.Box(-1.0, 1.0, shape=(act_dim,), dtype=np.float32),
        "lr_schedule": ConstantSchedule(float(hyper.get("learning_rate", 3e-4))),
        "clip_range": ConstantSchedule(float(hyper.get("clip_range", 0.2))),
        "train_freq": TrainFreq(1, TrainFrequencyUnit.STEP),
        "rollout_buffer_class": RolloutBuffer,
        "replay_buffer_class": ReplayBuffer,
        "_last_obs": None,
        "_last_original_obs": None,
        "_last_episode_starts": None,
        "ep_info_buffer": None,
        "ep_success_buffer": None,
    }


#: Keys of an SB3 ``data`` entry that only one of the two algorithms writes.
_ALGO_KEYS = {"ppo": "n_epochs", "sac": "tau"}


def _stored_algo(data: dict[str, Any]) -> str | None:
    """The algorithm an SB3 ``data`` entry belongs to (``ppo`` / ``sac``), None if neither."""
    found = [algo for algo, key in _ALGO_KEYS.items() if key in data]
    return found[0] if len(found) == 1 else None


def load_model(path: str | Path):
    """Load an SB3 PPO / SAC model (.zip) written by ``fluxlab train``, without unpickling.

    SB3 stores some fields of its ``data`` entry with cloudpickle (arbitrary code on load); they
    are all replaced through SB3's ``custom_objects`` from the JSON side file (algo, spaces),
    and a file with any other pickled field is refused. The weights are read by SB3's loader with
    ``torch.load(weights_only=True)``. The result is meant for inference (``predict``); training
    state such as the last observation is not restored.

    Returns:
        ``(model, meta)`` with ``meta`` the side file's content (:func:`load_model_meta`; the
        env is ``meta["spec"]``).

    Raises:
        FileNotFoundError: the model or its side file does not exist.
        ValueError: naming the file: not a loadable SB3 model (a damaged archive or weights file,
            a ``policy.pth`` that is not plain tensors), a model of another algorithm than the
            side file declares, pickled fields this loader does not know, or non-finite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    meta = load_model_meta(path)
    algo = meta["algo"]
    from stable_baselines3 import PPO, SAC

    try:
        objects = _no_pickle_objects(algo, meta)
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
        pickled = {k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v}
        unknown = sorted(pickled - set(objects))
        if unknown:
            raise ValueError(f"refusing to unpickle fields {unknown}")
        stored = _stored_algo(data)
        if stored != algo:
            held = f"a {stored.upper()} model" if stored else "no PPO or SAC model"
            raise ValueError(f"{model_meta_path(path).name} declares {algo.upper()}, but the archive holds {held}")
        model = {"ppo": PPO, "sac": SAC}[algo].load(path, device="cpu", custom_objects=objects)
    except (
        OSError,
        EOFError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
        AttributeError,
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
    ) as err:
        raise ValueError(f"{path}: not a valid {algo.upper()} model ({type(err).__name__}: {err})") from err
    bad = [name for name, value in model.policy.state_dict().items() if not value.isfinite().all()]
    if bad:
        names = ", ".join(bad[:4]) + (", ..." if len(bad) > 4 else "")
        raise ValueError(f"{path}: the model's weights hold NaN/Inf ({names})")
    return model, meta
