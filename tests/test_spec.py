"""``envs.EnvSpec``: one picklable, hashable, JSON-serializable value per environment.

Checks normalization (task ids, override order, lists vs tuples), pickling (in this process and
in a fresh interpreter, as a remote worker would), equality and hashing, the ``to_dict`` /
``from_dict`` round trip through JSON, the errors that name the bad field, and that ``make`` /
``make_vec`` build envs whose time limit is the spec's horizon.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys

import pytest

from envs import EnvSpec

OVERRIDES = {"horizon": 5, "look_at": (0.5, 0.5, 0.2)}


def test_task_ids_and_override_order_are_normalized():
    a = EnvSpec("Pouring", config_overrides=OVERRIDES, seed=3)
    b = EnvSpec("FluxLab/Pouring-v0", config_overrides={"look_at": [0.5, 0.5, 0.2], "horizon": 5}, seed=3)
    c = EnvSpec("Pouring-v0", config_overrides=[("look_at", (0.5, 0.5, 0.2)), ("horizon", 5)], seed=3)
    assert a == b == c and hash(a) == hash(b) == hash(c)
    assert len({a, b, c}) == 1
    assert a.task == "Pouring" and a.env_id == "FluxLab/Pouring-v0"
    assert a.config_overrides == (("horizon", 5), ("look_at", (0.5, 0.5, 0.2)))
    assert a.overrides == OVERRIDES
    assert a != dataclasses.replace(a, seed=4) and a != dataclasses.replace(a, precision="f64")
    assert a != EnvSpec("Pouring", config_overrides={"horizon": 6, "look_at": (0.5, 0.5, 0.2)}, seed=3)


def test_pickle_round_trip_in_this_and_a_fresh_process():
    spec = EnvSpec("GatheringEasy", preset="paper", config_overrides=OVERRIDES, precision="f64", seed=9)
    back = pickle.loads(pickle.dumps(spec))
    assert back == spec and hash(back) == hash(spec) and back.overrides == OVERRIDES
    # A remote worker unpickles in a fresh interpreter; the spec's module registers the envs there.
    code = "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); print(s.env_id, s.horizon, s.overrides)"
    proc = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(spec), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().splitlines()[-1].split()[:2] == [
        "FluxLab/GatheringEasy-v0",
        "5",
    ]  # after Taichi's banner


def test_to_dict_from_dict_round_trip_through_json():
    spec = EnvSpec("Pouring", config_overrides=OVERRIDES, precision="f64", seed=2)
    data = spec.to_dict()
    assert data == {
        "task": "Pouring",
        "preset": "cpu",
        "overrides": {"horizon": 5, "look_at": [0.5, 0.5, 0.2]},
        "precision": "f64",
        "seed": 2,
    }
    text = json.dumps(data)
    assert json.loads(text) == data
    assert EnvSpec.from_dict(json.loads(text)) == spec
    assert EnvSpec.from_dict({"task": "Pouring-v0"}) == EnvSpec("Pouring")  # the defaults


def test_horizon_with_overrides_and_presets():
    from tasks import task_class

    paper = task_class("Pouring").default_config("paper").horizon
    assert EnvSpec("Pouring").horizon == task_class("Pouring").default_config("cpu").horizon
    assert EnvSpec("Pouring", preset="paper").horizon == paper
    assert EnvSpec("Pouring", preset="paper", config_overrides={"horizon": 7}).horizon == 7
    spec = EnvSpec("Pouring", config_overrides={"horizon": 7}).with_overrides(obs_points=8)
    assert spec.overrides == {"horizon": 7, "obs_points": 8} and spec.task_config().obs_points == 8
    assert spec.with_overrides(horizon=3).horizon == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"task": "NoSuchTask-v0"}, r"EnvSpec.task: unknown task 'NoSuchTask-v0'"),
        ({"preset": "gpu"}, r"EnvSpec.preset must be one of \('cpu', 'paper'\), got 'gpu'"),
        ({"config_overrides": {"no_such_field": 1}}, r"EnvSpec.config_overrides: .*unknown config fields"),
        ({"config_overrides": {"horizon": 0}}, r"EnvSpec.config_overrides: horizon must be an int >= 1"),
        ({"config_overrides": {"horizon": object()}}, r"EnvSpec.config_overrides\['horizon'\] must be None, bool"),
        ({"config_overrides": {"reset_noise": float("nan")}}, r"\['reset_noise'\] must be finite"),
        ({"config_overrides": {"preset": "paper"}}, r"EnvSpec.config_overrides: set the preset with EnvSpec.preset"),
        ({"config_overrides": {1: 2}}, r"EnvSpec.config_overrides must map field names to values"),
        ({"config_overrides": 5}, r"EnvSpec.config_overrides must map field names to values"),
        ({"precision": "f16"}, r"EnvSpec.precision must be one of \('f32', 'f64'\), got 'f16'"),
        ({"seed": -1}, r"EnvSpec.seed must be an int >= 0, got -1"),
        ({"seed": 1.5}, r"EnvSpec.seed must be an int >= 0"),
        ({"seed": True}, r"EnvSpec.seed must be an int >= 0"),
    ],
)
def test_bad_fields_raise_errors_naming_them(fields, message):
    with pytest.raises(ValueError, match=message):
        EnvSpec(**{"task": "Pouring", **fields})


def test_replace_and_from_dict_validate_too():
    spec = EnvSpec("Pouring")
    with pytest.raises(ValueError, match="EnvSpec.precision"):
        dataclasses.replace(spec, precision="f16")
    with pytest.raises(ValueError, match="EnvSpec.config_overrides"):
        spec.with_overrides(horizon=-2)
    with pytest.raises(ValueError, match="only keys"):
        EnvSpec.from_dict({"task": "Pouring", "algo": "ppo"})
    with pytest.raises(ValueError, match="needs 'task'"):
        EnvSpec.from_dict({"preset": "cpu"})
    with pytest.raises(ValueError, match="'overrides' must be a JSON object"):
        EnvSpec.from_dict({"task": "Pouring", "overrides": [1, 2]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3


def test_make_and_make_vec_use_the_spec(runtime):
    spec = EnvSpec("Pouring", config_overrides={"horizon": 3}, precision="f64")
    env = spec.make(render_mode="rgb_array", render_size=32)
    assert env.spec.max_episode_steps == 3 and env.unwrapped.task.horizon == 3
    assert env.render_mode == "rgb_array"
    env.close()
    vec = spec.make_vec(2)
    assert vec.num_envs == 2 and vec.unwrapped.max_episode_steps == 3
    vec.close()
    with pytest.raises(ValueError, match="cannot make a f32 env"):
        dataclasses.replace(spec, precision="f32").make()
