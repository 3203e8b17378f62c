"""Sweep files: parsing, the Tune search space, and bad configs refused before anything starts.

No Ray cluster is started here; resource checks run against given node resources.
"""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("ray.tune")

from policies.dist.cluster import check_resources  # noqa: E402
from policies.dist.config import load_sweep  # noqa: E402

GOOD = """
name: small
command: cmaes
task: Pouring-v0
overrides: {horizon: 4}
settings: {evals: 9, popsize: 4, knots: 2}
grid:
  seed: [0, 1]
  settings.sigma: [0.3, 0.6]
resources: {CPU: 1}
"""


def _write(tmp_path, text: str, name: str = "sweep.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_yaml_sweep_becomes_a_grid_search(tmp_path):
    from ray import tune

    cfg = load_sweep(_write(tmp_path, GOOD))
    assert (cfg.command, cfg.name, cfg.trial_count(), cfg.axes) == ("cmaes", "small", 4, ["seed", "settings.sigma"])
    space = cfg.param_space()
    assert space["seed"] == tune.grid_search([0, 1])
    assert space["settings"] == {"evals": 9, "popsize": 4, "knots": 2, "sigma": tune.grid_search([0.3, 0.6])}
    assert space["overrides"] == {"horizon": 4} and space["task"] == "Pouring-v0"


def test_toml_sweep_with_random_axes(tmp_path):
    text = """
    command = "optimize"
    searcher = "optuna"
    samples = 3
    [grid]
    [random]
    "settings.lr" = {loguniform = [0.01, 0.3]}
    task = {choice = ["Pouring-v0", "Mixing-v0"]}
    "overrides.horizon" = {randint = [3, 6]}
    """
    cfg = load_sweep(_write(tmp_path, text, "sweep.toml"))
    space = cfg.param_space()
    assert cfg.searcher == "optuna" and cfg.trial_count() == 3
    assert space["settings"]["lr"].lower == 0.01 and space["overrides"]["horizon"].upper == 6
    assert sorted(space["task"].categories) == ["Mixing-v0", "Pouring-v0"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "red"}, "unknown key(s) ['colour']"),
        ({"command": "fly"}, "command must be one of"),
        ({"task": "Juggling-v0"}, "unknown task 'Juggling-v0'"),
        ({"grid": {"task": ["Pouring-v0", "Nope"]}}, "task='Nope': EnvSpec.task: unknown task"),
        ({"overrides": {"horizon": 4, "viscosity_of_moon": 1}}, "viscosity_of_moon"),
        ({"overrides": {"horizon": -3}}, "horizon"),
        ({"settings": {"evals": 9, "iters": 3}}, "cmaes has no setting 'iters'"),
        ({"settings": {"evals": "many"}}, "evals must be an int >= 2"),
        ({"grid": {"settings.sigma": [0.3, -1.0]}}, "sigma must be a number > 0"),
        ({"grid": {"speed": [1, 2]}}, "unknown axis 'speed'"),
        ({"grid": {"seed": []}}, "grid.seed must be a non-empty list"),
        ({"random": {"overrides.horizon": {"normal": [0, 1]}}}, "unknown distribution 'normal'"),
        ({"random": {"settings.popsize": {"loguniform": [0.0, 1.0]}}}, "low > 0"),
        ({"searcher": "optuna"}, "searcher optuna samples the random axes only"),
        ({"resources": {"CPU": -1}}, "resources.CPU must be a number >= 0"),
        ({"resources": {"CPU": 0}}, "at least one CPU or some GPU"),
        ({"max_failures": -1}, "max_failures must be an int >= 0"),
    ],
)
def test_bad_sweep_files_name_the_problem(tmp_path, change, message):
    import yaml

    data = yaml.safe_load(GOOD)
    data.update(change)
    path = _write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(ValueError) as err:
        load_sweep(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_train_needs_algo_and_timesteps(tmp_path):
    path = _write(tmp_path, "command: train\ntask: Pouring-v0\nsettings: {algo: ppo}\n")
    with pytest.raises(ValueError, match="train needs settings.timesteps"):
        load_sweep(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sweep(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="must be a .yaml, .yml or .toml"):
        load_sweep(_write(tmp_path, GOOD, "sweep.json"))
    with pytest.raises(ValueError, match="cannot be parsed"):
        load_sweep(_write(tmp_path, "grid: [unclosed", "broken.yaml"))


def test_resources_the_cluster_cannot_give(tmp_path):
    two_nodes = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 2.0}]
    cfg = load_sweep(_write(tmp_path, GOOD))
    check_resources(cfg, two_nodes)  # one CPU per trial fits
    big = load_sweep(_write(tmp_path, GOOD.replace("{CPU: 1}", "{CPU: 3}")))
    with pytest.raises(ValueError, match=r"resources \{'CPU': 3.0\} fit on no node"):
        check_resources(big, two_nodes)
    gpu = load_sweep(_write(tmp_path, GOOD.replace("{CPU: 1}", "{CPU: 1, GPU: 0.5}")))
    with pytest.raises(ValueError, match="GPU"):
        check_resources(gpu, two_nodes)
    workers = load_sweep(_write(tmp_path, GOOD.replace("grid:\n", "grid:\n  settings.workers: [0, 4]\n")))
    with pytest.raises(ValueError, match="a trial with 4 workers needs"):
        check_resources(workers, two_nodes)


def test_cli_refuses_a_bad_sweep_before_starting_ray(tmp_path, capsys):
    import ray

    from policies.cli import main

    path = _write(tmp_path, GOOD.replace("Pouring-v0", "Juggling-v0"))
    assert main(["sweep", str(path)]) == 2
    assert "unknown task 'Juggling-v0'" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_engine_tasks_envs_do_not_import_ray():
    import subprocess
    import sys

    code = "import sys, engine, tasks, envs, policies.cli; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=300).returncode == 0
